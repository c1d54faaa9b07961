//! The per-process runtime: engine, linker, component cache, epoch ticker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{Plugin as PluginWorld, PluginPre};
use crate::cache::{CacheStats, ComponentCache, digest};
use crate::plugin::Plugin;
use crate::shared::{Shared, SharedKey};
use crate::state::JobState;
use xylem_core::store::PluginStore;

/// Bytes of each linear memory kept resident between jobs (a small Rust
/// plugin touches about 1.1 MiB).
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;
/// Bytes of each table kept resident between jobs.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;
/// Slots decommitted together.
const DECOMMIT_BATCH: usize = 16;

/// Why a component could not become a [`Plugin`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// A valid component, but not of the `xylem:task/plugin` world (or of
    /// another version of it).
    #[error("the component is not a Xylem plugin (world {world}): {0}", world = crate::WIT_WORLD)]
    Incompatible(String),
    /// The plugin's `describe` failed or returned nonsense.
    #[error("the plugin's describe() failed: {0}")]
    Describe(String),
    /// The engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most jobs that may run at once in this process (pool slots).
    pub max_instances: u32,
    /// Upper bound of any one job's memory limit, in bytes.
    pub max_memory_per_instance: u64,
    /// Where compiled components are cached; `None` disables the cache.
    /// The directory must be private: it is created with mode 0700; an
    /// existing one not owned by this user is not used, one writable by
    /// others is made 0700 and emptied (see `docs/sandbox.md`).
    pub cache_dir: Option<PathBuf>,
    /// How often running jobs are checked against their deadlines.
    pub epoch_tick: Duration,
    /// The cluster's key for compiled code shared through the store (at
    /// least 32 bytes; `XYLEM_ARTIFACT_KEY` by default). `None`: nothing
    /// is shared, each machine compiles once into its own cache. See
    /// `shared.rs` and `docs/sandbox.md`.
    pub shared_key: Option<Vec<u8>>,
    /// Budget of one workflow step (replay included): fuel, time and
    /// memory (`workflow.rs`).
    pub workflow_step: WorkflowStepLimits,
    /// Workflow instances kept between steps, so that a run's next step
    /// goes on where its code stopped instead of replaying it (`kept.rs`).
    pub kept_workflows: crate::KeptLimits,
}

/// What one workflow step may use.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowStepLimits {
    /// Fuel (roughly, Wasm instructions).
    pub fuel: u64,
    /// Wall time.
    pub time: Duration,
    /// Linear memory, in bytes.
    pub memory: u64,
}

impl Default for WorkflowStepLimits {
    fn default() -> Self {
        Self {
            fuel: 20_000_000_000,
            time: Duration::from_secs(30),
            memory: 256 * 1024 * 1024,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_per_instance: 4 * 1024 * 1024 * 1024,
            cache_dir: Self::default_cache_dir(),
            epoch_tick: Duration::from_millis(1),
            shared_key: std::env::var("XYLEM_ARTIFACT_KEY")
                .ok()
                .filter(|key| !key.is_empty())
                .map(String::into_bytes),
            workflow_step: WorkflowStepLimits::default(),
            kept_workflows: crate::KeptLimits::default(),
        }
    }
}

impl RuntimeConfig {
    /// `$XYLEM_CACHE_DIR`, else `$XDG_CACHE_HOME/xylem/components`, else
    /// `$HOME/.cache/xylem/components`; `None` (no cache, logged once) if
    /// none of them is set — never a shared folder such as the temp dir,
    /// where another user could plant compiled code.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let dir = cache_dir_from(|name| std::env::var_os(name));
        if dir.is_none() {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::warn!(
                    "no private place for the compiled-component cache (XYLEM_CACHE_DIR, \
                     XDG_CACHE_HOME and HOME are unset or not absolute): components are \
                     compiled on every load"
                );
            });
        }
        dir
    }
}

/// The cache directory the environment `var` names, if any. Empty values
/// count as unset; `XDG_CACHE_HOME` and `HOME` must be absolute.
fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("XYLEM_CACHE_DIR") {
        return Some(dir);
    }
    let base = set("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| {
            set("HOME")
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })?;
    Some(base.join("xylem").join("components"))
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<JobState>,
    pub(crate) workflow_linker: Linker<crate::workflow::WorkflowState>,
    cache: ComponentCache,
    shared_key: Option<SharedKey>,
    pub(crate) workflow_step: WorkflowStepLimits,
    pub(crate) kept: Arc<crate::kept::KeptInstances>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Release);
    }
}

