//! Workflow instances kept between steps (Temporal's "sticky" workers).
//!
//! A step that ends waiting — on an activity, a timer, an event — leaves
//! its instance parked inside the host call it waits on, instead of
//! trapping out of it. When the same run is stepped next in this process,
//! that call is handed the new step's [`Replayer`] and the code goes on
//! where it stopped: no new instance, no replay of the calls before. A run
//! is replayed from the top only when its instance is not here: evicted,
//! kept by another process, lost in a crash — or stale, when the run's
//! step mark shows that another step was written since (another engine
//! stepped it, or this step's own write lost; see
//! [`Replayer::continues`]).
//!
//! Going on is replay's exact equivalent: the code's state is what replay
//! would rebuild, fuel is spent where replay would spend it again, and
//! every call from there on is checked against the history as usual.
//!
//! Bounded ([`KeptLimits`]): at most so many parked instances, and so many
//! bytes of their linear memory, in the process. A full shelf takes no
//! more (the waiting code traps out as without it, and its run replays at
//! its next step); instances idle for 30 s are let go at the next step.
//! Parked instances hold slots of the runtime's instance pool (at most
//! half of it): a job or a step that finds the pool full lets every
//! parked instance go first, so they never take anyone's room.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use xylem_core::workflow::Replayer;

use crate::workflow::WorkflowState;

/// How many workflow instances a process keeps between steps.
#[derive(Debug, Clone, Copy)]
pub struct KeptLimits {
    /// Parked instances at most (0: none; every step replays).
    pub instances: usize,
    /// Bytes of linear memory the parked instances may hold in all.
    pub memory: u64,
}

impl Default for KeptLimits {
    /// 64 instances, 512 MiB.
    fn default() -> Self {
        Self {
            instances: 64,
            memory: 512 * 1024 * 1024,
        }
    }
}

/// How a run's `run` export ended: what it returned, or why it stopped.
pub(crate) enum Stop {
    /// The instance could not be made.
    Instantiate(wasmtime::Error),
    /// The code trapped (an interrupt, a limit, a fault).
    Trap(wasmtime::Error),
}

/// The end of a run's code: its store's data, and what `run` gave.
pub(crate) type Ran = (WorkflowState, Result<Result<String, String>, Stop>);

/// What a host call hands to its step when it parks.
pub(crate) struct Parked {
    /// The step's replayer, as the code left it.
    pub(crate) replayer: Replayer,
    /// Calls the code made before the one it waits on (where the next
    /// step's replayer must stand).
    pub(crate) calls: usize,
    /// Linear memory the instance holds.
    pub(crate) memory: u64,
}

/// The host calls' end of the line between a running instance and the
/// steps that drive it.
pub(crate) struct Link {
    parked: mpsc::UnboundedSender<Parked>,
    resume: mpsc::UnboundedReceiver<Replayer>,
    /// Weak: a parked instance must not keep its runtime alive.
    shelf: Weak<KeptInstances>,
}

impl Link {
    /// Whether an instance may park now: the shelf has room. (A full shelf
    /// is not made room on: letting a parked instance go costs more than
    /// the replay it would save, and under a flood of runs every instance
    /// would push out one that is about to be wanted.)
    pub(crate) fn may_park(&self, memory: u64) -> bool {
        self.shelf
            .upgrade()
            .is_some_and(|shelf| shelf.has_room(memory))
    }

    /// Hands `parked` to the step and waits for the next step's replayer;
    /// `None` if no step will come (the instance was let go).
    pub(crate) async fn park(&mut self, parked: Parked) -> Option<Replayer> {
        self.parked.send(parked).ok()?;
        self.resume.recv().await
    }
}

/// The future of a run's `run` export.
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Ran> + Send>>;

/// A run's code, running (or parked) in its instance: the future of its
/// `run` export and the steps' end of the line to its host calls.
pub(crate) struct Running {
    pub(crate) future: RunFuture,
    pub(crate) parked: mpsc::UnboundedReceiver<Parked>,
    resume: mpsc::UnboundedSender<Replayer>,
}

impl Running {
    /// The code `start` makes, given the host calls' end of the line
    /// (`None`: nothing is kept on `shelf`; a wait traps out).
    pub(crate) fn new(
        shelf: &Arc<KeptInstances>,
        start: impl FnOnce(Option<Link>) -> RunFuture,
    ) -> Self {
        let (parked_tx, parked) = mpsc::unbounded_channel();
        let (resume, resume_rx) = mpsc::unbounded_channel();
        let link = (shelf.limits.instances > 0).then(|| Link {
            parked: parked_tx,
            resume: resume_rx,
            shelf: Arc::downgrade(shelf),
        });
        let future = start(link);
        Self {
            future,
            parked,
            resume,
        }
    }

