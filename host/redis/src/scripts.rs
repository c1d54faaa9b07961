//! The Lua scripts: each multi-step operation is one atomic round trip.
//! ARGV[1] is always the key prefix; key names are built as in `keys.rs`.
//! Scripts never decode user JSON (Lua's cjson would rewrite numbers):
//! every JSON value is built in Rust and stored as an opaque string.

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function jobkey(id) return P .. ':job:' .. id end
local function qkey(q, part) return P .. ':q:' .. q .. ':' .. part end
local function ready_score(prio, run_at) return (9 - tonumber(prio)) * 1e13 + tonumber(run_at) end
-- Puts job `id` of queue `q` in its ready or delayed set by its run_at.
local function enqueue(id, q, now)
  local jk = jobkey(id)
  local f = redis.call('HMGET', jk, 'prio', 'run_at')
  if tonumber(f[2]) > now then
    redis.call('ZADD', qkey(q, 'delayed'), f[2], id)
    redis.call('HSET', jk, 'status', 'delayed')
  else
    redis.call('ZADD', qkey(q, 'ready'), ready_score(f[1], f[2]), id)
    redis.call('HSET', jk, 'status', 'ready')
  end
end
-- The job's queue if it is leased under `lease`, else nil.
local function held(id, lease)
  local f = redis.call('HMGET', jobkey(id), 'status', 'lease', 'queue')
  if f[1] ~= 'leased' or tonumber(f[2]) ~= tonumber(lease) then return nil end
  return f[3]
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// ARGV: prefix, id, queue, priority, run_at, envelope, now.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, q, now = ARGV[2], ARGV[3], tonumber(ARGV[7])
redis.call('HSET', jobkey(id), 'env', ARGV[6], 'queue', q, 'prio', ARGV[4], 'run_at', ARGV[5],
           'lease', 0, 'deliveries', 0)
redis.call('SADD', P .. ':queues', q)
enqueue(id, q, now)
redis.call('PUBLISH', P .. ':wake', '1')
return 1
"#,
    )
});

/// ARGV: prefix, now, lease_ms, max, queue... (no queue: all).
/// Returns [envelope, lease, deliveries, ...].
pub(crate) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now, lease_ms, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local queues = {}
if #ARGV > 4 then
  for i = 5, #ARGV do queues[#queues + 1] = ARGV[i] end
else
  queues = redis.call('SMEMBERS', P .. ':queues')
end
local candidates = {}
for _, q in ipairs(queues) do
  -- Due delayed jobs and expired leases become ready.
  for _, part in ipairs({'delayed', 'leased'}) do
    local due = redis.call('ZRANGEBYSCORE', qkey(q, part), '-inf', now, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', qkey(q, part), id)
      local f = redis.call('HMGET', jobkey(id), 'prio', 'run_at')
      redis.call('ZADD', qkey(q, 'ready'), ready_score(f[1], f[2]), id)
      redis.call('HSET', jobkey(id), 'status', 'ready')
    end
  end
  local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, max - 1, 'WITHSCORES')
  for i = 1, #top, 2 do
    candidates[#candidates + 1] = {top[i], tonumber(top[i + 1]), q}
  end
end
table.sort(candidates, function(a, b)
  if a[2] == b[2] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(max, #candidates) do
  local id, q = candidates[i][1], candidates[i][3]
  local jk = jobkey(id)
  redis.call('ZREM', qkey(q, 'ready'), id)
  redis.call('ZADD', qkey(q, 'leased'), now + lease_ms, id)
  local lease = redis.call('HINCRBY', jk, 'lease', 1)
  local deliveries = redis.call('HINCRBY', jk, 'deliveries', 1)
  redis.call('HSET', jk, 'status', 'leased')
  out[#out + 1] = redis.call('HGET', jk, 'env')
  out[#out + 1] = lease
  out[#out + 1] = deliveries
end
return out
"#,
    )
});

/// ARGV: prefix, id, lease, until.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local q = held(ARGV[2], ARGV[3])
if not q then return 0 end
redis.call('ZADD', qkey(q, 'leased'), ARGV[4], ARGV[2])
return 1
"#,
    )
});

/// ARGV: prefix, id, lease.
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local q = held(ARGV[2], ARGV[3])
if not q then return 0 end
redis.call('ZREM', qkey(q, 'leased'), ARGV[2])
redis.call('DEL', jobkey(ARGV[2]))
return 1
"#,
    )
});

/// ARGV: prefix, id, lease, action (retry|release|dead), now,
/// payload (retry: envelope; dead: reason), run_at (retry).
pub(crate) static NACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, action, now = ARGV[2], ARGV[4], tonumber(ARGV[5])
local q = held(id, ARGV[3])
if not q then return 0 end
redis.call('ZREM', qkey(q, 'leased'), id)
if action == 'dead' then
  redis.call('HSET', jobkey(id), 'status', 'dead', 'reason', ARGV[6], 'dead_at', now)
  redis.call('ZADD', qkey(q, 'dead'), now, id)
  return 1
end
if action == 'retry' then
  redis.call('HSET', jobkey(id), 'env', ARGV[6], 'run_at', ARGV[7])
end
enqueue(id, q, now)
redis.call('PUBLISH', P .. ':wake', '1')
return 1
"#,
    )
});

