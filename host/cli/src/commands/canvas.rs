//! `xylem chain`, `xylem group`, `xylem chord` and `xylem canvas`: tasks
//! composed into a canvas (`xylem_core::canvas`), enqueued in one step and
//! driven to their end by the workers; `canvas show` draws the tree with
//! each node's state.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use xylem_core::Client;
use xylem_core::callback::Callback;
use xylem_core::canvas::{Canvas, MemberErrors, Node, NodeState, node_result, node_state, records};
use xylem_core::limits::parse_duration;

/// What every canvas command takes.
#[derive(Debug, Args)]
pub(crate) struct CanvasFlags {
    /// If the canvas fails, enqueue TASK (or `TASK:{json}`) with the
    /// failing node's error.
    #[arg(long, value_name = "TASK[:ARGS]")]
    link_error: Option<String>,
    /// A header every job of the canvas carries, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Wait for the canvas to finish and print its result (exit 0 if it
    /// succeeded, 1 if it failed, 124 on timeout).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, default_value = "5m")]
    wait_timeout: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `xylem group` / `xylem chord`: members.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// Members: `TASK` or `TASK:{"json":"object"}` (its own arguments).
    #[arg(required = true, value_name = "TASK[:ARGS]")]
    members: Vec<String>,
    /// A failed member puts its error in its place in the results and the
    /// canvas goes on (default: a failed member fails the group).
    #[arg(long)]
    include_errors: bool,
    #[command(flatten)]
    flags: CanvasFlags,
}

/// `xylem chain`: steps.
#[derive(Debug, Args)]
pub(crate) struct ChainArgs {
    /// Steps, in order: `TASK` or `TASK:{"json":"object"}`; each step's
    /// result is the next one's input (the whole input without arguments
    /// of its own, else added to them under "result").
    #[arg(required = true, value_name = "TASK[:ARGS]")]
    steps: Vec<String>,
    #[command(flatten)]
    flags: CanvasFlags,
}

/// `xylem chord`: members and a callback.
#[derive(Debug, Args)]
pub(crate) struct ChordArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Runs once every member has finished, with the list of their
    /// results (in member order).
    #[arg(long, value_name = "TASK[:ARGS]")]
    callback: String,
}

/// `xylem canvas ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CanvasCommand {
    /// Enqueue a canvas from a JSON or YAML (`.yaml`, `.yml`) file (`-`:
    /// standard input): nested chains, groups and chords (see
    /// docs/canvas.md for the format).
    Submit {
        /// The file.
        file: String,
        #[command(flatten)]
        flags: CanvasFlags,
    },
    /// Draw a canvas's tree with each node's state and result.
    Show {
        /// The canvas id.
        id: String,
        /// Print JSON: the definition, each task node's state, the result.
        #[arg(long)]
        json: bool,
    },
}

fn task_node(spec: &str) -> anyhow::Result<Node> {
    let callback = Callback::parse(spec).map_err(anyhow::Error::msg)?;
    Ok(Node::Task(callback))
}

fn nodes(specs: &[String]) -> anyhow::Result<Vec<Node>> {
    specs.iter().map(|s| task_node(s)).collect()
}

fn errors(include: bool) -> MemberErrors {
    if include {
        MemberErrors::Include
    } else {
        MemberErrors::Fail
    }
}

pub(crate) async fn chain(store_url: &str, a: ChainArgs) -> anyhow::Result<ExitCode> {
    submit(store_url, Node::chain(nodes(&a.steps)?), a.flags).await
}

pub(crate) async fn group(store_url: &str, a: GroupArgs) -> anyhow::Result<ExitCode> {
    let node = Node::Group {
        id: String::new(),
        members: nodes(&a.members)?,
        member_errors: errors(a.include_errors),
    };
    submit(store_url, node, a.flags).await
}

pub(crate) async fn chord(store_url: &str, a: ChordArgs) -> anyhow::Result<ExitCode> {
    let node = Node::Chord {
        id: String::new(),
        members: nodes(&a.group.members)?,
        callback: Box::new(task_node(&a.callback)?),
        member_errors: errors(a.group.include_errors),
    };
    submit(store_url, node, a.group.flags).await
}

pub(crate) async fn run(store_url: &str, command: CanvasCommand) -> anyhow::Result<ExitCode> {
    match command {
        CanvasCommand::Submit { file, flags } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the canvas from standard input")?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let node = parse_canvas_file(&file, &text)?;
            submit(store_url, node, flags).await
        }
        CanvasCommand::Show { id, json } => show(store_url, &id, json).await,
    }
}

