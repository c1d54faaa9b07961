//! [`ResultBackend`] on Redis: a hash per job, a list for its history, a
//! sorted set indexing jobs by enqueue time.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::codec::to_json;
use xylem_core::record::{TaskFilter, TaskRecord, TaskState, Transition};
use xylem_core::store::{ResultBackend, StoreError, StoreResult, queued_detail};
use xylem_core::time::now_ms;
use xylem_core::{Envelope, Progress};

use crate::scripts::{CREATE, PROGRESS, TRANSITION};
use crate::{RedisStore, backend, corrupt};

/// The record fields a transition writes, `updated_at` aside ('' deletes
/// the field: a success clears an earlier error).
pub(crate) fn transition_fields(t: &Transition) -> StoreResult<Vec<(&'static str, String)>> {
    let mut fields: Vec<(&str, String)> = vec![
        ("state", t.state.as_str().to_owned()),
        ("attempt", t.attempt.to_string()),
    ];
    if let Some(outcome) = &t.outcome {
        fields.push((
            "result",
            outcome
                .result
                .as_ref()
                .map(to_json)
                .transpose()?
                .unwrap_or_default(),
        ));
        fields.push((
            "error",
            outcome
                .error
                .as_ref()
                .map(to_json)
                .transpose()?
                .unwrap_or_default(),
        ));
        fields.push(("usage", to_json(&outcome.usage)?));
        fields.push(("log", to_json(&outcome.log)?));
        if let Some(progress) = &outcome.progress {
            fields.push(("progress", to_json(progress)?));
        }
    }
    if let Some(plugin) = &t.plugin {
        fields.push(("plugin", plugin.clone()));
    }
    Ok(fields)
}

/// A history entry without its time: the JSON object minus its opening
/// `{`, which a script completes as `{"at":NOW,` + tail with the server's
/// clock. (Built by serde, so the detail is escaped as Rust does it.)
pub(crate) fn entry_tail(
    state: TaskState,
    attempt: u32,
    detail: Option<&str>,
) -> StoreResult<String> {
    #[derive(serde::Serialize)]
    struct Tail<'a> {
        state: TaskState,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
    }
    let text = to_json(&Tail {
        state,
        attempt,
        detail,
    })?;
    Ok(text[1..].to_owned())
}

fn parse<T: serde::de::DeserializeOwned>(text: Option<&String>) -> StoreResult<Option<T>> {
    text.filter(|t| !t.is_empty())
        .map(|t| serde_json::from_str(t).map_err(corrupt))
        .transpose()
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> StoreResult<&'a String> {
    fields
        .get(name)
        .ok_or_else(|| StoreError::Corrupt(format!("job record without `{name}`")))
}

fn number<T: std::str::FromStr>(fields: &HashMap<String, String>, name: &str) -> StoreResult<T> {
    field(fields, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("job record field `{name}` is not a number")))
}

fn decode(id: &str, fields: &HashMap<String, String>, with_log: bool) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: id.to_owned(),
        task: field(fields, "task")?.clone(),
        queue: field(fields, "queue")?.clone(),
        state: field(fields, "state")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        args: field(fields, "args")?.clone(),
        attempt: number(fields, "attempt")?,
        max_retries: number(fields, "max_retries")?,
        result: parse(fields.get("result"))?,
        error: parse(fields.get("error"))?,
        usage: parse(fields.get("usage"))?,
        progress: parse(fields.get("progress"))?,
        log: if with_log {
            parse(fields.get("log"))?.unwrap_or_default()
        } else {
            Vec::new()
        },
        plugin: fields.get("plugin").filter(|p| !p.is_empty()).cloned(),
        headers: parse(fields.get("headers"))?.unwrap_or_default(),
        enqueued_at: number(fields, "enqueued_at")?,
        updated_at: number(fields, "updated_at")?,
        history: Vec::new(),
    })
}

#[async_trait]
impl ResultBackend for RedisStore {
    async fn create(&self, e: &Envelope) -> StoreResult<()> {
        let entry = entry_tail(
            TaskState::Queued,
            e.attempt,
            queued_detail(e, now_ms()).as_deref(),
        )?;
        let mut invocation = CREATE.prepare_invoke();
        invocation
            .arg(self.keys.prefix())
            .arg(&e.id)
            .arg(e.enqueued_at)
            .arg(entry);
        let fields: [(&str, String); 9] = [
            ("task", e.task.clone()),
            ("queue", e.queue.clone()),
            ("state", "queued".to_owned()),
            ("args", e.args.clone()),
            ("attempt", e.attempt.to_string()),
            ("max_retries", e.max_retries.to_string()),
            ("enqueued_at", e.enqueued_at.to_string()),
            ("plugin", String::new()),
            ("headers", e.headers_json().unwrap_or_default()),
        ];
        for (name, value) in fields {
            invocation.arg(name).arg(value);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn transition(&self, id: &str, t: Transition) -> StoreResult<bool> {
        let entry = entry_tail(t.state, t.attempt, t.detail.as_deref())?;
        let fields = transition_fields(&t)?;
        let mut invocation = TRANSITION.prepare_invoke();
        invocation
            .arg(self.keys.prefix())
            .arg(id)
            .arg(t.state.as_str())
            .arg(entry);
        for (name, value) in fields {
            invocation.arg(name).arg(value);
        }
        let done: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match done {
            -1 => Err(StoreError::NotFound(format!("job {id}"))),
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    async fn set_progress(&self, id: &str, progress: &Progress) -> StoreResult<()> {
        let _: i64 = PROGRESS
            .arg(self.keys.prefix())
            .arg(id)
            .arg(to_json(progress)?)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<TaskRecord>> {
        let mut conn = self.conn();
        let fields: HashMap<String, String> =
            conn.hgetall(self.keys.task(id)).await.map_err(backend)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut record = decode(id, &fields, true)?;
        let history: Vec<String> = conn
            .lrange(self.keys.history(id), 0, -1)
            .await
            .map_err(backend)?;
        for entry in history {
            record
                .history
                .push(serde_json::from_str(&entry).map_err(corrupt)?);
        }
        Ok(Some(record))
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        const PAGE: isize = 500;
        let limit = filter.effective_limit();
        let mut conn = self.conn();
        let mut records = Vec::new();
        let mut start: isize = 0;
        loop {
            let ids: Vec<String> = conn
                .zrevrange(self.keys.tasks(), start, start + PAGE - 1)
                .await
                .map_err(backend)?;
            if ids.is_empty() {
                return Ok(records);
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.keys.task(id));
            }
            let all: Vec<HashMap<String, String>> =
                pipe.query_async(&mut conn).await.map_err(backend)?;
            for (id, fields) in ids.iter().zip(all) {
                if fields.is_empty() {
                    // Expired: drop it from the index too.
                    let _: Result<i64, _> = conn.zrem(self.keys.tasks(), id).await;
                    continue;
                }
                let record = decode(id, &fields, false)?;
                if !filter.matches(&record) {
                    continue;
                }
                records.push(record);
                if records.len() >= limit {
                    return Ok(records);
                }
            }
            start += PAGE;
        }
    }

    async fn expire(&self, id: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        let ttl_ms = xylem_core::time::ms(ttl).max(1);
        let mut conn = self.conn();
        let (task, _history): (bool, bool) = redis::pipe()
            .atomic()
            .pexpire(self.keys.task(id), ttl_ms)
            .pexpire(self.keys.history(id), ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(task)
    }
}
