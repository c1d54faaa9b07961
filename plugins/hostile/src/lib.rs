//! Hostile-plugin fixtures: each task misbehaves in one way, so the tests
//! can prove the sandbox contains it. Never deploy this plugin.

use std::io::Write;

use serde::Deserialize;
use serde_json::Value;
use xylem_guest::{
    Callback, Context, EnqueueError, EnqueueOptions, Level, Task, TaskError, TaskResult, Unique,
};

/// Spins forever: only a time limit (or fuel) stops it.
fn infinite_loop(_ctx: &Context, _args: Value) -> TaskResult<u64> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Ignores `cancelled()` but would return if it ever saw it: shows the soft
/// limit reaching a task that checks it.
fn polite_loop(ctx: &Context, _args: Value) -> TaskResult<String> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
        if n.is_multiple_of(100_000) && ctx.cancelled() {
            return Err(TaskError::fail("stopped: cancelled (soft time limit)"));
        }
    }
}

/// Allocates and touches memory without end.
fn memory_bomb(_ctx: &Context, _args: Value) -> TaskResult<usize> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1024 * 1024]);
        std::hint::black_box(&hoard);
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut local = [0u8; 256];
    local.copy_from_slice(pad);
    std::hint::black_box(&local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

/// Recurses without end.
fn stack_overflow(_ctx: &Context, _args: Value) -> TaskResult<u64> {
    let mut pad = [0u8; 256];
    Ok(recurse(0, &mut pad))
}

/// Panics.
fn panic(_ctx: &Context, _args: Value) -> TaskResult<()> {
    panic!("this plugin panics on purpose");
}

#[derive(Deserialize)]
struct Huge {
    #[serde(default = "default_huge")]
    bytes: usize,
}

fn default_huge() -> usize {
    32 * 1024 * 1024
}

/// Returns a result far larger than any sane output limit.
fn huge_output(_ctx: &Context, args: Huge) -> TaskResult<String> {
    Ok("x".repeat(args.bytes))
}

/// Tries to read a host file; succeeds only if the sandbox leaks.
fn read_file(_ctx: &Context, _args: Value) -> TaskResult<String> {
    for path in ["/etc/passwd", "/", ".", "/proc/self/environ"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(format!("read {path}: {text}"));
        }
        if let Ok(dir) = std::fs::read_dir(path) {
            let names: Vec<String> = dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            return Ok(format!("listed {path}: {}", names.join(",")));
        }
    }
    Err(TaskError::fail("no host file or directory is visible"))
}

/// Tries to read the host's environment variables.
fn read_env(_ctx: &Context, _args: Value) -> TaskResult<Vec<(String, String)>> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    if vars.is_empty() && std::env::args().count() == 0 {
        return Err(TaskError::fail(
            "no environment variable or argument is visible",
        ));
    }
    Ok(vars)
}

#[derive(Deserialize)]
struct Connect {
    #[serde(default = "default_addr")]
    addr: String,
}

fn default_addr() -> String {
    "127.0.0.1:5432".to_owned()
}

/// Tries to open sockets: TCP connect, TCP listen, UDP bind, DNS.
fn open_socket(_ctx: &Context, args: Connect) -> TaskResult<String> {
    let mut denials = Vec::new();
    match std::net::TcpStream::connect(&args.addr) {
        Ok(_) => return Ok(format!("connected to {}", args.addr)),
        Err(e) => denials.push(format!("connect: {e}")),
    }
    match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => return Ok(format!("listening on {:?}", l.local_addr())),
        Err(e) => denials.push(format!("listen: {e}")),
    }
    match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(_) => return Ok("bound a UDP socket".to_owned()),
        Err(e) => denials.push(format!("udp: {e}")),
    }
    use std::net::ToSocketAddrs;
    match "localhost:80".to_socket_addrs().map(|a| a.count()) {
        Ok(n) if n > 0 => return Ok("resolved localhost".to_owned()),
        Ok(_) => denials.push("dns: no addresses".to_owned()),
        Err(e) => denials.push(format!("dns: {e}")),
    }
    Err(TaskError::fail(format!(
        "network denied ({})",
        denials.join("; ")
    )))
}

#[derive(Deserialize)]
struct Spam {
    #[serde(default = "default_lines")]
    lines: u64,
}

