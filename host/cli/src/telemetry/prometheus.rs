//! `xylem worker --metrics ADDR`: the process's OpenTelemetry instruments
//! in the Prometheus text format, read at each scrape.
//!
//! A manual reader on the meter provider is collected when Prometheus
//! asks, and rendered here: the `opentelemetry-prometheus` exporter is
//! discontinued upstream, and the text format is small. Names go by
//! OpenTelemetry's Prometheus compatibility rules: dots become
//! underscores, the unit is appended (`_seconds`, `_bytes`), counters end
//! in `_total`.

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The reader Prometheus scrapes; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    reader: Arc<ManualReader>,
}

/// The registry's reader as the meter provider holds it.
#[derive(Debug)]
pub(crate) struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            // Prometheus wants running totals.
            reader: Arc::new(
                ManualReader::builder()
                    .with_temporality(Temporality::Cumulative)
                    .build(),
            ),
        }
    }

    /// The reader to register on the meter provider.
    pub(crate) fn reader(&self) -> SharedReader {
        SharedReader(self.reader.clone())
    }

    /// Every instrument now, in the Prometheus text format (0.0.4).
    pub(crate) fn render(&self) -> anyhow::Result<String> {
        let mut metrics = ResourceMetrics::default();
        self.reader
            .collect(&mut metrics)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot collect metrics")?;
        Ok(render(&metrics))
    }
}

/// The Prometheus name of an OpenTelemetry instrument.
fn prometheus_name(name: &str, unit: &str, counter: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let suffix = match unit {
        "s" => "_seconds",
        "ms" => "_milliseconds",
        "By" => "_bytes",
        _ => "",
    };
    if !out.ends_with(suffix) {
        out.push_str(suffix);
    }
    if counter {
        out.push_str("_total");
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels<'a>(
    attributes: impl Iterator<Item = &'a KeyValue>,
    extra: Option<(&str, &str)>,
) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .map(|kv| {
            let key: String = kv
                .key
                .as_str()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let value = match &kv.value {
                Value::String(s) => s.as_str().to_owned(),
                other => other.to_string(),
            };
            (key, value)
        })
        .collect();
    pairs.sort();
    if let Some((k, v)) = extra {
        pairs.push((k.to_owned(), v.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

trait Number: Copy {
    fn text(self) -> String;
}
impl Number for f64 {
    fn text(self) -> String {
        if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            self.to_string()
        }
    }
}
impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn render_data<T: Number>(
    out: &mut String,
    name: &str,
    unit: &str,
    help: &str,
    data: &MetricData<T>,
) {
    match data {
        MetricData::Gauge(gauge) => {
            let name = prometheus_name(name, unit, false);
            header(out, &name, help, "gauge");
            for point in gauge.data_points() {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels(point.attributes(), None),
                    point.value().text()
                );
            }
        }
        MetricData::Sum(sum) => {
            let counter = sum.is_monotonic();
            let name = prometheus_name(name, unit, counter);
            header(out, &name, help, if counter { "counter" } else { "gauge" });
            for point in sum.data_points() {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels(point.attributes(), None),
                    point.value().text()
                );
            }
        }
        MetricData::Histogram(histogram) => {
            let name = prometheus_name(name, unit, false);
            header(out, &name, help, "histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = point.bounds().collect();
                for (i, count) in point.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| b.text());
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        labels(point.attributes(), Some(("le", &le)))
                    );
                }
                let plain = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}_sum{plain} {}", point.sum().text());
                let _ = writeln!(out, "{name}_count{plain} {}", point.count());
            }
        }
        // Not used by Xylem's instruments (and not in the text format).
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\n', " "));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let (name, unit, help) = (metric.name(), metric.unit(), metric.description());
            match metric.data() {
                AggregatedMetrics::F64(data) => render_data(&mut out, name, unit, help, data),
                AggregatedMetrics::U64(data) => render_data(&mut out, name, unit, help, data),
                AggregatedMetrics::I64(data) => render_data(&mut out, name, unit, help, data),
            }
        }
    }
    out
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves.
pub(crate) async fn serve(
    addr: std::net::SocketAddr,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                match registry.render() {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
                    }
                }
            }
        }),
    );
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics at /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_compatibility_rules() {
        assert_eq!(
            prometheus_name("xylem.jobs.succeeded", "{job}", true),
            "xylem_jobs_succeeded_total"
        );
        assert_eq!(
            prometheus_name("xylem.job.duration", "s", false),
            "xylem_job_duration_seconds"
        );
        assert_eq!(
            prometheus_name("xylem.job.peak_memory", "By", false),
            "xylem_job_peak_memory_bytes"
        );
    }

    #[test]
    fn a_counter_and_a_histogram_render_in_the_text_format() {
        use opentelemetry::metrics::MeterProvider as _;
        let registry = Registry::new();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(registry.reader())
            .build();
        let meter = provider.meter("t");
        let counter = meter
            .u64_counter("t.jobs")
            .with_unit("{job}")
            .with_description("Jobs")
            .build();
        counter.add(2, &[KeyValue::new("task", "a\"b")]);
        let histogram = meter
            .f64_histogram("t.wait")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        histogram.record(0.5, &[]);
        histogram.record(5.0, &[]);
        let text = registry.render().expect("collects");
        assert!(text.contains("# TYPE t_jobs_total counter\n"), "{text}");
        assert!(text.contains("t_jobs_total{task=\"a\\\"b\"} 2\n"), "{text}");
        assert!(
            text.contains("t_wait_seconds_bucket{le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("t_wait_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_wait_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("t_wait_seconds_sum 5.5\n"), "{text}");
        assert!(text.contains("t_wait_seconds_count 2\n"), "{text}");
    }
}
