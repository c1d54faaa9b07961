//! One step of a run: its code is run from the top, and each call it makes
//! goes through a [`Replayer`], which answers it from the run's history or,
//! past the history's end, records it and says what the engine must do
//! (enqueue an activity, start a child, cancel a step) — or that the run
//! must wait. A call that differs from the one recorded at its place stops
//! the run as nondeterministic, naming both.
//!
//! Nothing here knows how the code runs (the Wasm sandbox, or a Rust
//! closure in tests): the code calls these methods and stops at the first
//! [`Interrupt`].

use sha2::{Digest, Sha256};

use super::model::{ActivityOptions, Call, Run, StepOutcome};
use crate::time::Millis;

/// Most calls one run's history may hold: past it a call fails the run
/// (a loop of host calls must not grow a run without bound; a long-lived
/// workflow starts a new run instead).
pub const MAX_HISTORY: usize = 10_000;
/// Most bytes of text (arguments, input, payload, state) one call may carry.
pub const MAX_CALL_BYTES: usize = 1024 * 1024;

/// Why the code must stop where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Interrupt {
    /// Nothing more can be answered now: the run waits (for a step, a
    /// timer or an event) and is replayed when something happens.
    #[error("the run waits")]
    Suspend,
    /// The code made another call than the history holds at this place.
    #[error(
        "nondeterministic: call {seq} is `{recorded}` in the run's history, but the code now makes `{made}`"
    )]
    Nondeterministic {
        /// The call's place in the history.
        seq: u32,
        /// What the history holds.
        recorded: String,
        /// What the code made.
        made: String,
    },
    /// A call the host cannot take (an unknown join set, say).
    #[error("{0}")]
    Misuse(String),
    /// The run ends here and goes on in a new run with this input.
    #[error("continues as a new run")]
    ContinueAsNew(String),
}

/// What the engine must do for the calls a step made anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Enqueue the activity of call `seq` under [`step_job_id`].
    Activity {
        /// The call's number.
        seq: u32,
        /// The task.
        task: String,
        /// Its arguments.
        args: String,
        /// How it is enqueued.
        options: ActivityOptions,
    },
    /// Start the child run of call `seq` under [`step_job_id`].
    Child {
        /// The call's number.
        seq: u32,
        /// The workflow.
        workflow: String,
        /// Its input.
        input: String,
    },
    /// Make the run of call `seq` (`schedule-at`), due at `at`, and
    /// answer the call with its id.
    Schedule {
        /// The call's number.
        seq: u32,
        /// The workflow.
        workflow: String,
        /// Its input.
        input: String,
        /// When it begins.
        at: Millis,
    },
    /// Cancel the job or child run of call `seq` (its set was closed, or
    /// the run was asked to cancel); the step is already ended
    /// `cancelled` in the run.
    Cancel {
        /// The call's number.
        seq: u32,
    },
}