    /// Hands the next step's replayer to the parked host call; gives it
    /// back if the instance is gone.
    pub(crate) fn resume(&self, replayer: Replayer) -> Result<(), Box<Replayer>> {
        self.resume.send(replayer).map_err(|e| Box::new(e.0))
    }
}

/// A parked instance, as the next step finds it.
pub(crate) struct Kept {
    pub(crate) running: Running,
    /// The mark of the step that parked it.
    pub(crate) mark: String,
    /// Calls made before the one it waits on.
    pub(crate) calls: usize,
}

struct Entry {
    kept: Kept,
    memory: u64,
    /// When it was parked (a counter): the smallest is evicted first.
    parked_at: u64,
    /// When it was parked: those idle past [`IDLE_AFTER`] are let go.
    since: Instant,
}

/// How long a parked instance is worth the pool slot and memory it holds:
/// its run's next step may never come here (another process took it, it
/// ended without its code, it sleeps for hours). Kept instances are for
/// hot runs.
const IDLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shelf {
    /// By (plugin digest, run id).
    entries: HashMap<(String, String), Entry>,
    clock: u64,
    memory: u64,
}

/// How often steps went on in a kept instance, and how often they
/// replayed in a new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptStats {
    /// Instances parked now.
    pub parked: usize,
    /// Steps that went on in a kept instance.
    pub resumed: u64,
    /// Steps that started a new instance (a run's first step, or a replay).
    pub started: u64,
}

/// The process's parked workflow instances.
pub(crate) struct KeptInstances {
    limits: KeptLimits,
    shelf: Mutex<Shelf>,
    resumed: AtomicU64,
    started: AtomicU64,
}

impl KeptInstances {
    pub(crate) fn new(limits: KeptLimits) -> Self {
        Self {
            limits,
            shelf: Mutex::new(Shelf::default()),
            resumed: AtomicU64::new(0),
            started: AtomicU64::new(0),
        }
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Shelf> {
        // A panic elsewhere while it was held leaves a consistent map.
        self.shelf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an instance holding `memory` bytes may be parked now.
    pub(crate) fn has_room(&self, memory: u64) -> bool {
        let shelf = self.shelf();
        shelf.entries.len() < self.limits.instances
            && shelf.memory.saturating_add(memory) <= self.limits.memory
    }

    /// Takes run `run`'s parked instance of plugin `plugin`, if any, and
    /// lets the others idle past [`IDLE_AFTER`] go (outside the lock).
    pub(crate) fn take(&self, plugin: &str, run: &str) -> Option<Kept> {
        let wanted = (plugin.to_owned(), run.to_owned());
        let mut idle = Vec::new();
        let taken = {
            let mut shelf = self.shelf();
            let old: Vec<_> = shelf
                .entries
                .iter()
                .filter(|(key, e)| **key != wanted && e.since.elapsed() >= IDLE_AFTER)
                .map(|(key, _)| key.clone())
                .collect();
            for key in old {
                if let Some(e) = shelf.entries.remove(&key) {
                    shelf.memory = shelf.memory.saturating_sub(e.memory);
                    idle.push(e);
                }
            }
            shelf.entries.remove(&wanted).map(|entry| {
                shelf.memory = shelf.memory.saturating_sub(entry.memory);
                entry.kept
            })
        };
        drop(idle);
        taken
    }

    /// Parks `kept` for run `run` of plugin `plugin`; the least recently
    /// parked are let go past the limits (outside the lock: dropping an
    /// instance unwinds its code).
    pub(crate) fn keep(&self, plugin: &str, run: &str, kept: Kept, memory: u64) {
        let mut let_go = Vec::new();
        {
            let mut shelf = self.shelf();
            shelf.clock += 1;
            let parked_at = shelf.clock;
            shelf.memory = shelf.memory.saturating_add(memory);
            let entry = Entry {
                kept,
                memory,
                parked_at,
                since: Instant::now(),
            };
            if let Some(old) = shelf
                .entries
                .insert((plugin.to_owned(), run.to_owned()), entry)
            {
                shelf.memory = shelf.memory.saturating_sub(old.memory);
                let_go.push(old);
            }
            while shelf.entries.len() > self.limits.instances || shelf.memory > self.limits.memory {
                let Some(oldest) = shelf
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.parked_at)
                    .map(|(key, _)| key.clone())
                else {
                    break;
                };
                if let Some(old) = shelf.entries.remove(&oldest) {
                    shelf.memory = shelf.memory.saturating_sub(old.memory);
                    let_go.push(old);
                }
            }
        }
        drop(let_go);
    }

    /// Lets every parked instance go (their pool slots are wanted);
    /// returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let all = {
            let mut shelf = self.shelf();
            shelf.memory = 0;
            std::mem::take(&mut shelf.entries)
        };
        let count = all.len();
        drop(all);
        count
    }

    pub(crate) fn count_resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> KeptStats {
        KeptStats {
            parked: self.shelf().entries.len(),
            resumed: self.resumed.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
        }
    }
}