/// The WebAssembly runtime of one process. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let shared_key = config
            .shared_key
            .as_deref()
            .map(SharedKey::new)
            .transpose()
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut pool = PoolingAllocationConfig::default();
        let slots = config.max_instances.max(1);
        // Core instances per slot: a Rust plugin uses a few, an
        // interpreter in a component more (componentize-py: 14). A job that
        // finds the pool full waits for room (`instantiate_when_room`).
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(16))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(usize::try_from(config.max_memory_per_instance).unwrap_or(usize::MAX))
            // Every job gets a fresh instance in a reused slot. Resetting a
            // slot with `madvise` makes the next job page-fault its memory
            // back in (measured: most of the per-job cost). Zeroing the
            // first pages with memset instead keeps them resident, and
            // batching the rest of the decommits cuts TLB shootdowns.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .decommit_batch_size(DECOMMIT_BATCH)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        PluginWorld::add_to_linker::<_, HasSelf<JobState>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let workflow_linker = crate::workflow::linker(&engine)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(&engine, config.epoch_tick, stop_ticker.clone())?;

        Ok(Self {
            inner: Arc::new(RuntimeInner {
                cache: ComponentCache::new(&engine, config.cache_dir),
                shared_key,
                workflow_step: config.workflow_step,
                // At most half the pool; and the first to go when it is
                // full (a job or a step that finds no slot lets them go).
                kept: Arc::new(crate::kept::KeptInstances::new(crate::KeptLimits {
                    instances: config.kept_workflows.instances.min((slots / 2) as usize),
                    ..config.kept_workflows
                })),
                engine,
                linker,
                workflow_linker,
                stop_ticker,
            }),
        })
    }

    /// How often workflow steps went on in a kept instance, and how often
    /// they started (or replayed in) a new one.
    pub fn kept_workflow_stats(&self) -> crate::KeptStats {
        self.inner.kept.stats()
    }

    /// Loads a plugin from a `.wasm` file.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
        self.load(&bytes).await
    }

    /// Loads a plugin from component bytes: compiles (or finds in the
    /// cache), checks it against the `plugin` world, prepares it for
    /// instantiation and asks it to describe its tasks.
    pub async fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        self.load_with(bytes, None).await
    }

    /// [`load`](Self::load) a component stored in `store`: its compiled
    /// form comes from the local cache, else — with a shared key — from
    /// the store (signed by the machine that compiled it), else it is
    /// compiled here and, with a shared key, put in the store for the
    /// other workers.
    pub async fn load_stored(
        &self,
        bytes: &[u8],
        store: &dyn PluginStore,
    ) -> Result<Plugin, LoadError> {
        let shared = self
            .inner
            .shared_key
            .as_ref()
            .map(|key| Shared { store, key });
        self.load_with(bytes, shared).await
    }

    /// The name compiled code of this engine is kept under in a store
    /// ([`PluginStore::put_compiled`]): the hex of its compatibility id
    /// (wasmtime version, settings, CPU features).
    pub fn engine_name(&self) -> String {
        crate::shared::engine_name(self.inner.cache.engine_id())
    }

    /// Puts `plugin`'s compiled form in `store` for the other workers, when
    /// this runtime has a shared key (else does nothing). `plugin` must be
    /// stored already: [`crate::push_plugin`] calls this after storing it,
    /// so the pushing machine compiles for the fleet.
    pub async fn share_compiled(&self, plugin: &Plugin, store: &dyn PluginStore) {
        let Some(key) = &self.inner.shared_key else {
            return;
        };
        let component = plugin.inner.pre.instance_pre().component().clone();
        let code = match blocking(move || {
            component
                .serialize()
                .map_err(|e| LoadError::Engine(format!("{e:#}")))
        })
        .await
        {
            Ok(code) => code,
            Err(e) => {
                tracing::warn!(digest = plugin.digest(), error = %e, "cannot serialize compiled code to share it");
                return;
            }
        };
        Shared { store, key }
            .upload(plugin.digest(), self.inner.cache.engine_id(), &code)
            .await;
    }

    async fn load_with(
        &self,
        bytes: &[u8],
        shared: Option<Shared<'_>>,
    ) -> Result<Plugin, LoadError> {
        if is_core_module(bytes) {
            return Err(LoadError::Invalid(
                "this is a core WebAssembly module, not a component; build for \
                 wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                    .to_owned(),
            ));
        }
        check_imports(bytes)?;
        let digest = digest(bytes);
        let (component, stats) = self.compiled(bytes, &digest, shared).await?;

        check_wit_version(&self.inner.engine, &component)?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        Plugin::new(self.clone(), digest, bytes.len(), pre, stats).await
    }
}

