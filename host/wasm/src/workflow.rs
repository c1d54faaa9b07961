//! Workflow plugins: components of world `xylem:workflow/workflow-plugin`
//! (`wit/workflow/workflow.wit`). [`Runtime::load_workflow`] compiles,
//! checks and describes one; [`WorkflowPlugin::code`] gives the engine
//! (`xylem_core::workflow::Engine`) what runs a step: every
//! `workflow-host` call answered by the step's [`Replayer`], under a fuel,
//! memory and time budget (`WorkflowStepLimits`). A step that ends
//! waiting parks its instance in the call it waits on, and the run's next
//! step here goes on from there (`kept.rs`); otherwise a new instance
//! replays the run from the top. Any other interrupt traps out of the
//! guest.
//!
//! Determinism: WASI reaches a workflow only with the run's own values —
//! the wall clock reads the run's start, the monotonic clock counts reads,
//! random numbers come from a generator seeded by the run's id — and no
//! file, socket or environment. So code that reads `SystemTime::now()` or
//! draws a random number directly gets the same answer on every replay;
//! `now` and `random` are the calls for values that must move.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};
use xylem_core::workflow::{ActivityOptions, Call, Interrupt, Replayer, StepEnd, WorkflowCode};

use crate::kept::{Kept, Link, Parked, Ran, Running, Stop};
use crate::limiter::MemoryLimiter;
use crate::runtime::{LoadError, Runtime};

mod bindings {
    wasmtime::component::bindgen!({
        world: "workflow-plugin",
        path: "../../wit/workflow",
        // Async: a call that must wait parks the instance in it (`kept.rs`).
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::xylem::workflow::types as wit;
use bindings::{WorkflowPlugin as World, WorkflowPluginPre};

/// The world a workflow plugin must be a component of.
pub const WORKFLOW_WORLD: &str = "xylem:workflow/workflow-plugin@0.1.0";

/// The store data of one step.
pub(crate) struct WorkflowState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    replayer: Option<Replayer>,
    interrupt: Option<Interrupt>,
    deadline: Instant,
    /// A step's time limit (the deadline moves on at each resume).
    step_time: Duration,
    /// To the steps: where a call that must wait parks (`None`: it traps).
    link: Option<Link>,
    /// Lines logged this step: past `MAX_LOG_LINES`, dropped.
    logged: u32,
}

/// Log lines one step may write (the rest are dropped).
const MAX_LOG_LINES: u32 = 1_000;

impl WasiView for WorkflowState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// WASI's wall clock in a workflow: the run's start, always.
struct RunClock(Duration);

impl HostWallClock for RunClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// WASI's monotonic clock in a workflow: a microsecond more at each read,
/// so elapsed-time code moves forward the same way on every replay.
#[derive(Default)]
struct ReadCounter(AtomicU64);

impl HostMonotonicClock for ReadCounter {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

impl WorkflowState {
    fn new(
        limits: crate::WorkflowStepLimits,
        replayer: Option<Replayer>,
        clock: i64,
        seed_from: &str,
        link: Option<Link>,
    ) -> Self {
        let seed: [u8; 32] = Sha256::digest(seed_from.as_bytes()).into();
        let seed_u128 = u128::from_be_bytes(seed[..16].try_into().unwrap_or_default());
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(RunClock(Duration::from_millis(
                u64::try_from(clock).unwrap_or(0),
            )))
            .monotonic_clock(ReadCounter::default())
            .secure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random_seed(seed_u128)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory),
            replayer,
            interrupt: None,
            deadline: Instant::now() + limits.time,
            step_time: limits.time,
            link,
            logged: 0,
        }
    }

    /// Answers a host call through the replayer. A call that must wait
    /// parks the instance here and is asked again of the next step's
    /// replayer; any other interrupt is kept and traps out of the guest.
    async fn replay<T>(
        &mut self,
        mut call: impl FnMut(&mut Replayer) -> Result<T, Interrupt> + Send,
    ) -> wasmtime::Result<T> {
        loop {
            let Some(replayer) = self.replayer.as_mut() else {
                return Err(wasmtime::Error::msg(
                    "describe() may not call the workflow host",
                ));
            };
            let calls = replayer.calls_made();
            let interrupt = match call(replayer) {
                Ok(answer) => return Ok(answer),
                Err(interrupt) => interrupt,
            };
            if interrupt == Interrupt::Suspend
                && let Some(link) = self.link.as_mut()
                && link.may_park(self.limiter.peak())
                && let Some(replayer) = self.replayer.take()
            {
                let parked = Parked {
                    replayer,
                    calls,
                    memory: self.limiter.peak(),
                };
                let Some(next) = link.park(parked).await else {
                    return Err(wasmtime::Error::msg("the kept instance was let go"));
                };
                // A new step: its own time limit and log budget (fuel is
                // not refilled: a replay would spend it again too).
                self.replayer = Some(next);
                self.deadline = Instant::now() + self.step_time;
                self.logged = 0;
                continue;
            }
            let error = wasmtime::Error::msg(interrupt.to_string());
            self.interrupt = Some(interrupt);
            return Err(error);
        }
    }
}

fn options(o: wit::ActivityOptions) -> ActivityOptions {
    ActivityOptions {
        queue: o.queue,
        priority: o.priority,
        max_retries: o.max_retries,
        retry_backoff_ms: o.retry_backoff_ms,
        hard_time_limit_ms: o.hard_time_limit_ms,
        fuel: o.fuel,
        headers: o.headers,
    }
}

fn to_wit(result: Result<String, (String, String)>) -> Result<String, wit::Failure> {
    result.map_err(|(kind, message)| wit::Failure { kind, message })
}

impl wit::Host for WorkflowState {}

impl bindings::xylem::workflow::workflow_host::Host for WorkflowState {
    async fn activity(
        &mut self,
        task: String,
        args: String,
        o: wit::ActivityOptions,
    ) -> wasmtime::Result<Result<String, wit::Failure>> {
        self.replay(|r| r.activity(&task, &args, options(o.clone())))
            .await
            .map(to_wit)
    }

