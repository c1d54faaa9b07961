//! Runs handed from this process's deliveries straight to its engine.
//!
//! When an activity ends, its worker gives the outcome to the run
//! (`delivery.rs`); an engine then steps the run. Written the plain way,
//! that is a write for the outcome, a look for due runs, a lease write and
//! the step's write — three of them only moving the run from one part of
//! the process to another. While an engine runs in this process over the
//! same store ([`Engine::run`]), it is that store's *taker*: a delivery
//! that finds the run free gives it its outcome in memory, leases it to
//! the taker there (as [`lease_to`] would; a run with any live lease is
//! written the plain way) and hands it over unwritten, with a [`Ticket`]. The engine steps it at once, and the
//! step's one write (compare-and-set on the version the delivery read)
//! records the outcome with everything the step did. The ticket answers
//! the delivery: written, or not — a lost write, a step that could not
//! run, an engine that stopped — and then the delivery writes the outcome
//! the plain way. A job is marked done only after its outcome is written
//! either way, so at-least-once holds: a crash before the step's write
//! leaves the job to be delivered again.
//!
//! Only a run no engine holds is handed (one being stepped is given its
//! outcome and woken as before), and only one copy of a run at a time: a
//! run already handed and not yet answered is written the plain way.
//!
//! [`Engine::run`]: super::Engine::run

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::model::{Lease, Run, RunState};
use crate::store::WorkflowStore;
use crate::time::{Millis, ms};

/// `run` leased to `owner` from `now` for `lease`, due at its end (should
/// the engine crash), or `None` if another engine holds it.
pub(crate) fn lease_to(run: Run, owner: &str, lease: Duration, now: Millis) -> Option<Run> {
    if run
        .lease
        .as_ref()
        .is_some_and(|l| l.until > now && l.owner != owner)
    {
        return None;
    }
    Some(leased(run, owner, lease, now))
}

/// `run` leased to `owner` from `now` for `lease`, whoever held it.
fn leased(run: Run, owner: &str, lease: Duration, now: Millis) -> Run {
    let until = now + ms(lease);
    let mut leased = run;
    leased.state = RunState::Running;
    leased.lease = Some(Lease {
        owner: owner.to_owned(),
        until,
    });
    leased.wake_at = Some(until);
    leased
}

/// A store's identity in this process: the address its handle points at
/// (an engine and a worker built from the same `Stores` share it).
fn store_key(store: &Arc<dyn WorkflowStore>) -> usize {
    Arc::as_ptr(store).cast::<()>() as usize
}

/// Most runs handed over and not yet taken up by their engine: past it a
/// delivery writes its outcome and wakes the run as usual instead (an
/// engine busy stepping does not hoard runs that idle engines elsewhere
/// could take).
const MAX_WAITING: usize = 256;

/// The engine of this process that takes runs, per store.
static TAKERS: Mutex<Vec<(usize, Taker)>> = Mutex::new(Vec::new());

/// The ids of the runs handed over and not yet answered.
type InFlight = Arc<Mutex<HashSet<String>>>;

/// A run handed over unwritten: the delivery's outcome is in it, and
/// only the step's write will record it.
pub(crate) struct Handed {
    pub(crate) run: Run,
    pub(crate) ticket: Ticket,
}

/// Handed runs' tickets, by run (a drain holds one copy of a run).
pub(crate) type Tickets = HashMap<String, Ticket>;

/// Handed runs apart from their tickets.
pub(crate) fn split(handed: Vec<Handed>) -> (Vec<Run>, Tickets) {
    handed
        .into_iter()
        .map(|h| {
            let ticket = (h.ticket.id.clone(), h.ticket);
            (h.run, ticket)
        })
        .unzip()
}

/// The answer a handed run owes its delivery: whether the step that took
/// it was written. Dropped unanswered, it answers "not written".
pub(crate) struct Ticket {
    id: String,
    reply: Option<oneshot::Sender<bool>>,
    in_flight: InFlight,
}

impl Ticket {
    /// Tells the delivery whether the step (with its outcome) was written.
    pub(crate) fn answer(mut self, written: bool) {
        if let Some(reply) = self.release() {
            let _ = reply.send(written);
        }
    }

