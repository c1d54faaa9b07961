//! The Lua scripts: each multi-step operation is one atomic round trip.
//! ARGV[1] is always the key prefix; key names are built as in `keys.rs`.
//!
//! JSON is built in Rust and stored as opaque strings: scripts never
//! re-encode user JSON (Lua's cjson would rewrite numbers). History
//! entries written by a script are spliced from safe pieces: the server's
//! time, an attempt number, and the rest of the entry serialized by Rust
//! (see `results::entry_tail`). One script decodes JSON: `CLAIM`, when it
//! must recreate a record that has vanished (rare), reads the task name,
//! arguments and two integers from the envelope — `args` is a JSON *string*
//! inside the envelope, so it comes out byte for byte — and re-encodes
//! nothing.
//!
//! Clock: every lease deadline, due-time comparison and record timestamp
//! written by a script is taken from the server (`redis.call('TIME')`;
//! Redis 7 replicates scripts by effects, so this is allowed), so workers
//! on hosts with skewed clocks agree on when a lease runs out. A job's
//! `run_at` comes from the envelope (the client's clock at enqueue).

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function jobkey(id) return P .. ':job:' .. id end
local function taskkey(id) return P .. ':task:' .. id end
local function histkey(id) return P .. ':hist:' .. id end
local function qkey(q, part) return P .. ':q:' .. q .. ':' .. part end
local function ready_score(prio, run_at) return (9 - tonumber(prio)) * 1e13 + tonumber(run_at) end
-- The server's clock, in ms.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- An integer as text (tostring would switch to exponents past 14 digits).
local function int(n) return string.format('%d', n) end
-- Queue `q` may have a delayed job or a lease falling due at `at`: keeps
-- `P:due` a lower bound of the queue's earliest one (LT: only ever lowers).
local function due_at(q, at) redis.call('ZADD', P .. ':due', 'LT', at, q) end
-- ZADD of many score/member pairs, in slices that fit Lua's stack.
local function zadd_all(key, pairs_)
  for i = 1, #pairs_, 2000 do
    redis.call('ZADD', key, unpack(pairs_, i, math.min(i + 1999, #pairs_)))
  end
end
-- Puts job `id` of queue `q` in its ready or delayed set by `run_at`,
-- setting `status` and any `extra` field/value pairs in one HSET.
local function place(id, q, prio, run_at, now, extra)
  local status
  if tonumber(run_at) > now then
    status = 'delayed'
    redis.call('ZADD', qkey(q, 'delayed'), run_at, id)
    due_at(q, run_at)
  else
    status = 'ready'
    redis.call('ZADD', qkey(q, 'ready'), ready_score(prio, run_at), id)
    redis.call('SADD', P .. ':active', q)
  end
  redis.call('HSET', jobkey(id), 'status', status, unpack(extra or {}))
end
-- The job's fields {status, lease, queue, prio, run_at}, and whether it
-- is leased under `lease`.
local function held(id, lease)
  local f = redis.call('HMGET', jobkey(id), 'status', 'lease', 'queue', 'prio', 'run_at')
  return f, f[1] == 'leased' and tonumber(f[2]) == tonumber(lease)
end
-- Removes job `id` (fields `f` from `held`) from whichever set holds it.
local function remove_entry(id, f)
  if f[1] and f[3] then redis.call('ZREM', qkey(f[3], f[1]), id) end
  redis.call('DEL', jobkey(id))
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Records and queues jobs: ARGV: prefix, then per job 11 values: id,
/// queue, priority, run_at, attempt, envelope, task, args, max_retries,
/// enqueued_at, first history entry (tail, see `results::entry_tail`).
/// Returns how many, or the first id already in use (then nothing is
/// written: see `Broker::enqueue`).
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = server_now()
local now_s = int(now)
-- An id in use (a queue entry, or a record that has not expired) refuses
-- the whole batch before anything is written: returns that id.
for i = 2, #ARGV, 12 do
  if redis.call('EXISTS', taskkey(ARGV[i]), jobkey(ARGV[i])) > 0 then return ARGV[i] end
end
local ready, delayed, first_due, tasks, queues = {}, {}, {}, {}, {}
local n = 0
for i = 2, #ARGV, 12 do
  local id, q, prio, run_at, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local tk, hk = taskkey(id), histkey(id)
  local status
  if tonumber(run_at) > now then
    status = 'delayed'
    delayed[q] = delayed[q] or {}
    local d = delayed[q]
    d[#d + 1] = run_at
    d[#d + 1] = id
    if not first_due[q] or tonumber(run_at) < first_due[q] then first_due[q] = tonumber(run_at) end
  else
    status = 'ready'
    ready[q] = ready[q] or {}
    local r = ready[q]
    r[#r + 1] = ready_score(prio, run_at)
    r[#r + 1] = id
  end
  if not queues[q] then
    queues[q] = true
    queues[#queues + 1] = q
  end
  local jk = jobkey(id)
  redis.call('HSET', tk, 'task', ARGV[i + 6], 'queue', q, 'state', 'queued',
             'args', ARGV[i + 7], 'attempt', attempt, 'max_retries', ARGV[i + 8],
             'enqueued_at', ARGV[i + 9], 'updated_at', now_s)
  if ARGV[i + 11] ~= '' then redis.call('HSET', tk, 'headers', ARGV[i + 11]) end
  -- No `lease`/`deliveries` fields yet: absent counts as 0.
  redis.call('HSET', jk, 'env', ARGV[i + 5], 'queue', q, 'prio', prio, 'run_at', run_at,
             'attempt', attempt, 'status', status)
  redis.call('RPUSH', hk, '{"at":' .. now_s .. ',' .. ARGV[i + 10])
  tasks[#tasks + 1] = ARGV[i + 9]
  tasks[#tasks + 1] = id
  n = n + 1
end
if n == 0 then return 0 end
zadd_all(P .. ':tasks', tasks)
redis.call('SADD', P .. ':queues', unpack(queues))
for q, pairs_ in pairs(ready) do
  zadd_all(qkey(q, 'ready'), pairs_)
  redis.call('SADD', P .. ':active', q)
end
for q, pairs_ in pairs(delayed) do
  zadd_all(qkey(q, 'delayed'), pairs_)
  due_at(q, first_due[q])
end
redis.call('PUBLISH', P .. ':wake', '1')
return n
"#,
    )
});

/// Leases jobs and marks their records running (see `ClaimPlan`).
///
/// ARGV: prefix, lease_ms, max, detail of a first delivery,
/// detail of a redelivery (both JSON strings), queue... (none: all).
/// Returns [envelope, lease, deliveries, ...] in claim order.
///
/// Only queues that need it are looked at: `P:due` says which queues may
/// have a delayed job or an expired lease to move to ready (a lower bound
/// per queue, fixed up here after each look), `P:active` which may have
/// ready jobs (a queue found empty leaves it).
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local lease_ms, max = tonumber(ARGV[2]), tonumber(ARGV[3])
local first, again = ARGV[4], ARGV[5]
local now = server_now()
local now_s = int(now)
-- Each named queue once: a name given twice must not yield a job twice.
local named, seen = {}, {}
for i = 6, #ARGV do
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    named[#named + 1] = ARGV[i]
  end
end

-- Due delayed jobs and expired leases of `q` become ready; then `P:due`
-- gets the queue's next due time, or loses it.
local function promote(q)
  local moved = false
  for _, part in ipairs({'delayed', 'leased'}) do
    local k = qkey(q, part)
    local ids = redis.call('ZRANGEBYSCORE', k, '-inf', now, 'LIMIT', 0, 1000)
    if #ids > 0 then
      redis.call('ZREM', k, unpack(ids))
      local scored = {}
      for _, id in ipairs(ids) do
        local f = redis.call('HMGET', jobkey(id), 'prio', 'run_at')
        -- An entry without its job hash is dropped.
        if f[1] and f[2] then
          redis.call('HSET', jobkey(id), 'status', 'ready')
          scored[#scored + 1] = ready_score(f[1], f[2])
          scored[#scored + 1] = id
        end
      end
      if #scored > 0 then
        zadd_all(qkey(q, 'ready'), scored)
        moved = true
      end
    end
  end
  if moved then redis.call('SADD', P .. ':active', q) end
  local next_due
  for _, part in ipairs({'delayed', 'leased'}) do
    local head = redis.call('ZRANGE', qkey(q, part), 0, 0, 'WITHSCORES')
    if head[2] and (not next_due or tonumber(head[2]) < next_due) then next_due = tonumber(head[2]) end
  end
  if next_due then
    redis.call('ZADD', P .. ':due', next_due, q)
  else
    redis.call('ZREM', P .. ':due', q)
  end
end

local due = {}
if #named > 0 then
  local scores = redis.call('ZMSCORE', P .. ':due', unpack(named))
  for i, s in ipairs(scores) do
    if s and tonumber(s) <= now then due[#due + 1] = named[i] end
  end
else
  due = redis.call('ZRANGEBYSCORE', P .. ':due', '-inf', now)
end
for _, q in ipairs(due) do promote(q) end

local queues = named
if #queues == 0 then queues = redis.call('SMEMBERS', P .. ':active') end

-- The best `want` ready jobs of all `queues`: {id, queue} in claim order,
-- removed from their ready sets.
local function take(want)
  local picked = {}
  if #queues == 1 then
    local q = queues[1]
    local popped = redis.call('ZPOPMIN', qkey(q, 'ready'), want)
    for i = 1, #popped, 2 do picked[#picked + 1] = {popped[i], q} end
    if #popped < 2 * want then redis.call('SREM', P .. ':active', q) end
    return picked
  end
  local candidates = {}
  for _, q in ipairs(queues) do
    local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, want - 1, 'WITHSCORES')
    if #top == 0 then redis.call('SREM', P .. ':active', q) end
    for i = 1, #top, 2 do candidates[#candidates + 1] = {top[i], tonumber(top[i + 1]), q} end
  end
  table.sort(candidates, function(a, b)
    if a[2] == b[2] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local by_queue = {}
  for i = 1, math.min(want, #candidates) do
    local id, q = candidates[i][1], candidates[i][3]
    picked[#picked + 1] = {id, q}
    by_queue[q] = by_queue[q] or {}
    table.insert(by_queue[q], id)
  end
  for q, ids in pairs(by_queue) do redis.call('ZREM', qkey(q, 'ready'), unpack(ids)) end
  return picked
end

local out, leased = {}, {}
local until_ = now + lease_ms
local got = 0
-- A job whose record already succeeded is dropped, not handed out: look
-- again for the places it freed (a few times at most).
for _ = 1, 4 do
  local want = max - got
  if want <= 0 then break end
  local picked = take(want)
  if #picked == 0 then break end
  local dropped = false
  for _, p in ipairs(picked) do
    local id, q = p[1], p[2]
    local jk = jobkey(id)
    local f = redis.call('HMGET', jk, 'lease', 'deliveries', 'attempt', 'env')
    local state = nil
    if f[4] then state = redis.call('HGET', taskkey(id), 'state') end
    if not f[4] or state == 'succeeded' then
      redis.call('DEL', jk)
      dropped = true
    else
      local lease = tonumber(f[1] or 0) + 1
      local deliveries = tonumber(f[2] or 0) + 1
      redis.call('HSET', jk, 'status', 'leased', 'lease', lease, 'deliveries', deliveries)
      leased[q] = leased[q] or {}
      table.insert(leased[q], until_)
      table.insert(leased[q], id)
      local env
      local attempt = f[3]
      if not attempt then
        env = cjson.decode(f[4])
        attempt = int(env.attempt)
      end
      local detail = first
      if deliveries > tonumber(attempt) then detail = again end
      local entry = '{"at":' .. now_s .. ',"state":"running","attempt":' .. attempt
        .. ',"detail":' .. detail .. '}'
      local tk, hk = taskkey(id), histkey(id)
      if state then
        redis.call('HSET', tk, 'state', 'running', 'attempt', attempt, 'updated_at', now_s)
      else
        -- The record vanished (expired): write it anew from the envelope.
        env = env or cjson.decode(f[4])
        local enqueued_at = int(env.enqueued_at)
        redis.call('DEL', hk)
        redis.call('HSET', tk, 'task', env.task, 'queue', q, 'state', 'running', 'args', env.args,
                   'attempt', attempt, 'max_retries', int(env.max_retries),
                   'enqueued_at', enqueued_at, 'updated_at', now_s)
        if env.headers and #env.headers > 0 then
          redis.call('HSET', tk, 'headers', cjson.encode(env.headers))
        end
        redis.call('ZADD', P .. ':tasks', enqueued_at, id)
      end
      redis.call('RPUSH', hk, entry)
      out[#out + 1] = f[4]
      out[#out + 1] = lease
      out[#out + 1] = deliveries
      got = got + 1
    end
  end
  if not dropped then break end
end
for q, pairs_ in pairs(leased) do
  zadd_all(qkey(q, 'leased'), pairs_)
  due_at(q, until_)
end
return out
"#,
    )
});

/// Rebuilds the claim indexes (`P:active`, `P:due`) from the queue sets,
/// for data written before they existed: one pass over the queue names.
/// ARGV: prefix.
pub(crate) static REINDEX: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  if redis.call('ZCARD', qkey(q, 'ready')) > 0 then redis.call('SADD', P .. ':active', q) end
  for _, part in ipairs({'delayed', 'leased'}) do
    local head = redis.call('ZRANGE', qkey(q, part), 0, 0, 'WITHSCORES')
    if head[2] then due_at(q, head[2]) end
  end
end
return 1
"#,
    )
});

/// Extends leases: ARGV: prefix, by_ms, then id/lease pairs. Returns one
/// 1 (held) or 0 per pair.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local until_ = server_now() + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local f, is_held = held(ARGV[i], ARGV[i + 1])
  if is_held then
    -- XX: never re-adds an entry; `P:due` stays a lower bound, as the
    -- deadline only moves later.
    redis.call('ZADD', qkey(f[3], 'leased'), 'XX', until_, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#,
    )
});

/// Applies finished deliveries (see `Completion::plan`): ARGV: prefix,
/// then per completion: id, lease, new state, attempt, history entry
/// (tail), settle (ack|retry|release|dead), payload (retry: envelope;
/// dead: reason), delay_ms (retry), envelope attempt (retry), ttl_ms (0:
/// none), n, then n field/value pairs of the record ('' deletes the
/// field). Returns one code per completion: 0 applied, 1 already
/// succeeded, 2 lease lost.
pub(crate) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = server_now()
local now_s = int(now)
local out = {}
local wake = false
local i = 2
while i <= #ARGV do
  local id, lease, state, tail = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local settle, payload, delay, env_attempt = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local ttl, n = tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
  local fields = i + 10
  i = fields + 2 * n
  local tk = taskkey(id)
  -- Which of the fields a transition may delete exist: a field that is
  -- not there needs no HDEL (the usual success clears no error).
  local rec = redis.call('HMGET', tk, 'state', 'result', 'error')
  local current = rec[1]
  local f, is_held = held(id, lease)
  if current == 'succeeded' then
    -- Final: never written again; the queue entry goes.
    remove_entry(id, f)
    out[#out + 1] = 1
  elseif is_held or state == 'succeeded' then
    -- A record that vanished is not written half; the queue is settled.
    if current then
      local set, del = {'updated_at', now_s}, {}
      for j = fields, i - 1, 2 do
        if ARGV[j + 1] == '' then
          local name = ARGV[j]
          if (name ~= 'result' or rec[2]) and (name ~= 'error' or rec[3]) then del[#del + 1] = name end
        else
          set[#set + 1] = ARGV[j]
          set[#set + 1] = ARGV[j + 1]
        end
      end
      redis.call('HSET', tk, unpack(set))
      if #del > 0 then redis.call('HDEL', tk, unpack(del)) end
      local hk = histkey(id)
      redis.call('RPUSH', hk, '{"at":' .. now_s .. ',' .. tail)
      if ttl > 0 then
        redis.call('PEXPIRE', tk, ttl)
        redis.call('PEXPIRE', hk, ttl)
      end
    end
    if not is_held then
      -- A success under a lost lease: the work is done, the entry goes.
      remove_entry(id, f)
    elseif settle == 'ack' then
      remove_entry(id, f)
    else
      local q = f[3]
      redis.call('ZREM', qkey(q, 'leased'), id)
      if settle == 'dead' then
        redis.call('HSET', jobkey(id), 'status', 'dead', 'reason', payload, 'dead_at', now)
        redis.call('ZADD', qkey(q, 'dead'), now, id)
      elseif settle == 'retry' then
        local run_at = now + tonumber(delay)
        place(id, q, f[4], run_at, now, {'env', payload, 'run_at', run_at, 'attempt', env_attempt})
        wake = true
      else
        place(id, q, f[4], f[5], now)
        wake = true
      end
    end
    out[#out + 1] = 0
  else
    out[#out + 1] = 2
  end
end
if wake then redis.call('PUBLISH', P .. ':wake', '1') end
return out
"#,
    )
});

/// Moves dead jobs back to their queues and their records back to
/// `queued`: ARGV: prefix, then per job 9 values: id,
/// envelope, run_at, attempt, history entry (tail), task, args,
/// max_retries, enqueued_at (the last four to write a record that has
/// expired). Returns the ids moved.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = server_now()
local now_s = int(now)
local out = {}
local wake = false
for i = 2, #ARGV, 9 do
  local id, attempt = ARGV[i], ARGV[i + 3]
  local jk = jobkey(id)
  local f = redis.call('HMGET', jk, 'status', 'queue', 'prio')
  if f[1] == 'dead' then
    local q = f[2]
    redis.call('ZREM', qkey(q, 'dead'), id)
    redis.call('HDEL', jk, 'reason', 'dead_at')
    place(id, q, f[3], ARGV[i + 2], now, {'env', ARGV[i + 1], 'run_at', ARGV[i + 2], 'attempt', attempt})
    local tk, hk = taskkey(id), histkey(id)
    local entry = '{"at":' .. now_s .. ',' .. ARGV[i + 4]
    if redis.call('EXISTS', tk) == 1 then
      redis.call('HSET', tk, 'state', 'queued', 'attempt', attempt, 'updated_at', now_s)
      redis.call('PERSIST', tk)
      redis.call('PERSIST', hk)
    else
      redis.call('DEL', hk)
      redis.call('HSET', tk, 'task', ARGV[i + 5], 'queue', q, 'state', 'queued', 'args', ARGV[i + 6],
                 'attempt', attempt, 'max_retries', ARGV[i + 7], 'enqueued_at', ARGV[i + 8],
                 'updated_at', now_s)
      redis.call('ZADD', P .. ':tasks', ARGV[i + 8], id)
    end
    redis.call('RPUSH', hk, entry)
    out[#out + 1] = id
    wake = true
  end
end
if wake then redis.call('PUBLISH', P .. ':wake', '1') end
return out
"#,
    )
});

/// ARGV: prefix, id... Deletes dead jobs; returns how many.
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', jobkey(id), 'status', 'queue')
  if f[1] == 'dead' then
    redis.call('ZREM', qkey(f[2], 'dead'), id)
    redis.call('DEL', jobkey(id))
    n = n + 1
  end
end
return n
"#,
    )
});

/// ARGV: prefix. Returns [queue, ready, delayed, running, dead, ...].
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = server_now()
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

/// Writes a record anew. ARGV: prefix, id, enqueued_at, first history
/// entry (tail, see `results::entry_tail`), then the record's field/value
/// pairs. `updated_at` and the entry's time come from the server's clock,
/// as in `ENQUEUE`.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now_s = int(server_now())
local id = ARGV[2]
local tk = P .. ':task:' .. id
for i = 5, #ARGV, 2 do redis.call('HSET', tk, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', tk, 'updated_at', now_s)
redis.call('DEL', P .. ':hist:' .. id)
redis.call('RPUSH', P .. ':hist:' .. id, '{"at":' .. now_s .. ',' .. ARGV[4])
redis.call('ZADD', P .. ':tasks', ARGV[3], id)
return 1
"#,
    )
});

/// ARGV: prefix, id, new state, history entry (tail), field, value, ...
/// (`updated_at` and the entry's time: the server's clock). Returns -1 if the job is unknown, 0 if it already succeeded (a
/// succeeded record is final: nothing written), 1 otherwise.
pub(crate) static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, state = ARGV[2], ARGV[3]
local tk = P .. ':task:' .. id
local current = redis.call('HGET', tk, 'state')
if not current then return -1 end
if current == 'succeeded' then return 0 end
local now_s = int(server_now())
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', tk, ARGV[i]) else redis.call('HSET', tk, ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', tk, 'updated_at', now_s)
redis.call('RPUSH', P .. ':hist:' .. id, '{"at":' .. now_s .. ',' .. ARGV[4])
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

/// ARGV: prefix, limiter key, interval ms, now ms, ttl ms. Reserves the
/// next start slot (max(now, next)) and moves `next` one interval on;
/// returns the slot.
pub(crate) static RESERVE_SLOT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = P .. ':rate:' .. ARGV[2]
local now = tonumber(ARGV[4])
local slot = math.max(now, tonumber(redis.call('GET', k) or '0'))
redis.call('SET', k, int(slot + tonumber(ARGV[3])), 'PX', int(tonumber(ARGV[3]) + tonumber(ARGV[5])))
return int(slot)
"#,
    )
});