    async fn child_workflow(
        &mut self,
        name: String,
        input: String,
    ) -> wasmtime::Result<Result<String, wit::Failure>> {
        self.replay(|r| r.child(&name, &input)).await.map(to_wit)
    }

    async fn schedule_at(
        &mut self,
        name: String,
        input: String,
        at_ms: u64,
    ) -> wasmtime::Result<Result<String, wit::Failure>> {
        let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
        self.replay(|r| r.schedule_at(&name, &input, at))
            .await
            .map(to_wit)
    }

    async fn stub(
        &mut self,
        name: String,
        args: String,
    ) -> wasmtime::Result<Result<String, wit::Failure>> {
        self.replay(|r| r.stub(&name, &args)).await.map(to_wit)
    }

    async fn join_set(&mut self) -> wasmtime::Result<u32> {
        self.replay(Replayer::join_set).await
    }

    async fn submit_activity(
        &mut self,
        set: u32,
        task: String,
        args: String,
        o: wit::ActivityOptions,
    ) -> wasmtime::Result<u32> {
        let step = Call::Activity {
            task,
            args,
            options: options(o),
        };
        self.replay(|r| r.submit(set, step.clone())).await
    }

    async fn submit_child(
        &mut self,
        set: u32,
        name: String,
        input: String,
    ) -> wasmtime::Result<u32> {
        let step = Call::Child {
            workflow: name,
            input,
        };
        self.replay(|r| r.submit(set, step.clone())).await
    }

    async fn await_next(&mut self, set: u32) -> wasmtime::Result<Option<wit::SetResult>> {
        Ok(self
            .replay(|r| r.await_next(set))
            .await?
            .map(|(step, outcome)| wit::SetResult {
                step,
                outcome: to_wit(outcome),
            }))
    }

    async fn close_set(&mut self, set: u32) -> wasmtime::Result<()> {
        self.replay(|r| r.close_set(set)).await
    }

    async fn sleep(&mut self, ms: u64) -> wasmtime::Result<()> {
        self.replay(|r| r.sleep(ms)).await
    }

    async fn await_event(
        &mut self,
        topic: String,
        timeout_ms: u64,
    ) -> wasmtime::Result<Option<String>> {
        self.replay(|r| r.await_event(&topic, timeout_ms)).await
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        self.replay(|r| r.now().map(|t| u64::try_from(t).unwrap_or(0)))
            .await
    }

    async fn random(&mut self) -> wasmtime::Result<u64> {
        self.replay(Replayer::random).await
    }

    async fn emit(&mut self, topic: String, payload: String) -> wasmtime::Result<()> {
        self.replay(|r| r.emit(&topic, &payload)).await
    }

    async fn set_state(&mut self, state: String) -> wasmtime::Result<()> {
        self.replay(|r| r.set_state(&state)).await
    }

    async fn continue_as_new(&mut self, input: String) -> wasmtime::Result<()> {
        self.replay(|r| r.continue_as_new(&input)).await
    }

