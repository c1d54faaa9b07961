//! Every route of the API, once: what builds the router and what the
//! OpenAPI document (`GET /api/openapi.json`) says, so the two cannot
//! drift. A `GET` needs a read token; anything else the admin token
//! (`auth.rs`).

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Map, Value, json};

use super::{Api, events, jobs, plugins, schedules, views, workflows};

/// One route.
pub(crate) struct Endpoint {
    /// `GET`, `POST` or `DELETE`.
    pub(crate) method: &'static str,
    /// The path, with `{name}` parameters.
    pub(crate) path: &'static str,
    /// What it does.
    pub(crate) summary: &'static str,
    /// Its query parameters.
    pub(crate) query: &'static [&'static str],
    /// What its body is, if it takes one.
    pub(crate) body: Option<&'static str>,
    /// Its status when it works.
    pub(crate) ok: u16,
    route: fn() -> MethodRouter<Api>,
}

const JOB: &str = "a job: `task`, `args` and the keys of `xylem enqueue`'s flags (queue, priority, delay, eta, expires, max_retries, backoff, timeout, fuel, memory, headers, link, …)";

/// Every route of the API.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    let e = |method, path, summary, query, body, ok, route| Endpoint {
        method,
        path,
        summary,
        query,
        body,
        ok,
        route,
    };
    vec![
        e(
            "GET",
            "/api/health",
            "The store's version and a round trip.",
            &[],
            None,
            200,
            || get(views::health),
        ),
        e(
            "GET",
            "/api/events",
            "Server-sent events (text/event-stream): `hello` on connect, then `change` whenever queues, workers, the newest jobs or workflow runs changed (looked at every 500 ms while anyone listens); data `{\"generation\": n}`.",
            &[],
            None,
            200,
            || get(events::events),
        ),
        e(
            "GET",
            "/api/queues",
            "Ready, delayed, running and dead jobs per queue, and whether it is paused.",
            &[],
            None,
            200,
            || get(views::queues),
        ),
        e(
            "POST",
            "/api/queues/{queue}/pause",
            "Workers stop taking jobs from the queue (within a second).",
            &[],
            None,
            200,
            || post(views::pause),
        ),
        e(
            "POST",
            "/api/queues/{queue}/resume",
            "Workers take jobs from the queue again.",
            &[],
            None,
            200,
            || post(views::resume),
        ),
        e(
            "GET",
            "/api/workers",
            "Every worker's record, with `stale` and `shown_state`.",
            &[],
            None,
            200,
            || get(views::workers),
        ),
        e(
            "GET",
            "/api/tasks",
            "The pushed plugins' tasks with their effective defaults.",
            &[],
            None,
            200,
            || get(views::tasks),
        ),
        e(
            "GET",
            "/api/jobs",
            "Job records, newest first.",
            &["state", "task", "limit"],
            None,
            200,
            || get(jobs::list),
        ),
        e(
            "POST",
            "/api/jobs",
            "Enqueue one job.",
            &[],
            Some(JOB),
            201,
            || post(jobs::enqueue),
        ),
        e(
            "POST",
            "/api/jobs/batch",
            "Enqueue an array of jobs, all or nothing.",
            &[],
            Some("an array of jobs (as `POST /api/jobs`)"),
            201,
            || post(jobs::enqueue_batch),
        ),
        e(
            "POST",
            "/api/jobs/bulk",
            "One action on a selection of jobs: cancel, retry (dead ones) or delete (finished ones).",
            &[],
            Some(r#"`{"action": "cancel" | "retry" | "delete", "ids": [...]}`"#),
            200,
            || post(jobs::bulk),
        ),
        e(
            "GET",
            "/api/jobs/{id}",
            "One job's record: state, history, result or error, usage, log, progress.",
            &[],
            None,
            200,
            || get(jobs::show),
        ),
        e(
            "GET",
            "/api/jobs/{id}/wait",
            "A long poll (at most 60 s): the record with `done`.",
            &["timeout"],
            None,
            200,
            || get(jobs::wait),
        ),
        e(
            "POST",
            "/api/jobs/{id}/cancel",
            "Cancel a job: a waiting one never runs, a running one is stopped.",
            &[],
            None,
            200,
            || post(jobs::cancel),
        ),
        e(
            "GET",
            "/api/canvases/{id}",
            "A chain, group or chord: its state, result and tasks.",
            &[],
            None,
            200,
            || get(jobs::canvas),
        ),
        e(
            "GET",
            "/api/dlq",
            "Dead jobs, newest first.",
            &["queue", "limit"],
            None,
            200,
            || get(views::dead),
        ),
        e(
            "DELETE",
            "/api/dlq",
            "Delete dead jobs (of one queue, or all).",
            &["queue"],
            None,
            200,
            || delete(views::purge_dead),
        ),
        e(
            "POST",
            "/api/dlq/replay",
            "Put dead jobs back in their queues.",
            &[],
            Some("`{\"ids\": [...]}`, `{\"queue\": Q}` or `{\"all\": true}`, and `delay_ms`"),
            200,
            || post(views::replay_dead),
        ),
        e(
            "GET",
            "/api/plugins",
            "Every pushed plugin version.",
            &[],
            None,
            200,
            || get(plugins::list),
        ),
        e(
            "POST",
            "/api/plugins",
            "Push a plugin: the `.wasm` component as the body (up to 64 MiB).",
            &[],
            Some("the component's bytes (application/wasm)"),
            201,
            || post(plugins::push).layer(DefaultBodyLimit::max(plugins::MAX_PLUGIN_BYTES)),
        ),
        e(
            "GET",
            "/api/schedules",
            "Every schedule.",
            &[],
            None,
            200,
            || get(schedules::list),
        ),
        e(
            "POST",
            "/api/schedules",
            "Add a schedule.",
            &[],
            Some(
                "an entry of a schedule file: `name`, `task`, `args`, one of `cron` (+ `tz`) / `every` / `at`, and the job options",
            ),
            201,
            || post(schedules::add),
        ),
        e(
            "GET",
            "/api/schedules/{name}",
            "One schedule.",
            &[],
            None,
            200,
            || get(schedules::show),
        ),
        e(
            "DELETE",
            "/api/schedules/{name}",
            "Remove a schedule.",
            &[],
            None,
            200,
            || delete(schedules::remove),
        ),
        e(
            "POST",
            "/api/schedules/{name}/enable",
            "Enable a schedule (due at its next tick from now).",
            &[],
            None,
            200,
            || post(schedules::enable),
        ),
        e(
            "POST",
            "/api/schedules/{name}/disable",
            "Disable a schedule.",
            &[],
            None,
            200,
            || post(schedules::disable),
        ),
        e(
            "GET",
            "/api/schedules/{name}/next",
            "The next fire times, in UTC and in the schedule's zone.",
            &["count"],
            None,
            200,
            || get(schedules::next),
        ),
        e(
            "GET",
            "/api/workflows",
            "Workflow runs, newest first.",
            &["workflow", "state", "limit"],
            None,
            200,
            || get(workflows::list),
        ),
        e(
            "POST",
            "/api/workflows",
            "Start a workflow run.",
            &[],
            Some("`{\"workflow\": NAME, \"input\": ..., \"id\"?: ID}`"),
            201,
            || post(workflows::start),
        ),
        e(
            "GET",
            "/api/workflows/{id}",
            "One run, with its history.",
            &[],
            None,
            200,
            || get(workflows::show),
        ),
        e(
            "POST",
            "/api/workflows/{id}/signal",
            "Send an event to a run.",
            &[],
            Some("`{\"topic\": T, \"payload\"?: ...}`"),
            200,
            || post(workflows::signal),
        ),
        e(
            "POST",
            "/api/workflows/{id}/cancel",
            "Ask a run to cancel (it may compensate).",
            &[],
            Some("`{\"reason\"?: TEXT}` (optional)"),
            200,
            || post(workflows::cancel),
        ),
    ]
}

