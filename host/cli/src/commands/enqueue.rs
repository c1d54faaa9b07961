//! `xylem enqueue`: queue a job.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use xylem_core::callback::Callback;
use xylem_core::limits::{parse_duration, parse_size};
use xylem_core::time::{ms, now_ms, parse_rfc3339};
use xylem_core::unique::{Unique, UniqueOutcome};
use xylem_core::{ChildQuotaOverrides, Client, ClientError, EnqueueRequest, JobOptions};

use super::task::{print_record, record_exit_code};

/// Queue a job; prints its id (with --wait, waits and prints the result).
/// With --batch FILE, queues one job per line of an NDJSON file.
#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// Task name, e.g. hello.greet (see `xylem tasks`).
    #[arg(required_unless_present = "batch")]
    task: Option<String>,
    /// JSON arguments, or @FILE to read them from a file.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Enqueue the jobs of an NDJSON file (`-`: standard input), one JSON
    /// object per line: `{"task": "hello.echo", "args": {...}}` plus any
    /// option below by its long name (`"queue"`, `"priority"`, `"delay"`,
    /// `"max_retries"`, `"timeout"`, `"memory"`, `"headers": ["K=V"]`, ...).
    /// Every line is checked before anything is enqueued: one bad line and
    /// no job is queued. Prints the ids, one per line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["task", "wait"])]
    batch: Option<String>,
    #[command(flatten)]
    job: JobFlags,
    /// Wait for the job to finish and print its result; the exit code
    /// tells how it ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit code 124).
    #[arg(long, default_value = "5m")]
    wait_timeout: String,
    /// A unique job: if an equal one (same task, queue and arguments, or
    /// the same --unique-key) was enqueued within this long, enqueue
    /// nothing and print that job's id instead (e.g. 10m).
    #[arg(long, value_name = "DURATION", conflicts_with = "batch")]
    unique_for: Option<String>,
    /// With --unique-for: the key that makes jobs equal (default: a hash
    /// of task, queue and canonical arguments).
    #[arg(long, value_name = "KEY", requires = "unique_for")]
    unique_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A job's options: the command line's flags, and the keys of a `--batch`
/// line (with the same names, `_` for `-`).
#[derive(Debug, Default, Clone, Args, serde::Deserialize)]
#[serde(default)]
pub(crate) struct JobFlags {
    /// Queue (default: the task's declared queue, else `default`).
    #[arg(long, short)]
    queue: Option<String>,
    /// Priority 0 (lowest) to 9 (highest).
    #[arg(long, short, allow_negative_numbers = true, value_parser = parse_priority)]
    priority: Option<u8>,
    /// Run no sooner than this from now, e.g. 30s.
    #[arg(long, conflicts_with = "eta", allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a delay", s))]
    delay: Option<String>,
    /// Run no sooner than this time (RFC 3339, e.g. 2026-11-22T15:00:00Z).
    #[arg(long)]
    eta: Option<String>,
    /// Expire the job if it has not started within this long.
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("an expiry", s))]
    expires: Option<String>,
    /// How each run goes: retries, limits, callbacks, headers.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) run: RunFlags,
}

