//! Xylem's PostgreSQL adapter: broker, result backend, plugin store, and
//! group and lock stores, in one schema of one database.
//!
//! `postgres://user:pass@host:5432/db?schema=NAME` — every table lives in
//! `NAME` (default `xylem`), created on connect if missing, and every
//! pooled connection has it as its only `search_path`, so several
//! deployments (or test runs) can share a database. The tables are created
//! by embedded migrations (`migrations/`), applied on connect under
//! sqlx's advisory lock, so processes starting together do not race.
//!
//! Workers claim jobs with one `UPDATE … FOR UPDATE SKIP LOCKED`
//! statement: any number of processes on any number of machines share the
//! queues, and each job is leased to exactly one of them at a time.
//! Publishing (and retries, releases and replays) sends a `NOTIFY` on the
//! schema's channel that idle workers `LISTEN` on, so they wake at once
//! rather than at their next poll.
//!
//! The hot path ([`Broker::enqueue`](xylem_core::store::Broker::enqueue),
//! `claim`, `complete`, `extend_many`) costs a constant number of
//! statements per batch, whatever its size: values travel as arrays and
//! are spread with `unnest`, and the writes of one step are data-modifying
//! CTEs of one statement. Enqueue is one statement (records, first
//! history entries, queue entries and the `NOTIFY`); a claim is one
//! statement (pick, lease, mark the records `running` or recreate them,
//! history, drop jobs that already succeeded); a batch of completions is
//! one transaction of two statements (lock and read the queue entries and
//! records, then write every transition and settle every entry).
//!
//! Clock: several machines share the store, so the queue and the records
//! run on the **server's** clock (`statement_timestamp()`), never a
//! worker's: lease expiries and extensions, whether a job is due, retry
//! and replay delays, dead-letter times, record and history times, record
//! expiries. Only a job's `not_before`/`enqueued_at` come from the client
//! that enqueued it (and named locks, `LockStore`, still use the caller's
//! clock).
//!
//! Durability: PostgreSQL's defaults (`synchronous_commit=on`, `fsync=on`)
//! make every enqueue, completion, nack, replay and record write durable
//! when it returns — a queued job or a recorded result survives a crash of
//! the server or the machine. Claims and lease extensions alone commit
//! asynchronously (`synchronous_commit=off` for their own transaction):
//! they are the most frequent writes, a WAL flush each would cap the claim
//! rate at the disk's flush rate, and losing the last few of them in a
//! server crash is harmless — those jobs are simply handed out again, as
//! after a lost lease (`Broker::complete` then keeps a success and refuses
//! anything else, as for any lost lease). No job and no result is ever
//! lost that way: WAL is flushed in order, so the durable commit of a
//! job's completion also makes its earlier claim durable. A server run
//! with `synchronous_commit=off` trades the last few hundred milliseconds
//! of every kind of commit for speed.

/// The server's clock in milliseconds since the epoch, as SQL (a literal,
/// for `concat!`): the time the statement started, so one statement sees
/// one "now", and stable, so index scans can compare with it.
macro_rules! now_ms {
    () => {
        "floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
    };
}

/// A select-list item that makes the statement's (implicit) transaction
/// commit without waiting for its WAL flush: for claims and lease
/// extensions only (see "Durability" in the crate docs).
macro_rules! async_commit {
    () => {
        "set_config('synchronous_commit', 'off', true) AS async_commit"
    };
}

mod broker;
mod cancellation;
mod coordination;
mod hot;
mod plugins;
mod queue_control;
mod results;
mod workers;
mod workflows;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Mutex;
use xylem_core::store::{StoreError, StoreResult};
use xylem_core::store_url::{Location, OtherOptions, StoreUrl, UrlRules};

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "xylem";

/// How long an operation waits for a pooled connection before it fails
/// with [`StoreError::Unavailable`] (workers then retry with backoff).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `connect` waits for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), which also bounds
/// `NOTIFY` channel names.
const MAX_IDENTIFIER: usize = 63;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A PostgreSQL-backed store. Cheap to clone: clones share the pool and
/// the notification listener.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: String,
    /// The `NOTIFY` channel that wakes idle workers.
    channel: String,
    /// Where `host:port/database` is, for messages (never the password).
    target: String,
    /// Created on the first `wait_for_jobs`, dropped (and recreated on the
    /// next call) when it fails.
    listener: Arc<Mutex<Option<PgListener>>>,
    /// When (local ms) expired records were last reclaimed by `complete`.
    last_reclaim: Arc<AtomicI64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Maps a sqlx error, keeping it as the source: lost or refused