    /// Lets the run be handed again (before the answer is sent, so the
    /// delivery it wakes may hand it); returns the reply's sender the
    /// first time only.
    fn release(&mut self) -> Option<oneshot::Sender<bool>> {
        let reply = self.reply.take()?;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        Some(reply)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Unanswered (a step that could not run, an engine that stopped):
        // the dropped sender answers "not written".
        drop(self.release());
    }
}

/// An engine that takes handed runs: its name, its lease, its inbox.
#[derive(Clone)]
pub(crate) struct Taker {
    owner: String,
    lease: Duration,
    tx: mpsc::UnboundedSender<Vec<Handed>>,
    /// Runs handed over and not yet taken up.
    waiting: Arc<AtomicUsize>,
    in_flight: InFlight,
}

impl Taker {
    /// Hands `run` (just given an outcome, read at its version) over,
    /// leased to this engine, if no engine holds it, it is not handed
    /// already, and fewer than `MAX_WAITING` runs wait handed over; the
    /// answer to wait for (true: the step that recorded the outcome was
    /// written), or the run back when it was not handed.
    pub(crate) fn hand(&self, run: Run, now: Millis) -> Result<oneshot::Receiver<bool>, Box<Run>> {
        if run.state.is_final()
            || run.lease.as_ref().is_some_and(|l| l.until > now)
            || self.waiting.load(Ordering::Relaxed) >= MAX_WAITING
        {
            return Err(Box::new(run));
        }
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone())
        {
            return Err(Box::new(run));
        }
        let (reply, answer) = oneshot::channel();
        let ticket = Ticket {
            id: run.id.clone(),
            reply: Some(reply),
            in_flight: self.in_flight.clone(),
        };
        let run = leased(run, &self.owner, self.lease, now);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Err(unsent) = self.tx.send(vec![Handed { run, ticket }]) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            // The engine stopped: the ticket, dropped, answers "not
            // written" and the delivery writes the outcome itself.
            drop(unsent);
        }
        Ok(answer)
    }
}

/// The taker of `store` in this process, if an engine takes its runs.
pub(crate) fn taker(store: &Arc<dyn WorkflowStore>) -> Option<Taker> {
    let key = store_key(store);
    let takers = TAKERS.lock().unwrap_or_else(|e| e.into_inner());
    takers
        .iter()
        .find(|(k, t)| *k == key && !t.tx.is_closed())
        .map(|(_, t)| t.clone())
}

/// Where runs handed to an engine arrive. Dropping it stops the handing.
pub(crate) struct Inbox {
    key: usize,
    rx: mpsc::UnboundedReceiver<Vec<Handed>>,
    waiting: Arc<AtomicUsize>,
    lease: Duration,
}

impl Inbox {
    /// Makes the engine `owner` (leasing for `lease`) the taker of `store`
    /// in this process, unless another engine is.
    pub(crate) fn open(store: &Arc<dyn WorkflowStore>, owner: &str, lease: Duration) -> Self {
        let key = store_key(store);
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut takers = TAKERS.lock().unwrap_or_else(|e| e.into_inner());
        takers.retain(|(_, t)| !t.tx.is_closed());
        if !takers.iter().any(|(k, _)| *k == key) {
            let taker = Taker {
                owner: owner.to_owned(),
                lease,
                tx,
                waiting: waiting.clone(),
                in_flight: InFlight::default(),
            };
            takers.push((key, taker));
        }
        Self {
            key,
            rx,
            waiting,
            lease,
        }
    }

    /// The next runs handed over (`None` once closed and empty).
    pub(crate) async fn recv(&mut self) -> Option<Vec<Handed>> {
        self.rx.recv().await
    }

