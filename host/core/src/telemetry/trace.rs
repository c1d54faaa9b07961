//! Trace context across processes: the W3C `traceparent` (and
//! `tracestate`) header of a job's envelope.
//!
//! One rule, applied wherever a job is made ([`crate::Client`]'s enqueue,
//! a child a task enqueues, a callback, a canvas, a workflow activity):
//! the job's `traceparent` is the context of the span it is made in —
//! the `enqueue` span, itself a child of the caller's span or of a
//! `traceparent` the request already carries. A worker's `execute` span
//! takes the envelope's `traceparent` as its parent, so one trace follows
//! a job from its producer through every attempt and into its children.
//!
//! Every span is made here (this module's target): the `xylem` binary
//! keeps them out of its logs, where formatting a dozen fields per job
//! would cost more than the job's own bookkeeping (the log events of a
//! job's path carry its id instead).
//!
//! A process that exports nothing has no span context to give: there the
//! headers a job inherited (a child copies its parent's) are left as they
//! are, and the trace goes on past the process that did not record.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Envelope;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header.
pub const TRACESTATE: &str = "tracestate";

struct HeadersOut<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeadersOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

struct HeadersIn<'a>(&'a [(String, String)]);

impl Extractor for HeadersIn<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The trace context `headers` carry, if any.
pub fn context_of(headers: &[(String, String)]) -> Option<opentelemetry::Context> {
    let cx = TraceContextPropagator::new().extract(&HeadersIn(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the trace context in `headers`, if they carry
/// one (else it keeps its place under the current span).
pub fn set_parent_from(span: &Span, headers: &[(String, String)]) {
    if let Some(cx) = context_of(headers) {
        // Fails only where no OpenTelemetry layer records spans: nothing
        // to link then.
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s trace context into `headers` (replacing theirs). A
/// span with no context — nothing exports in this process — leaves the
/// headers as they are.
pub fn inject(span: &Span, headers: &mut Vec<(String, String)>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersOut(headers));
    }
}

/// [`inject`] with the current span.
pub fn inject_current(headers: &mut Vec<(String, String)>) {
    inject(&Span::current(), headers);
}

/// The headers a job passes on to what it makes (children, callbacks):
/// its own trace context — `span`'s if this process records spans, else
/// the one the job inherited.
pub fn headers_for_children(span: &Span, job: &Envelope) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = job
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT) || k.eq_ignore_ascii_case(TRACESTATE))
        .cloned()
        .collect();
    inject(span, &mut headers);
    headers
}

/// The span a job is enqueued in: a producer span, child of the trace
/// context the request's `headers` carry, else of the current span. The
/// job's id and queue are recorded on it once known.
pub fn enqueue_span(task: &str, headers: &[(String, String)]) -> Span {
    let span = tracing::info_span!(
        "enqueue",
        otel.name = %format_args!("enqueue {task}"),
        otel.kind = "producer",
        messaging.system = "xylem",
        messaging.operation.type = "send",
        messaging.message.id = tracing::field::Empty,
        messaging.destination.name = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
        xylem.task = %task,
    );
    set_parent_from(&span, headers);
    span
}

/// Records the enqueued job on the current `enqueue` span.
pub fn record_enqueued(envelope: &Envelope) {
    let span = Span::current();
    span.record("messaging.message.id", envelope.id.as_str());
    span.record("messaging.destination.name", envelope.queue.as_str());
}

/// The span a workflow run is started in: a producer span, child of the
/// current one. The run keeps its context ([`crate::workflow::Run::trace`]).
pub fn start_workflow_span(workflow: &str, run: &str) -> Span {
    tracing::info_span!(
        "start_workflow",
        otel.name = %format_args!("start workflow {workflow}"),
        otel.kind = "producer",
        xylem.workflow = %workflow,
        xylem.run.id = %run,
    )
}

/// The span an engine steps a run in: a child of the context the run was
/// started in, so its activities and children are in the run's trace.
pub fn workflow_step_span(run: &crate::workflow::Run) -> Span {
    let span = tracing::info_span!(
        "step",
        otel.name = %format_args!("step workflow {}", run.workflow),
        xylem.workflow = %run.workflow,
        xylem.run.id = %run.id,
        xylem.history_len = run.history.len(),
    );
    set_parent_from(&span, &run.trace);
    span
}

/// The span of one of the worker's batched store calls (`debug`: not
/// exported unless asked for).
pub fn store_span(name: &'static str, jobs: usize) -> Span {
    tracing::debug_span!("store", otel.name = name, jobs)
}

/// The span of a job's `reserve` step, inside its `execute` span.
pub fn reserve_span() -> Span {
    tracing::info_span!("reserve")
}

/// The span a worker runs a job in: a consumer span, child of the trace
/// context the job's envelope carries. Its outcome fields are recorded as
/// the run ends ([`record_outcome`]).
pub fn execute_span(envelope: &Envelope) -> Span {
    let span = tracing::info_span!(
        "execute",
        otel.name = %format_args!("execute {}", envelope.task),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "xylem",
        messaging.operation.type = "process",
        messaging.message.id = %envelope.id,
        messaging.destination.name = %envelope.queue,
        xylem.task = %envelope.task,
        xylem.attempt = envelope.attempt,
        xylem.plugin = tracing::field::Empty,
        xylem.fuel = tracing::field::Empty,
        xylem.peak_memory_bytes = tracing::field::Empty,
        xylem.wall_time_us = tracing::field::Empty,
        xylem.outcome = tracing::field::Empty,
        xylem.error = tracing::field::Empty,
    );
    set_parent_from(&span, &envelope.headers);
    span
}

/// Records a run's figures and how it ended on its `execute` span.
pub fn record_outcome(
    span: &Span,
    plugin: Option<&str>,
    usage: Option<&crate::Usage>,
    outcome: &str,
    error: Option<&str>,
) {
    if let Some(plugin) = plugin {
        span.record("xylem.plugin", plugin);
    }
    if let Some(usage) = usage {
        span.record("xylem.fuel", usage.fuel);
        span.record("xylem.peak_memory_bytes", usage.peak_memory);
        span.record("xylem.wall_time_us", usage.wall_time_us);
    }
    span.record("xylem.outcome", outcome);
    match error {
        Some(error) => {
            span.record("otel.status_code", "ERROR");
            span.record("xylem.error", error);
        }
        None => {
            span.record("otel.status_code", "OK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_is_read_whatever_its_case() {
        let headers = vec![(
            "TraceParent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )];
        let cx = context_of(&headers).expect("a valid context");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context_of(&[("traceparent".to_owned(), "garbage".to_owned())]).is_none());
        assert!(context_of(&[]).is_none());
    }

    #[test]
    fn with_nothing_recording_a_job_passes_on_the_context_it_inherited() {
        let mut job = Envelope::new("t", "{}");
        job.headers = vec![
            ("tenant".to_owned(), "a".to_owned()),
            (
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ),
        ];
        // No OpenTelemetry layer in unit tests: the span has no context.
        let headers = headers_for_children(&Span::none(), &job);
        assert_eq!(headers, vec![job.headers[1].clone()]);
    }
}
