//! [`GroupStore`], [`LockStore`] and [`QuotaStore`] on Redis: a hash per
//! group and one for its results (`HSETNX` per member index: idempotent),
//! locks as keys with a millisecond expiry, quota counters as integer keys
//! checked and grown by one script.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::codec::{from_json, to_json};
use xylem_core::schedule::Schedule;
use xylem_core::store::{
    CanvasStore, GroupStatus, GroupStore, LockStore, QuotaStore, RateLimits, ScheduleStore,
    StoreResult,
};
use xylem_core::time::Millis;
use xylem_core::time::ms;

use crate::scripts::{
    COMPLETE_MEMBER, LOCK_ACQUIRE, LOCK_OWNED, QUOTA_TAKE, RESERVE_SLOT, SCHEDULE_PUT,
};
use crate::{RedisStore, backend, corrupt, value};

impl RedisStore {
    fn group_key(&self, id: &str) -> String {
        format!("{}:group:{id}", self.keys.prefix())
    }

    /// If `owner` holds lock `name`: extends it by `ttl_ms`, or releases it
    /// when `ttl_ms` is 0. False if `owner` does not hold it.
    async fn if_owned(&self, name: &str, owner: &str, ttl_ms: i64) -> StoreResult<bool> {
        let done: i64 = LOCK_OWNED
            .arg(self.keys.prefix())
            .arg(name)
            .arg(owner)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(done == 1)
    }
}

#[async_trait]
impl GroupStore for RedisStore {
    async fn create_group(&self, id: &str, size: u32) -> StoreResult<()> {
        let _: bool = self
            .conn()
            .hset_nx(self.group_key(id), "size", size)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn complete_member(
        &self,
        id: &str,
        index: u32,
        result: &serde_json::Value,
    ) -> StoreResult<Option<GroupStatus>> {
        let reply: redis::Value = COMPLETE_MEMBER
            .arg(self.keys.prefix())
            .arg(id)
            .arg(index)
            .arg(serde_json::to_string(result).map_err(corrupt)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let Ok(-1) = value::<i64>(&reply) {
            return Ok(None);
        }
        let (size, done): (u32, u32) = value(&reply)?;
        Ok(Some(GroupStatus { size, done }))
    }

    async fn group_results(&self, id: &str) -> StoreResult<Option<Vec<serde_json::Value>>> {
        let mut conn = self.conn();
        let size: Option<u32> = conn
            .hget(self.group_key(id), "size")
            .await
            .map_err(backend)?;
        let Some(size) = size else { return Ok(None) };
        let stored: HashMap<u32, String> = conn
            .hgetall(format!("{}:results", self.group_key(id)))
            .await
            .map_err(backend)?;
        if (stored.len() as u32) < size {
            return Ok(None);
        }
        let mut ordered: Vec<(u32, String)> = stored.into_iter().collect();
        ordered.sort_by_key(|(index, _)| *index);
        ordered
            .into_iter()
            .map(|(_, text)| serde_json::from_str(&text).map_err(corrupt))
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    async fn claim_chord(&self, id: &str) -> StoreResult<bool> {
        let mut conn = self.conn();
        let exists: bool = conn.exists(self.group_key(id)).await.map_err(backend)?;
        if !exists {
            return Ok(false);
        }
        conn.hset_nx(self.group_key(id), "claimed", 1)
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl LockStore for RedisStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let taken: i64 = LOCK_ACQUIRE
            .arg(self.keys.prefix())
            .arg(name)
            .arg(owner)
            .arg(ms(ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(taken == 1)
    }

    async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.if_owned(name, owner, ms(ttl).max(1)).await
    }

    async fn release(&self, name: &str, owner: &str) -> StoreResult<bool> {
        self.if_owned(name, owner, 0).await
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        self.conn()
            .get(format!("{}:lock:{name}", self.keys.prefix()))
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl QuotaStore for RedisStore {
    async fn take_quota(&self, key: &str, n: u64, limit: u64, ttl: Duration) -> StoreResult<bool> {
        if n > limit {
            return Ok(false);
        }
        let taken: i64 = QUOTA_TAKE
            .arg(self.keys.prefix())
            .arg(key)
            .arg(n)
            .arg(limit)
            .arg(ms(ttl).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(taken == 1)
    }

    async fn quota_used(&self, key: &str) -> StoreResult<u64> {
        let used: Option<u64> = self
            .conn()
            .get(format!("{}:quota:{key}", self.keys.prefix()))
            .await
            .map_err(backend)?;
        Ok(used.unwrap_or(0))
    }
}

#[async_trait]
impl RateLimits for RedisStore {
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        now: Millis,
        ttl: Duration,
    ) -> StoreResult<Millis> {
        let slot: String = RESERVE_SLOT
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(key)
            .arg(ms(interval))
            .arg(now)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        slot.parse()
            .map_err(|_| xylem_core::store::StoreError::Corrupt(format!("a rate slot of `{slot}`")))
    }
}

#[async_trait]
impl CanvasStore for RedisStore {
    async fn put_canvas(&self, id: &str, definition: &str) -> StoreResult<bool> {
        let key = format!("{}:canvas:{id}", self.keys.prefix());
        let written: bool = self.conn().set_nx(key, definition).await.map_err(backend)?;
        Ok(written)
    }

    async fn get_canvas(&self, id: &str) -> StoreResult<Option<String>> {
        self.conn()
            .get(format!("{}:canvas:{id}", self.keys.prefix()))
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl ScheduleStore for RedisStore {
    async fn put_schedule(&self, schedule: &Schedule) -> StoreResult<Option<u64>> {
        let mut written = schedule.clone();
        written.version = schedule.version + 1;
        let due = match (written.enabled, written.next_run) {
            (true, Some(at)) => at.to_string(),
            _ => String::new(),
        };
        let version: u64 = SCHEDULE_PUT
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(&written.name)
            .arg(schedule.version)
            .arg(to_json(&written)?)
            .arg(due)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok((version != 0).then_some(version))
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let doc: Option<String> = self
            .conn()
            .hget(format!("{}:schedules", self.keys.prefix()), name)
            .await
            .map_err(backend)?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let docs: HashMap<String, String> = self
            .conn()
            .hgetall(format!("{}:schedules", self.keys.prefix()))
            .await
            .map_err(backend)?;
        let mut schedules: Vec<Schedule> = docs
            .values()
            .map(|d| from_json(d))
            .collect::<StoreResult<_>>()?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    async fn remove_schedule(&self, name: &str) -> StoreResult<bool> {
        let prefix = self.keys.prefix();
        let (removed, _, _): (i64, i64, i64) = redis::pipe()
            .atomic()
            .hdel(format!("{prefix}:schedules"), name)
            .hdel(format!("{prefix}:schedules:version"), name)
            .zrem(format!("{prefix}:schedules:due"), name)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(removed == 1)
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> StoreResult<Vec<Schedule>> {
        let prefix = self.keys.prefix();
        let names: Vec<String> = self
            .conn()
            .zrangebyscore_limit(
                format!("{prefix}:schedules:due"),
                "-inf",
                now,
                0,
                isize::try_from(limit).unwrap_or(isize::MAX),
            )
            .await
            .map_err(backend)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let docs: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(format!("{prefix}:schedules"))
            .arg(&names)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        docs.into_iter().flatten().map(|d| from_json(&d)).collect()
    }
}