/// How each run of a job goes, whenever it is enqueued: the flags `xylem
/// enqueue` and `xylem schedule add` share, and the keys of a `--batch`
/// line or a schedule file.
#[derive(Debug, Default, Clone, Args, serde::Deserialize)]
#[serde(default)]
pub(crate) struct RunFlags {
    /// Retries before the job is dead-lettered.
    #[arg(long, allow_negative_numbers = true,
          value_parser = |s: &str| count::<u32>("max retries", s))]
    max_retries: Option<u32>,
    /// First retry delay (doubled each retry, with jitter), e.g. 1s.
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a backoff", s))]
    backoff: Option<String>,
    /// Largest retry delay.
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a backoff", s))]
    backoff_max: Option<String>,
    /// Hard time limit of a run (more than 0).
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a timeout", s))]
    timeout: Option<String>,
    /// Soft time limit of a run (more than 0).
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a timeout", s))]
    soft_timeout: Option<String>,
    /// Fuel budget of a run (more than 0).
    #[arg(long, allow_negative_numbers = true,
          value_parser = |s: &str| count::<u64>("fuel", s))]
    fuel: Option<u64>,
    /// Memory cap of a run, e.g. 64MiB (at least 64KiB).
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a memory cap", s))]
    memory: Option<String>,
    /// Retry at exactly the backoff delays (default: each spread at random
    /// over ±25 %, so jobs failing together do not retry together).
    #[arg(long)]
    no_jitter: bool,
    /// How long the job stays with a worker that stops answering before
    /// another worker may take it (its lease, renewed while it runs; 1s to
    /// 24h; default: the task's, else the worker's --lease).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| not_negative("a visibility timeout", s))]
    visibility_timeout: Option<String>,
    /// Keep the job's state but not its result value.
    #[arg(long)]
    ignore_result: bool,
    /// When the job succeeds, enqueue TASK with its result: `TASK` gets the
    /// result as its arguments; `TASK:{"k":"v"}` gets those plus
    /// `"result"`. Refused now if TASK does not exist.
    #[arg(long, value_name = "TASK[:ARGS]")]
    link: Option<String>,
    /// When the job fails for good (dead), enqueue TASK with its error
    /// (`{"id","task","attempt","kind","message"}`; with ARGS, under
    /// `"error"`).
    #[arg(long, value_name = "TASK[:ARGS]")]
    link_error: Option<String>,
    /// This job's child-job quota (default: its task's, set at push, else
    /// the worker's).
    #[command(flatten)]
    #[serde(flatten)]
    quota: ChildQuotaFlags,
    /// A header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    #[serde(alias = "header")]
    headers: Vec<String>,
}

/// `--priority`: 0 to 9, and a clear word for anything else (negative
/// numbers included, which clap would otherwise take for a flag).
pub(crate) fn parse_priority(text: &str) -> Result<u8, String> {
    match text.trim().parse::<i64>() {
        Ok(p @ 0..=9) => Ok(p as u8),
        Ok(p) => Err(format!("priority must be 0-9, not {p}")),
        Err(_) => Err(format!("priority must be a number 0-9, not `{text}`")),
    }
}

/// A duration or size flag: refuses a negative value by name (`what`,
/// e.g. "a delay") instead of clap's "unexpected argument".
pub(crate) fn not_negative(what: &str, text: &str) -> Result<String, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("{what} cannot be negative"));
    }
    Ok(text.to_owned())
}

/// A whole-number flag that cannot be negative.
fn count<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("{what} cannot be negative, not {text}"));
    }
    text.trim()
        .parse()
        .map_err(|_| format!("{what} must be a whole number, not `{text}`"))
}

/// Parses a duration option, refusing a negative one by name.
pub(crate) fn duration(what: &str, text: &str) -> anyhow::Result<Duration> {
    not_negative(what, text).map_err(anyhow::Error::msg)?;
    Ok(parse_duration(text)?)
}

/// The four child-job quota flags, for `xylem enqueue` (a root job's
/// quota) and `xylem plugin push` (its tasks' root jobs'); unset ones keep
/// what comes before (the task's, then the worker's). Also the keys of a
/// `--batch` line.
#[derive(Debug, Default, Clone, Args, serde::Deserialize)]
#[serde(default)]
pub(crate) struct ChildQuotaFlags {
    /// Child jobs one run may enqueue (the worker's default: 1000).
    #[arg(long, allow_negative_numbers = true, help_heading = "Child-job quota",
          value_parser = |s: &str| count::<u32>("max children", s))]
    max_children: Option<u32>,
    /// Bytes of arguments one run's children may carry in all, e.g. 4MiB
    /// (the worker's default: 1MiB).
    #[arg(long, allow_hyphen_values = true, help_heading = "Child-job quota",
          value_parser = |s: &str| not_negative("a size", s))]
    max_child_args: Option<String>,
    /// Deepest a descendant may be below its root job (the worker's
    /// default: 16).
    #[arg(long, allow_negative_numbers = true, help_heading = "Child-job quota",
          value_parser = |s: &str| count::<u32>("max depth", s))]
    max_depth: Option<u32>,
    /// Descendants one root job may have in all, over every worker and
    /// retry (the worker's default: 10000).
    #[arg(long, allow_negative_numbers = true, help_heading = "Child-job quota",
          value_parser = |s: &str| count::<u64>("max descendants", s))]
    max_descendants: Option<u64>,
}

