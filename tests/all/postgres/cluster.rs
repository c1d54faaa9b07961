//! Workers on PostgreSQL, as separate processes: `kill -9` mid-job, four
//! workers sharing one database, and the server restarted under them (a
//! private cluster made with initdb, so the shared one is never touched).

use std::time::Duration;

use xylem_tests::{scenarios, servers::PostgresServer, service_url, unique_name};

fn shared_url() -> Option<String> {
    let url = service_url(
        "XYLEM_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}schema={}", unique_name("xylem_t")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_workers_mid_job_loses_nothing_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::kill_9_mid_job(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_workflow_survives_kill_9_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::order_workflow_survives_kill_9(&url).await;
    scenarios::remove_data(&url).await;
}

/// Event waits (signalled by another process, through `kill -9`) and
/// child runs across processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_child_runs_work_across_processes_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::approval_and_child_runs_across_processes(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beats_fire_each_tick_once_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::three_beats_fire_each_tick_once(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_hold_a_rate_limit_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::four_workers_hold_a_rate_limit(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canvases_survive_their_client_and_kill_9_on_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::canvases_survive_their_client_and_kill_9(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_postgres() {
    let Some(url) = shared_url() else { return };
    scenarios::four_workers_share_the_work(&url).await;
    scenarios::remove_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_postgres_restart() {
    if service_url(
        "XYLEM_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
    .is_none()
    {
        return;
    }
    let server = PostgresServer::start();
    let url = format!("{}?schema={}", server.url(), unique_name("xylem_t"));
    scenarios::server_restart(&url, || server.restart(Duration::from_secs(2))).await;
    drop(server);
}
