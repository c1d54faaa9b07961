//! The job log: `log` calls and guest stdout/stderr, line by line, under
//! one budget per run so a flooding guest costs the host nothing but the
//! budget.
//!
//! The budget has two caps: bytes, where every entry is charged
//! [`ENTRY_OVERHEAD`] plus its text (so empty lines are not free), and a
//! number of entries. Once an entry does not fit, the log is closed:
//! everything after it is dropped and only counted (a few integer
//! additions per write, nothing buffered), and [`JobLog::finish`] ends the
//! kept log with one summary entry saying how much was dropped. A line is
//! kept up to [`MAX_LINE`] bytes; the rest of it is counted, not buffered.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use xylem_core::{LogLevel, LogLine};

/// How much a guest may write in one `write` call (WASI's write permit).
const WRITE_PERMIT: usize = 64 * 1024;

/// Bytes charged for each kept entry on top of its text: roughly what a
/// [`LogLine`] costs the host in memory, in storage and on screen.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// Longest text kept for one entry (a `log` message or a stdout/stderr
/// line); the rest is cut and only counted.
pub(crate) const MAX_LINE: usize = 8 * 1024;

/// One output stream's unterminated line.
#[derive(Debug, Default)]
struct Partial {
    /// Its first bytes, at most [`MAX_LINE`] (none once the log is closed).
    kept: Vec<u8>,
    /// Its whole length so far.
    len: u64,
}

#[derive(Debug)]
struct LogBuffer {
    started: Instant,
    lines: Vec<LogLine>,
    /// Bytes charged so far: text plus [`ENTRY_OVERHEAD`] per entry.
    charged: usize,
    max_bytes: usize,
    max_entries: usize,
    /// An entry did not fit: everything from then on is dropped.
    closed: bool,
    /// A kept entry was cut to [`MAX_LINE`].
    cut: bool,
    dropped_lines: u64,
    /// Text bytes dropped (for stdout/stderr, with their newlines).
    dropped_bytes: u64,
    stdout: Partial,
    stderr: Partial,
}

fn cost(message: &str) -> usize {
    ENTRY_OVERHEAD.saturating_add(message.len())
}

fn is_stream(level: LogLevel) -> bool {
    matches!(level, LogLevel::Stdout | LogLevel::Stderr)
}

/// `12345678` → `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text of a line of `len` bytes of which `kept` were kept.
fn line_text(kept: &[u8], len: u64) -> String {
    let mut text = String::from_utf8_lossy(kept).into_owned();
    let cut = len.saturating_sub(kept.len() as u64);
    if cut > 0 {
        text.push_str(&format!("… [{} more bytes cut]", thousands(cut)));
    }
    text
}

impl LogBuffer {
    fn at_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Keeps an entry if it fits the budget, else closes the log and counts
    /// it. `raw` is how many bytes of guest output it stands for.
    fn push(&mut self, level: LogLevel, message: String, raw: u64) {
        if !self.closed
            && (self.lines.len() >= self.max_entries
                || self.charged.saturating_add(cost(&message)) > self.max_bytes)
        {
            self.close();
        }
        if self.closed {
            self.dropped_lines += 1;
            self.dropped_bytes += raw;
            return;
        }
        self.charged += cost(&message);
        let at_ms = self.at_ms();
        self.lines.push(LogLine {
            at_ms,
            level,
            message,
        });
    }

