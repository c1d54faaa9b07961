//! The store contract on the Redis adapter, each test under its own key
//! prefix on the server at `XYLEM_TEST_REDIS_URL` (default: the local one).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use xylem_redis::RedisStore;

async fn fresh() -> Option<Arc<RedisStore>> {
    let url = xylem_tests::service_url("XYLEM_TEST_REDIS_URL", "redis://127.0.0.1:6379")?;
    let prefix = xylem_tests::unique_name("xylem-t");
    let store = RedisStore::connect(&format!("{url}?prefix={prefix}"))
        .await
        .unwrap();
    Some(Arc::new(store))
}

xylem_tests::store_contract!(fresh);
xylem_tests::coordination_contract!(fresh);
xylem_tests::worker_suite!(fresh);
