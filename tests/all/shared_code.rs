//! Compiled code shared through the store (`xylem_wasm` `shared.rs`): a
//! component compiled by the machine that pushed it is loaded by another
//! worker without compiling — only under the cluster's key, and never
//! when what the store holds was not signed with it.

use std::path::Path;

use xylem_core::store::PluginStore;
use xylem_sqlite::SqliteStore;
use xylem_wasm::{Runtime, RuntimeConfig, push_plugin};

const KEY: &str = "0123456789abcdef0123456789abcdef-test-key";

/// A runtime of its own (another machine, as far as the cache goes).
fn machine(cache: &Path, key: Option<&str>) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 4,
        cache_dir: Some(cache.to_owned()),
        shared_key: key.map(|k| k.as_bytes().to_vec()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_component_compiled_at_push_is_loaded_by_another_worker_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("x.db")).unwrap();
    let bytes = std::fs::read(xylem_tests::plugin("hello")).unwrap();

    let pusher = machine(&dir.path().join("pusher"), Some(KEY));
    let pushed = push_plugin(&pusher, &store, &bytes).await.unwrap();
    assert!(!pushed.load_stats().hit, "the pusher compiles it");

    // Another machine with the key: the store's code, verified.
    let worker = machine(&dir.path().join("worker"), Some(KEY));
    let loaded = worker.load_stored(&bytes, &store).await.unwrap();
    assert!(loaded.load_stats().shared, "{:?}", loaded.load_stats());
    assert_eq!(loaded.load_stats().compile_time, std::time::Duration::ZERO);
    // ... kept in its own cache: the next load is local.
    let again = machine(&dir.path().join("worker"), Some(KEY))
        .load_stored(&bytes, &store)
        .await
        .unwrap();
    assert!(again.load_stats().hit && !again.load_stats().shared);

    // A machine without the key neither trusts nor needs the store's code.
    let keyless = machine(&dir.path().join("keyless"), None)
        .load_stored(&bytes, &store)
        .await
        .unwrap();
    assert!(!keyless.load_stats().hit);
}

#[tokio::test]
async fn code_in_the_store_not_signed_with_the_key_is_refused_and_compiled_here() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("x.db")).unwrap();
    let bytes = std::fs::read(xylem_tests::plugin("hello")).unwrap();

    // Someone who can write to the store but holds another key.
    let intruder = machine(&dir.path().join("intruder"), Some(&KEY.replace('0', "9")));
    push_plugin(&intruder, &store, &bytes).await.unwrap();

    let worker = machine(&dir.path().join("worker"), Some(KEY));
    let loaded = worker.load_stored(&bytes, &store).await.unwrap();
    assert!(!loaded.load_stats().hit, "{:?}", loaded.load_stats());
    // ... and it runs, from its own compile.
    let outcome = loaded
        .run(
            xylem_core::RunRequest {
                info: xylem_core::TaskInfo::new("j1", "hello.greet"),
                args: r#"{"name":"Ada"}"#.to_owned(),
                limits: xylem_core::Limits::default(),
                cancel: xylem_core::CancelToken::new(),
            },
            std::sync::Arc::new(xylem_core::NoHostCalls),
        )
        .await;
    assert!(outcome.is_success(), "{outcome:?}");

    // Its upload replaced the intruder's: the next machine loads it.
    let next = machine(&dir.path().join("next"), Some(KEY))
        .load_stored(&bytes, &store)
        .await
        .unwrap();
    assert!(next.load_stats().shared);

    // Garbage under the right names is refused too.
    let digest = next.digest().to_owned();
    let engine = worker.engine_name();
    for junk in [&b""[..], &b"short"[..], &[0_u8; 4096][..]] {
        store.put_compiled(&digest, &engine, junk).await.unwrap();
        let loaded = machine(&dir.path().join(format!("junk-{}", junk.len())), Some(KEY))
            .load_stored(&bytes, &store)
            .await
            .unwrap();
        assert!(!loaded.load_stats().hit, "{:?}", loaded.load_stats());
    }
}
