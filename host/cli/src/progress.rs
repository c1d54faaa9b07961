//! Waiting for a job with its progress in view: a live bar on a terminal
//! (indicatif), plain lines when stderr is not one (a log, a pipe). Used by
//! `xylem task wait` and `xylem enqueue --wait`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use xylem_core::client::ClientError;
use xylem_core::{Client, TaskRecord};

/// Waits for job `id` (as `Client::wait`), drawing its progress on stderr.
pub(crate) async fn wait(
    client: &Client,
    id: &str,
    timeout: Duration,
) -> Result<TaskRecord, ClientError> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}%  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let result = client
            .wait_watching(id, timeout, |record| {
                if let Some(p) = &record.progress {
                    bar.set_position((p.percent.clamp(0.0, 100.0) * 10.0) as u64);
                }
                bar.set_message(status(record));
            })
            .await;
        bar.finish_and_clear();
        result
    } else {
        // A line whenever what a line would say changes.
        let mut last = String::new();
        client
            .wait_watching(id, timeout, |record| {
                let line = match &record.progress {
                    Some(p) => format!("{:.0}%  {}", p.percent, status(record)),
                    None => status(record),
                };
                if line != last && !record.state.is_terminal() {
                    eprintln!("{id}: {line}");
                    last = line;
                }
            })
            .await
    }
}

/// The job's state and its latest progress words.
fn status(record: &TaskRecord) -> String {
    match record.progress.as_ref().and_then(|p| p.message.as_deref()) {
        Some(message) => format!("{} — {message}", record.state),
        None => record.state.to_string(),
    }
}