impl ChildQuotaFlags {
    /// The flags as quota overrides.
    pub(crate) fn overrides(&self) -> anyhow::Result<ChildQuotaOverrides> {
        Ok(ChildQuotaOverrides {
            max_children: self.max_children,
            max_child_args_bytes: self.max_child_args.as_deref().map(parse_size).transpose()?,
            max_depth: self.max_depth,
            max_descendants: self.max_descendants,
        })
    }
}

/// The keys of [`RunFlags`] in a `--batch` line or a schedule file.
pub(crate) const RUN_KEYS: &[&str] = &[
    "max_retries",
    "backoff",
    "backoff_max",
    "timeout",
    "soft_timeout",
    "fuel",
    "memory",
    "no_jitter",
    "visibility_timeout",
    "ignore_result",
    "link",
    "link_error",
    "max_children",
    "max_child_args",
    "max_depth",
    "max_descendants",
    "headers",
    "header",
];

/// The keys a `--batch` line may have besides [`RUN_KEYS`].
const BATCH_KEYS: &[&str] = &[
    "task", "args", "queue", "priority", "delay", "eta", "expires",
];

impl JobFlags {
    /// The request for `task` with `args` and these options.
    fn request(&self, task: &str, args: String) -> anyhow::Result<EnqueueRequest> {
        // The same rules as `Client::prepare`, checked here too so a bad
        // line of a batch is caught before the store is opened.
        xylem_core::client::validate_task_name(task)?;
        let mut req = EnqueueRequest::new(task, args);
        req.queue = checked_queue(&self.queue)?;
        req.priority = checked_priority(self.priority)?;
        if let Some(delay) = &self.delay {
            req = req.delay(duration("a delay", delay)?);
        }
        if let Some(eta) = &self.eta {
            req.not_before = Some(parse_rfc3339(eta).map_err(anyhow::Error::msg)?);
        }
        if let Some(expires) = &self.expires {
            req.expires_at = Some(now_ms() + ms(duration("an expiry", expires)?));
        }
        self.run.apply(&mut req)?;
        Ok(req)
    }
}

/// `--queue`, checked by core's name rule.
pub(crate) fn checked_queue(queue: &Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(q) = queue {
        xylem_core::client::validate_queue_name(q)?;
    }
    Ok(queue.clone())
}

/// `--priority` (also from a file, where clap's parser did not run).
pub(crate) fn checked_priority(priority: Option<u8>) -> anyhow::Result<Option<u8>> {
    if let Some(p) = priority {
        anyhow::ensure!(p <= 9, "priority must be 0-9, not {p}");
    }
    Ok(priority)
}

impl RunFlags {
    /// Sets `req`'s retries, headers and options from these flags, checked
    /// by the rules `Client::prepare` applies.
    pub(crate) fn apply(&self, req: &mut EnqueueRequest) -> anyhow::Result<()> {
        req.max_retries = self.max_retries;
        for header in &self.headers {
            let (k, v) = header
                .split_once('=')
                .with_context(|| format!("invalid header `{header}`: use NAME=VALUE"))?;
            req.headers.push((k.to_owned(), v.to_owned()));
        }
        let memory = match self.memory.as_deref() {
            Some(text) => {
                not_negative("a memory cap", text).map_err(anyhow::Error::msg)?;
                Some(parse_size(text)?)
            }
            None => None,
        };
        req.options = JobOptions {
            retry_backoff_ms: millis("a backoff", &self.backoff)?,
            retry_backoff_max_ms: millis("a backoff", &self.backoff_max)?,
            soft_time_limit_ms: millis("a timeout", &self.soft_timeout)?,
            hard_time_limit_ms: millis("a timeout", &self.timeout)?,
            retry_jitter: self.no_jitter.then_some(false),
            fuel: self.fuel,
            max_memory_bytes: memory,
            visibility_timeout_ms: millis("a visibility timeout", &self.visibility_timeout)?,
            ignore_result: self.ignore_result.then_some(true),
            link: callback("--link", &self.link)?,
            link_error: callback("--link-error", &self.link_error)?,
            child_quota: self.quota.overrides()?,
        };
        xylem_core::client::validate_options(&req.options)?;
        Ok(())
    }
}

/// One line of a `--batch` file as a request.
fn batch_line(line: &str) -> anyhow::Result<EnqueueRequest> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).context("not a JSON object")?;
    job_request(object)
}

