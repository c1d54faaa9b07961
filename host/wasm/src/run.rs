//! One run of one task: a fresh store and instance, the job's limits, and
//! the translation of whatever happened into an [`Outcome`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::{Store, Trap, UpdateDeadline};
use xylem_core::{
    CancelToken, Failure, FailureKind, HostCalls, Limits, NoHostCalls, Outcome, RunRequest,
    TaskInfo, TaskOptions, TaskSpec, Usage,
};

use crate::bindings::{PluginPre, WitTaskError, WitTaskInfo, WitTaskOptions, WitTaskSpec};
use crate::plugin::Plugin;
use crate::runtime::{LoadError, Runtime};
use crate::state::{JobSetup, JobState, Stop};

/// How often the watchdog looks at deadlines while the guest is inside a
/// host call (where epoch ticks cannot reach it).
const WATCHDOG_PERIOD: Duration = Duration::from_millis(5);

/// Limits for `describe`: it should only build a list.
const DESCRIBE_LIMITS: Limits = Limits {
    hard_time_limit: Duration::from_secs(10),
    soft_time_limit: None,
    fuel: 5_000_000_000,
    max_memory: 64 * 1024 * 1024,
    max_output: 1024 * 1024,
    max_log: 16 * 1024,
    max_log_entries: 1_000,
};

fn new_store(runtime: &Runtime, setup: JobSetup, fuel: u64) -> Store<JobState> {
    let mut store = Store::new(&runtime.inner.engine, JobState::new(setup));
    store.limiter(|state| &mut state.limiter);
    // Fuel is always on in the engine; `set_fuel` cannot fail then.
    let _ = store.set_fuel(fuel);
    // Every epoch tick: stop on cancel or hard deadline, else note the soft
    // deadline and yield to the async runtime, so the watchdog and other
    // jobs get their turn even while the guest spins.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        // Host calls are charged apart from the store's fuel (changing it
        // mid-run would make fuel use depend on when ticks fall); the run
        // stops once the two together pass the budget.
        let left = ctx.get_fuel().unwrap_or(0);
        if ctx.data().host_fuel >= left {
            return Err(wasmtime::Error::new(Stop::FuelExhausted));
        }
        match ctx.data_mut().check_deadlines(Instant::now()) {
            Ok(()) => Ok(UpdateDeadline::Yield(1)),
            Err(stop) => Err(wasmtime::Error::new(stop)),
        }
    });
    store
}

/// Fuel a run used: its instructions plus its host calls, at most the
/// budget. True as the second value if the two together passed it.
fn fuel_used(store: &Store<JobState>, budget: u64) -> (u64, bool) {
    let used = budget
        .saturating_sub(store.get_fuel().unwrap_or(0))
        .saturating_add(store.data().host_fuel);
    (used.min(budget), used > budget)
}