/// A canvas file: YAML for `.yaml`/`.yml`, JSON otherwise (standard
/// input: JSON, else YAML).
fn parse_canvas_file(file: &str, text: &str) -> anyhow::Result<Node> {
    let yaml = file.ends_with(".yaml") || file.ends_with(".yml");
    let parsed = if yaml {
        yaml_serde::from_str::<Node>(text).map_err(anyhow::Error::from)
    } else if file == "-" {
        serde_json::from_str::<Node>(text)
            .or_else(|_| yaml_serde::from_str::<Node>(text))
            .map_err(anyhow::Error::from)
    } else {
        serde_json::from_str::<Node>(text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("{file} is not a canvas (see docs/canvas.md for the format)"))
}

/// Enqueues `root` as a canvas; prints its id (or, with --wait, its end).
#[allow(clippy::print_stdout)]
async fn submit(store_url: &str, root: Node, flags: CanvasFlags) -> anyhow::Result<ExitCode> {
    let mut canvas = Canvas::new(root).map_err(anyhow::Error::msg)?;
    if let Some(spec) = &flags.link_error {
        let callback = Callback::parse(spec).map_err(anyhow::Error::msg)?;
        canvas = canvas
            .with_link_error(callback)
            .map_err(anyhow::Error::msg)?;
    }
    for header in &flags.headers {
        let (k, v) = header
            .split_once('=')
            .with_context(|| format!("invalid header `{header}`: use NAME=VALUE"))?;
        canvas.headers.push((k.to_owned(), v.to_owned()));
    }
    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    let started = client.enqueue_canvas(&canvas).await?;
    if !flags.wait {
        if flags.json {
            let doc = serde_json::json!({ "id": canvas.id, "started": started, "canvas": canvas });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!("{}", canvas.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !flags.json {
        eprintln!("enqueued canvas {}; waiting…", canvas.id);
    }
    let timeout = parse_duration(&flags.wait_timeout)?;
    let began = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let records = records(&store.stores, &canvas).await?;
        let state = node_state(&canvas.root, &records);
        if !matches!(state, NodeState::Pending | NodeState::Running) {
            let result = node_result(&canvas.root, &records);
            if flags.json {
                let doc = serde_json::json!({ "id": canvas.id, "state": state, "result": result });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("{}", serde_json::to_string(&result)?);
                eprintln!("canvas {} {}", canvas.id, state_word(state));
            }
            return Ok(if state == NodeState::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if began.elapsed() >= timeout {
            eprintln!(
                "gave up after {timeout:?}: canvas {} is still {}",
                canvas.id,
                state_word(state)
            );
            return Ok(ExitCode::from(124));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn state_word(state: NodeState) -> &'static str {
    match state {
        NodeState::Pending => "pending",
        NodeState::Running => "running",
        NodeState::Succeeded => "succeeded",
        NodeState::Failed => "failed",
        NodeState::Partial => "partial",
    }
}

/// `xylem canvas show ID`.
#[allow(clippy::print_stdout)]
async fn show(store_url: &str, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    if json {
        let doc = canvas_doc(&store.stores, id).await?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(store.stores.clone());
    let canvas = client.canvas(id).await?;
    let records = records(&store.stores, &canvas).await?;
    let state = node_state(&canvas.root, &records);
    println!("canvas {} {}", canvas.id, state_word(state));
    let mut lines = Vec::new();
    draw(&canvas.root, &records, "", "", &mut lines);
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per node, indented as a tree: kind or task, state, and a
/// task's id and result or error.
fn draw(
    node: &Node,
    records: &std::collections::HashMap<String, xylem_core::TaskRecord>,
    lead: &str,
    child_lead: &str,
    out: &mut Vec<String>,
) {
    let state = state_word(node_state(node, records));
    let head = match node {
        Node::Task(c) => {
            let record = records.get(&c.id);
            let tail = match record {
                Some(r) if r.error.is_some() => r
                    .error
                    .as_ref()
                    .map(|e| format!("  {}: {}", e.kind, e.message))
                    .unwrap_or_default(),
                Some(r) => r
                    .result
                    .as_ref()
                    .map(|v| format!("  → {}", clip(&v.to_string())))
                    .unwrap_or_default(),
                None => String::new(),
            };
            format!(
                "{}  {}  {state}{tail}",
                c.task,
                &c.id[c.id.len().saturating_sub(12)..]
            )
        }
        Node::Chain { .. } => format!("chain  {state}"),
        Node::Group { .. } => format!("group  {state}"),
        Node::Chord { .. } => format!("chord  {state}"),
    };
    out.push(format!("{lead}{head}"));
    let children = node.children();
    let count = children.len();
    for (i, child) in children.into_iter().enumerate() {
        let last = i + 1 == count;
        let label = match node {
            Node::Chord { members, .. } if i == members.len() => "callback: ",
            _ => "",
        };
        let (branch, rest) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        draw(
            child,
            records,
            &format!("{child_lead}{branch}{label}"),
            &format!("{child_lead}{rest}"),
            out,
        );
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
    }
}

/// A canvas as `xylem canvas show --json` and `GET /api/canvases/{id}`
/// give it: its state and result, each task node's path, id, state, result
/// or error, and the tree.
pub(crate) async fn canvas_doc(
    stores: &xylem_core::Stores,
    id: &str,
) -> Result<serde_json::Value, xylem_core::ClientError> {
    let canvas = Client::new(stores.clone()).canvas(id).await?;
    let records = records(stores, &canvas).await?;
    let state = node_state(&canvas.root, &records);
    let tasks: Vec<serde_json::Value> = canvas
        .root
        .tasks(&[])
        .into_iter()
        .map(|(path, c)| {
            let record = records.get(&c.id);
            serde_json::json!({
                "path": path,
                "task": c.task,
                "id": c.id,
                "state": record.map_or("pending".to_owned(), |r| r.state.to_string()),
                "result": record.and_then(|r| r.result.clone()),
                "error": record.and_then(|r| r.error.clone()),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "id": canvas.id,
        "state": state,
        "result": node_result(&canvas.root, &records),
        "tasks": tasks,
        "canvas": canvas,
    }))
}