/// ARGV: prefix, id, envelope, run_at, now. Moves a dead job back.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, now = ARGV[2], tonumber(ARGV[5])
local f = redis.call('HMGET', jobkey(id), 'status', 'queue')
if f[1] ~= 'dead' then return 0 end
redis.call('ZREM', qkey(f[2], 'dead'), id)
redis.call('HSET', jobkey(id), 'env', ARGV[3], 'run_at', ARGV[4])
redis.call('HDEL', jobkey(id), 'reason', 'dead_at')
enqueue(id, f[2], now)
redis.call('PUBLISH', P .. ':wake', '1')
return 1
"#,
    )
});

/// ARGV: prefix, id. Deletes a dead job.
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
local f = redis.call('HMGET', jobkey(id), 'status', 'queue')
if f[1] ~= 'dead' then return 0 end
redis.call('ZREM', qkey(f[2], 'dead'), id)
redis.call('DEL', jobkey(id))
return 1
"#,
    )
});

/// ARGV: prefix, now. Returns [queue, ready, delayed, running, dead, ...].
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = tonumber(ARGV[2])
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local due = redis.call('ZCOUNT', qkey(q, 'delayed'), '-inf', now)
  out[#out + 1] = q
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'ready')) + due
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'delayed')) - due
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'leased'))
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'dead'))
end
return out
"#,
    )
});

/// ARGV: prefix, id, then field/value pairs of the record; then the
/// history entry JSON last; enqueued_at is `ARGV[3]`.
/// Layout: prefix, id, enqueued_at, history, field, value, ...
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
local tk = P .. ':task:' .. id
for i = 5, #ARGV, 2 do redis.call('HSET', tk, ARGV[i], ARGV[i + 1]) end
redis.call('DEL', P .. ':hist:' .. id)
redis.call('RPUSH', P .. ':hist:' .. id, ARGV[4])
redis.call('ZADD', P .. ':tasks', ARGV[3], id)
return 1
"#,
    )
});

/// ARGV: prefix, id, new state, history entry, field, value, ...
/// Returns -1 if the job is unknown, 0 if it already succeeded (a
/// succeeded record is final: nothing written), 1 otherwise.
pub(crate) static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, state = ARGV[2], ARGV[3]
local tk = P .. ':task:' .. id
local current = redis.call('HGET', tk, 'state')
if not current then return -1 end
if current == 'succeeded' then return 0 end
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', tk, ARGV[i]) else redis.call('HSET', tk, ARGV[i], ARGV[i + 1]) end
end
redis.call('RPUSH', P .. ':hist:' .. id, ARGV[4])
return 1
"#,
    )
});

/// ARGV: prefix, id, progress JSON, now.
pub(crate) static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local tk = P .. ':task:' .. ARGV[2]
if redis.call('EXISTS', tk) == 0 then return 0 end
redis.call('HSET', tk, 'progress', ARGV[3], 'updated_at', ARGV[4])
return 1
"#,
    )
});

/// ARGV: prefix, digest, bytes, size, tasks JSON, now, then task/route pairs.
pub(crate) static PUT_PLUGIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local digest = ARGV[2]
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', P .. ':plugin:' .. digest, 'bytes', ARGV[3], 'size', ARGV[4], 'tasks', ARGV[5],
           'pushed_at', ARGV[6])
redis.call('ZADD', P .. ':plugins', seq, digest)
for i = 7, #ARGV, 2 do redis.call('HSET', P .. ':routes', ARGV[i], ARGV[i + 1]) end
redis.call('INCR', P .. ':routes_version')
return 1
"#,
    )
});

/// ARGV: prefix, digest, then task/route pairs (route '' = no route).
pub(crate) static REMOVE_PLUGIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local digest = ARGV[2]
local existed = redis.call('DEL', P .. ':plugin:' .. digest)
redis.call('ZREM', P .. ':plugins', digest)
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', P .. ':routes', ARGV[i])
  else redis.call('HSET', P .. ':routes', ARGV[i], ARGV[i + 1]) end
end
redis.call('INCR', P .. ':routes_version')
return existed
"#,
    )
});

/// ARGV: prefix, group, index, result JSON. Returns {size, done} or -1.
pub(crate) static COMPLETE_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local gk = P .. ':group:' .. ARGV[2]
local size = redis.call('HGET', gk, 'size')
if not size then return -1 end
redis.call('HSETNX', gk .. ':results', ARGV[3], ARGV[4])
return {tonumber(size), redis.call('HLEN', gk .. ':results')}
"#,
    )
});

/// ARGV: prefix, name, owner, ttl_ms. Takes a free or own lock.
pub(crate) static LOCK_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = P .. ':lock:' .. ARGV[2]
local holder = redis.call('GET', k)
if holder and holder ~= ARGV[3] then return 0 end
redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
return 1
"#,
    )
});

/// ARGV: prefix, name, owner, ttl_ms (0: release).
pub(crate) static LOCK_OWNED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = P .. ':lock:' .. ARGV[2]
if redis.call('GET', k) ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) == 0 then redis.call('DEL', k) else redis.call('PEXPIRE', k, ARGV[4]) end
return 1
"#,
    )
});