fn default_lines() -> u64 {
    200_000
}

/// Writes to stdout and stderr in a loop, then returns.
fn stdout_spam(_ctx: &Context, args: Spam) -> TaskResult<u64> {
    let mut written = 0;
    for i in 0..args.lines {
        // Errors (a full or closed pipe) are ignored: the point is the flood.
        let _ = writeln!(
            std::io::stdout(),
            "spam line {i} ............................"
        );
        let _ = writeln!(std::io::stderr(), "spam err {i}");
        written += 1;
    }
    Ok(written)
}

#[derive(Deserialize)]
struct NewlineFlood {
    #[serde(default = "default_mib")]
    mib: u64,
    /// The byte written: a newline by default; anything else makes one
    /// endless line.
    #[serde(default = "default_flood_byte")]
    byte: u8,
}

fn default_flood_byte() -> u8 {
    b'\n'
}

fn default_mib() -> u64 {
    64
}

/// Writes `mib` MiB of bare newlines to stdout, 64 KiB per write: millions
/// of empty lines, each nearly free for the guest to produce.
fn newline_flood(_ctx: &Context, args: NewlineFlood) -> TaskResult<u64> {
    let chunk = [args.byte; 64 * 1024];
    let total = args.mib.saturating_mul(1024 * 1024);
    let mut written: u64 = 0;
    let mut out = std::io::stdout();
    while written < total {
        let n = usize::try_from(total - written).map_or(chunk.len(), |left| left.min(chunk.len()));
        // Errors are ignored: the point is the flood.
        let _ = out.write_all(&chunk[..n]);
        written += n as u64;
    }
    Ok(written)
}

#[derive(Deserialize)]
struct EmptyLogLoop {
    /// Stop after this many calls; by default only the run's limits stop it.
    calls: Option<u64>,
}

/// Calls `log(info, "")` in a loop: entries with no text at all.
fn empty_log_loop(ctx: &Context, args: EmptyLogLoop) -> TaskResult<u64> {
    let mut calls: u64 = 0;
    while args.calls.is_none_or(|max| calls < max) {
        ctx.log(Level::Info, "");
        calls += 1;
    }
    Ok(calls)
}

#[derive(Deserialize)]
struct CallLoop {
    /// Stop after this many calls; by default only the run's limits stop it.
    calls: Option<u64>,
}

/// Calls `heartbeat()` in a loop.
fn heartbeat_flood(ctx: &Context, args: CallLoop) -> TaskResult<u64> {
    let mut calls: u64 = 0;
    while args.calls.is_none_or(|max| calls < max) {
        ctx.heartbeat();
        calls += 1;
    }
    Ok(calls)
}

/// Calls `progress()` in a loop, with a message each time.
fn progress_flood(ctx: &Context, args: CallLoop) -> TaskResult<u64> {
    let mut calls: u64 = 0;
    while args.calls.is_none_or(|max| calls < max) {
        ctx.progress((calls % 100) as f32, Some("still going"));
        calls += 1;
    }
    Ok(calls)
}

#[derive(Deserialize)]
struct Bomb {
    /// Children each run tries to enqueue.
    #[serde(default = "default_fanout")]
    fanout: u64,
}

fn default_fanout() -> u64 {
    100_000
}