    /// The next runs handed over, if some are waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Vec<Handed>> {
        self.rx.try_recv().ok()
    }

    /// `first` and the runs handed over after it, at most about `limit`,
    /// to be stepped at `now`, each run once. A run whose lease has less
    /// than half of it left is dropped (its ticket answers "not written",
    /// and its delivery writes the outcome): it waited too long here.
    pub(crate) fn drain(&mut self, first: Vec<Handed>, limit: usize, now: Millis) -> Vec<Handed> {
        let mut runs = first;
        let mut taken = runs.len();
        while runs.len() < limit {
            match self.rx.try_recv() {
                Ok(more) => {
                    taken += more.len();
                    runs.extend(more);
                }
                Err(_) => break,
            }
        }
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(taken))
            });
        let fresh = now + ms(self.lease / 2);
        // One copy of a run is handed at a time (`Taker::hand`); were
        // there two, a step's write could answer the other's ticket.
        let mut seen = HashSet::new();
        runs.retain(|h| {
            h.run.lease.as_ref().is_some_and(|l| l.until >= fresh) && seen.insert(h.run.id.clone())
        });
        runs
    }

    /// Stops the handing: what was handed already is still received.
    pub(crate) fn close(&mut self) {
        self.rx.close();
        let key = self.key;
        TAKERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, t)| *k != key || !t.tx.is_closed());
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::delivery;
    use crate::workflow::model::{Call, StepOutcome};

    /// A run waiting on activity 0, written; `lease` on it if given.
    async fn waiting(store: &Arc<dyn WorkflowStore>, id: &str, lease: Option<Lease>) -> Run {
        let mut run = Run::new(id, "w", "v1", "{}", crate::time::now_ms());
        run.state = RunState::Waiting;
        run.wake_at = lease.as_ref().map(|l| l.until);
        run.lease = lease;
        run.history.push(Call::Activity {
            task: "t".to_owned(),
            args: "{}".to_owned(),
            options: Default::default(),
        });
        let version = store.put_run(&run).await.unwrap().unwrap();
        Run { version, ..run }
    }

    fn ended() -> StepOutcome {
        StepOutcome::Ok {
            value: "1".to_owned(),
            at: crate::time::now_ms(),
        }
    }

    /// A memory store whose taker is engine-x, and a worker's deliveries
    /// running over it.
    fn engine_x() -> (Arc<dyn WorkflowStore>, Inbox, delivery::Deliveries) {
        let store: Arc<dyn WorkflowStore> = Arc::new(crate::memory::MemoryStore::new());
        let inbox = Inbox::open(&store, "engine-x", Duration::from_secs(30));
        let (deliveries, received) = delivery::channel();
        tokio::spawn(delivery::run(store.clone(), received));
        (store, inbox, deliveries)
    }

    /// Delivers outcome 0 to `id` in the background.
    fn deliver(
        deliveries: &delivery::Deliveries,
        id: &str,
    ) -> tokio::task::JoinHandle<crate::store::StoreResult<()>> {
        let deliveries = deliveries.clone();
        let id = id.to_owned();
        tokio::spawn(async move { deliveries.deliver(&id, 0, ended()).await })
    }

    /// The next run handed to `inbox`.
    async fn next(inbox: &mut Inbox) -> Handed {
        let mut handed = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.len(), 1);
        handed.pop().unwrap()
    }

    /// A delivery's answer, within five seconds.
    async fn answered(
        delivering: tokio::task::JoinHandle<crate::store::StoreResult<()>>,
    ) -> crate::store::StoreResult<()> {
        tokio::time::timeout(Duration::from_secs(5), delivering)
            .await
            .expect("the delivery was answered")
            .unwrap()
    }

    #[tokio::test]
    async fn a_free_run_is_handed_over_unwritten_and_its_delivery_waits_for_the_steps_write() {
        let (store, mut inbox, deliveries) = engine_x();

        let before = waiting(&store, "free", None).await;
        let delivering = deliver(&deliveries, "free");
        let handed = next(&mut inbox).await;
        // Handed with its outcome and leased to engine-x, in memory only.
        assert!(handed.run.outcomes.contains_key(&0));
        assert_eq!(handed.run.version, before.version, "as read");
        assert_eq!(handed.run.lease.as_ref().unwrap().owner, "engine-x");
        assert_eq!(store.get_run("free").await.unwrap().unwrap(), before);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !delivering.is_finished(),
            "not answered before the step is written"
        );

        // A second outcome while the first is in flight: written plainly,
        // not handed over again.
        let again = {
            let deliveries = deliveries.clone();
            tokio::spawn(async move { deliveries.deliver("free", 1, ended()).await })
        };
        answered(again).await.unwrap();
        let stored = store.get_run("free").await.unwrap().unwrap();
        assert!(stored.outcomes.contains_key(&1) && !stored.outcomes.contains_key(&0));
        assert!(inbox.rx.try_recv().is_err(), "nothing more handed over");

        // The engine's step lost its write (the run changed meanwhile): the
        // delivery writes outcome 0 itself, and the run is due.
        let written = store.put_run(&handed.run).await.unwrap();
        assert!(written.is_none(), "the second outcome moved the version on");
        handed.ticket.answer(false);
        answered(delivering).await.unwrap();
        let stored = store.get_run("free").await.unwrap().unwrap();
        assert!(stored.outcomes.contains_key(&0) && stored.outcomes.contains_key(&1));
        assert!(stored.lease.is_none());
        assert!(stored.wake_at.is_some(), "woken, to be stepped");
    }

    #[tokio::test]
    async fn a_written_step_answers_its_delivery_and_a_dropped_ticket_means_not_written() {
        let (store, mut inbox, deliveries) = engine_x();

        // The step written (as the engine writes it): the delivery is done
        // and wrote nothing of its own.
        waiting(&store, "stepped", None).await;
        let delivering = deliver(&deliveries, "stepped");
        let handed = next(&mut inbox).await;
        let mut step = handed.run.clone();
        step.lease = None;
        step.state = RunState::Succeeded;
        step.wake_at = None;
        let version = store.put_run(&step).await.unwrap().unwrap();
        handed.ticket.answer(true);
        answered(delivering).await.unwrap();
        let stored = store.get_run("stepped").await.unwrap().unwrap();
        assert_eq!(stored.version, version, "no write after the step's");
        assert!(stored.outcomes.contains_key(&0));

        // A step that never got to its write: the ticket, dropped, makes
        // the delivery write the outcome.
        waiting(&store, "dropped", None).await;
        let delivering = deliver(&deliveries, "dropped");
        drop(next(&mut inbox).await);
        answered(delivering).await.unwrap();
        let stored = store.get_run("dropped").await.unwrap().unwrap();
        assert!(stored.outcomes.contains_key(&0));
        assert!(stored.lease.is_none());

        // Once answered, the run may be handed over again.
        let delivering = {
            let deliveries = deliveries.clone();
            tokio::spawn(async move { deliveries.deliver("dropped", 1, ended()).await })
        };
        let handed = next(&mut inbox).await;
        assert!(handed.run.outcomes.contains_key(&1));
        drop(handed);
        answered(delivering).await.unwrap();
    }

    #[tokio::test]
    async fn a_run_another_engine_holds_is_written_and_woken_not_handed_over() {
        let (store, mut inbox, deliveries) = engine_x();
        let other: Arc<dyn WorkflowStore> = Arc::new(crate::memory::MemoryStore::new());

        let until = crate::time::now_ms() + 60_000;
        let held = Lease {
            owner: "engine-y".to_owned(),
            until,
        };
        waiting(&store, "held", Some(held.clone())).await;
        deliveries.deliver("held", 0, ended()).await.unwrap();
        let stored = store.get_run("held").await.unwrap().unwrap();
        assert!(stored.outcomes.contains_key(&0));
        assert_eq!(stored.lease, Some(held));
        assert!(inbox.rx.try_recv().is_err(), "nothing handed over");

        // Another store's runs are not this engine's to take.
        assert!(taker(&other).is_none());
        assert!(taker(&store).is_some());
        inbox.close();
        assert!(taker(&store).is_none(), "a closed inbox takes nothing");

        // With no engine to take it, a free run's outcome is written.
        waiting(&store, "free", None).await;
        deliveries.deliver("free", 0, ended()).await.unwrap();
        let stored = store.get_run("free").await.unwrap().unwrap();
        assert!(stored.outcomes.contains_key(&0));
        assert!(stored.lease.is_none());
    }
}
