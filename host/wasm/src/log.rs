//! The job log: `log` calls and guest stdout/stderr, line by line, capped
//! in size so a flooding guest costs the host nothing but the cap.

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

#[derive(Debug)]
struct LogBuffer {
    started: Instant,
    lines: Vec<LogLine>,
    bytes: usize,
    cap: usize,
    truncated: bool,
    /// Unterminated tails of stdout and stderr.
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl LogBuffer {
    fn push(&mut self, level: LogLevel, message: String) {
        if self.bytes + message.len() > self.cap {
            self.truncated = true;
            return;
        }
        self.bytes += message.len();
        self.lines.push(LogLine {
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            level,
            message,
        });
    }

    fn partial(&mut self, level: LogLevel) -> &mut Vec<u8> {
        if level == LogLevel::Stderr {
            &mut self.partial_stderr
        } else {
            &mut self.partial_stdout
        }
    }

    fn write_stream(&mut self, level: LogLevel, mut bytes: &[u8]) {
        if self.truncated {
            return;
        }
        while let Some(newline) = bytes.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(self.partial(level));
            line.extend_from_slice(&bytes[..newline]);
            self.push(level, String::from_utf8_lossy(&line).into_owned());
            bytes = &bytes[newline + 1..];
        }
        let cap = self.cap;
        let partial = self.partial(level);
        // An endless line without a newline is still bounded by the cap.
        let room = cap.saturating_sub(partial.len());
        partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            self.truncated = true;
        }
    }
}

/// A shared handle to one run's log.
#[derive(Debug, Clone)]
pub(crate) struct JobLog(Arc<Mutex<LogBuffer>>);

impl JobLog {
    pub(crate) fn new(cap_bytes: u64, started: Instant) -> Self {
        Self(Arc::new(Mutex::new(LogBuffer {
            started,
            lines: Vec::new(),
            bytes: 0,
            cap: usize::try_from(cap_bytes).unwrap_or(usize::MAX),
            truncated: false,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, LogBuffer> {
        // A poisoned lock only means another thread panicked mid-push; the
        // buffer is still a valid (if partial) log.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, level: LogLevel, message: String) {
        self.lock().push(level, message);
    }

    /// A stdout or stderr stream for the guest's WASI context.
    pub(crate) fn stream(&self, level: LogLevel) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            level,
        }
    }

    /// The lines so far (flushing unterminated output), and whether any
    /// output was dropped.
    pub(crate) fn finish(&self) -> (Vec<LogLine>, bool) {
        let mut buf = self.lock();
        for level in [LogLevel::Stdout, LogLevel::Stderr] {
            let tail = std::mem::take(buf.partial(level));
            if !tail.is_empty() {
                buf.push(level, String::from_utf8_lossy(&tail).into_owned());
            }
        }
        (std::mem::take(&mut buf.lines), buf.truncated)
    }

    /// The guest's panic message, from what it wrote to stderr: the
    /// `panicked at` line and the line after it (the message itself).
    pub(crate) fn panic_message(&self) -> Option<String> {
        let buf = self.lock();
        let partial = String::from_utf8_lossy(&buf.partial_stderr).into_owned();
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

    #[test]
    fn splits_lines_and_caps_total_size() {
        let log = JobLog::new(20, Instant::now());
        let mut out = log.stream(LogLevel::Stdout);
        out.write(Bytes::from_static(b"hello\nwor")).unwrap();
        out.write(Bytes::from_static(b"ld\n")).unwrap();
        out.write(Bytes::from_static(b"this line is far too long\n"))
            .unwrap();
        let (lines, truncated) = log.finish();
        let texts: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["hello", "world"]);
        assert!(truncated);
    }
}
