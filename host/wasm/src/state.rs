//! What one job's `Store` holds: its WASI context (deny-all), its memory
//! limiter, its log, its deadlines and the host calls it may make.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use xylem_core::{CancelToken, HostCalls, LogLevel, Progress, TaskInfo};

use crate::limiter::MemoryLimiter;
use crate::log::JobLog;

/// Why the host stopped a run from outside (raised from the epoch callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    #[error("hard time limit exceeded")]
    TimeLimit,
    #[error("cancelled")]
    Cancelled,
    /// Instructions and host calls together used up the fuel budget.
    #[error("fuel exhausted")]
    FuelExhausted,
}

/// The store data of one run.
pub(crate) struct JobState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: JobLog,
    pub(crate) info: TaskInfo,
    pub(crate) host: Arc<dyn HostCalls>,
    pub(crate) cancel: CancelToken,
    pub(crate) hard_deadline: Instant,
    pub(crate) soft_deadline: Option<Instant>,
    pub(crate) soft_limit_reached: bool,
    pub(crate) progress: Option<Progress>,
    /// Fuel charged for host calls so far, counted against the budget
    /// beside the store's own fuel (see `run.rs`).
    pub(crate) host_fuel: u64,
}

impl std::fmt::Debug for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobState")
            .field("info", &self.info)
            .finish()
    }
}

/// Everything needed to make a [`JobState`].
pub(crate) struct JobSetup {
    pub(crate) info: TaskInfo,
    pub(crate) host: Arc<dyn HostCalls>,
    pub(crate) cancel: CancelToken,
    pub(crate) started: Instant,
    pub(crate) hard_deadline: Instant,
    pub(crate) soft_deadline: Option<Instant>,
    pub(crate) max_memory: u64,
    pub(crate) max_log: u64,
    pub(crate) max_log_entries: u64,
    /// Seed of `wasi:random/insecure-seed` (what hash maps seed from).
    pub(crate) insecure_seed: u128,
}

impl JobState {
    pub(crate) fn new(setup: JobSetup) -> Self {
        let log = JobLog::new(setup.max_log, setup.max_log_entries, setup.started);
        // Deny by default: no preopened directories, no environment, no
        // arguments, no network, no name lookup. Only stdout/stderr exist,
        // and they go to the job log. The insecure seed is fixed per input
        // so the same job uses the same fuel every time; secure random
        // stays truly random.
        let wasi = WasiCtx::builder()
            .stdout(log.stream(LogLevel::Stdout))
            .stderr(log.stream(LogLevel::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .insecure_random_seed(setup.insecure_seed)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(setup.max_memory),
            log,
            info: setup.info,
            host: setup.host,
            cancel: setup.cancel,
            hard_deadline: setup.hard_deadline,
            soft_deadline: setup.soft_deadline,
            soft_limit_reached: false,
            progress: None,
            host_fuel: 0,
        }
    }

    /// Charges the guest `fuel` for a host call.
    pub(crate) fn charge_fuel(&mut self, fuel: u64) {
        self.host_fuel = self.host_fuel.saturating_add(fuel);
    }

    /// Decides, at an epoch tick, whether the run may go on.
    pub(crate) fn check_deadlines(&mut self, now: Instant) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if now >= self.hard_deadline {
            return Err(Stop::TimeLimit);
        }
        self.note_soft_deadline(now);
        Ok(())
    }

    /// Marks the soft limit as reached once it has passed.
    pub(crate) fn note_soft_deadline(&mut self, now: Instant) {
        if !self.soft_limit_reached && self.soft_deadline.is_some_and(|soft| now >= soft) {
            self.soft_limit_reached = true;
            self.log
                .push(LogLevel::Warn, "soft time limit reached".to_owned());
        }
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
