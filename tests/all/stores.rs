//! A fresh, empty store of each kind for one test (its own SQLite file,
//! Redis key prefix or PostgreSQL schema), and the one way a contract case
//! runs on it: open, run the case, remove the store's data when the case
//! passes (a failing case keeps its data, to look at).
//!
//! Redis and PostgreSQL come from `XYLEM_TEST_REDIS_URL` and
//! `XYLEM_TEST_POSTGRES_URL` (default: the local servers); when one does
//! not answer, its cases skip — or fail under `CI=true`
//! ([`xylem_tests::service_url`]).

use std::future::Future;
use std::sync::Arc;

use xylem_core::Stores;
use xylem_core::memory::MemoryStore;
use xylem_core::store::{
    Broker, Cancellation, CanvasStore, DeadLetters, GroupStore, LockStore, PluginStore,
    QueueControl, QuotaStore, RateLimits, ResultBackend, ScheduleStore, Statistics, WorkerRegistry,
    WorkflowStore,
};
use xylem_postgres::PostgresStore;
use xylem_redis::RedisStore;
use xylem_sqlite::SqliteStore;
use xylem_tests::cleanup::Cleanup;

/// The in-memory store.
pub(crate) async fn memory() -> Option<Arc<MemoryStore>> {
    Some(Arc::new(MemoryStore::new()))
}

/// A SQLite store in a file of its own.
pub(crate) async fn sqlite() -> Option<Arc<SqliteStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    Some(Arc::new(
        SqliteStore::open(&dir.join("contract.db")).unwrap(),
    ))
}

/// A Redis store under a key prefix of its own.
pub(crate) async fn redis() -> Option<Arc<RedisStore>> {
    let url = xylem_tests::service_url("XYLEM_TEST_REDIS_URL", "redis://127.0.0.1:6379")?;
    let prefix = xylem_tests::unique_name("xylem-t");
    let store = RedisStore::connect(&format!("{url}?prefix={prefix}"))
        .await
        .unwrap();
    Some(Arc::new(store))
}

/// The test PostgreSQL server's URL with `schema` added, if the server
/// answers.
pub(crate) fn postgres_url_with_schema(schema: &str) -> Option<String> {
    let url = xylem_tests::service_url(
        "XYLEM_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}schema={schema}"))
}

/// A PostgreSQL store in a schema of its own.
pub(crate) async fn postgres() -> Option<Arc<PostgresStore>> {
    let url = postgres_url_with_schema(&xylem_tests::unique_name("xylem_t"))?;
    Some(Arc::new(PostgresStore::connect(&url).await.unwrap()))
}

/// Every store trait: what each adapter implements.
pub(crate) trait Adapter:
    AllQueues
    + ResultBackend
    + PluginStore
    + GroupStore
    + CanvasStore
    + ScheduleStore
    + WorkflowStore
    + WorkerRegistry
    + LockStore
    + QuotaStore
    + Cancellation
    + QueueControl
    + RateLimits
    + Cleanup
    + 'static
{
}
impl<T> Adapter for T where
    T: AllQueues
        + Cancellation
        + QueueControl
        + RateLimits
        + ResultBackend
        + PluginStore
        + GroupStore
        + CanvasStore
        + ScheduleStore
        + WorkflowStore
        + WorkerRegistry
        + LockStore
        + QuotaStore
        + Cleanup
        + 'static
{
}

/// Every queue trait: the hot path and its capabilities.
pub(crate) trait AllQueues: Broker + DeadLetters + Statistics {}
impl<T: Broker + DeadLetters + Statistics> AllQueues for T {}

/// The queue, record and plugin stores of one adapter, as trait objects:
/// what a store-contract case is given.
pub(crate) trait AdapterObj: Send + Sync {
    /// As a broker, with every queue capability.
    fn broker(&self) -> &dyn AllQueues;
    /// As a result backend.
    fn results(&self) -> &dyn ResultBackend;
    /// As a plugin store.
    fn plugins(&self) -> &dyn PluginStore;
    /// As a cancellation store.
    fn cancellation(&self) -> &dyn Cancellation;
    /// As a queue-control store.
    fn queue_control(&self) -> &dyn QueueControl;
    /// As a rate-limit store.
    fn rate_limits(&self) -> &dyn RateLimits;
}

impl<T: Adapter> AdapterObj for T {
    fn broker(&self) -> &dyn AllQueues {
        self
    }
    fn results(&self) -> &dyn ResultBackend {
        self
    }
    fn plugins(&self) -> &dyn PluginStore {
        self
    }
    fn cancellation(&self) -> &dyn Cancellation {
        self
    }
    fn queue_control(&self) -> &dyn QueueControl {
        self
    }
    fn rate_limits(&self) -> &dyn RateLimits {
        self
    }
}

/// The group, lock and quota stores of one adapter: what a coordination
/// case is given.
pub(crate) trait CoordinationObj: Send + Sync {
    /// As a group store.
    fn groups(&self) -> &dyn GroupStore;
    /// As a canvas store.
    fn canvases(&self) -> &dyn CanvasStore;
    /// As a schedule store.
    fn schedules(&self) -> &dyn ScheduleStore;
    /// As a workflow-run store.
    fn workflows(&self) -> &dyn WorkflowStore;
    /// As a worker registry.
    fn workers(&self) -> &dyn WorkerRegistry;
    /// As a lock store.
    fn locks(&self) -> &dyn LockStore;
    /// As a quota store.
    fn quotas(&self) -> &dyn QuotaStore;
}

impl<T: Adapter> CoordinationObj for T {
    fn groups(&self) -> &dyn GroupStore {
        self
    }
    fn canvases(&self) -> &dyn CanvasStore {
        self
    }
    fn schedules(&self) -> &dyn ScheduleStore {
        self
    }
    fn workflows(&self) -> &dyn WorkflowStore {
        self
    }
    fn workers(&self) -> &dyn WorkerRegistry {
        self
    }
    fn locks(&self) -> &dyn LockStore {
        self
    }
    fn quotas(&self) -> &dyn QuotaStore {
        self
    }
}

/// What a case takes, made from a fresh adapter.
pub(crate) trait FromAdapter {
    /// `adapter` as this.
    fn from_adapter<A: Adapter>(adapter: Arc<A>) -> Self;
}

impl FromAdapter for Arc<dyn AdapterObj> {
    fn from_adapter<A: Adapter>(adapter: Arc<A>) -> Self {
        adapter
    }
}

impl FromAdapter for Arc<dyn CoordinationObj> {
    fn from_adapter<A: Adapter>(adapter: Arc<A>) -> Self {
        adapter
    }
}

impl FromAdapter for Stores {
    fn from_adapter<A: Adapter>(adapter: Arc<A>) -> Self {
        Stores::from_adapter(adapter)
    }
}

/// Runs `case` on the store `fresh` opens (nothing when it skips), then
/// removes the store's data.
pub(crate) async fn run<A, T, F, Fut>(fresh: impl Future<Output = Option<Arc<A>>>, case: F)
where
    A: Adapter,
    T: FromAdapter,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(store) = fresh.await else { return };
    let cleanup = store.cleanup_later();
    case(T::from_adapter(store)).await;
    cleanup.await;
}
