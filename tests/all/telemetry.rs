//! OpenTelemetry out of real `xylem` processes: an OTLP receiver in the
//! test (HTTP, decoded with `opentelemetry-proto`) gets the producer's and
//! the worker's spans and the worker's metrics, and `xylem worker
//! --metrics` answers a Prometheus scrape.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, metric, number_data_point};
use prost::Message as _;
use xylem_tests::cli_env::Env;

use crate::api::WorkerGuard;

/// What the receiver got.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
}

/// An OTLP/HTTP receiver on a free port: its base URL and what it got.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    use axum::body::Bytes;
    use axum::routing::post;
    let got = Arc::new(Mutex::new(Received::default()));
    let (traces, metrics) = (got.clone(), got.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP traces");
                traces.lock().unwrap().traces.push(request);
                ""
            }),
        )
        .route(
            "/v1/metrics",
            post(move |body: Bytes| async move {
                let request = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics");
                metrics.lock().unwrap().metrics.push(request);
                ""
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, got)
}

/// A span as the receiver got it, with its process.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    pid: i64,
    attributes: HashMap<String, String>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn spans(got: &Mutex<Received>) -> Vec<Span> {
    let got = got.lock().unwrap();
    let mut out = Vec::new();
    for request in &got.traces {
        for resource_spans in &request.resource_spans {
            let resource = attributes(
                &resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            );
            let pid = resource["process.pid"].parse().unwrap();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    out.push(Span {
                        trace: hex(&span.trace_id),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        pid,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sum's or gauge's point: its attributes and value.
fn number(p: &NumberDataPoint) -> (HashMap<String, String>, f64) {
    let v = match p.value {
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        Some(number_data_point::Value::AsDouble(d)) => d,
        None => 0.0,
    };
    (attributes(&p.attributes), v)
}

/// The latest value of each cumulative counter and the latest count of
/// each histogram, by metric name and `task` attribute.
fn metric_values(got: &Mutex<Received>) -> HashMap<(String, String), f64> {
    let got = got.lock().unwrap();
    let mut out = HashMap::new();
    for request in &got.metrics {
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for m in &scope.metrics {
                    let points: Vec<(HashMap<String, String>, f64)> = match &m.data {
                        Some(metric::Data::Sum(sum)) => {
                            sum.data_points.iter().map(number).collect()
                        }
                        Some(metric::Data::Gauge(gauge)) => {
                            gauge.data_points.iter().map(number).collect()
                        }
                        Some(metric::Data::Histogram(h)) => h
                            .data_points
                            .iter()
                            .map(|p| (attributes(&p.attributes), p.count as f64))
                            .collect(),
                        _ => Vec::new(),
                    };
                    // Several points per task (by outcome, by queue
                    // state): summed, per export; the last export wins.
                    let mut this_export: HashMap<(String, String), f64> = HashMap::new();
                    for (attrs, v) in points {
                        let key = attrs
                            .get("task")
                            .or_else(|| attrs.get("queue"))
                            .cloned()
                            .unwrap_or_default();
                        *this_export.entry((m.name.clone(), key)).or_default() += v;
                    }
                    out.extend(this_export);
                }
            }
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(started.elapsed() < timeout, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn one_trace_follows_a_job_from_its_producer_through_its_retry_into_its_child() {
    let (otlp, got) = receiver().await;
    let env = Env::new();
    for plugin in ["hello", "order", "order-workflow"] {
        env.push(plugin);
    }
    let otel = |cmd: &mut std::process::Command, service: &str| {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_SERVICE_NAME", service)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500");
    };
    let metrics_port = free_port();
    let mut cmd = env.command();
    otel(&mut cmd, "test-worker");
    let log = std::fs::File::create(env.dir.join("worker.log")).unwrap();
    let mut worker = WorkerGuard(
        // A queue named: its depth is reported even while it is empty.
        cmd.args([
            "worker", "--name", "traced", "--grace", "5s", "--queue", "default",
        ])
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    );

    // The producer: its own process, exporting its own spans.
    let mut cmd = env.command();
    otel(&mut cmd, "test-producer");
    let out = cmd
        .args(["enqueue", "hello.flaky", "--backoff", "100ms"])
        .args(["--args", r#"{"fail_times":1,"then_greet":"Ada"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let producer_pid = {
        // The producer has exited: its spans were flushed on the way out.
        let s = spans(&got);
        let enqueue = s
            .iter()
            .find(|s| s.name == "enqueue hello.flaky")
            .unwrap_or_else(|| {
                panic!("the producer's enqueue span arrived before it exited: {s:#?}")
            });
        assert_eq!(enqueue.attributes["messaging.message.id"], job);
        enqueue.pid
    };
    let done = env.wait_succeeded(2, Duration::from_secs(60)).await;
    assert!(done.iter().any(|r| r.task == "hello.greet"), "{done:#?}");

    // Every span of the job, its retry and its child, in one trace.
    let wanted = [
        "enqueue hello.flaky",
        "execute hello.flaky",
        "enqueue hello.greet",
        "execute hello.greet",
    ];
    let all = until("every span arrives", Duration::from_secs(30), || {
        let s = spans(&got);
        let executes = s.iter().filter(|s| s.name == "execute hello.flaky").count();
        (executes == 2 && wanted.iter().all(|w| s.iter().any(|s| s.name == *w))).then_some(s)
    })
    .await;
    let enqueue = all
        .iter()
        .find(|s| s.name == "enqueue hello.flaky")
        .unwrap();
    let trace = &enqueue.trace;
    let in_trace: Vec<&Span> = all.iter().filter(|s| &s.trace == trace).collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    for w in wanted {
        assert!(
            names.contains(&w),
            "{w} is not in the producer's trace: {names:?}"
        );
    }
    let worker_pid = i64::from(worker.0.id());
    assert_ne!(producer_pid, worker_pid);
    let attempts: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.name == "execute hello.flaky")
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "both attempts are in the trace: {in_trace:#?}"
    );
    for attempt in &attempts {
        assert_eq!(attempt.pid, worker_pid);
        assert_eq!(
            attempt.parent, enqueue.id,
            "an attempt is a child of the producer's enqueue"
        );
        assert_eq!(attempt.attributes["messaging.message.id"], job);
        assert_eq!(attempt.attributes["xylem.task"], "hello.flaky");
        assert!(
            attempt.attributes["xylem.plugin"].len() == 64,
            "{attempt:?}"
        );
        assert!(
            attempt.attributes["xylem.fuel"].parse::<u64>().unwrap() > 0,
            "{attempt:?}"
        );
        assert!(
            attempt.attributes["xylem.peak_memory_bytes"]
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
    let outcomes: HashSet<(&str, &str)> = attempts
        .iter()
        .map(|s| {
            (
                s.attributes["xylem.attempt"].as_str(),
                s.attributes["xylem.outcome"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        HashSet::from([("1", "retrying"), ("2", "succeeded")])
    );
    let second = attempts
        .iter()
        .find(|s| s.attributes["xylem.attempt"] == "2")
        .unwrap();
    let child_enqueue = in_trace
        .iter()
        .find(|s| s.name == "enqueue hello.greet")
        .unwrap();
    assert_eq!(
        child_enqueue.parent, second.id,
        "the child is enqueued in its parent's run"
    );
    let child = in_trace
        .iter()
        .find(|s| s.name == "execute hello.greet")
        .unwrap();
    assert_eq!(child.parent, child_enqueue.id);
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == "reserve" && s.parent == second.id),
        "the reserve step is in the run's span: {in_trace:#?}"
    );

    // Lineage: the child's record names its parent, and the parent's
    // children are listed by that header.
    let store = env.store().await;
    let children = xylem_core::store::ResultBackend::list(
        &store,
        &xylem_core::TaskFilter {
            header: Some(("xylem-parent".to_owned(), job.clone())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tasks: Vec<&str> = children.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(tasks, ["hello.greet"], "{children:#?}");

    // A canvas from the command line: every job of it in its trace.
    let mut cmd = env.command();
    otel(&mut cmd, "test-producer");
    let out = cmd
        .args(["chain", r#"hello.greet:{"name":"Chain"}"#, "hello.echo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("the canvas's spans arrive", Duration::from_secs(30), || {
        let s = spans(&got);
        let start = s.iter().find(|s| s.name == "enqueue canvas")?;
        let in_it = |name: &str| s.iter().any(|x| x.name == name && x.trace == start.trace);
        (in_it("execute hello.greet") && in_it("execute hello.echo")).then_some(())
    })
    .await;

    // A workflow run: its steps and activities in the trace it was
    // started in.
    let mut cmd = env.command();
    otel(&mut cmd, "test-producer");
    let out = cmd
        .args(["workflow", "start", "order.express", "--wait"])
        .args(["--input", r#"{"id":"T-1","amount_cents":100}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let activities = [
        "execute order.validate",
        "execute order.charge",
        "execute order.ship",
    ];
    let all = until(
        "the workflow's spans arrive",
        Duration::from_secs(30),
        || {
            let s = spans(&got);
            let start = s
                .iter()
                .find(|s| s.name == "start workflow order.express")?
                .clone();
            let in_run = |name: &str| s.iter().any(|x| x.name == name && x.trace == start.trace);
            activities.iter().all(|a| in_run(a)).then_some(s)
        },
    )
    .await;
    let start = all
        .iter()
        .find(|s| s.name == "start workflow order.express")
        .unwrap();
    assert!(
        all.iter().any(|s| s.name == "step workflow order.express"
            && s.trace == start.trace
            && s.parent == start.id
            && s.pid == worker_pid),
        "the worker's steps are children of the start"
    );

    // Metrics: by OTLP...
    let expected = [
        (("xylem.jobs.started", "hello.flaky"), 2.0),
        // The child and the chain's first step.
        (("xylem.jobs.started", "hello.greet"), 2.0),
        (("xylem.jobs.succeeded", "hello.flaky"), 1.0),
        (("xylem.jobs.succeeded", "hello.greet"), 2.0),
        (("xylem.jobs.retried", "hello.flaky"), 1.0),
        (("xylem.jobs.failed", "hello.flaky"), 1.0),
        (("xylem.jobs.enqueued", "hello.greet"), 1.0),
        (("xylem.job.duration", "hello.flaky"), 2.0),
        (("xylem.job.queue_wait", "hello.flaky"), 2.0),
        (("xylem.job.fuel", "hello.greet"), 2.0),
        (("xylem.job.peak_memory", "hello.greet"), 2.0),
        // The chain's second step, enqueued by the worker as the first ended.
        (("xylem.jobs.enqueued", "hello.echo"), 1.0),
    ];
    let values = until("the metrics arrive", Duration::from_secs(30), || {
        let values = metric_values(&got);
        expected
            .iter()
            .all(|((name, task), n)| {
                values.get(&((*name).to_owned(), (*task).to_owned())) == Some(n)
            })
            // The worker reads the depths at its beat (every 5 s).
            .then_some(values)
            .filter(|v| v.contains_key(&("xylem.queue.depth".to_owned(), "default".to_owned())))
    })
    .await;
    assert!(
        !values.keys().any(|(name, _)| name == "xylem.jobs.dead"),
        "nothing died: {values:#?}"
    );

    // ...and by a Prometheus scrape of the worker.
    let scrape = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert!(scrape.status().is_success());
    let body = scrape.text().await.unwrap();
    for line in [
        "# TYPE xylem_jobs_started_total counter",
        "xylem_jobs_succeeded_total{queue=\"default\",task=\"hello.flaky\"} 1",
        "xylem_jobs_retried_total{queue=\"default\",task=\"hello.flaky\"} 1",
        "# TYPE xylem_job_duration_seconds histogram",
        "xylem_job_duration_seconds_count{outcome=\"succeeded\",queue=\"default\",task=\"hello.greet\"} 2",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} is not in the scrape:\n{body}"
        );
    }

    // The worker stops cleanly, flushing on its way out.
    #[cfg(unix)]
    {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &worker.0.id().to_string()])
            .status();
        let status = worker.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn an_exporter_this_build_cannot_reach_is_refused_with_the_way_out() {
    let env = Env::new();
    for (var, value, says) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "4318"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://otlp.example.com",
            "Collector",
        ),
    ] {
        let mut cmd = env.command();
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1");
        let out = cmd.env(var, value).args(["queues"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} is refused");
        assert!(stderr.contains(says), "{var}={value}: {stderr}");
    }
}
