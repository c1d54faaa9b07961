//! The engine: starts runs, and steps due ones — leased to one engine at
//! a time by compare-and-set on the run's version, run from the top
//! against a [`Replayer`], the calls made anew carried out (activities
//! enqueued as ordinary jobs, children started, closed sets' steps
//! cancelled), and the run written back with where it now stands. A step
//! whose write loses (an activity ended meanwhile, another engine took the
//! run after this one's lease lapsed) is simply taken again later: every
//! effect is idempotent by id.
//!
//! Step outcomes reach a run through [`give`], the one rule: a worker's
//! activities' ends in batches (`delivery.rs`, which may hand the run,
//! unwritten, to this process's engine: `handoff.rs`), a child run's end
//! and a completed stub through [`deliver`].

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use async_trait::async_trait;

use super::handoff::Tickets;
use super::model::{Call, ParentStep, Run, RunError, RunState, StepOutcome};
use super::replay::{Effect, Interrupt, Replayer, step_job_id};
use super::tree::{self, RunTree};
use crate::client::{Client, ClientError, EnqueueRequest};
use crate::store::StoreError;
use crate::time::{Millis, ms};

/// How many due runs one engine steps at once: steps wait mostly on the
/// store and on activities' enqueues, so a few overlap well.
const STEPS_AT_ONCE: usize = 16;
/// Under load, how long [`Engine::run`] waits after a run is made due
/// before it looks (an idle engine looks at once).
const GATHER: Duration = Duration::from_millis(2);
/// How many ticks [`Engine::run`] has leased and is stepping at once.
const TICKS_AT_ONCE: usize = 3;
/// How many due runs [`Engine::run`] takes per look.
const TICK_LIMIT: usize = 64;

/// Woken when a run is made due in this process, so an engine here steps
/// it at once rather than at its next look (engines elsewhere find it by
/// their interval). One permit is kept while no engine waits.
static RUNS_MADE_DUE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// An engine running in the background ([`Engine::spawn`]).
#[derive(Debug)]
pub struct Background {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stops the engine after the step it is taking, and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// A leased run whose code has run: what it made, not yet carried out
/// or written.
struct Advanced {
    /// The run as the step left it (history grown, outcomes taken).
    next: Run,
    end: StepEnd,
    /// Its earliest timer, if it waits.
    wake: Option<Millis>,
    effects: Vec<Effect>,
    /// It was stepped because its compensation's deadline passed.
    past_deadline: bool,
    /// The step's span (in the run's trace).
    span: tracing::Span,
    /// Its tree refused a run it started: the rest are refused at once.
    tree_refused: bool,
}

/// What [`Engine::start_descendant`] did.
enum Descendant {
    /// Started the run.
    New,
    /// Found it started already.
    Existing,
    /// Refused: the step's failure.
    Refused(StepOutcome),
}

/// Runs leased by [`Engine::lease_all`].
#[derive(Default)]
struct Leased {
    /// Leased to this engine, to be stepped.
    held: Vec<Run>,
    /// Final runs whose stray wake time was cleared.
    quieted: usize,
}

/// Header naming the run an activity's job belongs to.
pub const RUN_HEADER: &str = "xylem-workflow-run";
/// Header naming the call of that run the job answers.
pub const STEP_HEADER: &str = "xylem-workflow-step";

/// The run and call an activity's job answers, from its headers
/// ([`RUN_HEADER`], [`STEP_HEADER`]); `None` for any other job.
pub fn activity_of(headers: &[(String, String)]) -> Option<(String, u32)> {
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let run = header(RUN_HEADER)?.clone();
    let seq = header(STEP_HEADER)?.parse().ok()?;
    Some((run, seq))
}

/// How a step of a run's code ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// The workflow returned: its result, or its own failure message.
    Returned(Result<String, String>),
    /// A call stopped it (it waits, or it diverged from its history).
    Interrupted(Interrupt),
    /// The code trapped or broke a limit; the reason.
    Trapped(String),
    /// The code could not be run now (no room for an instance, its plugin
    /// not loadable here): the run is left leased and stepped again once
    /// the lease lapses.
    Unavailable(String),
}

/// A workflow's code, ready to run a step (the Wasm runtime implements
/// it; tests use Rust closures).
#[async_trait]
pub trait WorkflowCode: Send + Sync {
    /// Runs the run's workflow from the top, every host call through
    /// `replayer`, until it returns or is interrupted; gives the replayer
    /// back with how the step ended.
    async fn step(&self, replayer: Replayer) -> (Replayer, StepEnd);
}

/// Where workflows' code comes from.
#[async_trait]
pub trait WorkflowCatalog: Send + Sync {
    /// The plugin version that serves `workflow` now (new runs are pinned
    /// to it), or `None` if no plugin declares it.
    async fn current(&self, workflow: &str) -> Result<Option<String>, String>;
    /// The code of `workflow` in plugin version `plugin`.
    async fn code(&self, workflow: &str, plugin: &str) -> Result<Arc<dyn WorkflowCode>, String>;
}

