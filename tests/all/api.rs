//! `xylem serve` as a user drives it: a real server process on SQLite and
//! on Redis, a real worker beside it, every endpoint called over HTTP, with
//! no token, a read-only token and the admin token, and with bad input
//! (malformed JSON, an unknown task, an unknown key, a body over the
//! limit, a bad filter, an unknown id or path) — each a 4xx with a JSON
//! error that says what is wrong.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use xylem_tests::scenarios::{self, Cluster, terminate};

pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

/// A running `xylem serve` and its address.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process that is killed if the test panics before it stops it
/// (a failed test must not leave a worker running beside the next tests).
pub(crate) struct WorkerGuard(pub(crate) Child);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `xylem serve` on `cluster`'s store, any free port, with both tokens.
pub(crate) fn serve(cluster: &Cluster) -> Server {
    let mut child = cluster
        .command()
        .args(["serve", "--listen", "127.0.0.1:0", "--max-body", "64KiB"])
        .env("XYLEM_API_TOKEN", ADMIN)
        .env("XYLEM_API_READ_TOKEN", READ)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim_end_matches("/api")
        .to_owned();
    Server { child, base }
}

/// One call: its status and its JSON body.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:?}"));
    (status, value)
}

/// A 4xx whose JSON error contains `needle`.
fn refused(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let message = got.1["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{status}: {message:?} lacks {needle:?}"
    );
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(clippy::too_many_lines)]
async fn the_api_on(url: &str) {
    use reqwest::Method;
    let cluster = Cluster::new(url).await;
    let server = serve(&cluster);
    let http = reqwest::Client::new();
    let at = |path: &str| format!("{}{path}", server.base);
    let get =
        |path: &str, token: Option<&'static str>| call(&http, Method::GET, at(path), token, None);
    let post = |path: &str, token: Option<&'static str>, body: String| {
        call(&http, Method::POST, at(path), token, Some(body))
    };

    // Auth: none, wrong, read-only on a change, admin.
    refused(
        get("/api/queues", None).await,
        StatusCode::UNAUTHORIZED,
        "token",
    );
    refused(
        get("/api/queues", Some("not-the-token-at-all")).await,
        StatusCode::UNAUTHORIZED,
        "token",
    );
    assert_eq!(get("/api/queues", Some(READ)).await.0, StatusCode::OK);
    let greet = json!({"task": "hello.greet", "args": {"name": "Ada"}}).to_string();
    refused(
        post("/api/jobs", Some(READ), greet.clone()).await,
        StatusCode::FORBIDDEN,
        "read-only",
    );

    // Enqueue, show, list.
    let (status, created) = post("/api/jobs", Some(ADMIN), greet.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let greeting = created["id"].as_str().unwrap().to_owned();
    let (status, record) = get(&format!("/api/jobs/{greeting}"), Some(READ)).await;
    assert_eq!(
        (status, &record["task"]),
        (StatusCode::OK, &json!("hello.greet"))
    );

    // Bad input.
    refused(
        post("/api/jobs", Some(ADMIN), "{\"task\": ".to_owned()).await,
        StatusCode::BAD_REQUEST,
        "not valid JSON",
    );
    refused(
        post(
            "/api/jobs",
            Some(ADMIN),
            json!({"task": "no.such"}).to_string(),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown task `no.such`",
    );
    refused(
        post(
            "/api/jobs",
            Some(ADMIN),
            json!({"task": "hello.greet", "colour": 1}).to_string(),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unknown key `colour`",
    );
    refused(
        post("/api/jobs", Some(ADMIN), json!([1]).to_string()).await,
        StatusCode::BAD_REQUEST,
        "a job is a JSON object",
    );
    let huge = json!({"task": "hello.echo", "args": {"blob": "x".repeat(100 * 1024)}}).to_string();
    refused(
        post("/api/jobs", Some(ADMIN), huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than this server accepts",
    );
    refused(
        get("/api/jobs?state=sleeping", Some(READ)).await,
        StatusCode::BAD_REQUEST,
        "unknown state `sleeping`",
    );
    refused(
        get("/api/jobs?colour=red", Some(READ)).await,
        StatusCode::BAD_REQUEST,
        "colour",
    );
    refused(
        get("/api/jobs/no-such-id", Some(READ)).await,
        StatusCode::NOT_FOUND,
        "no job",
    );
    refused(
        get("/api/nothing/here", Some(READ)).await,
        StatusCode::NOT_FOUND,
        "no such endpoint",
    );

    // A batch is all or nothing.
    let before = get("/api/jobs?limit=1000", Some(READ))
        .await
        .1
        .as_array()
        .unwrap()
        .len();
    let mixed = json!([
        {"task": "hello.greet", "args": {"name": "Grace"}},
        {"task": "no.such"},
    ]);
    refused(
        post("/api/jobs/batch", Some(ADMIN), mixed.to_string()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "job 1: unknown task",
    );
    let after = get("/api/jobs?limit=1000", Some(READ))
        .await
        .1
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "nothing of a refused batch is enqueued");
    let good = json!([
        {"task": "hello.greet", "args": {"name": "Grace"}},
        {"task": "hello.flaky", "args": {"fail_times": 9}, "max_retries": 0},
        {"task": "hello.sleep", "args": {"ms": 1}, "delay": "1h"},
    ]);
    let (status, batch) = post("/api/jobs/batch", Some(ADMIN), good.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let ids: Vec<String> = batch["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let (flaky, delayed) = (ids[1].clone(), ids[2].clone());
    let listed = get("/api/jobs?task=hello.greet", Some(READ)).await.1;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let queues = get("/api/queues", Some(READ)).await.1;
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["queue"] == "default" && q["delayed"] == 1 && q["paused"] == false),
        "{queues}"
    );

    // Cancel a waiting job; an unknown one is a 404.
    let (status, cancelled) = post(
        &format!("/api/jobs/{delayed}/cancel"),
        Some(ADMIN),
        String::new(),
    )
    .await;
    assert_eq!(
        (status, &cancelled["result"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    refused(
        post("/api/jobs/no-such-id/cancel", Some(ADMIN), String::new()).await,
        StatusCode::NOT_FOUND,
        "no job",
    );

    // A worker runs them: the greetings succeed, the flaky job dies.
    let mut worker = WorkerGuard(cluster.worker("api-worker", &["--grace", "1s"]));
    until(
        "the greetings succeed and the flaky job is dead",
        async || {
            let done = get("/api/jobs?state=succeeded", Some(READ)).await.1;
            let dead = get("/api/dlq", Some(READ)).await.1;
            done.as_array().unwrap().len() == 2 && dead.as_array().unwrap().len() == 1
        },
    )
    .await;
    let (_, dead) = get("/api/dlq", Some(READ)).await;
    assert_eq!(dead[0]["envelope"]["id"], json!(flaky), "{dead}");
    until("the worker is listed", async || {
        let workers = get("/api/workers", Some(READ)).await.1;
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "api-worker" && w["shown_state"] == "running")
    })
    .await;

    // Prometheus' view of the store: needs a token, counts what is there.
    let metrics_url = format!("{}/metrics", server.base);
    let scrape = |token: Option<&'static str>| {
        let mut req = http.get(metrics_url.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        scrape(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = scrape(Some(READ)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    for line in [
        "# TYPE xylem_queue_jobs gauge",
        r#"xylem_queue_jobs{queue="default",state="dead"} 1"#,
        r#"xylem_queue_paused{queue="default"} 0"#,
        r#"xylem_workers{state="running"} 1"#,
        "# TYPE xylem_worker_jobs_total counter",
        r#"xylem_worker_jobs_total{worker="api-worker","#,
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    // The DLQ: replay by id (the job runs again, and dies again), purge.
    refused(
        post("/api/dlq/replay", Some(ADMIN), "{}".to_owned()).await,
        StatusCode::BAD_REQUEST,
        "name the jobs",
    );
    let (status, replayed) = post(
        "/api/dlq/replay",
        Some(ADMIN),
        json!({"ids": [flaky]}).to_string(),
    )
    .await;
    assert_eq!(
        (status, &replayed["replayed"]),
        (StatusCode::OK, &json!([flaky]))
    );
    until("the replayed job runs and dies again", async || {
        let record = get(&format!("/api/jobs/{flaky}"), Some(READ)).await.1;
        record["state"] == "dead"
            && record["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["state"] == "running")
                .count()
                == 2
    })
    .await;
    refused(
        call(&http, Method::DELETE, at("/api/dlq"), Some(READ), None).await,
        StatusCode::FORBIDDEN,
        "read-only",
    );
    let (status, purged) = call(&http, Method::DELETE, at("/api/dlq"), Some(ADMIN), None).await;
    assert_eq!((status, &purged["purged"]), (StatusCode::OK, &json!(1)));
    assert_eq!(get("/api/dlq", Some(READ)).await.1, json!([]));

    // The other views.
    let (status, health) = get("/api/health", Some(READ)).await;
    assert_eq!((status, &health["ok"]), (StatusCode::OK, &json!(true)));
    let tasks = get("/api/tasks", Some(READ)).await.1;
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task"] == "hello.greet"),
        "{tasks}"
    );
    assert_eq!(
        get("/api/schedules", Some(READ)).await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        get("/api/workflows", Some(READ)).await,
        (StatusCode::OK, json!([]))
    );
    refused(
        get("/api/workflows?state=asleep", Some(READ)).await,
        StatusCode::BAD_REQUEST,
        "state",
    );
    refused(
        get("/api/workflows/nope", Some(READ)).await,
        StatusCode::NOT_FOUND,
        "no workflow run",
    );

    more_routes(&server, &http).await;
    events_tell_of_changes(&server, &http).await;
    every_documented_route_answers(&server, &http).await;
    terminate(&mut worker.0);
    // SIGTERM with an event stream open: the stream ends, the server exits.
    let open = http
        .get(format!("{}/api/events", server.base))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let mut server = server;
    terminate(&mut server.child);
    drop(open);
}

/// Long polls, canvases, plugins, schedules and workflows.
#[allow(clippy::too_many_lines)]
async fn more_routes(server: &Server, http: &reqwest::Client) {
    use reqwest::Method;
    let at = |path: &str| format!("{}{path}", server.base);
    let get = |path: &str| call(http, Method::GET, at(path), Some(READ), None);
    let post = |path: &str, body: Value| {
        call(
            http,
            Method::POST,
            at(path),
            Some(ADMIN),
            Some(body.to_string()),
        )
    };

    // A long poll: done when the job ends, or not yet when time is up.
    let (_, job) = post(
        "/api/jobs",
        json!({"task": "hello.sleep", "args": {"ms": 300}}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, waited) = get(&format!("/api/jobs/{id}/wait?timeout=20s")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&waited["done"], &waited["state"]),
        (&json!(true), &json!("succeeded")),
        "{waited}"
    );
    let (_, later) = post(
        "/api/jobs",
        json!({"task": "hello.sleep", "args": {"ms": 1}, "delay": "1h"}),
    )
    .await;
    let later = later["id"].as_str().unwrap().to_owned();
    let (_, not_yet) = get(&format!("/api/jobs/{later}/wait?timeout=200ms")).await;
    assert_eq!(
        (&not_yet["done"], &not_yet["state"]),
        (&json!(false), &json!("queued")),
        "{not_yet}"
    );
    refused(
        get(&format!("/api/jobs/{later}/wait?timeout=soon")).await,
        StatusCode::BAD_REQUEST,
        "timeout",
    );

    // Bulk actions on a selection: retry (dead jobs only), delete
    // (finished jobs only), cancel.
    let (_, dying) = post(
        "/api/jobs",
        json!({"task": "hello.flaky", "args": {"fail_times": 9}, "max_retries": 0}),
    )
    .await;
    let dying = dying["id"].as_str().unwrap().to_owned();
    let (_, dead) = get(&format!("/api/jobs/{dying}/wait?timeout=20s")).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    let (status, retried) = post(
        "/api/jobs/bulk",
        json!({"action": "retry", "ids": [dying, id]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["results"][&dying], "retried");
    assert!(
        retried["results"][&id]
            .as_str()
            .unwrap()
            .starts_with("not dead"),
        "{retried}"
    );
    until("the retried job dies again", async || {
        let r = get(&format!("/api/jobs/{dying}")).await.1;
        r["state"] == "dead"
            && r["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["state"] == "running")
                .count()
                == 2
    })
    .await;
    let (_, deleted) = post(
        "/api/jobs/bulk",
        json!({"action": "delete", "ids": [id, dying]}),
    )
    .await;
    assert_eq!(deleted["results"][&id], "deleted", "{deleted}");
    assert!(
        deleted["results"][&dying]
            .as_str()
            .unwrap()
            .contains("only finished jobs"),
        "{deleted}"
    );
    // Gone once its expiry (now) passes: a millisecond on some stores.
    until("the deleted record is gone", async || {
        get(&format!("/api/jobs/{id}")).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let (_, cancelled) = post(
        "/api/jobs/bulk",
        json!({"action": "cancel", "ids": [later, "no-such-job"]}),
    )
    .await;
    assert_eq!(cancelled["results"][&later], "cancelled", "{cancelled}");
    assert_eq!(cancelled["results"]["no-such-job"], "not found");
    refused(
        post("/api/jobs/bulk", json!({"action": "explode", "ids": []})).await,
        StatusCode::BAD_REQUEST,
        "unknown action",
    );

    // A chord enqueued from inside a task: its canvas.
    let (_, job) = post(
        "/api/jobs",
        json!({"task": "hello.greet-all", "args": {"names": ["Ada", "Grace"]}}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let (_, done) = get(&format!("/api/jobs/{id}/wait?timeout=30s")).await;
    // The record's result is the task's JSON result: here a string.
    let canvas_id = done["result"]
        .as_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    until("the chord completes", async || {
        get(&format!("/api/canvases/{canvas_id}")).await.1["state"] == "succeeded"
    })
    .await;
    let (_, canvas) = get(&format!("/api/canvases/{canvas_id}")).await;
    assert_eq!(canvas["tasks"].as_array().unwrap().len(), 3, "{canvas}");
    refused(
        get("/api/canvases/nope").await,
        StatusCode::NOT_FOUND,
        "no such canvas",
    );

    // Plugins: pushed over HTTP (a task plugin and a workflow plugin);
    // bytes that are not a component are refused with the reason.
    let push = |bytes: Vec<u8>, token: &'static str| {
        http.post(at("/api/plugins"))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes)
            .send()
    };
    let order = std::fs::read(xylem_tests::plugin("order")).unwrap();
    let resp = push(order.clone(), READ).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = push(order, ADMIN).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let pushed: Value = resp.json().await.unwrap();
    assert!(
        pushed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "order.charge"),
        "{pushed}"
    );
    let resp = push(
        std::fs::read(xylem_tests::plugin("order-workflow")).unwrap(),
        ADMIN,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let pushed: Value = resp.json().await.unwrap();
    assert!(
        pushed["workflows"]
            .as_array()
            .unwrap()
            .contains(&json!("order.process")),
        "{pushed}"
    );
    let resp = push(b"\0asm not really".to_vec(), ADMIN).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("was not pushed"),
        "{body}"
    );
    let (_, plugins) = get("/api/plugins").await;
    assert_eq!(plugins.as_array().unwrap().len(), 3, "{plugins}");

    // Schedules: add (checked), show, next, disable, enable, remove.
    let nightly = json!({"name": "nightly", "task": "hello.greet", "args": {"name": "Ada"},
                         "cron": "30 2 * * *", "tz": "Europe/Paris"});
    let (status, added) = post("/api/schedules", nightly.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["enabled"], true);
    refused(
        post("/api/schedules", nightly).await,
        StatusCode::CONFLICT,
        "exists",
    );
    refused(
        post(
            "/api/schedules",
            json!({"name": "bad", "task": "hello.greet", "cron": "61 * * * *"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "minute",
    );
    refused(
        post(
            "/api/schedules",
            json!({"name": "typo", "task": "hello.gret", "every": "1h"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown task",
    );
    refused(
        post(
            "/api/schedules",
            json!({"name": "odd", "task": "hello.greet", "every": "1h", "colour": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unknown key `colour`",
    );
    let (_, next) = get("/api/schedules/nightly/next?count=3").await;
    let next = next.as_array().unwrap();
    assert_eq!(next.len(), 3);
    assert!(
        next[0]["local"].as_str().unwrap().contains("02:30:00"),
        "{next:?}"
    );
    let (_, off) = post("/api/schedules/nightly/disable", json!(null)).await;
    assert_eq!(off["enabled"], false, "{off}");
    let (_, on) = post("/api/schedules/nightly/enable", json!(null)).await;
    assert_eq!(on["enabled"], true, "{on}");
    assert_eq!(get("/api/schedules/nightly").await.1["task"], "hello.greet");
    assert_eq!(get("/api/schedules").await.1.as_array().unwrap().len(), 1);
    let (status, _) = call(
        http,
        Method::DELETE,
        at("/api/schedules/nightly"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    refused(
        get("/api/schedules/nightly").await,
        StatusCode::NOT_FOUND,
        "no schedule",
    );
    refused(
        post("/api/schedules/nightly/enable", json!(null)).await,
        StatusCode::NOT_FOUND,
        "no schedule",
    );

    // Workflows: start, show, list, signal, cancel (the worker steps it).
    refused(
        post(
            "/api/workflows",
            json!({"workflow": "no.such", "input": {}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown workflow",
    );
    let order = json!({"workflow": "order.process", "id": "api-order-1",
                       "input": {"id": "A-1", "amount_cents": 1250, "ship_after_ms": 3_600_000}});
    let (status, run) = post("/api/workflows", order.clone()).await;
    assert_eq!(
        (status, &run["id"]),
        (StatusCode::CREATED, &json!("api-order-1")),
        "{run}"
    );
    refused(
        post("/api/workflows", order).await,
        StatusCode::CONFLICT,
        "exists",
    );
    until("the order waits in its durable sleep", async || {
        // Waiting, with its timer an hour out: the sleep, not an activity.
        let run = get("/api/workflows/api-order-1").await.1;
        run["state"] == "waiting"
            && run["wake_at"]
                .as_i64()
                .is_some_and(|at| at > xylem_core::time::now_ms() + 600_000)
    })
    .await;
    let listed = get("/api/workflows?workflow=order.process&state=waiting")
        .await
        .1;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, sent) = post(
        "/api/workflows/api-order-1/signal",
        json!({"topic": "nudge", "payload": 1}),
    )
    .await;
    assert_eq!((status, &sent["sent"]), (StatusCode::OK, &json!("nudge")));
    refused(
        post("/api/workflows/api-order-1/signal", json!({"payload": 1})).await,
        StatusCode::BAD_REQUEST,
        "topic",
    );
    refused(
        post("/api/workflows/nope/signal", json!({"topic": "x"})).await,
        StatusCode::NOT_FOUND,
        "no workflow run",
    );
    let (status, _) = post(
        "/api/workflows/api-order-1/cancel",
        json!({"reason": "customer asked"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    until("the cancelled order ends", async || {
        let run = get("/api/workflows/api-order-1").await.1;
        run["state"] == "cancelled"
    })
    .await;
    refused(
        post("/api/workflows/api-order-1/cancel", json!({})).await,
        StatusCode::CONFLICT,
        "has ended",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_on_sqlite() {
    let env = xylem_tests::cli_env::Env::new();
    the_api_on(&env.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_on_redis() {
    let Some(url) = xylem_tests::service_url("XYLEM_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    else {
        return;
    };
    let url = format!("{url}?prefix={}", xylem_tests::unique_name("xylem-api"));
    the_api_on(&url).await;
    scenarios::remove_data(&url).await;
}

#[test]
fn serve_refuses_to_listen_beyond_this_machine_without_a_token() {
    let env = xylem_tests::cli_env::Env::new();
    let out = env
        .command()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("XYLEM_API_TOKEN")
        .env_remove("XYLEM_API_READ_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
    let out = env
        .command()
        .args(["serve"])
        .env("XYLEM_API_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

/// The OpenAPI document is public, and every route it names exists: each
/// answers (with a 2xx or its own 4xx), never the fallback's "no such
/// endpoint" nor 405.
async fn every_documented_route_answers(server: &Server, http: &reqwest::Client) {
    let (status, doc) = call(
        http,
        reqwest::Method::GET,
        format!("{}/api/openapi.json", server.base),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            operations += 1;
            let url = format!(
                "{}{}",
                server.base,
                path.replace("{id}", "nope")
                    .replace("{name}", "nope")
                    .replace("{queue}", "doc-check")
            );
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let resp = http
                .request(method.clone(), url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            // An event stream never ends: its first event is enough.
            let streams = resp
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            let text = if streams {
                let mut resp = resp;
                String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap_or_default())
                    .into_owned()
            } else {
                resp.text().await.unwrap()
            };
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no such endpoint"),
                "{method} {path} ({}): {status} {text}",
                op["summary"]
            );
        }
    }
    assert!(operations >= 30, "{operations} operations documented");
}

/// `GET /api/events`: a read token is enough; `hello` at once, then a
/// `change` when a job is enqueued elsewhere, and the stream ends when
/// the server stops (graceful shutdown does not wait on it forever).
async fn events_tell_of_changes(server: &Server, http: &reqwest::Client) {
    let (status, _) = call(
        http,
        reqwest::Method::GET,
        format!("{}/api/events", server.base),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut stream = http
        .get(format!("{}/api/events", server.base))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let read_until = async |seen: &mut String, stream: &mut reqwest::Response, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, stream.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {what:?} in the event stream: {seen:?}"))
                .unwrap()
                .expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until(&mut seen, &mut stream, "event: hello").await;
    let (status, _) = call(
        http,
        reqwest::Method::POST,
        format!("{}/api/jobs", server.base),
        Some(ADMIN),
        Some(
            json!({"task": "hello.greet", "args": {"name": "Events"}, "headers": ["tenant=events"]})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    read_until(&mut seen, &mut stream, "event: change").await;
    // Listed by its header (and only it).
    let list = |query: &'static str| {
        call(
            http,
            reqwest::Method::GET,
            format!("{}/api/jobs?{query}", server.base),
            Some(READ),
            None,
        )
    };
    let (status, found) = list("header=tenant%3Devents").await;
    assert_eq!(status, StatusCode::OK);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["headers"], json!([["tenant", "events"]]));
    let (status, _) = list("header=tenant").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(seen.contains("data: {\"generation\":"), "{seen}");
}
