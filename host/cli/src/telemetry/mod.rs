//! Logs, traces and metrics out of the `xylem` process.
//!
//! Logs go to stderr, filtered by `XYLEM_LOG`. Traces and metrics leave
//! by OTLP when the standard OpenTelemetry variables ask for it — an
//! endpoint set (`OTEL_EXPORTER_OTLP_ENDPOINT`, or a signal's own
//! `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`) — and honour the rest
//! of them (protocol, headers, timeout, compression, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true`
//! or `OTEL_{TRACES,METRICS}_EXPORTER=none` turn a signal off). `xylem
//! worker --metrics ADDR` serves the same instruments to Prometheus
//! ([`prometheus`]). What is recorded is the core's business
//! (`xylem_core::telemetry`).

pub(crate) mod prometheus;

use anyhow::{Context as _, bail};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where `xylem_core` makes its spans.
const JOB_SPANS: &str = "xylem_core::telemetry";

/// The spans exported, by the `tracing` filter syntax of `XYLEM_LOG`:
/// Xylem's own at `info` (enqueue, reserve, execute, workflow steps),
/// store calls at `debug` (`XYLEM_TRACES=info,xylem_core=debug` to add
/// them).
const DEFAULT_TRACES: &str = "warn,xylem=info";

/// What the process exports; flushed and stopped by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    prometheus: Option<prometheus::Registry>,
    otlp_metrics: bool,
}

impl Telemetry {
    /// The Prometheus registry, if one was asked for.
    pub(crate) fn prometheus(&self) -> Option<prometheus::Registry> {
        self.prometheus.clone()
    }

    /// Whether anything collects this process's metrics.
    pub(crate) fn collects_metrics(&self) -> bool {
        self.otlp_metrics || self.prometheus.is_some()
    }

    /// Sends what is buffered and stops the exporters.
    pub(crate) fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("warning: cannot flush traces: {e}");
        }
        if let Some(meter) = self.meter
            && let Err(e) = meter.shutdown()
        {
            eprintln!("warning: cannot flush metrics: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn signal_on(exporter_var: &str, endpoint_var: &str) -> bool {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let off = env(exporter_var).is_some_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && !off
        && (env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || env(endpoint_var).is_some())
}

/// The signal's OTLP protocol (`http/protobuf` unless the variables say
/// otherwise, as the specification has it); refuses what this build
/// cannot export to, with the way out.
fn transport(signal: &str) -> anyhow::Result<Protocol> {
    let upper = signal.to_uppercase();
    let protocol = env(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let protocol = match protocol.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(p) => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={p}: xylem exports OTLP over HTTP (`http/protobuf`, the default, or `http/json`); point it at the collector's HTTP port (4318)"
        ),
    };
    let endpoint = env(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if let Some(e) = endpoint
        && e.starts_with("https:")
    {
        bail!(
            "{e}: xylem exports OTLP over plain HTTP only; run an OpenTelemetry Collector beside it (http://127.0.0.1:4318) and let it forward over TLS"
        );
    }
    Ok(protocol)
}

fn resource(command: &str) -> Resource {
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("process.pid", i64::from(std::process::id())),
        KeyValue::new("xylem.command", command.to_owned()),
    ]);
    // The variables win; without them, the service is `xylem`.
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        builder = builder.with_service_name("xylem");
    }
    builder.build()
}

/// Sets up logging and, as the environment asks, OpenTelemetry export;
/// `prometheus` adds the registry `xylem worker --metrics` serves.
/// `command` names the process in its resource (`xylem.command`).
pub(crate) fn init(
    default_level: &str,
    command: &str,
    prometheus: bool,
) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::EnvFilter::try_from_env("XYLEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // The job spans stay out of the logs (formatting their fields for
    // every job would cost more than the job's own bookkeeping; the log
    // lines of a job's path name its id): `XYLEM_LOG_SPANS=1` puts them in.
    let with_spans = env("XYLEM_LOG_SPANS").is_some_and(|v| v != "0");
    let no_job_spans = tracing_subscriber::filter::filter_fn(move |meta| {
        with_spans || !(meta.is_span() && meta.target().starts_with(JOB_SPANS))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(logs.and(no_job_spans));

    let mut telemetry = Telemetry::default();
    let resource = resource(command);
    let otel_layer = if signal_on("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        let protocol = transport("traces")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
            .context("cannot set up the OTLP trace exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.clone())
            .build();
        let tracer = provider.tracer("xylem");
        telemetry.tracer = Some(provider);
        let filter = tracing_subscriber::EnvFilter::try_from_env("XYLEM_TRACES")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_TRACES));
        Some(
            // Only what a trace needs: every poll of a running job enters
            // its span, and busy/idle timing, context activation and
            // per-span thread and source attributes cost on each (the
            // trace context is passed explicitly, `xylem_core::telemetry`).
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_filter(filter),
        )
    } else {
        None
    };

    telemetry.otlp_metrics = signal_on(
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    );
    if telemetry.otlp_metrics || prometheus {
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        if telemetry.otlp_metrics {
            let protocol = transport("metrics")?;
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .build()
                .context("cannot set up the OTLP metric exporter")?;
            builder = builder.with_periodic_exporter(exporter);
        }
        if prometheus {
            let registry = prometheus::Registry::new();
            builder = builder.with_reader(registry.reader());
            telemetry.prometheus = Some(registry);
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        telemetry.meter = Some(provider);
        xylem_core::telemetry::metrics::register();
    }

    tracing_subscriber::registry()
        .with(fmt)
        .with(otel_layer)
        .try_init()
        .context("cannot set up logging")?;
    Ok(telemetry)
}