/// connections, pool timeouts and server shutdowns are
/// [`StoreError::Unavailable`]; serialization failures, deadlocks and lock
/// timeouts a transient [`StoreError::Backend`]; undecodable columns
/// [`StoreError::Corrupt`]; anything else a permanent
/// [`StoreError::Backend`].
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    let message = format!("PostgreSQL: {e}");
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::unavailable_from(message, e),
        sqlx::Error::Database(d) => match d.code() {
            Some(code) if is_connection_state(&code) => StoreError::unavailable_from(message, e),
            Some(code) if is_transient_state(&code) => StoreError::backend_from(message, true, e),
            _ => StoreError::backend_from(message, false, e),
        },
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::backend_from(message, false, e),
    }
}

/// SQLSTATEs that mean the server cannot serve us right now: connection
/// exceptions (class 08), shutdowns (`57P01` admin, `57P02` crash, `57P03`
/// cannot connect now: the connection is gone or refused, so these count
/// as an outage, which is transient too), too many connections.
fn is_connection_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// SQLSTATEs after which the same call may succeed: serialization failure,
/// deadlock detected, lock not available (lock_timeout / NOWAIT), and
/// the other transaction-rollback conditions (class 40).
fn is_transient_state(code: &str) -> bool {
    code.starts_with("40") || code == "55P03"
}

pub(crate) use xylem_core::codec::corrupt;

pub(crate) use xylem_core::codec::{sql_int, sql_u32, sql_u64};

/// Checks a schema name: 1 to 63 ASCII letters, digits and underscores,
/// not starting with `pg_` (reserved by PostgreSQL).
fn validate_schema(name: &str) -> StoreResult<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_IDENTIFIER
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.to_ascii_lowercase().starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid PostgreSQL schema name `{name}`: use 1 to {MAX_IDENTIFIER} letters, digits \
             and underscores, not starting with pg_ (e.g. ?schema=xylem)"
        )))
    }
}

/// What the PostgreSQL adapter takes from its URL: `schema`; every other
/// option is sqlx's.
const URL_RULES: UrlRules = UrlRules {
    store: "PostgreSQL",
    schemes: &["postgres", "postgresql"],
    options: &["schema"],
    others: OtherOptions::Driver,
    location: Location::Network,
    example: "postgres://user@host:5432/database",
};

/// Parses `postgres://…[?…&schema=NAME&…]`: the URL for sqlx (without
/// `schema`) and the schema name, checked.
fn parse_url(url: &str) -> StoreResult<(StoreUrl, String)> {
    let parsed = StoreUrl::parse(url, &URL_RULES)?;
    let schema = parsed.option("schema").unwrap_or(DEFAULT_SCHEMA).to_owned();
    validate_schema(&schema)?;
    Ok((parsed, schema))
}

/// `"name"`: a validated name as a quoted identifier.
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// The `NOTIFY` channel of a schema (cut to PostgreSQL's identifier limit;
/// two schemas sharing a cut channel only cost a spurious wake-up).
fn channel_of(schema: &str) -> String {
    let mut channel = format!("xylem_jobs_{schema}");
    channel.truncate(MAX_IDENTIFIER);
    channel
}

impl PostgresStore {
    /// Connects to `postgres://…` or `postgresql://…` (any option sqlx
    /// accepts, plus `schema=NAME`, default `xylem`), creates the schema
    /// if missing and applies the migrations.
    ///
    /// A server that cannot be reached is [`StoreError::Unavailable`]; a
    /// malformed URL or schema name [`StoreError::Invalid`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let (url, schema) = parse_url(url)?;
        let options = PgConnectOptions::from_str(url.driver_url())
            .map_err(|e| {
                StoreError::Invalid(format!("invalid PostgreSQL URL {}: {e}", url.redacted()))
            })?
            // Generic plans: the hot statements are large (many CTEs) and
            // run thousands of times a second; with `LIMIT $1` the planner
            // would otherwise keep re-planning them for every call. A
            // generic plan is made once per connection, perhaps while the
            // tables are still empty, and kept as they grow: without
            // sequential scans it cannot settle on one there (nor on a
            // hash join over a whole table). Every statement here is meant
            // to run on an index; those that must read a whole table
            // (`queue_stats`) still can.
            .options([
                ("search_path", quoted(&schema)),
                ("plan_cache_mode", "force_generic_plan".to_owned()),
                ("enable_seqscan", "off".to_owned()),
            ]);
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );

        // One direct connection first: it reports why the server cannot
        // be reached (the pool would only say it timed out), and prepares
        // the schema.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                StoreError::unavailable(format!(
                    "cannot connect to PostgreSQL at {target}: no answer within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| {
                StoreError::unavailable_from(
                    format!("cannot connect to PostgreSQL at {target}: {e}"),
                    e,
                )
            })?;
        let prepared = prepare_schema(&mut conn, &schema).await;
        let _ = conn.close().await;
        prepared?;

        // No ping before each acquire: it would add a round trip to every
        // call. A connection that broke meanwhile fails its next call with
        // `Unavailable` (which callers retry) and is dropped by the pool.
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        // Through the pool (whose connections use the schema): sqlx's
        // advisory lock serialises concurrent migrators.
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            MigrateError::Execute(e) => db(e),
            other => StoreError::backend_from(
                format!("cannot apply the migrations to schema {schema}: {other}"),
                false,
                other,
            ),
        })?;
        tracing::debug!(%target, %schema, "connected to PostgreSQL");
        Ok(Self {
            pool,
            channel: channel_of(&schema),
            schema,
            target,
            listener: Arc::new(Mutex::new(None)),
            last_reclaim: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The server's version and a round trip, for `xylem health`:
    /// `PostgreSQL 15.19`.
    pub async fn health(&self) -> StoreResult<String> {
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let number = version.split_whitespace().next().unwrap_or(&version);
        Ok(format!("PostgreSQL {number}"))
    }

    /// Drops the schema and everything in it, then closes the pool: the
    /// store is unusable afterwards. For tests and teardown scripts.
    pub async fn drop_schema(&self) -> StoreResult<()> {
        *self.listener.lock().await = None;
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quoted(&self.schema));
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.pool.close().await;
        Ok(())
    }
}

