//! The job metrics, recorded through the OpenTelemetry metrics API on the
//! global meter provider (`xylem` meter). The binary decides where they
//! go (OTLP, `xylem worker --metrics`); with no provider installed every
//! instrument is a no-op.
//!
//! Names follow OpenTelemetry's conventions; a Prometheus rendering adds
//! the unit and `_total` (`xylem.jobs.succeeded` → `xylem_jobs_succeeded_total`,
//! `xylem.job.duration` → `xylem_job_duration_seconds`). `docs/observability.md`
//! lists them all.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use crate::store::QueueStats;

/// The instrumentation scope every Xylem instrument is under.
pub const METER: &str = "xylem";

/// How a finished attempt is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// It succeeded.
    Succeeded,
    /// It failed and will run again.
    Retried,
    /// It failed for the last time: dead-lettered.
    Dead,
    /// It was cancelled.
    Cancelled,
}

impl Finished {
    /// The `outcome` attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }
}

struct Instruments {
    enqueued: Counter<u64>,
    started: Counter<u64>,
    succeeded: Counter<u64>,
    failed: Counter<u64>,
    retried: Counter<u64>,
    dead: Counter<u64>,
    cancelled: Counter<u64>,
    duration: Histogram<f64>,
    queue_wait: Histogram<f64>,
    fuel: Histogram<u64>,
    peak_memory: Histogram<u64>,
}

/// Seconds, from 100 µs to 5 min: a job's time and its wait.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Fuel (about one unit per Wasm instruction): 1 k to the default
/// budget's 50 G.
const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 5e10];

/// Bytes of linear memory: 64 KiB (one page) to 4 GiB.
const BYTES: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

/// The queue depths last read by a worker, for the `xylem.queue.depth`
/// gauge (read at each collection; refreshed by [`set_queue_depths`]).
static QUEUE_DEPTHS: Mutex<Vec<QueueStats>> = Mutex::new(Vec::new());

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| build(&opentelemetry::global::meter(METER)))
}

fn build(meter: &Meter) -> Instruments {
    let jobs = |name: &'static str, what: &'static str| {
        meter
            .u64_counter(name)
            .with_unit("{job}")
            .with_description(what)
            .build()
    };
    meter
        .u64_observable_gauge("xylem.queue.depth")
        .with_unit("{job}")
        .with_description(
            "Jobs in a queue by state (ready, delayed, running, dead), as a worker last read them",
        )
        .with_callback(|gauge| {
            let depths = QUEUE_DEPTHS.lock().unwrap_or_else(|e| e.into_inner());
            for q in depths.iter() {
                for (state, n) in [
                    ("ready", q.ready),
                    ("delayed", q.delayed),
                    ("running", q.running),
                    ("dead", q.dead),
                ] {
                    gauge.observe(
                        n,
                        &[
                            KeyValue::new("queue", q.queue.clone()),
                            KeyValue::new("state", state),
                        ],
                    );
                }
            }
        })
        .build();
    Instruments {
        enqueued: jobs("xylem.jobs.enqueued", "Jobs enqueued by this process"),
        started: jobs("xylem.jobs.started", "Attempts started"),
        succeeded: jobs("xylem.jobs.succeeded", "Attempts that succeeded"),
        failed: jobs("xylem.jobs.failed", "Attempts that failed (retried + dead)"),
        retried: jobs(
            "xylem.jobs.retried",
            "Attempts that failed and will be retried",
        ),
        dead: jobs(
            "xylem.jobs.dead",
            "Attempts that failed for the last time: the job was dead-lettered",
        ),
        cancelled: jobs("xylem.jobs.cancelled", "Attempts cancelled"),
        duration: meter
            .f64_histogram("xylem.job.duration")
            .with_unit("s")
            .with_description("An attempt's run time in its sandbox")
            .with_boundaries(SECONDS.to_vec())
            .build(),
        queue_wait: meter
            .f64_histogram("xylem.job.queue_wait")
            .with_unit("s")
            .with_description("From when an attempt could run (enqueued, or due) to its start")
            .with_boundaries(SECONDS.to_vec())
            .build(),
        fuel: meter
            .u64_histogram("xylem.job.fuel")
            .with_unit("{fuel}")
            .with_description("Fuel an attempt used")
            .with_boundaries(FUEL.to_vec())
            .build(),
        peak_memory: meter
            .u64_histogram("xylem.job.peak_memory")
            .with_unit("By")
            .with_description("An attempt's peak linear memory")
            .with_boundaries(BYTES.to_vec())
            .build(),
    }
}

fn task_queue(task: &str, queue: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("task", task.to_owned()),
        KeyValue::new("queue", queue.to_owned()),
    ]
}

/// Jobs enqueued.
pub fn enqueued(task: &str, queue: &str, n: u64) {
    instruments().enqueued.add(n, &task_queue(task, queue));
}

/// An attempt starts, `waited` after it could have.
pub fn started(task: &str, queue: &str, waited: Duration) {
    let m = instruments();
    let attrs = task_queue(task, queue);
    m.started.add(1, &attrs);
    m.queue_wait.record(waited.as_secs_f64(), &attrs);
}

/// An attempt ended as `how` (its outcome written), with its usage if it
/// ran.
pub fn finished(task: &str, queue: &str, how: Finished, usage: Option<&crate::Usage>) {
    let m = instruments();
    let attrs = task_queue(task, queue);
    let counter = match how {
        Finished::Succeeded => &m.succeeded,
        Finished::Retried => &m.retried,
        Finished::Dead => &m.dead,
        Finished::Cancelled => &m.cancelled,
    };
    counter.add(1, &attrs);
    if matches!(how, Finished::Retried | Finished::Dead) {
        m.failed.add(1, &attrs);
    }
    if let Some(usage) = usage {
        let [task, queue] = attrs;
        let with_outcome = [task.clone(), queue, KeyValue::new("outcome", how.as_str())];
        m.duration
            .record(usage.wall_time().as_secs_f64(), &with_outcome);
        let task = [task];
        m.fuel.record(usage.fuel, &task);
        m.peak_memory.record(usage.peak_memory, &task);
    }
}

/// Replaces the queue depths the `xylem.queue.depth` gauge reports. A
/// queue reported before and gone now (its last job done) stays, at 0:
/// its series drops to zero instead of ending at its last depth.
pub fn set_queue_depths(mut depths: Vec<QueueStats>) {
    let mut shown = QUEUE_DEPTHS.lock().unwrap_or_else(|e| e.into_inner());
    for before in shown.iter() {
        if !depths.iter().any(|q| q.queue == before.queue) {
            depths.push(QueueStats {
                queue: before.queue.clone(),
                ..QueueStats::default()
            });
        }
    }
    *shown = depths;
}

/// Creates the instruments now, on the global meter provider as it is:
/// call it once the provider is set, so the queue-depth gauge is there
/// before the first job.
pub fn register() {
    let _ = instruments();
}