/// ARGV: prefix, then job ids. Removes each waiting job (ready, delayed,
/// or leased with its lease run out by the server's clock) and returns,
/// per id, `removed`, `running`, `dead` or `absent`.
pub(crate) static WITHDRAW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = server_now()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', jobkey(id), 'status', 'lease', 'queue')
  local found
  if not f[1] then found = 'absent'
  elseif f[1] == 'dead' then found = 'dead'
  elseif f[1] == 'leased' and tonumber(redis.call('ZSCORE', qkey(f[3], 'leased'), id) or '0') > now then
    found = 'running'
  else
    remove_entry(id, f)
    found = 'removed'
  end
  out[#out + 1] = found
end
return out
"#,
    )
});

/// ARGV: prefix, digest, engine, artifact. Kept in the plugin's hash (so
/// it goes with it) as `compiled:ENGINE`; nothing if the plugin is gone.
pub(crate) static PUT_COMPILED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local pk = P .. ':plugin:' .. ARGV[2]
if redis.call('EXISTS', pk) == 0 then return 0 end
redis.call('HSET', pk, 'compiled:' .. ARGV[3], ARGV[4])
return 1
"#,
    )
});

/// ARGV: prefix, digest, the routes version the fallbacks were worked out
/// at, then task/route pairs (route '' = no route). -1 (nothing done) if
/// the routes changed since.
pub(crate) static REMOVE_PLUGIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local digest = ARGV[2]
if tonumber(redis.call('GET', P .. ':routes_version') or '0') ~= tonumber(ARGV[3]) then return -1 end
local existed = redis.call('DEL', P .. ':plugin:' .. digest)
redis.call('ZREM', P .. ':plugins', digest)
for i = 4, #ARGV, 2 do
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