/// Checks the server's version and creates the schema if missing (under
/// an advisory lock, as two concurrent `CREATE SCHEMA IF NOT EXISTS` can
/// still collide).
async fn prepare_schema(conn: &mut PgConnection, schema: &str) -> StoreResult<()> {
    let version: i64 = sqlx::query_scalar("SELECT current_setting('server_version_num')::bigint")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if version < 120_000 {
        return Err(StoreError::unavailable(format!(
            "PostgreSQL 12 or newer is needed (the server is {version})"
        )));
    }

    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('xylem schema ' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    // Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege
    // on the database even when the schema exists.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    if !exists {
        let sql = format!("CREATE SCHEMA {}", quoted(schema));
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::backend_from(format!("cannot create schema {schema}: {e}"), false, e)
            })?;
        tracing::info!(%schema, "created PostgreSQL schema");
    }
    tx.commit().await.map_err(db)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `connect` can run in a spawned task (a `Send + 'static` future).
    #[allow(dead_code)]
    fn connect_is_spawnable() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        spawnable(async { PostgresStore::connect("postgres://h/db").await });
    }

    #[test]
    fn schema_defaults_and_is_stripped_from_the_url() {
        let (url, schema) = parse_url("postgres://u@h:5432/db").unwrap();
        assert_eq!(
            (url.driver_url(), schema.as_str()),
            ("postgres://u@h:5432/db", "xylem")
        );

        let (url, schema) =
            parse_url("postgresql://u:p@h/db?sslmode=disable&schema=jobs_2&application_name=x")
                .unwrap();
        assert_eq!(
            url.driver_url(),
            "postgresql://u:p@h/db?sslmode=disable&application_name=x"
        );
        assert_eq!(schema, "jobs_2");

        let (url, schema) = parse_url("postgres://h/db?schema=Mixed_Case").unwrap();
        assert_eq!(
            (url.driver_url(), schema.as_str()),
            ("postgres://h/db", "Mixed_Case")
        );

        // Percent-decoded, like every option of Xylem's.
        let (_, schema) = parse_url("postgres://h/db?schema=team%5Fa").unwrap();
        assert_eq!(schema, "team_a");
    }

    #[test]
    fn bad_urls_and_schema_names_are_invalid() {
        for url in [
            "mysql://h/db",
            "sqlite://x.db",
            "postgres://h/db?schema=",
            "postgres://h/db?schema",
            "postgres://h/db?schema=a-b",
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=x%22y",
            "postgres://h/db?schema=pg_catalog",
            "postgres://h/db?schema=a&schema=b",
            "postgres://h/db?schema=a&schema=a",
        ] {
            assert!(
                matches!(parse_url(url), Err(StoreError::Invalid(_))),
                "{url} should be invalid"
            );
        }
        let long = "s".repeat(64);
        assert!(parse_url(&format!("postgres://h/db?schema={long}")).is_err());
        assert!(parse_url(&format!("postgres://h/db?schema={}", &long[..63])).is_ok());
    }

    #[test]
    fn channel_fits_the_identifier_limit() {
        assert_eq!(channel_of("xylem"), "xylem_jobs_xylem");
        assert_eq!(channel_of(&"s".repeat(63)).len(), MAX_IDENTIFIER);
    }

    #[test]
    fn connection_states_are_unavailable() {
        assert!(is_connection_state("08006"));
        assert!(is_connection_state("57P01"));
        assert!(!is_connection_state("23505"));
        assert!(is_transient_state("40001"));
        assert!(is_transient_state("40P01"));
        assert!(is_transient_state("55P03"));
        assert!(!is_transient_state("23505"));
        assert!(matches!(
            db(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable { .. }
        ));
        let e = db(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Backend { .. }) && !e.is_transient());
    }
}
