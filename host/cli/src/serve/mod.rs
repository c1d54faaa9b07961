//! `xylem serve`: the HTTP JSON API over the store (axum), and the web
//! dashboard over it (`dashboard.html`, one page). `routes.rs` lists every
//! route once — the router and the OpenAPI document come from it. One module per
//! concern: `auth.rs` (bearer tokens, read-only vs admin), `error.rs` (every
//! failure as a JSON `{"error": …}` with its status), `jobs.rs` (enqueue,
//! list, show, wait, cancel; canvases), `schedules.rs`, `workflows.rs`,
//! `plugins.rs` (list, push), `views.rs` (health, queues, workers, tasks,
//! the dead-letter queue), `events.rs` (server-sent events: what changed).

mod auth;
mod error;
mod events;
mod jobs;
mod metrics;
mod plugins;
mod routes;
mod schedules;
mod views;
mod workflows;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use xylem_core::{Client, Stores};

pub(crate) use auth::Tokens;

/// `xylem serve`'s flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest request body accepted, e.g. 1MiB (a larger one gets 413).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    max_body: u64,
}

impl ServeArgs {
    /// Serving on `listen` with the default body limit (`xylem demo --serve`).
    pub(crate) fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_body: 1024 * 1024,
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size `{text}`: {e}"))
}

/// What every handler reaches.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) store: Arc<crate::store::OpenStore>,
    /// The Wasm runtime plugin pushes are checked with, made at the first.
    runtime: Arc<std::sync::OnceLock<xylem_wasm::Runtime>>,
    /// What `GET /api/events` streams.
    changes: events::Changes,
}

impl Api {
    pub(crate) fn stores(&self) -> &Stores {
        self.client.stores()
    }

    /// The Wasm runtime (made once).
    pub(crate) fn runtime(&self) -> anyhow::Result<&xylem_wasm::Runtime> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let made = crate::commands::wasm_runtime()?;
        Ok(self.runtime.get_or_init(|| made))
    }
}

/// The API's routes (under `/api`), with auth and the body limit.
pub(crate) fn router(api: Api, tokens: Tokens, max_body: usize) -> Router {
    routes::router()
        .route("/", get(dashboard))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            auth::check,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api)
}

/// The web dashboard: one page over the API (it holds no data; the API
/// asks for the token).
const DASHBOARD: &str = include_str!("dashboard.html");

/// `GET /api/openapi.json`: the API described (public, like the page).
async fn openapi() -> axum::Json<serde_json::Value> {
    axum::Json(routes::openapi())
}

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD)
}

/// `xylem serve`: serves until Ctrl-C / SIGTERM.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(
    store_url: &str,
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let tokens = Tokens::from_env()?;
    anyhow::ensure!(
        tokens.any() || args.listen.ip().is_loopback(),
        "refusing to serve {} without a token: set XYLEM_API_TOKEN (admin) and/or \
         XYLEM_API_READ_TOKEN (read-only), or listen on 127.0.0.1",
        args.listen
    );
    let store = crate::store::open(store_url).await?;
    let describe = store.describe.clone();
    // Ends the event streams too: graceful shutdown waits for every
    // connection, and a stream would otherwise never close.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let api = Api {
        client: Client::new(store.stores.clone()),
        changes: events::Changes::watch(store.stores.clone(), stopped.clone()),
        store: Arc::new(store),
        runtime: Arc::default(),
    };
    let max_body = usize::try_from(args.max_body).unwrap_or(usize::MAX);
    let app = router(api, tokens.clone(), max_body);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}/api (store: {describe}); the dashboard: http://{addr}/");
    if !tokens.any() {
        println!("no token set: anyone who can reach {addr} can read and change everything");
    }
    tracing::info!(%addr, store = %describe, "serving the HTTP API");
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut stopped = stopped;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .context("the HTTP server failed")?;
    Ok(ExitCode::SUCCESS)
}
