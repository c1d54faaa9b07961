//! Xylem's Redis adapter: broker, result backend and plugin store on one
//! Redis server (7.0 or later), shared by any number of workers on any
//! number of hosts.
//!
//! Every operation that must be atomic is one Lua script: one round trip,
//! all or nothing. On the hot path a whole batch is one script call:
//! `enqueue` writes the records, first history entries and queue entries
//! of up to a thousand jobs at once; `claim` leases jobs (promoting due
//! delayed jobs and reclaiming expired leases first) and marks their
//! records running; `complete` records every finished job of a batch and
//! settles its queue entry; `extend_many` renews all of a worker's leases.
//! Keys live under a prefix (`?prefix=NAME` in the URL, default `xylem`),
//! written in braces (`{xylem}:...`) so that no two prefixes can alias and
//! several deployments can share a server; `keys.rs` lists them.
//! Workers are woken by pub/sub when jobs are queued or requeued.
//!
//! Clock: workers on several hosts share the queues, so lease deadlines,
//! the due-time checks of delayed jobs and expired leases, lease
//! extensions, retry delays and the timestamps scripts write to records
//! all use the Redis server's clock (`TIME` inside the scripts), never a
//! worker's. Only an envelope's own times (`enqueued_at`, `not_before`,
//! hence its `run_at`) come from the client that enqueued it.
//!
//! Durability is Redis's: run it with AOF (`appendonly yes`, `appendfsync
//! everysec` or `always`) or a job acknowledged as published can be lost
//! when the server restarts.

mod broker;
mod cancellation;
mod coordination;
mod keys;
mod plugins;
mod queue_control;
mod results;
mod scripts;
mod workers;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use tokio::sync::Mutex;
use xylem_core::store::{StoreError, StoreResult};
use xylem_core::store_url::{Location, OtherOptions, StoreUrl, UrlRules};

use crate::keys::Keys;

/// A Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    /// Subscription to the wake channel, made on first wait.
    wake: Arc<Mutex<Option<PubSub>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

/// Classifies a driver error: a lost, refused or timed-out connection is
/// [`StoreError::Unavailable`]; a server that is busy (a long script),
/// loading its data set, or between masters answers `BUSY`, `LOADING`,
/// `TRYAGAIN` or `MASTERDOWN`, which is transient; anything else is not.
pub(crate) fn backend(e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return StoreError::unavailable_from(format!("redis: {e}"), e);
    }
    let transient = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
        )
    ) || e.code() == Some("BUSY");
    StoreError::backend_from(format!("redis: {e}"), transient, e)
}

/// Decodes one value of a script's reply.
pub(crate) fn value<T: redis::FromRedisValue>(v: &redis::Value) -> StoreResult<T> {
    redis::from_redis_value(v.clone()).map_err(|e| StoreError::Corrupt(format!("redis reply: {e}")))
}

pub(crate) use xylem_core::codec::corrupt;

/// What the Redis adapter takes from its URL: `prefix`; every other
/// option is the driver's. The scheme is the driver's to judge too
/// (`redis`, `rediss`, `redis+unix`, ...).
const URL_RULES: UrlRules = UrlRules {
    store: "Redis",
    schemes: &[],
    options: &["prefix"],
    others: OtherOptions::Driver,
    location: Location::Network,
    example: "redis://127.0.0.1:6379",
};

/// The key prefix when the URL names none.
const DEFAULT_PREFIX: &str = "xylem";

/// Parses a Redis URL: the URL for the driver and the key prefix.
fn parse_url(url: &str) -> StoreResult<(StoreUrl, String)> {
    let parsed = StoreUrl::parse(url, &URL_RULES)?;
    let prefix = parsed.option("prefix").unwrap_or(DEFAULT_PREFIX).to_owned();
    validate_prefix(&prefix)?;
    Ok((parsed, prefix))
}