/// The router of every endpoint (routes of one path merged).
pub(crate) fn router() -> axum::Router<Api> {
    let mut by_path: Vec<(&'static str, MethodRouter<Api>)> = Vec::new();
    for endpoint in endpoints() {
        let route = (endpoint.route)();
        match by_path.iter_mut().find(|(p, _)| *p == endpoint.path) {
            Some((_, merged)) => *merged = std::mem::take(merged).merge(route),
            None => by_path.push((endpoint.path, route)),
        }
    }
    by_path
        .into_iter()
        .fold(axum::Router::new(), |router, (path, route)| {
            router.route(path, route)
        })
}

/// The OpenAPI 3.1 document of [`endpoints`].
pub(crate) fn openapi() -> Value {
    let error = json!({
        "description": "refused: `{\"error\": \"what is wrong\"}` (400 malformed, 401 no valid token, 403 read-only token, 404 unknown, 409 conflict, 413 too large, 422 refused, 503 store down)",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
    let mut paths = Map::new();
    for e in endpoints() {
        let mut parameters: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(
            e.query
                .iter()
                .map(|name| json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" } })),
        );
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{} {}", e.method.to_lowercase(), e.path),
            "parameters": parameters,
            "responses": {
                e.ok.to_string(): { "description": "done", "content": { "application/json": { "schema": {} } } },
                "4XX": error.clone(),
                "503": error.clone(),
            },
            "x-xylem-token": if e.method == "GET" { "read" } else { "admin" },
        });
        if let Some(body) = e.body {
            let media = if e.path == "/api/plugins" {
                "application/wasm"
            } else {
                "application/json"
            };
            op["requestBody"] = json!({ "description": body, "required": true, "content": { media: { "schema": {} } } });
        }
        paths
            .entry(e.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|p| p.insert(e.method.to_lowercase(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Xylem",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Jobs, queues, workers, dead letters, schedules and workflows of one Xylem store (docs/api.md).",
        },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": { "Error": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] } },
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_listed_once_and_the_document_names_them_all() {
        let all = endpoints();
        for (i, a) in all.iter().enumerate() {
            assert!(
                all[i + 1..]
                    .iter()
                    .all(|b| (b.method, b.path) != (a.method, a.path)),
                "{} {} twice",
                a.method,
                a.path
            );
        }
        let doc = openapi();
        let count: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(count, all.len());
        assert_eq!(
            doc["paths"]["/api/jobs/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        assert_eq!(doc["paths"]["/api/jobs"]["post"]["x-xylem-token"], "admin");
    }
}