/// How a root run is started; every field may be left unset.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Its id (default: a new UUIDv7); a run with this id already
    /// started is refused.
    pub id: Option<String>,
    /// When it begins (default, or a time past: at once).
    pub at: Option<Millis>,
    /// The runs its tree may start in all, with `child-workflow` and
    /// `schedule-at` (default: the stepping engine's limit).
    pub max_descendants: Option<u64>,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No plugin declares the workflow.
    #[error("unknown workflow `{0}` (push a plugin that declares it)")]
    UnknownWorkflow(String),
    /// The input is not JSON.
    #[error("the input is not JSON: {0}")]
    Input(String),
    /// A run with this id exists.
    #[error("a run with id `{0}` exists")]
    Duplicate(String),
    /// The catalog failed.
    #[error("{0}")]
    Catalog(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts and steps runs.
#[derive(Clone)]
pub struct Engine {
    client: Client,
    catalog: Arc<dyn WorkflowCatalog>,
    name: String,
    lease: Duration,
    max_descendants: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine named `name` (leases are taken in its name for `lease`).
    pub fn new(
        client: Client,
        catalog: Arc<dyn WorkflowCatalog>,
        name: &str,
        lease: Duration,
    ) -> Self {
        Self {
            client,
            catalog,
            name: name.to_owned(),
            lease,
            max_descendants: crate::lineage::DEFAULT_MAX_DESCENDANTS,
        }
    }

    /// This engine, letting a tree of runs whose root set no limit start
    /// `n` runs in all (`xylem worker --max-descendants`; see `tree.rs`).
    #[must_use]
    pub fn with_max_descendants(mut self, n: u64) -> Self {
        self.max_descendants = n;
        self
    }

    /// Starts a run of `workflow` with `input`, pinned to the plugin
    /// version that serves it now; due at once.
    pub async fn start(
        &self,
        workflow: &str,
        input: &str,
        id: Option<String>,
        now: Millis,
    ) -> Result<Run, StartError> {
        self.start_at(workflow, input, id, now, now).await
    }

    /// [`Self::start`], the run beginning at `at` (waiting till then; a
    /// time past: at once).
    pub async fn start_at(
        &self,
        workflow: &str,
        input: &str,
        id: Option<String>,
        now: Millis,
        at: Millis,
    ) -> Result<Run, StartError> {
        let options = StartOptions {
            id,
            at: Some(at),
            ..StartOptions::default()
        };
        self.start_with(workflow, input, options, now).await
    }

    /// Starts a root run of `workflow` with `input` as `options` say.
    pub async fn start_with(
        &self,
        workflow: &str,
        input: &str,
        options: StartOptions,
        now: Millis,
    ) -> Result<Run, StartError> {
        let mut run = self
            .prepare(workflow, input, options.id, now, options.at.unwrap_or(now))
            .await?;
        if let Some(max_runs) = options.max_descendants {
            run.tree = Some(RunTree {
                root: run.id.clone(),
                max_runs: Some(max_runs),
            });
        }
        self.put_new(run).await
    }

    /// A new run of `workflow` (its input checked, pinned to the plugin
    /// version that serves it now), not yet written.
    async fn prepare(
        &self,
        workflow: &str,
        input: &str,
        id: Option<String>,
        now: Millis,
        at: Millis,
    ) -> Result<Run, StartError> {
        serde_json::from_str::<serde_json::Value>(input)
            .map_err(|e| StartError::Input(e.to_string()))?;
        let plugin = self
            .catalog
            .current(workflow)
            .await
            .map_err(StartError::Catalog)?
            .ok_or_else(|| StartError::UnknownWorkflow(workflow.to_owned()))?;
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut run = Run::new(&id, workflow, plugin, input, now);
        if at > now {
            run.state = RunState::Waiting;
            run.wake_at = Some(at);
        }
        Ok(run)
    }

    /// Writes a new run; refused if one has its id.
    async fn put_new(&self, mut run: Run) -> Result<Run, StartError> {
        let span = crate::telemetry::trace::start_workflow_span(&run.workflow, &run.id);
        crate::telemetry::trace::inject(&span, &mut run.trace);
        let written = self
            .client
            .stores()
            .workflows
            .put_run(&run)
            .instrument(span)
            .await?;
        match written {
            Some(version) => {
                RUNS_MADE_DUE.notify_one();
                Ok(Run { version, ..run })
            }
            None => Err(StartError::Duplicate(run.id)),
        }
    }

    /// Carries out call `seq` of a step that starts a run — a
    /// `child-workflow` (`child`: answering that call when it ends) or a
    /// `schedule-at` (due at `at`, answered with the new run's id) — in the
    /// step's tree, taking one from its count. A refusal (an unknown
    /// workflow, bad input: `refused`; the tree has started all the runs it
    /// may: `quota-exceeded`) answers the call in the step's own write; once
    /// the tree refused, the step's later calls are refused without asking
    /// the store again.
    #[allow(clippy::too_many_arguments)]
    async fn start_for(
        &self,
        step: &mut Advanced,
        seq: u32,
        child: bool,
        workflow: &str,
        input: &str,
        at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let parent = &step.next;
        if parent.outcomes.contains_key(&seq) {
            // Ended already (cancelled in this very step): nothing to start.
            return Ok(());
        }
        let id = step_job_id(parent, seq, &parent.history[seq as usize]);
        let answers = child.then(|| ParentStep {
            run: parent.id.clone(),
            seq,
        });
        let started = if step.tree_refused {
            Descendant::Refused(tree::refused_again(now))
        } else {
            self.start_descendant(parent, answers.clone(), workflow, input, &id, at, now)
                .await?
        };
        match (started, answers) {
            (Descendant::Refused(outcome), _) => {
                step.tree_refused |= tree::is_refusal(&outcome);
                step.next.outcomes.insert(seq, outcome);
                // Answered in the step's own write: due again now.
                step.wake = Some(now);
            }
            // A child started by an earlier try of this step, or by an
            // earlier version of Xylem, may not name its parent yet.
            (Descendant::Existing, Some(answers)) => adopt(&self.client, &id, answers).await?,
            // A new child names its parent; its end answers the call.
            (Descendant::New, Some(_)) => {}
            // `schedule-at`: answered with the run's id now.
            (_, None) => {
                step.next
                    .outcomes
                    .insert(seq, StepOutcome::Ok { value: id, at: now });
                step.wake = Some(now);
            }
        }
        Ok(())
    }

    /// Starts run `id` of `workflow` for `parent`, in its tree and taking
    /// one from its count, or says why not. A run already started under
    /// `id` (the step carried out again: its write lost, or a crash) is
    /// taken as is, and takes nothing again.
    #[allow(clippy::too_many_arguments)]
    async fn start_descendant(
        &self,
        parent: &Run,
        answers: Option<ParentStep>,
        workflow: &str,
        input: &str,
        id: &str,
        at: Millis,
        now: Millis,
    ) -> Result<Descendant, StoreError> {
        let refused = |e: StartError| {
            Descendant::Refused(StepOutcome::Err {
                kind: "refused".to_owned(),
                message: e.to_string(),
                at: now,
            })
        };
        let stores = self.client.stores();
        if stores.workflows.get_run(id).await?.is_some() {
            return Ok(Descendant::Existing);
        }
        let mut run = match self
            .prepare(workflow, input, Some(id.to_owned()), now, at)
            .await
        {
            Ok(run) => run,
            Err(StartError::Store(e)) => return Err(e),
            Err(e) => return Ok(refused(e)),
        };
        let limit = parent.tree_limit(self.max_descendants);
        if let Some(refusal) = tree::take_run(stores.quotas.as_ref(), parent, limit, now).await? {
            return Ok(Descendant::Refused(refusal));
        }
        run.tree = Some(parent.tree_of_descendants());
        run.parent = answers;
        match self.put_new(run).await {
            Ok(_) => Ok(Descendant::New),
            Err(StartError::Duplicate(_)) => Ok(Descendant::Existing),
            Err(StartError::Store(e)) => Err(e),
            Err(e) => Ok(refused(e)),
        }
    }

    /// Steps every run due at `now` (at most `limit`, a few at once);
    /// returns how many steps were written.
    pub async fn tick(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        let due = self.client.stores().workflows.due_runs(now, limit).await?;
        self.step_all(due, now).await
    }

    /// Steps until `stop` resolves: at once while runs are due (a full
    /// tick is followed by another), else when a run is made due in this
    /// process (started, an activity delivered, a signal) or every
    /// `interval` (runs made due elsewhere, timers).
    pub async fn run(&self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        // Ticks whose runs are leased and being stepped. A tick's store
        // round trips and its code overlap the next ones', and ticks run
        // on any of the runtime's threads.
        let mut stepping = tokio::task::JoinSet::new();
        // Runs this process's deliveries lease to this engine in memory
        // and hand over unwritten (`handoff.rs`): stepped without a look
        // or a lease write, their step's write recording their outcomes.
        let mut inbox =
            super::handoff::Inbox::open(&self.client.stores().workflows, &self.name, self.lease);
        let mut handed: Vec<super::handoff::Handed> = Vec::new();
        // Due runs are looked for at least every `interval`, however many
        // runs are handed over meanwhile (timers, runs woken elsewhere).
        let mut next_look = tokio::time::Instant::now();
        loop {
            while stepping.len() >= TICKS_AT_ONCE {
                let _ = stepping.join_next().await;
            }
            let now = crate::time::now_ms();
            // Runs handed over are taken on every turn, not only when the
            // wait below picks them: a run of full ticks must not leave
            // their deliveries waiting.
            if handed.is_empty()
                && let Some(runs) = inbox.try_recv()
            {
                handed = runs;
            }
            // Woken by handed runs: no look for due runs unless one is due.
            let look = handed.is_empty() || tokio::time::Instant::now() >= next_look;
            if !handed.is_empty() {
                let held = inbox.drain(std::mem::take(&mut handed), TICK_LIMIT, now);
                let (held, tickets) = super::handoff::split(held);
                self.step_in_background(&mut stepping, held, tickets, now);
            }
            let (full, busy) = if look {
                next_look = tokio::time::Instant::now() + interval;
                match self.lease_due(now).await {
                    Ok((found, held)) => {
                        // Full only if it took some: a page of runs that
                        // other engines hold is not a reason to look again
                        // at once.
                        let full = found == TICK_LIMIT && !held.is_empty();
                        self.step_in_background(&mut stepping, held, Tickets::new(), now);
                        (full, found > 0)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot step workflow runs; trying again");
                        (false, false)
                    }
                }
            } else {
                (false, true)
            };
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = std::future::ready(()), if full => {}
                // Before the handed runs: a run made due here (started,
                // answered in its own write) is not kept waiting by them.
                () = RUNS_MADE_DUE.notified() => {
                    if busy {
                        // Under load, runs are made due one by one as
                        // their activities end: a moment's wait lets the
                        // next tick take many of them in its few writes.
                        tokio::time::sleep(GATHER).await;
                    }
                }
                Some(runs) = inbox.recv() => handed = runs,
                () = tokio::time::sleep_until(next_look) => {}
            }
        }
        // The runs leased or handed over are stepped to the end rather
        // than left to their leases (but those handed over so long ago
        // that their leases are half gone: `Inbox::drain`).
        inbox.close();
        while let Some(runs) = inbox.recv().await {
            handed.extend(runs);
        }
        let now = crate::time::now_ms();
        let held = inbox.drain(handed, usize::MAX, now);
        let (held, tickets) = super::handoff::split(held);
        self.step_in_background(&mut stepping, held, tickets, now);
        while stepping.join_next().await.is_some() {}
    }

    /// Steps `held` (leased to this engine; those handed over unwritten
    /// with their `tickets`) in a task of `stepping`.
    fn step_in_background(
        &self,
        stepping: &mut tokio::task::JoinSet<()>,
        held: Vec<Run>,
        tickets: Tickets,
        now: Millis,
    ) {
        if held.is_empty() {
            return;
        }
        let engine = self.clone();
        let span = tracing::Span::current();
        stepping.spawn(
            async move {
                if let Err(e) = engine.finish_all(held, tickets, now).await {
                    tracing::warn!(error = %e, "cannot write workflow steps; they will be taken again");
                }
            }
            .instrument(span),
        );
    }

    /// Reads the runs due at `now` and leases them; how many were due,
    /// and the ones now held.
    async fn lease_due(&self, now: Millis) -> Result<(usize, Vec<Run>), StoreError> {
        let due = self
            .client
            .stores()
            .workflows
            .due_runs(now, TICK_LIMIT)
            .await?;
        let found = due.len();
        Ok((found, self.lease_all(due, now).await?.held))
    }

    /// Runs this engine in the background ([`Engine::run`] every
    /// `interval`) until [`Background::stop`].
    pub fn spawn(&self, interval: Duration) -> Background {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let engine = self.clone();
        let task = tokio::spawn(async move {
            engine
                .run(interval, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Background { stop, task }
    }

    /// One step of `run`: lease, replay, effects, write. False if another
    /// engine had it or wrote first.
    pub async fn step(&self, run: Run, now: Millis) -> Result<bool, StoreError> {
        Ok(self.step_all(vec![run], now).await? == 1)
    }

    /// One step of each of `runs` (distinct runs), together: one write
    /// leases them all, their code runs a few at once, their activities
    /// are enqueued in one batch, and one write records where each now
    /// stands — a tick's store work is a few calls, not a few per run.
    /// Returns how many steps were written; a run another engine holds,
    /// or whose write lost, is not counted (it is stepped again later).
    pub async fn step_all(&self, runs: Vec<Run>, now: Millis) -> Result<usize, StoreError> {
        let leased = self.lease_all(runs, now).await?;
        Ok(leased.quieted + self.finish_all(leased.held, Tickets::new(), now).await?)
    }

    /// The first half of [`Self::step_all`]: `runs` leased in one write.
    async fn lease_all(&self, runs: Vec<Run>, now: Millis) -> Result<Leased, StoreError> {
        let leases: Vec<Run> = runs
            .into_iter()
            .filter_map(|run| self.lease(run, now))
            .collect();
        let mut leased = Leased::default();
        if leases.is_empty() {
            return Ok(leased);
        }
        let versions = self.client.stores().workflows.put_runs(&leases).await?;
        for (mut run, version) in leases.into_iter().zip(versions) {
            match version {
                // A final run's stray wake time, cleared: nothing to step.
                Some(_) if run.state.is_final() => leased.quieted += 1,
                Some(version) => {
                    run.version = version;
                    leased.held.push(run);
                }
                None => {}
            }
        }
        Ok(leased)
    }

    /// The second half of [`Self::step_all`]: the leased runs' code run a
    /// few at once, their effects carried out, their steps written in one
    /// write. Returns how many were written. A run handed over unwritten
    /// has a ticket in `tickets`, answered with whether its step was
    /// written (dropped, for a step that did not get that far: "not
    /// written").
    async fn finish_all(
        &self,
        held: Vec<Run>,
        mut tickets: Tickets,
        now: Millis,
    ) -> Result<usize, StoreError> {
        use futures_util::StreamExt as _;
        if held.is_empty() {
            return Ok(0);
        }
        let advanced: Vec<Advanced> = futures_util::stream::iter(held)
            .map(|run| self.advance(run, now))
            .buffer_unordered(STEPS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let mut written = Vec::with_capacity(advanced.len());
        for step in self.carry_out_all(advanced, now).await {
            let span = step.span.clone();
            let run = step.next.id.clone();
            match self.conclude(step, now).instrument(span).await {
                Ok(next) => written.push(next),
                // Left leased: the lease lapses and the step is taken again
                // (a handed run: its ticket drops, and its delivery writes
                // the outcome).
                Err(e) => {
                    tracing::warn!(%run, error = %e, "cannot end a workflow step; it will be retried");
                }
            }
        }
        let versions = self.client.stores().workflows.put_runs(&written).await?;
        for (run, version) in written.iter().zip(&versions) {
            if let Some(ticket) = tickets.remove(&run.id) {
                ticket.answer(version.is_some());
            }
        }
        // A step that is due again at once (a `schedule-at` answered in
        // its own write): look again now, not at the next interval.
        if written
            .iter()
            .zip(&versions)
            .any(|(run, v)| v.is_some() && run.wake_at.is_some_and(|at| at <= now))
        {
            made_due();
        }
        Ok(versions.iter().filter(|v| v.is_some()).count())
    }

    /// `run` leased to this engine until a lease from `now` ends (and due
    /// then, should it crash), or `None` if another engine holds it. A
    /// final run comes back with its stray wake time cleared.
    fn lease(&self, run: Run, now: Millis) -> Option<Run> {
        if run.state.is_final() {
            let mut quiet = run;
            quiet.wake_at = None;
            return Some(quiet);
        }
        super::handoff::lease_to(run, &self.name, self.lease, now)
    }

    /// Runs a leased run's code from the top; `None` if it cannot run here
    /// now (it stays leased and is stepped again once the lease lapses; a
    /// handed run's ticket drops, and its delivery writes the outcome).
    async fn advance(&self, leased: Run, now: Millis) -> Option<Advanced> {
        let span = crate::telemetry::trace::workflow_step_span(&leased);
        if leased.cancel_deadline.is_some_and(|d| now >= d) {
            // Its compensation ran out of time: it ends without its code
            // running again, and what it still waits for is cancelled.
            let effects = pending_work(&leased)
                .into_iter()
                .map(|seq| Effect::Cancel { seq })
                .collect();
            let why = format!(
                "cancelled ({}), and its compensation had not ended by its deadline",
                leased.cancel_requested.as_deref().unwrap_or_default()
            );
            return Some(Advanced {
                next: leased,
                end: StepEnd::Returned(Err(why)),
                wake: None,
                effects,
                past_deadline: true,
                span,
                tree_refused: false,
            });
        }
        let code = match self
            .catalog
            .code(&leased.workflow, &leased.plugin)
            .instrument(span.clone())
            .await
        {
            Ok(code) => code,
            Err(why) => {
                tracing::warn!(run = %leased.id, %why, "no code for a workflow run here; it will be retried");
                return None;
            }
        };
        let (replayer, end) = code
            .step(Replayer::new(leased, now))
            .instrument(span.clone())
            .await;
        if let StepEnd::Unavailable(why) = &end {
            tracing::warn!(run = %replayer.run().id, %why, "cannot run a workflow step here now; it will be retried");
            return None;
        }
        let (next, effects, wake) = replayer.finish();
        Some(Advanced {
            next,
            end,
            wake,
            effects,
            past_deadline: false,
            span,
            tree_refused: false,
        })
    }

    /// Carries out the steps' effects — their activities enqueued in one
    /// batch — and gives back the steps whose effects all stood; a step
    /// with one that failed is left leased, to be taken again (effects are
    /// idempotent by id).
    async fn carry_out_all(&self, steps: Vec<Advanced>, now: Millis) -> Vec<Advanced> {
        let mut failed = vec![false; steps.len()];
        let mut jobs: Vec<(usize, crate::envelope::Envelope)> = Vec::new();
        let mut steps = steps;
        for (i, step) in steps.iter_mut().enumerate() {
            for effect in std::mem::take(&mut step.effects) {
                let done = match effect {
                    Effect::Activity {
                        seq,
                        task,
                        args,
                        options,
                    } => self
                        .activity_job(&step.next, seq, &task, &args, options, now)
                        .instrument(step.span.clone())
                        .await
                        .map(|job| jobs.extend(job.map(|job| (i, job)))),
                    other => {
                        let span = step.span.clone();
                        self.carry_out(step, other, now).instrument(span).await
                    }
                };
                if let Err(e) = done {
                    tracing::warn!(run = %step.next.id, error = %e, "cannot carry out a workflow step; it will be retried");
                    failed[i] = true;
                    break;
                }
            }
        }
        let envelopes: Vec<_> = jobs.iter().map(|(_, job)| job.clone()).collect();
        if let Err(e) = self.client.enqueue_all_by_id(&envelopes).await {
            tracing::warn!(error = %e, jobs = envelopes.len(), "cannot enqueue workflow activities; their steps will be retried");
            for (i, _) in &jobs {
                failed[*i] = true;
            }
        }
        steps
            .into_iter()
            .zip(failed)
            .filter_map(|(step, failed)| (!failed).then_some(step))
            .collect()
    }

    /// Where a step's run now stands, from how its code ended (a successor
    /// started for `continue-as-new`, a child's end given to its parent):
    /// the run to write.
    async fn conclude(&self, step: Advanced, now: Millis) -> Result<Run, StoreError> {
        let Advanced {
            mut next,
            end,
            wake,
            past_deadline,
            ..
        } = step;
        let store = &self.client.stores().workflows;
        next.lease = None;
        next.updated_at = now;
        match end {
            StepEnd::Returned(Ok(result)) => {
                next.state = RunState::Succeeded;
                next.result = Some(result);
                next.wake_at = None;
            }
            StepEnd::Returned(Err(message)) => fail(&mut next, "failed", message),
            StepEnd::Interrupted(Interrupt::Suspend) => {
                next.state = RunState::Waiting;
                next.wake_at = wake;
            }
            StepEnd::Interrupted(e @ Interrupt::Nondeterministic { .. }) => {
                fail(&mut next, "nondeterministic", e.to_string());
            }
            StepEnd::Interrupted(Interrupt::Misuse(why)) => fail(&mut next, "misuse", why),
            StepEnd::Interrupted(Interrupt::ContinueAsNew(input)) => {
                let seq = u32::try_from(next.history.len().saturating_sub(1)).unwrap_or(0);
                let id = step_job_id(&next, seq, &next.history[seq as usize]);
                // The new run first (its id is fixed: a second try finds it),
                // answering the old run's parent, if any; then the old run
                // ends pointing at it.
                let plugin = match self.catalog.current(&next.workflow).await {
                    Ok(Some(latest)) => latest,
                    _ => next.plugin.clone(),
                };
                let mut successor = Run::new(&id, &next.workflow, plugin, &input, now);
                successor.parent = next.parent.take();
                successor.tree = Some(next.tree_of_descendants());
                successor.trace.clone_from(&next.trace);
                if store.put_run(&successor).await?.is_none() {
                    tracing::debug!(run = %next.id, successor = %id, "the next run was started already");
                }
                next.state = RunState::Succeeded;
                next.result = Some(serde_json::json!({ "continued_as": id }).to_string());
                next.continued_as = Some(id);
                next.wake_at = None;
            }
            StepEnd::Trapped(why) => fail(&mut next, "trap", why),
            StepEnd::Unavailable(_) => unreachable!("returned above"),
        }
        if next.cancel_requested.is_some() && next.state == RunState::Failed {
            next.state = RunState::Cancelled;
            if past_deadline && let Some(error) = &mut next.error {
                error.kind = "compensation-deadline".to_owned();
            }
        }
        // A cancelled run compensating is stepped at its deadline at the
        // latest, whatever it waits for.
        if !next.state.is_final()
            && let Some(deadline) = next.cancel_deadline
        {
            next.wake_at = Some(next.wake_at.map_or(deadline, |w| w.min(deadline)));
        }
        // A child's end goes to its parent first: if this write then
        // loses, the child is stepped again and delivers again (a no-op).
        if next.state.is_final()
            && let Some(parent) = &next.parent
        {
            let outcome = match (&next.result, &next.error) {
                (Some(value), _) if next.state == RunState::Succeeded => StepOutcome::Ok {
                    value: value.clone(),
                    at: now,
                },
                (_, error) => StepOutcome::Err {
                    kind: next.state.as_str().to_owned(),
                    message: error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .unwrap_or_default(),
                    at: now,
                },
            };
            deliver(&self.client, &parent.run, parent.seq, outcome).await?;
        }
        Ok(next)
    }

    /// Ends step `seq` of `run` `refused` with `why` (an unknown task,
    /// bad options): the workflow sees the failure and decides.
    async fn refuse(
        &self,
        run: &Run,
        seq: u32,
        why: String,
        now: Millis,
    ) -> Result<(), StoreError> {
        let outcome = StepOutcome::Err {
            kind: "refused".to_owned(),
            message: why,
            at: now,
        };
        deliver(&self.client, &run.id, seq, outcome).await
    }

    /// The job of activity `seq` of `run`, under the step's id (the
    /// caller enqueues it), or `None` if it is refused — an unknown task,
    /// bad options: the step then fails, and the workflow sees it and
    /// decides.
    async fn activity_job(
        &self,
        run: &Run,
        seq: u32,
        task: &str,
        args: &str,
        options: super::model::ActivityOptions,
        now: Millis,
    ) -> Result<Option<crate::envelope::Envelope>, StoreError> {
        let call = &run.history[seq as usize];
        let mut req = EnqueueRequest::new(task, args);
        req.queue = options.queue;
        req.priority = options.priority;
        req.max_retries = options.max_retries;
        req.options.retry_backoff_ms = options.retry_backoff_ms;
        req.options.hard_time_limit_ms = options.hard_time_limit_ms;
        req.options.fuel = options.fuel;
        req.headers = options.headers;
        // In the run's trace: the step span's context replaces it where
        // this process records spans.
        if !req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(crate::telemetry::trace::TRACEPARENT))
        {
            req.headers.extend(run.trace.iter().cloned());
        }
        crate::envelope::set_header(&mut req.headers, RUN_HEADER, &run.id);
        crate::envelope::set_header(&mut req.headers, STEP_HEADER, &seq.to_string());
        match self.client.prepare(req).await {
            Ok(mut envelope) => {
                envelope.id = step_job_id(run, seq, call);
                Ok(Some(envelope))
            }
            Err(ClientError::Store(e)) => Err(e),
            Err(e) => {
                self.refuse(run, seq, e.to_string(), now).await?;
                Ok(None)
            }
        }
    }

    /// Carries out one effect of a step of `run` on its own (a tick's
    /// activities go together instead: [`Self::carry_out_all`]).
    async fn carry_out(
        &self,
        step: &mut Advanced,
        effect: Effect,
        now: Millis,
    ) -> Result<(), StoreError> {
        let run = &step.next;
        match effect {
            Effect::Activity {
                seq,
                task,
                args,
                options,
            } => {
                if let Some(job) = self
                    .activity_job(run, seq, &task, &args, options, now)
                    .await?
                {
                    self.client.enqueue_all_by_id(&[job]).await?;
                }
            }
            Effect::Schedule {
                seq,
                workflow,
                input,
                at,
            } => {
                self.start_for(step, seq, false, &workflow, &input, at, now)
                    .await?;
            }
            Effect::Child {
                seq,
                workflow,
                input,
            } => {
                self.start_for(step, seq, true, &workflow, &input, now, now)
                    .await?;
            }
            Effect::Cancel { seq } => {
                let call = &run.history[seq as usize];
                let id = step_job_id(run, seq, call);
                let child = match call {
                    Call::Submit { step, .. } => matches!(**step, Call::Child { .. }),
                    other => matches!(other, Call::Child { .. } | Call::ScheduleAt { .. }),
                };
                if child {
                    request_cancel(&self.client, &id, "its parent cancelled it").await?;
                } else {
                    crate::cancel::cancel(self.client.stores(), &[id]).await?;
                }
            }
        }
        Ok(())
    }
}

/// Why a run was not moved to another plugin version.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No such run.
    #[error("no workflow run `{0}`")]
    NoRun(String),
    /// The run has ended.
    #[error("run {0} has ended ({1}): there is nothing to upgrade")]
    Ended(String, &'static str),
    /// The version has no code for the run's workflow.
    #[error("{0}")]
    Code(String),
    /// The run's history does not replay on the version.
    #[error(
        "the run's history does not replay on version {digest}: {why}; the run stays on its version"
    )]
    Diverges {
        /// The version tried.
        digest: String,
        /// Where and how it diverged.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run kept changing under the upgrade.
    #[error("run {0} kept changing while being upgraded: try again")]
    Conflict(String),
}

/// Moves run `id` to plugin version `plugin` (`xylem workflow upgrade`):
/// its whole history is replayed against that version's code first — no
/// step is carried out — and the run is switched only if every recorded
/// call comes back the same; else it stays where it is and the error says
/// where the new code diverges.
pub async fn upgrade(
    client: &Client,
    catalog: &dyn WorkflowCatalog,
    id: &str,
    plugin: &str,
) -> Result<(), UpgradeError> {
    let store = &client.stores().workflows;
    for _ in 0..10 {
        let run = store
            .get_run(id)
            .await?
            .ok_or_else(|| UpgradeError::NoRun(id.to_owned()))?;
        if run.state.is_final() {
            return Err(UpgradeError::Ended(id.to_owned(), run.state.as_str()));
        }
        if run.plugin == plugin {
            return Ok(());
        }
        let code = catalog
            .code(&run.workflow, plugin)
            .await
            .map_err(UpgradeError::Code)?;
        let recorded = run.history.len();
        let (replayer, end) = code
            .step(Replayer::new(run.clone(), crate::time::now_ms()))
            .await;
        let made = replayer.calls_made();
        let diverges = |why: String| UpgradeError::Diverges {
            digest: plugin.to_owned(),
            why,
        };
        match end {
            StepEnd::Interrupted(e @ Interrupt::Nondeterministic { .. }) => {
                return Err(diverges(e.to_string()));
            }
            StepEnd::Interrupted(Interrupt::Misuse(why)) | StepEnd::Trapped(why) => {
                return Err(diverges(why));
            }
            StepEnd::Unavailable(why) => return Err(UpgradeError::Code(why)),
            _ if made < recorded => {
                return Err(diverges(format!(
                    "it ends after {made} of the run's {recorded} recorded calls"
                )));
            }
            _ => {}
        }
        let mut moved = run;
        moved.plugin = plugin.to_owned();
        if store.put_run(&moved).await?.is_some() {
            return Ok(());
        }
    }
    Err(UpgradeError::Conflict(id.to_owned()))
}

fn fail(run: &mut Run, kind: &str, message: String) {
    run.state = RunState::Failed;
    run.error = Some(RunError {
        kind: kind.to_owned(),
        message,
    });
    run.wake_at = None;
}

/// Gives call `seq` of run `run` its outcome, once (a second delivery is a
/// no-op), and makes the run due. Retried on a lost compare-and-set.
pub async fn deliver(
    client: &Client,
    run: &str,
    seq: u32,
    outcome: StepOutcome,
) -> Result<(), StoreError> {
    edit(client, run, |r| give(r, seq, &outcome)).await
}

/// The rule of a delivery: call `seq` gets `outcome` unless the run has
/// ended or the call has one already, and the run is made due. False if
/// nothing changed.
pub(crate) fn give(run: &mut Run, seq: u32, outcome: &StepOutcome) -> bool {
    if run.state.is_final() || run.outcomes.contains_key(&seq) {
        return false;
    }
    run.outcomes.insert(seq, outcome.clone());
    wake(run);
    true
}

/// Tells an engine in this process that a run was made due.
pub(crate) fn made_due() {
    RUNS_MADE_DUE.notify_one();
}

/// Why a stub step could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// No such run.
    #[error("no workflow run `{0}`")]
    NoRun(String),
    /// The call is not a stub, or does not exist.
    #[error("call {seq} of run {run} is not a stub step{}", .found.as_deref().map(|f| format!(" (it is `{f}`)")).unwrap_or_default())]
    NotStub {
        /// The run.
        run: String,
        /// The call.
        seq: u32,
        /// What the call is, if it exists.
        found: Option<String>,
    },
    /// The stub has its result already.
    #[error("stub step {seq} of run {run} was completed already")]
    Done {
        /// The run.
        run: String,
        /// The call.
        seq: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Gives stub step `seq` of run `run` its result (`xylem workflow
/// complete`): a person's or an outside system's answer.
pub async fn complete(
    client: &Client,
    run: &str,
    seq: u32,
    outcome: StepOutcome,
) -> Result<(), CompleteError> {
    let found = client
        .stores()
        .workflows
        .get_run(run)
        .await?
        .ok_or_else(|| CompleteError::NoRun(run.to_owned()))?;
    match found.history.get(seq as usize) {
        Some(Call::Stub { .. }) => {}
        other => {
            return Err(CompleteError::NotStub {
                run: run.to_owned(),
                seq,
                found: other.map(Call::describe),
            });
        }
    }
    if found.outcomes.contains_key(&seq) {
        return Err(CompleteError::Done {
            run: run.to_owned(),
            seq,
        });
    }
    deliver(client, run, seq, outcome).await?;
    Ok(())
}

/// Sends an event on `topic` to run `run` (`xylem workflow signal`).
pub async fn signal(
    client: &Client,
    run: &str,
    topic: &str,
    payload: &str,
    now: Millis,
) -> Result<(), StoreError> {
    edit(client, run, |r| {
        r.events.push(super::model::Event {
            topic: topic.to_owned(),
            payload: payload.to_owned(),
            at: now,
            taken_by: None,
        });
        wake(r);
        true
    })
    .await
}

/// Asks run `run` to cancel: it sees `cancelled()` turn true and may
/// compensate; if it then fails, it ends `cancelled`.
pub async fn request_cancel(client: &Client, run: &str, reason: &str) -> Result<(), StoreError> {
    request_cancel_within(client, run, reason, None).await
}

/// [`request_cancel`], giving the run's compensation `deadline` at most:
/// past it the run ends `cancelled` without its code running again, and
/// the activities and children it still waits for are cancelled.
pub async fn request_cancel_within(
    client: &Client,
    run: &str,
    reason: &str,
    deadline: Option<Duration>,
) -> Result<(), StoreError> {
    let by = deadline.map(|d| crate::time::now_ms().saturating_add(ms(d)));
    edit(client, run, |r| {
        if r.state.is_final() || r.cancel_requested.is_some() {
            return false;
        }
        r.cancel_requested = Some(reason.to_owned());
        r.cancel_deadline = by;
        wake(r);
        true
    })
    .await
}

/// The calls of `run` still out: activities and children (in a join set
/// or not) without an outcome.
fn pending_work(run: &Run) -> Vec<u32> {
    let out = |call: &Call| matches!(call, Call::Activity { .. } | Call::Child { .. });
    (0u32..)
        .zip(&run.history)
        .filter(|(seq, call)| {
            !run.outcomes.contains_key(seq)
                && match call {
                    Call::Submit { step, .. } => out(step),
                    other => out(other),
                }
        })
        .map(|(seq, _)| seq)
        .collect()
}

/// Rewinds run `run` to call `to` (`xylem workflow rewind`, and retry of
/// a failed run from its last good step): the history is cut there, the
/// outcomes and events of the calls cut are forgotten, and the run is due
/// again; steps made again are new jobs (its `epoch` moves on). Refused
/// past the history's end.
pub async fn rewind(client: &Client, run: &str, to: u32) -> Result<(), StoreError> {
    let mut past_end = false;
    edit(client, run, |r| {
        if to as usize > r.history.len() {
            past_end = true;
            return false;
        }
        r.history.truncate(to as usize);
        r.outcomes.retain(|seq, _| *seq < to);
        for event in &mut r.events {
            if event.taken_by.is_some_and(|seq| seq >= to) {
                event.taken_by = None;
            }
        }
        r.epoch += 1;
        // Code kept running past the cut must not go on: replay it.
        r.step_mark.clear();
        r.result = None;
        r.error = None;
        r.lease = None;
        r.state = RunState::Running;
        r.wake_at = Some(crate::time::now_ms());
        true
    })
    .await?;
    if past_end {
        return Err(StoreError::Invalid(format!(
            "run {run} has fewer than {to} calls in its history"
        )));
    }
    Ok(())
}

/// Makes a run due now. A run an engine holds stays leased: that
/// engine's write of its step loses to this one, and it (or, once the
/// lease lapses, another) steps the run again at its next look.
fn wake(run: &mut Run) {
    if !run.state.is_final() {
        run.state = RunState::Running;
        run.wake_at = Some(crate::time::now_ms());
    }
}

async fn adopt(client: &Client, run: &str, parent: ParentStep) -> Result<(), StoreError> {
    edit(client, run, |r| {
        if r.parent.as_ref() == Some(&parent) {
            return false;
        }
        r.parent = Some(parent.clone());
        true
    })
    .await
}

/// Read, change, compare-and-set, again while another writer wins; a run
/// that does not exist is left alone.
async fn edit(
    client: &Client,
    id: &str,
    mut change: impl FnMut(&mut Run) -> bool,
) -> Result<(), StoreError> {
    let store = &client.stores().workflows;
    for _ in 0..64 {
        let Some(mut run) = store.get_run(id).await? else {
            return Ok(());
        };
        if !change(&mut run) {
            return Ok(());
        }
        if store.put_run(&run).await?.is_some() {
            if run.wake_at.is_some() {
                RUNS_MADE_DUE.notify_one();
            }
            return Ok(());
        }
    }
    Err(StoreError::Invalid(format!(
        "run {id} keeps changing under this write; giving up"
    )))
}
