//! What a job's path tells the outside: OpenTelemetry spans with their
//! trace context carried in the envelope's headers ([`trace`]), and the
//! job counters and histograms ([`metrics`]).
//!
//! The core only records, through the `tracing` and `opentelemetry` APIs;
//! whether anything leaves the process (OTLP, a Prometheus scrape) is the
//! binary's choice. With no exporter installed, spans carry no trace
//! context and every instrument is a no-op.

pub mod metrics;
pub mod trace;