/// The id of the job (or child run) of call `seq` of run `run`: the same
/// on every replay, and another for another call at the same place (so a
/// run whose code changed under it cannot take an old step's result) or
/// after a rewind (its `epoch`: the step runs again).
pub fn step_job_id(run: &Run, seq: u32, call: &Call) -> String {
    let mut hash = Sha256::new();
    hash.update(run.id.as_bytes());
    hash.update(run.epoch.to_be_bytes());
    hash.update(seq.to_be_bytes());
    hash.update(serde_json::to_string(call).unwrap_or_default().as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A step's result as the code sees it: a value, or (kind, message).
pub type StepResult = Result<String, (String, String)>;

/// Answers one step's calls.
#[derive(Debug)]
pub struct Replayer {
    run: Run,
    cursor: usize,
    now: Millis,
    effects: Vec<Effect>,
    wake_at: Option<Millis>,
    mark: String,
    /// Whether its tree's quota refused one of its calls, once looked for.
    tree_refused: Option<bool>,
}

impl Replayer {
    /// A step of `run` at `now`.
    pub fn new(run: Run, now: Millis) -> Self {
        Self {
            run,
            cursor: 0,
            now,
            effects: Vec::new(),
            wake_at: None,
            mark: uuid::Uuid::now_v7().simple().to_string(),
            tree_refused: None,
        }
    }

    /// The run as the step left it (history grown, events taken, this
    /// step's mark), what the engine must do, and when the run must be
    /// looked at again if it waits on a timer.
    pub fn finish(mut self) -> (Run, Vec<Effect>, Option<Millis>) {
        self.run.step_mark = self.mark;
        (self.run, self.effects, self.wake_at)
    }

    /// This step's mark, written with the run: code kept running (an
    /// instance parked at the call it waits on) may go on in the next step
    /// only if the run it is handed still carries this mark — the step's
    /// write landed and no other step was written since.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Whether code that stopped in the step marked `mark`, after `calls`
    /// calls, may go on in this step instead of being replayed: the run
    /// carries that mark, and holds those calls.
    pub fn continues(&self, mark: &str, calls: usize) -> bool {
        !mark.is_empty() && self.run.step_mark == mark && calls <= self.run.history.len()
    }

    /// Goes on after the first `calls` calls, which the code made in an
    /// earlier step (see [`Self::continues`]): they are not replayed.
    pub fn skip(&mut self, calls: usize) {
        self.cursor = calls.min(self.run.history.len());
    }

    /// The run (to read its id, input, clock).
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// How many calls the code has made so far in this step.
    pub fn calls_made(&self) -> usize {
        self.cursor
    }

    /// Whether the code is still replaying recorded calls.
    pub fn replaying(&self) -> bool {
        self.cursor < self.run.history.len()
    }

    /// Checks `call` against the history at the cursor, or records it;
    /// returns its number, the recorded call (with its answers), and
    /// whether it is new.
    fn record(&mut self, call: Call) -> Result<(u32, Call, bool), Interrupt> {
        let seq = u32::try_from(self.cursor).unwrap_or(u32::MAX);
        self.cursor += 1;
        match self.run.history.get(seq as usize) {
            Some(recorded) if recorded.same_request(&call) => Ok((seq, recorded.clone(), false)),
            Some(recorded) => Err(Interrupt::Nondeterministic {
                seq,
                recorded: recorded.describe(),
                made: call.describe(),
            }),
            None => {
                check_budget(&self.run.history, &call)?;
                self.run.history.push(call.clone());
                Ok((seq, call, true))
            }
        }
    }

    /// Checks `call` against the history without recording it when new:
    /// for calls recorded only once answered (`await-next`). `None`: new.
    fn peek(&self, call: &Call) -> Result<Option<Call>, Interrupt> {
        let seq = u32::try_from(self.cursor).unwrap_or(u32::MAX);
        match self.run.history.get(self.cursor) {
            Some(recorded) if recorded.same_request(call) => Ok(Some(recorded.clone())),
            Some(recorded) => Err(Interrupt::Nondeterministic {
                seq,
                recorded: recorded.describe(),
                made: call.describe(),
            }),
            None => Ok(None),
        }
    }

    fn outcome(&self, seq: u32) -> Option<StepResult> {
        self.run.outcomes.get(&seq).map(|o| match o {
            StepOutcome::Ok { value, .. } => Ok(value.clone()),
            StepOutcome::Err { kind, message, .. } => Err((kind.clone(), message.clone())),
        })
    }

    /// `activity`: its result, once its job ended.
    pub fn activity(
        &mut self,
        task: &str,
        args: &str,
        options: ActivityOptions,
    ) -> Result<StepResult, Interrupt> {
        let call = Call::Activity {
            task: task.to_owned(),
            args: args.to_owned(),
            options,
        };
        self.start_step(call)
    }

    /// Records a call that starts a step (an activity, a child) and waits
    /// for it: its outcome when it has one; cancelled at once when the run
    /// was asked to cancel (its job or child cancelled too).
    fn start_step(&mut self, call: Call) -> Result<StepResult, Interrupt> {
        let (seq, _, new) = self.record(call.clone())?;
        if let Some(outcome) = self.outcome(seq) {
            return Ok(outcome);
        }
        if self.cancelling() {
            self.cancel_step(seq, !new);
            return Ok(self.outcome(seq).unwrap_or_else(|| Err(cancelled_error())));
        }
        if new && self.refused_by_tree(seq, &call) {
            return Ok(self.outcome(seq).expect("just given"));
        }
        if new && !matches!(call, Call::Stub { .. }) {
            self.effects.push(effect(seq, &call));
        }
        Err(Interrupt::Suspend)
    }

    /// If `call` (new, number `seq`) starts a run and the run's tree
    /// refused one of its calls already, ends it so at once — no step, no
    /// store write — and says so. A run that keeps starting runs past its
    /// tree's quota (a fork bomb) then spends only its call budget.
    fn refused_by_tree(&mut self, seq: u32, call: &Call) -> bool {
        if !super::tree::starts_run(call) {
            return false;
        }
        let refused = *self.tree_refused.get_or_insert_with(|| {
            // A refusal of a call that starts a run: an activity may
            // fail with any kind it likes.
            self.run.outcomes.iter().any(|(seq, outcome)| {
                super::tree::is_refusal(outcome)
                    && self
                        .run
                        .history
                        .get(*seq as usize)
                        .is_some_and(super::tree::starts_run)
            })
        });
        if !refused {
            return false;
        }
        self.run
            .outcomes
            .insert(seq, super::tree::refused_again(self.now));
        true
    }

    /// Whether the run's waits end `cancelled` now: a cancel was asked for
    /// and the code has not yet seen it (`cancelled()` true). Once it has,
    /// what it does — compensation — runs as usual.
    fn cancelling(&self) -> bool {
        self.run.cancel_requested.is_some()
            && !self.run.history[..self.cursor.min(self.run.history.len())]
                .iter()
                .any(|c| matches!(c, Call::Cancelled { value: true }))
    }

    /// Ends step `seq` as cancelled (and, if it was started, has its job
    /// or child run cancelled).
    fn cancel_step(&mut self, seq: u32, started: bool) {
        let (kind, message) = cancelled_error();
        self.run.outcomes.insert(
            seq,
            StepOutcome::Err {
                kind,
                message,
                at: self.now,
            },
        );
        if started {
            self.effects.push(Effect::Cancel { seq });
        }
    }

    /// `child-workflow`: its result, once the child run ended.
    pub fn child(&mut self, workflow: &str, input: &str) -> Result<StepResult, Interrupt> {
        self.start_step(Call::Child {
            workflow: workflow.to_owned(),
            input: input.to_owned(),
        })
    }

    /// `schedule-at`: the id of a new run of `workflow` that begins at
    /// `at`, once the engine has made it (or why it refused).
    pub fn schedule_at(
        &mut self,
        workflow: &str,
        input: &str,
        at: Millis,
    ) -> Result<StepResult, Interrupt> {
        self.start_step(Call::ScheduleAt {
            workflow: workflow.to_owned(),
            input: input.to_owned(),
            at,
        })
    }

    /// `stub`: its result, once given from outside.
    pub fn stub(&mut self, name: &str, args: &str) -> Result<StepResult, Interrupt> {
        self.start_step(Call::Stub {
            name: name.to_owned(),
            args: args.to_owned(),
        })
    }

    /// `join-set`: a new set's id.
    pub fn join_set(&mut self) -> Result<u32, Interrupt> {
        Ok(self.record(Call::JoinSet)?.0)
    }

    /// `submit-activity` / `submit-child`: the step's id.
    pub fn submit(&mut self, set: u32, step: Call) -> Result<u32, Interrupt> {
        self.open_set(set)?;
        if !matches!(step, Call::Activity { .. } | Call::Child { .. }) {
            return Err(Interrupt::Misuse(format!(
                "only activities and child workflows join a set, not {}",
                step.describe()
            )));
        }
        let call = Call::Submit {
            set,
            step: Box::new(step.clone()),
        };
        let (seq, _, new) = self.record(call)?;
        if new && !self.refused_by_tree(seq, &step) {
            self.effects.push(effect(seq, &step));
        }
        Ok(seq)
    }

    /// `await-next`: the next step of `set` to have ended (in the order
    /// they ended), or `None` once every step was returned.
    pub fn await_next(&mut self, set: u32) -> Result<Option<(u32, StepResult)>, Interrupt> {
        self.open_set(set)?;
        let asked = Call::AwaitNext { set, got: None };
        let got = match self.peek(&asked)? {
            Some(Call::AwaitNext { got, .. }) => got,
            Some(_) => unreachable!("peek checks the request"),
            None => {
                let returned: Vec<u32> = self.run.history[..self.cursor]
                    .iter()
                    .filter_map(|c| match c {
                        Call::AwaitNext { set: s, got } if *s == set => *got,
                        _ => None,
                    })
                    .collect();
                let pending: Vec<u32> = self
                    .members(set)
                    .into_iter()
                    .filter(|m| !returned.contains(m))
                    .collect();
                let got = if pending.is_empty() {
                    None
                } else {
                    let ended = pending
                        .iter()
                        .filter_map(|m| self.run.outcomes.get(m).map(|o| (ended_at(o), *m)))
                        .min();
                    match ended {
                        Some((_, m)) => Some(m),
                        None if self.cancelling() => {
                            for m in &pending {
                                self.cancel_step(*m, true);
                            }
                            pending.first().copied()
                        }
                        None => return Err(Interrupt::Suspend),
                    }
                };
                check_budget(&self.run.history, &Call::AwaitNext { set, got })?;
                self.run.history.push(Call::AwaitNext { set, got });
                got
            }
        };
        self.cursor += 1;
        Ok(match got {
            Some(step) => Some((
                step,
                self.outcome(step).ok_or_else(|| {
                    Interrupt::Misuse(format!(
                        "step {step} is recorded as ended but has no outcome"
                    ))
                })?,
            )),
            None => None,
        })
    }

    /// `close-set`: its pending steps are cancelled.
    pub fn close_set(&mut self, set: u32) -> Result<(), Interrupt> {
        self.open_set(set)?;
        let (_, _, new) = self.record(Call::CloseSet { set })?;
        if new {
            let pending: Vec<u32> = self
                .members(set)
                .into_iter()
                .filter(|m| !self.run.outcomes.contains_key(m))
                .collect();
            for seq in pending {
                self.cancel_step(seq, true);
            }
        }
        Ok(())
    }

    /// The steps submitted to `set` so far.
    fn members(&self, set: u32) -> Vec<u32> {
        self.run.history[..self.cursor.min(self.run.history.len())]
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Call::Submit { set: s, .. } if *s == set => u32::try_from(i).ok(),
                _ => None,
            })
            .collect()
    }

    /// Refuses a set that was never opened, or was closed.
    fn open_set(&self, set: u32) -> Result<(), Interrupt> {
        let known = &self.run.history[..self.cursor.min(self.run.history.len())];
        match known.get(set as usize) {
            Some(Call::JoinSet) => {}
            _ => return Err(Interrupt::Misuse(format!("there is no join set {set}"))),
        }
        if known
            .iter()
            .any(|c| matches!(c, Call::CloseSet { set: s } if *s == set))
        {
            return Err(Interrupt::Misuse(format!("join set {set} is closed")));
        }
        Ok(())
    }

    /// `sleep`: returns once `ms` have passed since the call was first made.
    pub fn sleep(&mut self, ms: u64) -> Result<(), Interrupt> {
        let until = self
            .now
            .saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX));
        let (_, recorded, _) = self.record(Call::Sleep { ms, until })?;
        let Call::Sleep { until, .. } = recorded else {
            unreachable!("record checks the request")
        };
        if self.now >= until || self.cancelling() {
            Ok(())
        } else {
            self.wake_at = Some(until);
            Err(Interrupt::Suspend)
        }
    }

    /// `await-event`: the first event on `topic` not taken by an earlier
    /// wait, or `None` once the timeout passed.
    pub fn await_event(
        &mut self,
        topic: &str,
        timeout_ms: u64,
    ) -> Result<Option<String>, Interrupt> {
        let deadline = self
            .now
            .saturating_add(Millis::try_from(timeout_ms).unwrap_or(Millis::MAX));
        let (seq, recorded, _) = self.record(Call::AwaitEvent {
            topic: topic.to_owned(),
            timeout_ms,
            deadline,
        })?;
        let Call::AwaitEvent { deadline, .. } = recorded else {
            unreachable!("record checks the request")
        };
        if let Some(answer) = self.outcome(seq) {
            return Ok(answer.ok());
        }
        let now = self.now;
        if let Some(event) = self
            .run
            .events
            .iter_mut()
            .find(|e| e.topic == topic && e.taken_by.is_none())
        {
            event.taken_by = Some(seq);
            let value = event.payload.clone();
            self.run.outcomes.insert(
                seq,
                StepOutcome::Ok {
                    value: value.clone(),
                    at: now,
                },
            );
            return Ok(Some(value));
        }
        if self.cancelling() {
            self.cancel_step(seq, false);
            return Ok(None);
        }
        if now >= deadline {
            self.run.outcomes.insert(
                seq,
                StepOutcome::Err {
                    kind: "timeout".to_owned(),
                    message: format!("no `{topic}` event within {timeout_ms} ms"),
                    at: now,
                },
            );
            return Ok(None);
        }
        self.wake_at = Some(deadline);
        Err(Interrupt::Suspend)
    }

    /// `now`: the time when the call was first made.
    pub fn now(&mut self) -> Result<Millis, Interrupt> {
        match self.record(Call::Now { value: self.now })?.1 {
            Call::Now { value } => Ok(value),
            _ => unreachable!("record checks the request"),
        }
    }

    /// `random`: a number drawn when the call was first made.
    pub fn random(&mut self) -> Result<u64, Interrupt> {
        match self
            .record(Call::Random {
                value: rand::random(),
            })?
            .1
        {
            Call::Random { value } => Ok(value),
            _ => unreachable!("record checks the request"),
        }
    }

    /// `cancelled`: whether a cancel was requested when the call was first
    /// made.
    pub fn cancelled(&mut self) -> Result<bool, Interrupt> {
        let value = self.run.cancel_requested.is_some();
        match self.record(Call::Cancelled { value })?.1 {
            Call::Cancelled { value } => Ok(value),
            _ => unreachable!("record checks the request"),
        }
    }

    /// `emit`: recorded in the history (the run's timeline).
    pub fn emit(&mut self, topic: &str, payload: &str) -> Result<(), Interrupt> {
        self.record(Call::Emit {
            topic: topic.to_owned(),
            payload: payload.to_owned(),
        })?;
        Ok(())
    }

    /// `continue-as-new`: recorded, then the run stops here
    /// ([`Interrupt::ContinueAsNew`]).
    pub fn continue_as_new(&mut self, input: &str) -> Result<(), Interrupt> {
        self.record(Call::ContinueAsNew {
            input: input.to_owned(),
        })?;
        Err(Interrupt::ContinueAsNew(input.to_owned()))
    }

    /// `set-state`: the run's queryable state.
    pub fn set_state(&mut self, state: &str) -> Result<(), Interrupt> {
        self.record(Call::SetState {
            state: state.to_owned(),
        })?;
        self.run.query_state = Some(state.to_owned());
        Ok(())
    }
}