/// A job as a JSON object — a `--batch` line, or a body of `POST /api/jobs`
/// (`xylem serve`): `task`, `args` and the keys of `xylem enqueue`'s flags.
pub(crate) fn job_request(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<EnqueueRequest> {
    if let Some(key) = object
        .keys()
        .find(|k| !BATCH_KEYS.contains(&k.as_str()) && !RUN_KEYS.contains(&k.as_str()))
    {
        anyhow::bail!(
            "unknown key `{key}` (known: {}, {})",
            BATCH_KEYS.join(", "),
            RUN_KEYS.join(", ")
        );
    }
    let task = match object.remove("task") {
        Some(serde_json::Value::String(task)) => task,
        Some(_) => anyhow::bail!("`task` must be a string"),
        None => anyhow::bail!("no `task`"),
    };
    let args = object
        .remove("args")
        .unwrap_or_else(|| serde_json::json!({}))
        .to_string();
    let flags: JobFlags = serde_json::from_value(serde_json::Value::Object(object))?;
    flags.request(&task, args)
}

/// `--batch`: every line checked, then everything enqueued.
#[allow(clippy::print_stdout)]
async fn run_batch(store_url: &str, file: &str, json: bool) -> anyhow::Result<ExitCode> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read jobs from standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let mut requests = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let req = batch_line(line)
            .with_context(|| format!("{file}, line {}: nothing was enqueued", n + 1))?;
        requests.push(req);
        lines.push(n + 1);
    }
    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    let count = requests.len();
    let started = std::time::Instant::now();
    let envelopes = match client.enqueue_many(requests).await {
        Ok(envelopes) => envelopes,
        Err(ClientError::InBatch { index, source }) => anyhow::bail!(
            "{file}, line {}: {source}: nothing was enqueued",
            lines.get(index).copied().unwrap_or(index + 1)
        ),
        Err(e) => return Err(e.into()),
    };
    let elapsed = started.elapsed();
    if json {
        let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
        println!("{}", serde_json::to_string_pretty(&ids)?);
    } else {
        let mut out = String::with_capacity(envelopes.len() * 37);
        for e in &envelopes {
            out.push_str(&e.id);
            out.push('\n');
        }
        print!("{out}");
    }
    eprintln!(
        "enqueued {count} jobs in {:.2} s ({:.0} jobs/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// `--link` / `--link-error`: `TASK` or `TASK:{json object}`.
fn callback(flag: &str, text: &Option<String>) -> anyhow::Result<Option<Callback>> {
    text.as_deref()
        .map(|t| Callback::parse(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

fn millis(what: &str, text: &Option<String>) -> anyhow::Result<Option<u64>> {
    text.as_deref()
        .map(|t| duration(what, t).map(|d| d.as_millis() as u64))
        .transpose()
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(store_url: &str, a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &a.batch {
        return run_batch(store_url, file, a.json).await;
    }
    let task = a.task.as_deref().context("a task name is needed")?;
    let args = match a.args.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read arguments from {path}"))?,
        None => a.args.clone(),
    };
    let req = a.job.request(task, args)?;

    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    let mut req = req;
    if let Some(ttl) = &a.unique_for {
        req.unique = Some(Unique {
            key: a.unique_key.clone(),
            ttl: duration("a unique period", ttl)?,
        });
    }
    // `submit`: unique by this request or by the task's declared default.
    let (id, doc) = match client.submit(req).await? {
        UniqueOutcome::Enqueued(envelope) => {
            (envelope.id.clone(), serde_json::to_value(&envelope)?)
        }
        UniqueOutcome::Duplicate(first) => {
            if !a.json {
                eprintln!("not enqueued: an equal unique job was enqueued already; its id follows");
            }
            let doc = serde_json::json!({ "id": first, "duplicate": true });
            (first, doc)
        }
    };
    if !a.wait {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.json {
        eprintln!("enqueued {id} ({task}); waiting…");
    }
    let timeout: Duration = parse_duration(&a.wait_timeout)?;
    match crate::progress::wait(&client, &id, timeout).await {
        Ok(record) => {
            print_record(&record, a.json)?;
            Ok(record_exit_code(&record))
        }
        Err(xylem_core::ClientError::Timeout { waited, state }) => {
            eprintln!("gave up after {waited:?}: job {id} is still {state}");
            Ok(ExitCode::from(124))
        }
        Err(e) => Err(e.into()),
    }
}
