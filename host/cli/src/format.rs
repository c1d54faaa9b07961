//! Human-readable rendering of sizes, durations and outcomes.

use std::time::Duration;

use xylem_core::spec::EffectiveOptions;
use xylem_core::{Outcome, TaskOptions};

/// `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `412 µs`, `3.2 ms`, `1.50 s`.
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `12,345,678`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A task's declared defaults on one line, e.g. `retries=3 timeout=30s`.
pub(crate) fn options(o: &TaskOptions) -> String {
    let mut parts = Vec::new();
    if let Some(q) = &o.queue {
        parts.push(format!("queue={q}"));
    }
    if let Some(p) = o.priority {
        parts.push(format!("priority={p}"));
    }
    if let Some(r) = o.max_retries {
        parts.push(format!("retries={r}"));
    }
    if let Some(b) = o.retry_backoff_ms {
        parts.push(format!("backoff={}", ms(b)));
    }
    if let Some(b) = o.retry_backoff_max_ms {
        parts.push(format!("backoff-max={}", ms(b)));
    }
    if let Some(t) = o.soft_time_limit_ms {
        parts.push(format!("soft-timeout={}", ms(t)));
    }
    if let Some(t) = o.hard_time_limit_ms {
        parts.push(format!("timeout={}", ms(t)));
    }
    if let Some(f) = o.fuel {
        parts.push(format!("fuel={}", count(f)));
    }
    if let Some(m) = o.max_memory_bytes {
        parts.push(format!("memory={}", bytes(m)));
    }
    if let Some(r) = &o.rate_limit {
        parts.push(format!("rate={r}"));
    }
    if o.retry_jitter == Some(false) {
        parts.push("no-jitter".to_owned());
    }
    if let Some(t) = o.visibility_timeout_ms {
        parts.push(format!("visibility-timeout={}", ms(t)));
    }
    if let Some(t) = o.expires_ms {
        parts.push(format!("expires={}", ms(t)));
    }
    if let Some(t) = o.unique_for_ms {
        parts.push(format!("unique-for={}", ms(t)));
    }
    if o.ignore_result == Some(true) {
        parts.push("ignore-result".to_owned());
    }
    if parts.is_empty() {
        "(host defaults)".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Milliseconds as a duration (`5m`, `1s 500ms`).
pub(crate) fn ms(v: u64) -> String {
    humantime::format_duration(Duration::from_millis(v)).to_string()
}

/// The effective options `xylem tasks` does not give a column of: backoff,
/// and whatever is set beyond the host's defaults.
pub(crate) fn extras(e: &EffectiveOptions) -> String {
    let mut parts = vec![format!(
        "backoff {}..{}{}",
        ms(e.retry_backoff_ms),
        ms(e.retry_backoff_max_ms),
        if e.retry_jitter { "" } else { " (no jitter)" }
    )];
    if let Some(t) = e.soft_time_limit_ms {
        parts.push(format!("soft-timeout {}", ms(t)));
    }
    if let Some(r) = &e.rate_limit {
        parts.push(format!("rate {r}"));
    }
    if let Some(c) = &e.concurrency {
        parts.push(format!("concurrency {c}"));
    }
    if let Some(t) = e.visibility_timeout_ms {
        parts.push(format!("visibility-timeout {}", ms(t)));
    }
    if let Some(t) = e.expires_ms {
        parts.push(format!("expires {}", ms(t)));
    }
    if let Some(t) = e.unique_for_ms {
        parts.push(format!("unique-for {}", ms(t)));
    }
    if e.ignore_result {
        parts.push("ignore-result".to_owned());
    }
    parts.join(", ")
}

/// The resource line of an outcome.
pub(crate) fn usage(outcome: &Outcome) -> String {
    format!(
        "wall {}  fuel {}  peak memory {}",
        duration(outcome.usage.wall_time()),
        count(outcome.usage.fuel),
        bytes(outcome.usage.peak_memory)
    )
}

/// Renders rows under headers with aligned columns.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A short form of a UUID job id: its last 12 characters.
pub(crate) fn short_id(id: &str) -> &str {
    &id[id.len().saturating_sub(12)..]
}

/// Cuts `text` to `max` characters with an ellipsis.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// What a job ended with, in one line: its result or its error.
pub(crate) fn record_summary(record: &xylem_core::TaskRecord) -> String {
    match (&record.result, &record.error) {
        (Some(result), _) if record.state == xylem_core::TaskState::Succeeded => {
            serde_json::to_string(result).unwrap_or_default()
        }
        (_, Some(error)) => error.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(Duration::from_micros(412)), "412 µs");
        assert_eq!(duration(Duration::from_micros(3200)), "3.2 ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.50 s");
    }
}