impl Runtime {
    /// The compiled component: from the local cache, the store, or the
    /// compiler, in that order.
    pub(crate) async fn compiled(
        &self,
        bytes: &[u8],
        digest: &str,
        shared: Option<Shared<'_>>,
    ) -> Result<(Component, CacheStats), LoadError> {
        // Deserializing and compiling are CPU-heavy: keep them off the
        // async workers.
        let inner = self.inner.clone();
        let owned = digest.to_owned();
        if let Some(found) = blocking(move || Ok(inner.cache.lookup(&inner.engine, &owned))).await?
        {
            return Ok(found);
        }
        let engine_id = *self.inner.cache.engine_id();
        let started = std::time::Instant::now();
        if let Some(shared) = shared
            && let Some(code) = shared.fetch(digest, &engine_id).await
        {
            let inner = self.inner.clone();
            let owned = digest.to_owned();
            let found = blocking(move || {
                let component = crate::cache::deserialize(&inner.engine, &code)?;
                // Fetched, verified and deserialized: the load's time. The
                // local copy for next time is not part of it.
                let load_time = started.elapsed();
                inner.cache.keep(&owned, &code);
                Ok((component, load_time))
            })
            .await;
            match found {
                Ok((component, load_time)) => {
                    tracing::info!(
                        digest,
                        "loaded compiled code another worker shared through the store"
                    );
                    let stats = CacheStats {
                        hit: true,
                        shared: true,
                        compile_time: Duration::ZERO,
                        load_time,
                    };
                    return Ok((component, stats));
                }
                Err(e) => {
                    tracing::warn!(digest, error = %e, "refusing compiled code from the store: compiling here")
                }
            }
        }
        let inner = self.inner.clone();
        let (owned_bytes, owned) = (bytes.to_vec(), digest.to_owned());
        let (component, stats, code) =
            blocking(move || inner.cache.compile(&inner.engine, &owned_bytes, &owned)).await?;
        if let Some(shared) = shared {
            shared.upload(digest, &engine_id, &code).await;
        }
        Ok((component, stats))
    }
}

/// Runs CPU-heavy `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LoadError::Engine(format!("compile task failed: {e}")))?
}

/// Refuses a plugin built against another version of the `xylem:task`
/// package with a message that says so, instead of the linker's "import
/// not found".
fn check_wit_version(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .chain(ty.exports(engine).map(|(name, _)| name.to_owned()));
    let ours = format!("@{}", crate::WIT_PACKAGE.trim_start_matches("xylem:task@"));
    for name in names {
        if let Some(rest) = name.strip_prefix("xylem:task/")
            && !rest.ends_with(&ours)
        {
            let theirs = rest.split_once('@').map_or("(no version)", |(_, v)| v);
            return Err(LoadError::Incompatible(format!(
                "it was built against xylem:task@{theirs} (it uses `{name}`), and this host \
                 speaks {}: rebuild it with the matching xylem-guest (`xylem plugin build DIR`)",
                crate::WIT_PACKAGE
            )));
        }
    }
    Ok(())
}

/// The interfaces a plugin may import: Xylem's own and the WASI ones the
/// host links (each sandboxed: no host file, no socket, no environment).
const PROVIDED: [&str; 8] = [
    "xylem:task/",
    "xylem:workflow/",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Refuses, before it is compiled (which takes seconds for an interpreter
/// in a component), a component that imports an interface the host does
/// not provide — `wasi:http`, typically, from a default JavaScript build.
fn check_imports(bytes: &[u8]) -> Result<(), LoadError> {
    let mut depth = 0_usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        // A malformed component is the compiler's to explain.
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let Ok(import) = import else { return Ok(()) };
                    let name = import.name.name;
                    if !PROVIDED.iter().any(|ns| name.starts_with(ns)) {
                        let hint = if name.starts_with("wasi:http/") {
                            " (a JavaScript plugin: build it with `xylem plugin build`, which \
                             passes componentize-js `-d http fetch-event`)"
                        } else {
                            ""
                        };
                        return Err(LoadError::Incompatible(format!(
                            "it imports `{name}`, which this host does not provide{hint}; \
                             a plugin may import xylem:task and WASI's io, cli, clocks, \
                             filesystem, random and sockets"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A core module starts with version 1 in its header; a component with a
/// different layer/version word.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn spawn_epoch_ticker(
    engine: &Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), LoadError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("xylem-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::PathBuf;

    use super::cache_dir_from;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_cache_dir_comes_from_the_environment_or_nowhere() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            cache_dir_from(env(&[("XYLEM_CACHE_DIR", "/c"), ("HOME", "/h")])),
            p("/c")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            p("/x/xylem/components")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            p("/h/.cache/xylem/components")
        );
        // No HOME: no cache rather than the shared temp dir.
        assert_eq!(cache_dir_from(env(&[])), None);
        assert_eq!(cache_dir_from(env(&[("HOME", "")])), None);
        assert_eq!(cache_dir_from(env(&[("XYLEM_CACHE_DIR", "")])), None);
    }
}
