//! The test process's tracing subscriber: a layer that checks that every event carrying a job `id` is
//! logged inside that job's own `execute` span (`messaging.message.id`) (the worker's spans are
//! attached with `Instrument`; a span entered across an `.await` would
//! leak into other jobs' lines — and panicked the worker under load).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// The job id a span (`messaging.message.id`) or event (`id`) carries.
struct IdField(&'static str, Option<String>);

impl Visit for IdField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.0 {
            self.1 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.0 {
            self.1 = Some(value.to_owned());
        }
    }
}

/// Counts of what the layer saw.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Events with an `id` checked against their job span.
    pub checked: AtomicU64,
    /// Events whose innermost `job` span had another id.
    pub mismatches: AtomicU64,
}

struct CheckLayer {
    counts: Arc<SpanCounts>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CheckLayer {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "execute" {
            return;
        }
        let mut field = IdField("messaging.message.id", None);
        attrs.record(&mut field);
        if let (Some(span), Some(job)) = (ctx.span(id), field.1) {
            span.extensions_mut().insert(JobId(job));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut field = IdField("id", None);
        event.record(&mut field);
        let Some(id) = field.1 else { return };
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let job = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<JobId>().map(|j| j.0.clone()));
        if let Some(job) = job {
            self.counts.checked.fetch_add(1, Ordering::Relaxed);
            if job != id {
                self.counts.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct JobId(String);

/// Every warning logged in this test process, as text (see [`install`]).
static WARNINGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Where the warning layer writes.
struct WarningSink;

impl std::io::Write for WarningSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        WARNINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs this test process's one global subscriber (once; every test
/// that looks at tracing calls this, since a process has one global
/// subscriber): the span-checking layer, and a layer that keeps every
/// warning for [`warnings`]. Returns the span checker's counts.
pub fn install() -> Arc<SpanCounts> {
    static COUNTS: OnceLock<Arc<SpanCounts>> = OnceLock::new();
    COUNTS
        .get_or_init(|| {
            let counts = Arc::new(SpanCounts::default());
            // Xylem's debug and trace events, and info and above from
            // the rest: enabling every crate's trace events (cranelift's,
            // sqlx's) would slow the whole test process.
            let xylem = Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("xylem_core", LevelFilter::TRACE)
                .with_target("xylem_wasm", LevelFilter::TRACE)
                .with_target("xylem_sqlite", LevelFilter::TRACE)
                .with_target("xylem_redis", LevelFilter::TRACE)
                .with_target("xylem_postgres", LevelFilter::TRACE);
            let layer = CheckLayer {
                counts: counts.clone(),
            }
            .with_filter(xylem);
            let warnings = tracing_subscriber::fmt::layer()
                .with_writer(|| WarningSink)
                .with_ansi(false)
                .with_filter(LevelFilter::WARN);
            tracing_subscriber::registry()
                .with(layer)
                .with(warnings)
                .try_init()
                .expect("no other global subscriber in this test process");
            counts
        })
        .clone()
}

/// The warnings logged in this process since [`install`], as text.
pub fn warnings() -> String {
    String::from_utf8_lossy(&WARNINGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