/// Resolves when the run must stop from outside: cancel, or the hard
/// deadline passed while the guest sat in a host call.
async fn watchdog(cancel: CancelToken, hard_deadline: Instant) -> Stop {
    loop {
        if cancel.is_cancelled() {
            return Stop::Cancelled;
        }
        // Leave the epoch callback a moment to stop pure-Wasm code itself.
        if Instant::now() >= hard_deadline + WATCHDOG_PERIOD * 4 {
            return Stop::TimeLimit;
        }
        tokio::time::sleep(WATCHDOG_PERIOD).await;
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn to_wit_info(info: &TaskInfo) -> WitTaskInfo {
    WitTaskInfo {
        id: info.id.clone(),
        name: info.name.clone(),
        queue: info.queue.clone(),
        attempt: info.attempt,
        max_retries: info.max_retries,
        headers: info.headers.clone(),
    }
}

fn from_wit_options(o: WitTaskOptions) -> TaskOptions {
    TaskOptions {
        queue: o.queue,
        priority: o.priority,
        max_retries: o.max_retries,
        retry_backoff_ms: o.retry_backoff_ms,
        retry_backoff_max_ms: o.retry_backoff_max_ms,
        soft_time_limit_ms: o.soft_time_limit_ms,
        hard_time_limit_ms: o.hard_time_limit_ms,
        fuel: o.fuel,
        max_memory_bytes: o.max_memory_bytes,
        rate_limit: o.rate_limit,
        retry_jitter: o.retry_jitter,
        visibility_timeout_ms: o.visibility_timeout_ms,
        expires_ms: o.expires_ms,
        unique_for_ms: o.unique_for_ms,
        ignore_result: o.ignore_result,
    }
}

fn from_wit_spec(spec: WitTaskSpec) -> TaskSpec {
    TaskSpec {
        name: spec.name,
        description: spec.description,
        options: from_wit_options(spec.options),
        args_schema: spec.args_schema,
        // The operator's to set, at push; never the plugin's.
        child_quota: Default::default(),
        concurrency: None,
        rate_limit: None,
    }
}

/// The run failed before or inside the guest call.
enum RunError {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    Stopped(Stop),
}

/// Instantiates and calls the guest under the watchdog.
async fn call_guest<R>(
    runtime: &Runtime,
    store: &mut Store<JobState>,
    pre: &PluginPre<JobState>,
    call: impl AsyncFnOnce(&crate::bindings::Plugin, &mut Store<JobState>) -> wasmtime::Result<R>,
) -> Result<R, RunError> {
    let cancel = store.data().cancel.clone();
    let hard_deadline = store.data().hard_deadline;
    let guest = async {
        let instance = instantiate_when_room(pre, store, &runtime.inner.kept)
            .await
            .map_err(RunError::Instantiate)?;
        call(&instance, store).await.map_err(RunError::Call)
    };
    tokio::select! {
        result = guest => result,
        stop = watchdog(cancel, hard_deadline) => Err(RunError::Stopped(stop)),
    }
}

/// Instantiates the plugin. A full instance pool (every slot, or every
/// core-instance or memory slot, in use by other jobs) means wait for a
/// slot, never a failed attempt: it retries, backing off up to 20 ms,
/// while the job's watchdog (hard time limit, cancellation) still bounds
/// the wait.
async fn instantiate_when_room(
    pre: &PluginPre<JobState>,
    store: &mut Store<JobState>,
    kept: &crate::kept::KeptInstances,
) -> wasmtime::Result<crate::bindings::Plugin> {
    let mut pause = Duration::from_millis(1);
    loop {
        match pre.instantiate_async(&mut *store).await {
            // Parked workflow instances give their slots up first.
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some()
                    && kept.clear() > 0 => {}
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                tracing::debug!("the instance pool is full: waiting for a slot");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            done => return done,
        }
    }
}

/// Asks a freshly loaded plugin which tasks it implements.
pub(crate) async fn describe(
    runtime: &Runtime,
    pre: &PluginPre<JobState>,
) -> Result<Vec<TaskSpec>, LoadError> {
    let started = Instant::now();
    let setup = JobSetup {
        info: TaskInfo::new("describe", "describe"),
        host: Arc::new(NoHostCalls),
        cancel: CancelToken::new(),
        started,
        hard_deadline: started + DESCRIBE_LIMITS.hard_time_limit,
        soft_deadline: None,
        max_memory: DESCRIBE_LIMITS.max_memory,
        max_log: DESCRIBE_LIMITS.max_log,
        max_log_entries: DESCRIBE_LIMITS.max_log_entries,
        insecure_seed: 0,
    };
    let mut store = new_store(runtime, setup, DESCRIBE_LIMITS.fuel);
    let specs = call_guest(runtime, &mut store, pre, async |plugin, store| {
        plugin.xylem_task_handler().call_describe(store).await
    })
    .await
    .map_err(|e| {
        let failure = classify_error(e, &store, &DESCRIBE_LIMITS);
        LoadError::Describe(failure.to_string())
    })?;
    if specs.is_empty() {
        return Err(LoadError::Describe("it declares no tasks".to_owned()));
    }
    let mut seen = std::collections::HashSet::new();
    for spec in &specs {
        // A task no enqueue could ever name, or whose schema no argument
        // could be checked against, is refused now rather than at enqueue.
        xylem_core::client::validate_task_name(&spec.name)
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        if let Some(queue) = &spec.options.queue {
            xylem_core::client::validate_queue_name(queue)
                .map_err(|e| LoadError::Describe(format!("task `{}` declares {e}", spec.name)))?;
        }
        if !seen.insert(spec.name.clone()) {
            return Err(LoadError::Describe(format!(
                "task `{}` is declared twice",
                spec.name
            )));
        }
    }
    Ok(specs.into_iter().map(from_wit_spec).collect())
}

/// Runs one job of `plugin` in a fresh store.
pub(crate) async fn run_task(
    plugin: &Plugin,
    request: RunRequest,
    host: Arc<dyn HostCalls>,
) -> Outcome {
    let started = Instant::now();
    if plugin.task(&request.info.name).is_none() {
        let message = format!(
            "unknown task `{}`: this plugin provides {}",
            request.info.name,
            plugin.task_names()
        );
        return Outcome::failure(
            Failure::new(FailureKind::UnknownTask, message),
            Usage::default(),
        );
    }
    // Checked at enqueue too; checked here as well for jobs enqueued
    // before their task declared a schema, or past the client.
    let valid = match serde_json::from_str::<serde::de::IgnoredAny>(&request.args) {
        Err(e) => Err(format!("arguments are not valid JSON: {e}")),
        Ok(_) => plugin.check_args(&request.info.name, &request.args),
    };
    if let Err(message) = valid {
        return Outcome::failure(
            Failure::new(FailureKind::InvalidArgs, message),
            Usage::default(),
        );
    }

    let limits = request.limits;
    let setup = JobSetup {
        info: request.info.clone(),
        host,
        cancel: request.cancel.clone(),
        started,
        hard_deadline: started + limits.hard_time_limit,
        soft_deadline: limits.soft_time_limit.map(|soft| started + soft),
        max_memory: limits.max_memory,
        max_log: limits.max_log,
        max_log_entries: limits.max_log_entries,
        insecure_seed: seed_for(&request.info.name, &request.args),
    };
    let mut store = new_store(&plugin.inner.runtime, setup, limits.fuel);
    let info = to_wit_info(&request.info);
    let args = request.args;
    let result = call_guest(
        &plugin.inner.runtime,
        &mut store,
        &plugin.inner.pre,
        async |plugin, store| {
            plugin
                .xylem_task_handler()
                .call_run(store, &info, &args)
                .await
        },
    )
    .await;

    // For a run stopped from outside (time limit, cancel) this is a lower
    // bound: compiled code keeps its fuel counter in a register and does
    // not write it back when the epoch callback aborts it.
    let (fuel, over_budget) = fuel_used(&store, limits.fuel);
    let usage = Usage {
        fuel,
        wall_time_us: elapsed_us(started),
        peak_memory: store.data().limiter.peak(),
    };
    // A run whose host calls took it past its budget between two ticks
    // ends as if the last tick had caught it.
    let result = match result {
        Ok(_) if over_budget => Err(RunError::Stopped(Stop::FuelExhausted)),
        other => other,
    };
    let mut outcome = match result {
        Ok(Ok(json)) => match parse_result(&json, &limits) {
            Ok(value) => Outcome::success(value, usage),
            Err(failure) => Outcome::failure(failure, usage),
        },
        Ok(Err(task_error)) => Outcome::failure(task_failure(task_error), usage),
        Err(e) => Outcome::failure(classify_error(e, &store, &limits), usage),
    };
    let state = store.data_mut();
    state.note_soft_deadline(Instant::now());
    outcome.soft_limit_reached = state.soft_limit_reached;
    outcome.progress = state.progress.take();
    (outcome.log, outcome.log_truncated) = state.log.finish();
    outcome
}

/// A seed that depends only on the task and its arguments.
fn seed_for(task: &str, args: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::new()
        .chain_update(task.as_bytes())
        .chain_update([0])
        .chain_update(args.as_bytes())
        .finalize();
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(seed)
}

fn parse_result(json: &str, limits: &Limits) -> Result<Value, Failure> {
    if json.len() as u64 > limits.max_output {
        return Err(Failure::new(
            FailureKind::BadOutput,
            format!(
                "the result is {} bytes, over the output limit of {} bytes",
                json.len(),
                limits.max_output
            ),
        ));
    }
    serde_json::from_str(json).map_err(|e| {
        Failure::new(
            FailureKind::BadOutput,
            format!("the result is not valid JSON: {e}"),
        )
    })
}

fn task_failure(error: WitTaskError) -> Failure {
    match error {
        WitTaskError::Fail(reason) => Failure::new(FailureKind::PluginError, reason),
        WitTaskError::Reject(reason) => Failure::new(FailureKind::Rejected, reason),
        WitTaskError::Retry(request) => Failure {
            kind: FailureKind::RetryRequested,
            message: request.reason,
            retry_delay_ms: request.delay_ms,
        },
    }
}

fn classify_error(error: RunError, store: &Store<JobState>, limits: &Limits) -> Failure {
    let time_limit = || {
        Failure::new(
            FailureKind::TimeLimitExceeded,
            format!(
                "stopped after its hard time limit of {}",
                humantime_ms(limits.hard_time_limit)
            ),
        )
    };
    let cancelled = || Failure::new(FailureKind::Cancelled, "cancelled while running");
    let out_of_fuel = || {
        Failure::new(
            FailureKind::FuelExhausted,
            format!("used up its fuel budget of {}", limits.fuel),
        )
    };
    let (error, instantiating) = match error {
        RunError::Stopped(Stop::TimeLimit) => return time_limit(),
        RunError::Stopped(Stop::Cancelled) => return cancelled(),
        RunError::Stopped(Stop::FuelExhausted) => return out_of_fuel(),
        RunError::Instantiate(e) => (e, true),
        RunError::Call(e) => (e, false),
    };
    match error.downcast_ref::<Stop>() {
        Some(Stop::TimeLimit) => return time_limit(),
        Some(Stop::Cancelled) => return cancelled(),
        Some(Stop::FuelExhausted) => return out_of_fuel(),
        None => {}
    }
    let state = store.data();
    if let Some(wanted) = state.limiter.denied() {
        return Failure::new(
            FailureKind::MemoryLimitExceeded,
            format!(
                "tried to grow memory to {wanted} bytes, over its limit of {} bytes",
                limits.max_memory
            ),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => out_of_fuel(),
        Some(Trap::StackOverflow) => Failure::new(
            FailureKind::Trap,
            "wasm trap: call stack exhausted (stack overflow)",
        ),
        Some(trap) => {
            let mut message = trap.to_string();
            if let Some(panic) = state.log.panic_message() {
                message = format!("{message} ({})", panic.trim());
            }
            Failure::new(FailureKind::Trap, message)
        }
        None if instantiating => Failure::new(
            FailureKind::PluginLoad,
            format!("cannot instantiate the plugin: {error:#}"),
        ),
        None => Failure::new(FailureKind::Trap, format!("{error:#}")),
    }
}

fn humantime_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