/// Enqueues copies of itself until the host says no: a fork bomb, asking
/// for the highest priority so its children would jump every queue.
/// Returns how many it enqueued and the error that stopped it.
fn enqueue_bomb(ctx: &Context, args: Bomb) -> TaskResult<(u64, String)> {
    let mut made = 0;
    for _ in 0..args.fanout {
        match ctx.enqueue(
            "hostile.enqueue-bomb",
            &serde_json::json!({ "fanout": args.fanout }),
            Some(EnqueueOptions {
                priority: Some(9),
                ..EnqueueOptions::default()
            }),
        ) {
            Ok(_) => made += 1,
            Err(e @ EnqueueError::QuotaExceeded(_)) => return Ok((made, e.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((made, "fan-out done".to_owned()))
}

/// Floods `enqueue` with options that carry bytes: children whose `link`
/// callbacks hold 64 KiB of arguments each (they count against the run's
/// child-argument quota like the child's own), and a unique key of 100 KB
/// (refused). Returns how many children it made, and what stopped it.
fn callback_flood(ctx: &Context, _args: Value) -> TaskResult<(u64, String, String)> {
    let big = serde_json::json!({ "pad": "x".repeat(64 * 1024) });
    let long_key = ctx
        .enqueue(
            "hostile.burn",
            &Value::Null,
            Some(EnqueueOptions {
                unique: Some(Unique {
                    key: Some("k".repeat(100_000)),
                    ttl: std::time::Duration::from_secs(60),
                }),
                ..EnqueueOptions::default()
            }),
        )
        .map_or_else(|e| e.to_string(), |id| format!("enqueued {id}"));
    let mut made = 0;
    loop {
        let options = EnqueueOptions {
            link: Some(Callback {
                args: Some(big.clone()),
                ..Callback::new("hostile.burn")
            }),
            link_error: Some(Callback::new("hostile.burn")),
            ignore_result: Some(true),
            ..EnqueueOptions::default()
        };
        match ctx.enqueue(
            "hostile.burn",
            &serde_json::json!({"rounds": 1}),
            Some(options),
        ) {
            Ok(_) => made += 1,
            Err(e @ EnqueueError::QuotaExceeded(_)) => return Ok((made, e.to_string(), long_key)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Submits canvases of 100 tasks each until the host says no: a fork bomb
/// through canvases. Every task counts against the run's and the tree's
/// quotas, all at once. Returns how many canvases it made, and why it
/// stopped.
fn canvas_bomb(ctx: &Context, _args: Value) -> TaskResult<(u64, String)> {
    let members: Vec<xylem_guest::canvas::Node> = (0..100)
        .map(|_| {
            xylem_guest::canvas::Node::task_with("hostile.burn", serde_json::json!({"rounds": 1}))
        })
        .collect();
    let canvas = xylem_guest::canvas::Node::group(members);
    let mut made = 0;
    loop {
        match ctx.submit_canvas(&canvas) {
            Ok(_) => made += 1,
            Err(e @ EnqueueError::QuotaExceeded(_)) => return Ok((made, e.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Tries each way of enqueueing badly and reports what the host said.
fn bad_enqueue(ctx: &Context, _args: Value) -> TaskResult<Vec<String>> {
    let queue = |q: &str| {
        Some(EnqueueOptions {
            queue: Some(q.to_owned()),
            ..EnqueueOptions::default()
        })
    };
    let tries = [
        ctx.enqueue("no.such-task", &Value::Null, None),
        ctx.enqueue("bad name!", &Value::Null, None),
        ctx.enqueue("hostile.burn", &Value::Null, queue("bad queue\n")),
        ctx.enqueue(
            "hostile.schema",
            &serde_json::json!({"count": "three"}),
            None,
        ),
    ];
    Ok(tries
        .into_iter()
        .map(|r| match r {
            Ok(id) => format!("enqueued {id}"),
            Err(e) => e.to_string(),
        })
        .collect())
}

#[derive(Deserialize)]
struct Counted {
    count: u32,
}

/// A task with an argument schema: `{"count": <integer 1-10>}`.
fn schema_task(_ctx: &Context, args: Counted) -> TaskResult<u32> {
    Ok(args.count)
}

/// Burns a fixed amount of CPU: for fuel-determinism and fuel-limit tests.
fn burn(_ctx: &Context, args: Value) -> TaskResult<u64> {
    let rounds = args
        .get("rounds")
        .and_then(Value::as_u64)
        .unwrap_or(1_000_000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rounds {
        x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(31);
    }
    Ok(x)
}

static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static mut SCRATCH: [u8; 4096] = [0; 4096];

/// Counts its calls in a static and leaves a mark in memory: if anything
/// survived from an earlier job, the count or the mark would show it.
fn remember(_ctx: &Context, _args: Value) -> TaskResult<(u64, u8)> {
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    // SAFETY: one call at a time in a single-threaded guest.
    #[allow(unsafe_code, static_mut_refs)]
    let seen = unsafe {
        let seen = SCRATCH[123];
        SCRATCH[123] = 0xAB;
        seen
    };
    Ok((calls, seen))
}

/// Host page size: `hostile.scatter` marks one byte in every other page.
const PAGE: usize = 4096;
/// Most marks `hostile.scatter` makes: 8 MiB of memory.
const MOST_SCATTERED: usize = 1024;
/// Wasm's page size, the unit of `memory.grow`.
const WASM_PAGE: usize = 65536;

/// Grows memory by what `pages` marks need (one page and a gap each, so
/// that every mark is a dirty region of its own), marks them, and reports
/// how many marks it found already there: any would have survived from an
/// earlier job in the same pool slot. The memory is grown at run time, not
/// a static, so the plugin's other tasks start as small as before.
fn scatter(_ctx: &Context, args: Value) -> TaskResult<u64> {
    let stride = 2 * PAGE;
    let pages = args
        .get("pages")
        .and_then(Value::as_u64)
        .map_or(300, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(MOST_SCATTERED);
    let grown = core::arch::wasm32::memory_grow(0, (pages * stride).div_ceil(WASM_PAGE));
    if grown == usize::MAX {
        return Err(TaskError::fail("memory.grow refused"));
    }
    let base = (grown * WASM_PAGE) as *mut u8;
    let mut seen = 0;
    for i in 0..pages {
        // SAFETY: `i * stride` lies in the pages just grown, which nothing
        // else uses (the allocator grows memory past them); one call at a
        // time in a single-threaded guest. Volatile: the compiler may not
        // assume fresh memory is zero.
        #[allow(unsafe_code)]
        unsafe {
            let mark = base.add(i * stride);
            if mark.read_volatile() != 0 {
                seen += 1;
            }
            mark.write_volatile(0xAB);
        }
    }
    Ok(seen)
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("hostile.loop", infinite_loop).description("Spins forever"),
        Task::new("hostile.polite-loop", polite_loop)
            .description("Spins until cancelled() turns true"),
        Task::new("hostile.memory-bomb", memory_bomb).description("Allocates without end"),
        Task::new("hostile.stack-overflow", stack_overflow).description("Recurses without end"),
        Task::new("hostile.panic", panic).description("Panics"),
        Task::new("hostile.huge-output", huge_output).description("Returns a huge result"),
        Task::new("hostile.read-file", read_file).description("Tries to read host files"),
        Task::new("hostile.read-env", read_env).description("Tries to read the host environment"),
        Task::new("hostile.socket", open_socket).description("Tries to open sockets"),
        Task::new("hostile.stdout-spam", stdout_spam).description("Floods stdout and stderr"),
        Task::new("hostile.newline-flood", newline_flood)
            .description("Writes `mib` MiB of bare newlines to stdout"),
        Task::new("hostile.empty-log-loop", empty_log_loop)
            .description("Calls log(info, \"\") until its limits (or `calls`) stop it"),
        Task::new("hostile.heartbeat-flood", heartbeat_flood)
            .description("Calls heartbeat() until its limits (or `calls`) stop it"),
        Task::new("hostile.progress-flood", progress_flood)
            .description("Calls progress() until its limits (or `calls`) stop it"),
        Task::new("hostile.enqueue-bomb", enqueue_bomb)
            .description("Enqueues copies of itself until refused (a fork bomb)"),
        Task::new("hostile.canvas-bomb", canvas_bomb)
            .description("Submits canvases of 100 tasks until refused"),
        Task::new("hostile.callback-flood", callback_flood)
            .description("Enqueues children whose callbacks carry 64 KiB each, until refused"),
        Task::new("hostile.bad-enqueue", bad_enqueue)
            .description("Enqueues an unknown task, bad names and bad arguments"),
        Task::new("hostile.schema", schema_task)
            .description("Takes {\"count\": 1-10}, declared as a JSON Schema")
            .args_schema(serde_json::json!({
                "type": "object",
                "properties": { "count": { "type": "integer", "minimum": 1, "maximum": 10 } },
                "required": ["count"]
            })),
        Task::new("hostile.burn", burn).description("Burns `rounds` iterations of CPU"),
        Task::new("hostile.remember", remember)
            .description("Reports whether anything survived from an earlier job"),
        Task::new("hostile.scatter", scatter)
            .description("Marks `pages` scattered pages; reports marks an earlier job left"),
    ]
}

xylem_guest::export_plugin!(tasks);