/// A key prefix is letters, digits, `-`, `_`, `.` and `:` (it is written
/// in braces in every key, so it must not hold one).
fn validate_prefix(prefix: &str) -> StoreResult<()> {
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(StoreError::Invalid(format!(
            "invalid redis key prefix `{prefix}`: use letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

impl RedisStore {
    /// Connects to `redis://HOST:PORT[/DB][?prefix=NAME]`. The connection
    /// reconnects by itself after an outage; calls made during the outage
    /// fail with [`StoreError::Unavailable`] (workers retry them).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let (url, prefix) = parse_url(url)?;
        let client = redis::Client::open(url.driver_url()).map_err(|e| {
            StoreError::Invalid(format!("invalid redis URL {}: {e}", url.redacted()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| {
            StoreError::unavailable(format!("cannot connect to {}: timed out", url.redacted()))
        })?
        .map_err(|e| {
            StoreError::unavailable_from(format!("cannot connect to {}: {e}", url.redacted()), e)
        })?;
        let store = Self {
            conn,
            client,
            keys: Keys::new(prefix),
            wake: Arc::new(Mutex::new(None)),
        };
        // Cheap (one pass over the queue names) and idempotent; a failure
        // only matters for data older than the indexes, so it is no reason
        // to refuse the connection.
        let reindexed: Result<i64, _> = scripts::REINDEX
            .arg(store.keys.prefix())
            .invoke_async(&mut store.conn())
            .await;
        if let Err(e) = reindexed {
            tracing::warn!(error = %e, "cannot rebuild the claim indexes");
        }
        store.warn_of_the_old_layout().await;
        Ok(store)
    }

    /// The key prefix, as given (keys start with it in braces).
    pub fn prefix(&self) -> &str {
        self.keys.name()
    }

    /// Before 0.2 keys were `NAME:...` without braces: say so if this
    /// server still holds such data, which this version does not read.
    async fn warn_of_the_old_layout(&self) {
        let name = self.keys.name();
        let old: Result<bool, _> = self.conn().exists(format!("{name}:routes_version")).await;
        if old.unwrap_or(false) {
            tracing::warn!(
                "this Redis holds Xylem data in the pre-0.2 key layout (`{name}:...`), which this \
                 version does not read (it uses `{{{name}}}:...`): drain that deployment with the \
                 version that wrote it, or delete its keys"
            );
        }
    }

    /// The server's version and a round trip, for `xylem health`.
    pub async fn health(&self) -> StoreResult<String> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim();
        Ok(format!("Redis {version}"))
    }

    /// Deletes every key under this store's prefix (for tests).
    pub async fn clear(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.keys.prefix());
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(backend)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Waits for a message on the wake channel, up to `timeout`.
    pub(crate) async fn wait_for_wake(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut guard = self.wake.lock().await;
        if guard.is_none() {
            match self.subscribe().await {
                Ok(pubsub) => *guard = Some(pubsub),
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to wake-ups; polling"),
            }
        }
        let ended = match guard.as_mut() {
            Some(pubsub) => matches!(
                tokio::time::timeout_at(deadline, pubsub.on_message().next()).await,
                Ok(None)
            ),
            None => true,
        };
        if ended {
            // No subscription, or it ended (server gone): poll, and
            // resubscribe next time.
            *guard = None;
            drop(guard);
            tokio::time::sleep_until(deadline).await;
        }
    }

    async fn subscribe(&self) -> Result<PubSub, redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.wake()).await?;
        Ok(pubsub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_comes_out_of_the_url() {
        let (url, prefix) = parse_url("redis://127.0.0.1:6379/2?prefix=team-a").unwrap();
        assert_eq!(url.driver_url(), "redis://127.0.0.1:6379/2");
        assert_eq!(prefix, "team-a");
        let (url, prefix) = parse_url("redis://h:1").unwrap();
        assert_eq!(
            (url.driver_url(), prefix.as_str()),
            ("redis://h:1", "xylem")
        );
        let (url, prefix) = parse_url("redis://[::1]:6379?prefix=team%2Da&protocol=resp3").unwrap();
        assert_eq!(url.driver_url(), "redis://[::1]:6379?protocol=resp3");
        assert_eq!(prefix, "team-a");
        let (_, prefix) = parse_url("redis://h:1?prefix=xylem:staging").unwrap();
        assert_eq!(prefix, "xylem:staging");
    }

    #[test]
    fn bad_prefixes_are_invalid() {
        for url in [
            "redis://h:1?prefix=a b",
            "redis://h:1?prefix=a%20b",
            "redis://h:1?prefix=",
            "redis://h:1?prefix",
            "redis://h:1?prefix=%7Bx%7D",
            "redis://h:1?prefix=a&prefix=b",
        ] {
            assert!(
                matches!(parse_url(url), Err(StoreError::Invalid(_))),
                "{url} should be invalid"
            );
        }
    }
}