/// ARGV: prefix, key, n, limit, ttl_ms. Adds `n` to the counter if it
/// stays within `limit`; 1 if taken, 0 if not.
pub(crate) static QUOTA_TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = P .. ':quota:' .. ARGV[2]
local used = tonumber(redis.call('GET', k) or '0')
local n = tonumber(ARGV[3])
if used + n > tonumber(ARGV[4]) then return 0 end
redis.call('SET', k, used + n, 'PX', ARGV[5])
return 1
"#,
    )
});

/// ARGV: prefix, name, the version read (0: create), the new document,
/// its next run (`''` for none, or a disabled schedule). Writes schedule
/// `name` if its stored version is the one read (absent, for 0); returns
/// the new version, or 0 when nothing was written.
pub(crate) static SCHEDULE_PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local docs, versions, due = P .. ':schedules', P .. ':schedules:version', P .. ':schedules:due'
local name, read = ARGV[2], tonumber(ARGV[3])
local stored = tonumber(redis.call('HGET', versions, name) or '0')
local exists = redis.call('HEXISTS', docs, name) == 1
if (read == 0 and exists) or (read ~= 0 and (not exists or stored ~= read)) then return 0 end
redis.call('HSET', docs, name, ARGV[4])
redis.call('HSET', versions, name, read + 1)
if ARGV[5] == '' then redis.call('ZREM', due, name) else redis.call('ZADD', due, ARGV[5], name) end
return read + 1
"#,
    )
});

/// `WorkflowStore::put_runs`. ARGV: prefix, then per run 5 values: id,
/// version read, document, its wake time (`''` for none), its start.
/// Writes each run whose stored version is the one read (absent, for 0);
/// returns each one's new version, or 0 where nothing was written.
pub(crate) static RUN_PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local docs, versions, due, newest = P .. ':runs', P .. ':runs:version', P .. ':runs:due', P .. ':runs:newest'
local written = {}
for i = 2, #ARGV, 5 do
  local id, read = ARGV[i], tonumber(ARGV[i + 1])
  local stored = tonumber(redis.call('HGET', versions, id) or '0')
  local exists = redis.call('HEXISTS', docs, id) == 1
  if (read == 0 and exists) or (read ~= 0 and (not exists or stored ~= read)) then
    written[#written + 1] = 0
  else
    redis.call('HSET', docs, id, ARGV[i + 2])
    redis.call('HSET', versions, id, read + 1)
    if ARGV[i + 3] == '' then redis.call('ZREM', due, id) else redis.call('ZADD', due, ARGV[i + 3], id) end
    if read == 0 then redis.call('ZADD', newest, ARGV[i + 4], id) end
    written[#written + 1] = read + 1
  end
end
return written
"#,
    )
});