    async fn cancelled(&mut self) -> wasmtime::Result<bool> {
        self.replay(Replayer::cancelled).await
    }

    async fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        // Not recorded; a replayed step's lines were logged the first time.
        let Some(replayer) = &self.replayer else {
            return Ok(());
        };
        if replayer.replaying() || self.logged >= MAX_LOG_LINES {
            return Ok(());
        }
        self.logged += 1;
        let run = replayer.run().id.clone();
        let message: String = message.chars().take(8 * 1024).collect();
        match level {
            wit::Level::Error => tracing::error!(%run, "{message}"),
            wit::Level::Warn => tracing::warn!(%run, "{message}"),
            wit::Level::Info => tracing::info!(%run, "{message}"),
            wit::Level::Debug | wit::Level::Trace => tracing::debug!(%run, "{message}"),
        }
        Ok(())
    }
}

/// The linker of workflow plugins: deterministic WASI and the workflow
/// host.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<WorkflowState>, LoadError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
    World::add_to_linker::<_, HasSelf<WorkflowState>>(&mut linker, |state| state)
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// A loaded workflow plugin. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    digest: String,
    pre: WorkflowPluginPre<WorkflowState>,
    workflows: Vec<(String, Option<String>)>,
}

impl std::fmt::Debug for WorkflowPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowPlugin")
            .field("digest", &self.inner.digest)
            .field("workflows", &self.inner.workflows)
            .finish()
    }
}

impl Runtime {
    /// Loads a workflow plugin from component bytes: compiled (or found in
    /// the cache), linked against the `workflow-plugin` world, described.
    pub async fn load_workflow(&self, bytes: &[u8]) -> Result<WorkflowPlugin, LoadError> {
        let digest = crate::cache::digest(bytes);
        let (component, _) = self.compiled(bytes, &digest, None).await?;
        let instance_pre = self
            .inner
            .workflow_linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let pre = WorkflowPluginPre::new(instance_pre)
            .map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let limits = self.inner.workflow_step;
        let mut store = step_store(self, WorkflowState::new(limits, None, 0, &digest, None));
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        let specs = instance
            .xylem_workflow_workflow()
            .call_describe(&mut store)
            .await
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        let mut workflows = Vec::with_capacity(specs.len());
        for spec in specs {
            xylem_core::client::validate_task_name(&spec.name)
                .map_err(|e| LoadError::Describe(format!("workflow `{}`: {e}", spec.name)))?;
            if workflows.iter().any(|(n, _)| *n == spec.name) {
                return Err(LoadError::Describe(format!(
                    "workflow `{}` is declared twice",
                    spec.name
                )));
            }
            workflows.push((spec.name, spec.description));
        }
        if workflows.is_empty() {
            return Err(LoadError::Describe("it declares no workflow".to_owned()));
        }
        Ok(WorkflowPlugin {
            inner: Arc::new(Inner {
                runtime: self.clone(),
                digest,
                pre,
                workflows,
            }),
        })
    }
}