/// Refuses a new call past the history's length or size budget.
fn check_budget(history: &[Call], call: &Call) -> Result<(), Interrupt> {
    if history.len() >= MAX_HISTORY {
        return Err(Interrupt::Misuse(format!(
            "the run has made {MAX_HISTORY} calls, the most one run may make; \
             end it and start a new run to go on"
        )));
    }
    let bytes = call_bytes(call);
    if bytes > MAX_CALL_BYTES {
        return Err(Interrupt::Misuse(format!(
            "{} carries {bytes} bytes, over the {MAX_CALL_BYTES} a call may carry",
            call.describe().chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

fn call_bytes(call: &Call) -> usize {
    match call {
        Call::Activity { task, args, .. } => task.len() + args.len(),
        Call::Child { workflow, input }
        | Call::ScheduleAt {
            workflow, input, ..
        } => workflow.len() + input.len(),
        Call::Stub { name, args } => name.len() + args.len(),
        Call::Submit { step, .. } => call_bytes(step),
        Call::AwaitEvent { topic, .. } => topic.len(),
        Call::Emit { topic, payload } => topic.len() + payload.len(),
        Call::SetState { state } => state.len(),
        Call::ContinueAsNew { input } => input.len(),
        _ => 0,
    }
}

fn cancelled_error() -> (String, String) {
    (
        "cancelled".to_owned(),
        "the run was asked to cancel".to_owned(),
    )
}

fn ended_at(outcome: &StepOutcome) -> Millis {
    match outcome {
        StepOutcome::Ok { at, .. } | StepOutcome::Err { at, .. } => *at,
    }
}

fn effect(seq: u32, call: &Call) -> Effect {
    match call {
        Call::Activity {
            task,
            args,
            options,
        } => Effect::Activity {
            seq,
            task: task.clone(),
            args: args.clone(),
            options: options.clone(),
        },
        Call::Child { workflow, input } => Effect::Child {
            seq,
            workflow: workflow.clone(),
            input: input.clone(),
        },
        Call::ScheduleAt {
            workflow,
            input,
            at,
        } => Effect::Schedule {
            seq,
            workflow: workflow.clone(),
            input: input.clone(),
            at: *at,
        },
        other => unreachable!("{} starts no step", other.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str, at: Millis) -> StepOutcome {
        StepOutcome::Ok {
            value: value.to_owned(),
            at,
        }
    }

    /// validate → charge → sleep 1 s → ship, as the seed's example.
    fn order(r: &mut Replayer) -> Result<String, Interrupt> {
        let valid = r
            .activity("validate", "{}", ActivityOptions::default())?
            .unwrap();
        let charged = r
            .activity("charge", &valid, ActivityOptions::default())?
            .unwrap();
        r.sleep(1_000)?;
        r.activity("ship", &charged, ActivityOptions::default())?
            .map_err(|(_, m)| Interrupt::Misuse(m))
    }

    #[test]
    fn once_its_tree_refused_a_run_its_later_starts_are_refused_at_once_and_only_then() {
        let refusal = |seq| StepOutcome::Err {
            kind: super::super::tree::QUOTA_KIND.to_owned(),
            message: format!("refused {seq}"),
            at: 5,
        };
        let start_two = |r: &mut Replayer| -> Result<Vec<StepResult>, Interrupt> {
            let first = r.activity("a", "{}", ActivityOptions::default())?;
            let scheduled = r.schedule_at("w", "{}", 0)?;
            Ok(vec![first, scheduled])
        };
        // An activity that fails with the same kind is not a refusal of
        // the tree: the schedule is asked of the engine (the run waits).
        let mut run = Run::new("r1", "w", "sha", "{}", 0);
        run.history.push(Call::Activity {
            task: "a".to_owned(),
            args: "{}".to_owned(),
            options: ActivityOptions::default(),
        });
        run.outcomes.insert(0, refusal(0));
        let mut r = Replayer::new(run.clone(), 10);
        assert_eq!(start_two(&mut r), Err(Interrupt::Suspend));
        assert_eq!(r.finish().1.len(), 1, "the schedule is an effect");

        // A schedule refused by the tree: the next one is refused in the
        // same step, with no effect, and a replay answers it the same.
        let mut run = Run::new("r2", "w", "sha", "{}", 0);
        let twice = |r: &mut Replayer| -> Result<Vec<StepResult>, Interrupt> {
            Ok(vec![
                r.schedule_at("w", "{}", 0)?,
                r.schedule_at("w", "{}", 0)?,
            ])
        };
        let mut r = Replayer::new(run.clone(), 10);
        assert_eq!(twice(&mut r), Err(Interrupt::Suspend));
        run = r.finish().0;
        run.outcomes.insert(0, refusal(0));
        let mut r = Replayer::new(run.clone(), 20);
        let answers = twice(&mut r).unwrap();
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        let (after, effects, _) = r.finish();
        assert!(effects.is_empty(), "{effects:?}");
        let mut again = Replayer::new(after, 30);
        assert_eq!(twice(&mut again).unwrap(), answers, "replayed the same");
    }

    #[test]
    fn a_run_advances_step_by_step_and_replays_its_history() {
        let mut run = Run::new("r1", "order.process", "sha", "{}", 0);
        // Step 1: the first activity is asked for; the run waits.
        let mut r = Replayer::new(run.clone(), 10);
        assert_eq!(order(&mut r), Err(Interrupt::Suspend));
        let (next, effects, wake) = r.finish();
        assert!(
            matches!(&effects[..], [Effect::Activity { seq: 0, task, .. }] if task == "validate")
        );
        assert_eq!(wake, None);
        run = next;
        // Its job ends; step 2 replays it and asks for the second.
        run.outcomes.insert(0, ok("\"valid\"", 20));
        let mut r = Replayer::new(run.clone(), 30);
        assert_eq!(order(&mut r), Err(Interrupt::Suspend));
        let (next, effects, _) = r.finish();
        assert!(
            matches!(&effects[..], [Effect::Activity { seq: 1, args, .. }] if args == "\"valid\"")
        );
        run = next;
        run.outcomes.insert(1, ok("\"charged\"", 40));
        // Step 3: the sleep is recorded until 50 + 1000 and waits.
        let mut r = Replayer::new(run.clone(), 50);
        assert_eq!(order(&mut r), Err(Interrupt::Suspend));
        let (next, effects, wake) = r.finish();
        assert!(effects.is_empty());
        assert_eq!(wake, Some(1_050));
        run = next;
        // Too early: still waiting, nothing new.
        let mut r = Replayer::new(run.clone(), 900);
        assert_eq!(order(&mut r), Err(Interrupt::Suspend));
        assert_eq!(r.finish().0.history, run.history);
        // Late enough: ship.
        let mut r = Replayer::new(run.clone(), 1_100);
        assert_eq!(order(&mut r), Err(Interrupt::Suspend));
        let (next, effects, _) = r.finish();
        assert!(matches!(&effects[..], [Effect::Activity { seq: 3, task, .. }] if task == "ship"));
        run = next;
        run.outcomes.insert(3, ok("\"shipped\"", 1_200));
        let mut r = Replayer::new(run, 1_300);
        assert_eq!(order(&mut r), Ok("\"shipped\"".to_owned()));
        assert!(r.finish().1.is_empty(), "a replay starts nothing again");
    }

    #[test]
    fn a_changed_call_is_nondeterministic_and_names_both() {
        let mut run = Run::new("r", "w", "sha", "{}", 0);
        run.history.push(Call::Activity {
            task: "validate".to_owned(),
            args: "{}".to_owned(),
            options: ActivityOptions::default(),
        });
        let mut r = Replayer::new(run, 5);
        let err = r
            .activity("charge", "{}", ActivityOptions::default())
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("activity validate({})") && text.contains("activity charge({})"),
            "{text}"
        );
    }

    #[test]
    fn a_run_cannot_grow_without_bound() {
        let run = Run::new("r", "w", "sha", "{}", 0);
        let mut r = Replayer::new(run, 0);
        for _ in 0..MAX_HISTORY {
            r.now().unwrap();
        }
        assert!(matches!(r.now(), Err(Interrupt::Misuse(m)) if m.contains("10000 calls")));
        let run = Run::new("r", "w", "sha", "{}", 0);
        let mut r = Replayer::new(run, 0);
        let huge = "x".repeat(MAX_CALL_BYTES + 1);
        assert!(matches!(r.set_state(&huge), Err(Interrupt::Misuse(m)) if m.contains("bytes")));
    }

    #[test]
    fn recorded_answers_come_back_on_replay() {
        let run = Run::new("r", "w", "sha", "{}", 0);
        let mut r = Replayer::new(run, 1_000);
        let (t, x) = (r.now().unwrap(), r.random().unwrap());
        let (run, _, _) = r.finish();
        let mut again = Replayer::new(run, 9_000);
        assert_eq!((again.now().unwrap(), again.random().unwrap()), (t, x));
        assert_eq!(again.now().unwrap(), 9_000, "a new call reads the time now");
    }

    #[test]
    fn join_sets_return_steps_in_the_order_they_ended() {
        let mut run = Run::new("r", "w", "sha", "{}", 0);
        let code = |r: &mut Replayer| -> Result<Vec<u32>, Interrupt> {
            let set = r.join_set()?;
            for task in ["a", "b", "c"] {
                r.submit(
                    set,
                    Call::Activity {
                        task: task.to_owned(),
                        args: "{}".to_owned(),
                        options: ActivityOptions::default(),
                    },
                )?;
            }
            let mut order = Vec::new();
            while let Some((step, _)) = r.await_next(set)? {
                order.push(step);
            }
            Ok(order)
        };
        let mut r = Replayer::new(run.clone(), 0);
        assert_eq!(code(&mut r), Err(Interrupt::Suspend));
        let (next, effects, _) = r.finish();
        assert_eq!(effects.len(), 3);
        run = next;
        // c (step 3) ends first, then a (step 1).
        run.outcomes.insert(3, ok("3", 10));
        run.outcomes.insert(1, ok("1", 20));
        let mut r = Replayer::new(run.clone(), 30);
        assert_eq!(code(&mut r), Err(Interrupt::Suspend));
        run = r.finish().0;
        run.outcomes.insert(2, ok("2", 40));
        let mut r = Replayer::new(run, 50);
        assert_eq!(code(&mut r), Ok(vec![3, 1, 2]));
    }

    #[test]
    fn events_are_taken_once_and_waits_time_out() {
        let mut run = Run::new("r", "w", "sha", "{}", 0);
        let mut r = Replayer::new(run.clone(), 0);
        assert_eq!(r.await_event("payment", 500), Err(Interrupt::Suspend));
        let (next, _, wake) = r.finish();
        assert_eq!(wake, Some(500));
        run = next;
        run.events.push(super::super::model::Event {
            topic: "payment".to_owned(),
            payload: "{\"ok\":true}".to_owned(),
            at: 100,
            taken_by: None,
        });
        let mut r = Replayer::new(run.clone(), 100);
        assert_eq!(
            r.await_event("payment", 500),
            Ok(Some("{\"ok\":true}".to_owned()))
        );
        // A second wait does not see the taken event; it times out.
        assert_eq!(r.await_event("payment", 50), Err(Interrupt::Suspend));
        let (run, _, wake) = r.finish();
        assert_eq!(wake, Some(150));
        let mut r = Replayer::new(run, 200);
        assert_eq!(
            r.await_event("payment", 500),
            Ok(Some("{\"ok\":true}".to_owned()))
        );
        assert_eq!(r.await_event("payment", 50), Ok(None));
    }
}
