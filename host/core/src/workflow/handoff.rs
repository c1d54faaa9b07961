//! Runs handed from this process's deliveries straight to its engine.
//!
//! When an activity ends, its worker writes the outcome into the run and
//! wakes it (`delivery.rs`); an engine then finds the run due, leases it
//! in a write of its own, and steps it — a read and a write per step that
//! only move the run from one part of the process to another. While an
//! engine runs in this process over the same store ([`Engine::run`]), it
//! is that store's *taker*: a delivery leases the run to it in the write
//! that gives the outcome — by the one lease rule, [`lease_to`] — and
//! hands the leased run over, and the engine steps it at once.
//!
//! Only a run no engine holds is taken (one being stepped is woken as
//! before, and stepped again by whoever holds it). A run handed over but
//! never stepped (its engine stopped meanwhile) is stepped by any engine
//! once its lease lapses, as after a crash: at-least-once holds either way.
//!
//! [`Engine::run`]: super::Engine::run

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

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
    let until = now + ms(lease);
    let mut leased = run;
    leased.state = RunState::Running;
    leased.lease = Some(Lease {
        owner: owner.to_owned(),
        until,
    });
    leased.wake_at = Some(until);
    Some(leased)
}

/// A store's identity in this process: the address its handle points at
/// (an engine and a worker built from the same `Stores` share it).
fn store_key(store: &Arc<dyn WorkflowStore>) -> usize {
    Arc::as_ptr(store).cast::<()>() as usize
}

/// Most runs handed over and not yet taken up by their engine: past it a
/// delivery wakes its run as usual instead (an engine busy stepping does
/// not hoard runs that idle engines elsewhere could take).
const MAX_WAITING: usize = 256;

/// The engine of this process that takes runs, per store.
static TAKERS: Mutex<Vec<(usize, Taker)>> = Mutex::new(Vec::new());

/// An engine that takes handed runs: its name, its lease, its inbox.
#[derive(Clone)]
pub(crate) struct Taker {
    owner: String,
    lease: Duration,
    tx: mpsc::UnboundedSender<Vec<Run>>,
    /// Runs handed over and not yet taken up.
    waiting: Arc<AtomicUsize>,
}

impl Taker {
    /// `run` (just given an outcome) leased to this engine, if no engine
    /// holds it and fewer than `MAX_WAITING` runs wait handed over.
    pub(crate) fn lease(&self, run: &Run, now: Millis) -> Option<Run> {
        if run.state.is_final()
            || run.lease.as_ref().is_some_and(|l| l.until > now)
            || self.waiting.load(Ordering::Relaxed) >= MAX_WAITING
        {
            return None;
        }
        lease_to(run.clone(), &self.owner, self.lease, now)
    }

    /// Hands `runs` (leased to this engine, written) over; false if the
    /// engine has stopped taking them.
    pub(crate) fn hand(&self, runs: Vec<Run>) -> bool {
        if runs.is_empty() {
            return true;
        }
        let n = runs.len();
        self.waiting.fetch_add(n, Ordering::Relaxed);
        let sent = self.tx.send(runs).is_ok();
        if !sent {
            self.waiting.fetch_sub(n, Ordering::Relaxed);
        }
        sent
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
    rx: mpsc::UnboundedReceiver<Vec<Run>>,
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
    pub(crate) async fn recv(&mut self) -> Option<Vec<Run>> {
        self.rx.recv().await
    }

    /// `first` and the runs handed over after it, at most about `limit`,
    /// to be stepped at `now`. A run whose lease has less than half of it
    /// left is dropped: it waited too long here, and is stepped once its
    /// lease lapses, by whichever engine looks then (stepping it now could
    /// overlap that).
    pub(crate) fn drain(&mut self, first: Vec<Run>, limit: usize, now: Millis) -> Vec<Run> {
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
        runs.retain(|run| run.lease.as_ref().is_some_and(|l| l.until >= fresh));
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

    #[tokio::test]
    async fn a_delivery_leases_a_run_no_engine_holds_to_this_process_engine_and_hands_it_over() {
        let store: Arc<dyn WorkflowStore> = Arc::new(crate::memory::MemoryStore::new());
        let other: Arc<dyn WorkflowStore> = Arc::new(crate::memory::MemoryStore::new());
        let mut inbox = Inbox::open(&store, "engine-x", Duration::from_secs(30));
        let (deliveries, received) = delivery::channel();
        tokio::spawn(delivery::run(store.clone(), received));

        // Free: leased to engine-x in the delivery's write, and handed over.
        waiting(&store, "free", None).await;
        deliveries.deliver("free", 0, ended()).await.unwrap();
        let handed = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.len(), 1);
        let stored = store.get_run("free").await.unwrap().unwrap();
        assert_eq!(handed[0], stored, "handed over as written");
        assert!(stored.outcomes.contains_key(&0));
        assert_eq!(stored.state, RunState::Running);
        let lease = stored.lease.unwrap();
        assert_eq!(lease.owner, "engine-x");
        assert_eq!(
            stored.wake_at,
            Some(lease.until),
            "due again if engine-x dies"
        );

        // Held by another engine: given its outcome and woken, not taken.
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
    }
}