/// A store for one step (or `describe`): memory limiter, fuel, and a time
/// limit checked at each epoch tick.
fn step_store(runtime: &Runtime, state: WorkflowState) -> Store<WorkflowState> {
    let limits = runtime.inner.workflow_step;
    let mut store = Store::new(&runtime.inner.engine, state);
    store.limiter(|state| &mut state.limiter);
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |ctx| {
        if Instant::now() >= ctx.data().deadline {
            return Err(wasmtime::Error::msg(format!(
                "time limit: a step may run {:?} at most",
                limits.time
            )));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Why a step's code stopped, in words: fuel and memory named with their
/// budgets, anything else as wasmtime says it.
fn trap_reason(
    error: &wasmtime::Error,
    state: &WorkflowState,
    limits: crate::WorkflowStepLimits,
) -> String {
    if matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::OutOfFuel)
    ) {
        return format!("fuel exhausted: a step may use {} fuel", limits.fuel);
    }
    if state.limiter.denied().is_some() {
        return format!(
            "memory limit: a step may use {} MiB ({error:#})",
            limits.memory / (1024 * 1024)
        );
    }
    format!("{error:#}")
}

impl WorkflowPlugin {
    /// Its sha256.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The workflows it declares (name, description).
    pub fn workflows(&self) -> &[(String, Option<String>)] {
        &self.inner.workflows
    }

    /// What runs a step of `workflow`, or `None` if it is not declared.
    pub fn code(&self, workflow: &str) -> Option<Arc<dyn WorkflowCode>> {
        self.inner
            .workflows
            .iter()
            .any(|(n, _)| n == workflow)
            .then(|| {
                Arc::new(Code {
                    plugin: self.clone(),
                    workflow: workflow.to_owned(),
                }) as Arc<dyn WorkflowCode>
            })
    }
}

/// One workflow of a plugin, as the engine runs it.
struct Code {
    plugin: WorkflowPlugin,
    workflow: String,
}

#[async_trait]
impl WorkflowCode for Code {
    async fn step(&self, mut replayer: Replayer) -> (Replayer, StepEnd) {
        let inner = &self.plugin.inner;
        let kept = &inner.runtime.inner.kept;
        let run = replayer.run().id.clone();
        let resumed = match kept.take(&inner.digest, &run) {
            Some(found) if replayer.continues(&found.mark, found.calls) => {
                replayer.skip(found.calls);
                found.running.resume(replayer).map(|()| found.running)
            }
            // Stale (another step was written since): let go, replayed.
            _ => Err(Box::new(replayer)),
        };
        let running = match resumed {
            Ok(running) => {
                kept.count_resumed();
                running
            }
            Err(mut replayer) => {
                kept.count_started();
                replayer.skip(0);
                self.start(*replayer)
            }
        };
        self.drive(running, &run).await
    }
}

impl Code {
    /// A new instance of the run's code, from the top.
    fn start(&self, replayer: Replayer) -> Running {
        let run = replayer.run();
        let (input, clock, seed) = (run.input.clone(), run.clock, run.id.clone());
        let inner = &self.plugin.inner;
        let limits = inner.runtime.inner.workflow_step;
        // Not the plugin (nor its runtime): a parked instance must not
        // keep the runtime that holds it alive.
        let pre = inner.pre.clone();
        let shelf = Arc::downgrade(&inner.runtime.inner.kept);
        let workflow = self.workflow.clone();
        Running::new(&inner.runtime.inner.kept, |link| {
            let mut store = step_store(
                &inner.runtime,
                WorkflowState::new(limits, Some(replayer), clock, &seed, link),
            );
            Box::pin(async move {
                let instance = pre.instantiate_async(&mut store).await;
                if let Err(e) = &instance
                    && e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some()
                    && let Some(shelf) = shelf.upgrade()
                {
                    // The pool is full: kept instances make room for the
                    // step's next try.
                    shelf.clear();
                }
                let result = match instance {
                    Ok(instance) => instance
                        .xylem_workflow_workflow()
                        .call_run(&mut store, &workflow, &input)
                        .await
                        .map_err(Stop::Trap),
                    Err(e) => Err(Stop::Instantiate(e)),
                };
                (store.into_data(), result)
            })
        })
    }

    /// Runs the code until it parks (waiting: the instance is kept for
    /// the run's next step) or ends.
    async fn drive(&self, mut running: Running, run: &str) -> (Replayer, StepEnd) {
        enum Next {
            Parked(Box<Parked>),
            Ended(Box<Ran>),
        }
        let next = tokio::select! {
            Some(parked) = running.parked.recv() => Next::Parked(Box::new(parked)),
            ran = &mut running.future => Next::Ended(Box::new(ran)),
        };
        let inner = &self.plugin.inner;
        let (state, result) = match next {
            Next::Parked(parked) => {
                let Parked {
                    replayer,
                    calls,
                    memory,
                } = *parked;
                let kept = Kept {
                    running,
                    mark: replayer.mark().to_owned(),
                    calls,
                };
                inner
                    .runtime
                    .inner
                    .kept
                    .keep(&inner.digest, run, kept, memory);
                return (replayer, StepEnd::Interrupted(Interrupt::Suspend));
            }
            Next::Ended(ran) => *ran,
        };
        let limits = inner.runtime.inner.workflow_step;
        let end = match result {
            Ok(returned) => StepEnd::Returned(returned),
            Err(Stop::Instantiate(e)) => StepEnd::Unavailable(format!("cannot instantiate: {e:#}")),
            Err(Stop::Trap(_)) if state.interrupt.is_some() => {
                StepEnd::Interrupted(state.interrupt.clone().unwrap_or(Interrupt::Suspend))
            }
            Err(Stop::Trap(trap)) => StepEnd::Trapped(trap_reason(&trap, &state, limits)),
        };
        let replayer = state
            .replayer
            .unwrap_or_else(|| unreachable!("a step's state keeps its replayer"));
        (replayer, end)
    }
}