    /// A `log` call's message, cut to [`MAX_LINE`].
    fn push_message(&mut self, level: LogLevel, mut message: String) {
        let raw = message.len() as u64;
        if self.closed {
            self.dropped_lines += 1;
            self.dropped_bytes += raw;
            return;
        }
        if message.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message = line_text(&message.as_bytes()[..end], raw);
            self.cut = true;
        }
        self.push(level, message, raw);
    }

    fn close(&mut self) {
        self.closed = true;
        // Unterminated lines are only counted from now on.
        self.stdout.kept = Vec::new();
        self.stderr.kept = Vec::new();
    }

    fn partial(&mut self, level: LogLevel) -> &mut Partial {
        if level == LogLevel::Stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        }
    }

    /// Ends the unterminated line of `level` (`newline`: with a newline).
    fn end_line(&mut self, level: LogLevel, newline: bool) {
        let partial = std::mem::take(self.partial(level));
        let raw = partial.len + u64::from(newline);
        if self.closed {
            self.dropped_lines += 1;
            self.dropped_bytes += raw;
            return;
        }
        if partial.len > partial.kept.len() as u64 {
            self.cut = true;
        }
        self.push(level, line_text(&partial.kept, partial.len), raw);
    }

    fn write_stream(&mut self, level: LogLevel, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.closed {
                self.drop_stream(level, bytes);
                return;
            }
            let (line, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            let partial = self.partial(level);
            let room = MAX_LINE.saturating_sub(partial.kept.len());
            partial
                .kept
                .extend_from_slice(&line[..line.len().min(room)]);
            partial.len += line.len() as u64;
            if !newline {
                return;
            }
            self.end_line(level, true);
            bytes = &bytes[line.len() + 1..];
        }
    }

    /// Output after the log closed: counted, never stored.
    fn drop_stream(&mut self, level: LogLevel, bytes: &[u8]) {
        let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let partial = self.partial(level);
        if newlines == 0 {
            partial.len += bytes.len() as u64;
            return;
        }
        let tail = bytes.iter().rev().take_while(|b| **b != b'\n').count();
        let ended = partial.len + (bytes.len() - tail) as u64;
        partial.len = tail as u64;
        self.dropped_lines += newlines;
        self.dropped_bytes += ended;
    }

    fn summary(&self) -> String {
        let lines = self.dropped_lines;
        format!(
            "… {} more {} dropped ({} bytes): over the log limit of {} bytes or {} entries",
            thousands(lines),
            if lines == 1 { "line" } else { "lines" },
            thousands(self.dropped_bytes),
            thousands(self.max_bytes as u64),
            thousands(self.max_entries as u64),
        )
    }

    /// Flushes unterminated lines and, if anything was dropped, ends the
    /// log with the summary, making room for it within the budget.
    fn finish(&mut self) -> (Vec<LogLine>, bool) {
        for level in [LogLevel::Stdout, LogLevel::Stderr] {
            if self.partial(level).len > 0 {
                self.end_line(level, false);
            }
        }
        if self.dropped_lines > 0 {
            loop {
                let summary = self.summary();
                let fits = self.lines.len() < self.max_entries
                    && self.charged.saturating_add(cost(&summary)) <= self.max_bytes;
                if fits || self.lines.is_empty() {
                    self.charged = self.charged.saturating_add(cost(&summary));
                    let at_ms = self.at_ms();
                    self.lines.push(LogLine {
                        at_ms,
                        level: LogLevel::Warn,
                        message: summary,
                    });
                    break;
                }
                // A few entries at most: each frees at least ENTRY_OVERHEAD.
                if let Some(last) = self.lines.pop() {
                    self.charged -= cost(&last.message);
                    self.dropped_lines += 1;
                    self.dropped_bytes +=
                        last.message.len() as u64 + u64::from(is_stream(last.level));
                }
            }
        }
        let truncated = self.cut || self.dropped_lines > 0;
        (std::mem::take(&mut self.lines), truncated)
    }
}

/// A shared handle to one run's log.
#[derive(Debug, Clone)]
pub(crate) struct JobLog(Arc<Mutex<LogBuffer>>);

impl JobLog {
    /// A log of at most `max_bytes` (text plus [`ENTRY_OVERHEAD`] per
    /// entry) and `max_entries` entries, the closing summary included.
    pub(crate) fn new(max_bytes: u64, max_entries: u64, started: Instant) -> Self {
        Self(Arc::new(Mutex::new(LogBuffer {
            started,
            lines: Vec::new(),
            charged: 0,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX),
            closed: false,
            cut: false,
            dropped_lines: 0,
            dropped_bytes: 0,
            stdout: Partial::default(),
            stderr: Partial::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, LogBuffer> {
        // A poisoned lock only means another thread panicked mid-push; the
        // buffer is still a valid (if partial) log.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry (a `log` call or a host notice), cut to
    /// [`MAX_LINE`]; past the budget it is only counted.
    pub(crate) fn push(&self, level: LogLevel, message: String) {
        self.lock().push_message(level, message);
    }

    /// A stdout or stderr stream for the guest's WASI context.
    pub(crate) fn stream(&self, level: LogLevel) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            level,
        }
    }

    /// The kept lines (unterminated output flushed, then the summary of
    /// what was dropped, if anything was), and whether any output was
    /// dropped or cut.
    pub(crate) fn finish(&self) -> (Vec<LogLine>, bool) {
        self.lock().finish()
    }

    /// The guest's panic message, from what it wrote to stderr: the
    /// `panicked at` line and the line after it (the message itself).
    pub(crate) fn panic_message(&self) -> Option<String> {
        let buf = self.lock();
        let partial = String::from_utf8_lossy(&buf.stderr.kept).into_owned();
        let stderr: Vec<&str> = buf
            .lines
            .iter()
            .filter(|l| l.level == LogLevel::Stderr)
            .map(|l| l.message.as_str())
            .chain(std::iter::once(partial.as_str()))
            .collect();
        let at = stderr.iter().rposition(|m| m.contains("panicked at"))?;
        let mut message = stderr[at].trim().to_owned();
        if let Some(next) = stderr.get(at + 1).filter(|m| !m.trim().is_empty()) {
            message = format!("{message} {}", next.trim());
        }
        Some(message)
    }
}

/// Guest stdout or stderr, written into the job log.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    log: JobLog,
    level: LogLevel,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.log.lock().write_stream(self.level, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept: output past the cap is dropped, never an error, so
        // a chatty guest is not made to fail by its own logging.
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.lock().write_stream(self.level, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.message.as_str()).collect()
    }

    fn charged(lines: &[LogLine]) -> usize {
        lines.iter().map(|l| cost(&l.message)).sum()
    }

    #[test]
    fn splits_lines_and_ends_with_what_was_dropped() {
        let budget = 2 * (ENTRY_OVERHEAD + 5) + ENTRY_OVERHEAD + 120;
        let log = JobLog::new(budget as u64, 100, Instant::now());
        let mut out = log.stream(LogLevel::Stdout);
        out.write(Bytes::from_static(b"hello\nwor")).unwrap();
        out.write(Bytes::from_static(b"ld\n")).unwrap();
        out.write(Bytes::from(format!("{}\nlast\n", "x".repeat(200))))
            .unwrap();
        let (lines, truncated) = log.finish();
        assert!(truncated);
        assert_eq!(texts(&lines)[..2], ["hello", "world"]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].level, LogLevel::Warn);
        assert!(
            lines[2]
                .message
                .starts_with("… 2 more lines dropped (206 bytes)"),
            "{}",
            lines[2].message
        );
        assert!(charged(&lines) <= budget);
    }

    #[test]
    fn the_summary_takes_the_place_of_the_last_lines_if_needed() {
        let budget = 3 * (ENTRY_OVERHEAD + 5) + 100;
        let log = JobLog::new(budget as u64, 100, Instant::now());
        let mut out = log.stream(LogLevel::Stdout);
        out.write(Bytes::from_static(b"aaaaa\nbbbbb\nccccc\n"))
            .unwrap();
        out.write(Bytes::from(format!("{}\n", "d".repeat(100))))
            .unwrap();
        let (lines, _) = log.finish();
        assert!(charged(&lines) <= budget, "{:?}", texts(&lines));
        assert_eq!(texts(&lines)[..2], ["aaaaa", "bbbbb"]);
        assert_eq!(lines.len(), 3);
        assert!(
            lines
                .last()
                .unwrap()
                .message
                .starts_with("… 2 more lines dropped (107 bytes)"),
            "{:?}",
            texts(&lines)
        );
    }

    #[test]
    fn empty_lines_are_charged_and_counted() {
        let log = JobLog::new(64 * 1024, 10_000, Instant::now());
        let mut out = log.stream(LogLevel::Stdout);
        let chunk = Bytes::from(vec![b'\n'; WRITE_PERMIT]);
        for _ in 0..16 {
            out.write(chunk.clone()).unwrap();
        }
        let (lines, truncated) = log.finish();
        assert!(truncated);
        assert!(charged(&lines) <= 64 * 1024, "{}", charged(&lines));
        assert!(lines.len() <= 64 * 1024 / ENTRY_OVERHEAD);
        let kept = lines.len() as u64 - 1;
        let summary = &lines.last().unwrap().message;
        let dropped = 16 * WRITE_PERMIT as u64 - kept;
        let expected = format!(
            "… {} more lines dropped ({} bytes)",
            thousands(dropped),
            thousands(dropped)
        );
        assert!(summary.starts_with(&expected), "{summary} vs {expected}");
    }

    #[test]
    fn the_entry_cap_holds_with_the_summary() {
        let log = JobLog::new(u64::MAX, 10, Instant::now());
        for _ in 0..1000 {
            log.push(LogLevel::Info, String::new());
        }
        let (lines, truncated) = log.finish();
        assert!(truncated);
        assert_eq!(lines.len(), 10);
        assert!(
            lines[9]
                .message
                .starts_with("… 991 more lines dropped (0 bytes)")
        );
    }

    #[test]
    fn an_endless_line_is_cut_not_buffered() {
        let log = JobLog::new(64 * 1024, 100, Instant::now());
        let mut out = log.stream(LogLevel::Stderr);
        let chunk = Bytes::from(vec![b'x'; WRITE_PERMIT]);
        for _ in 0..64 {
            out.write(chunk.clone()).unwrap();
        }
        assert!(log.lock().stderr.kept.len() <= MAX_LINE);
        out.write(Bytes::from_static(b"\nnext\n")).unwrap();
        let (lines, truncated) = log.finish();
        assert!(truncated);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].message.len() < MAX_LINE + 64);
        let cut = 64 * WRITE_PERMIT - MAX_LINE;
        assert!(
            lines[0]
                .message
                .ends_with(&format!("… [{} more bytes cut]", thousands(cut as u64))),
            "{}",
            &lines[0].message[MAX_LINE - 10..]
        );
        assert_eq!(lines[1].message, "next");
    }

    #[test]
    fn nothing_dropped_means_no_summary() {
        let log = JobLog::new(64 * 1024, 100, Instant::now());
        log.push(LogLevel::Info, "one".to_owned());
        log.stream(LogLevel::Stdout)
            .write(Bytes::from_static(b"two"))
            .unwrap();
        let (lines, truncated) = log.finish();
        assert!(!truncated);
        assert_eq!(texts(&lines), ["one", "two"]);
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
