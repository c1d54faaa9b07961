//! Compiles components once and keeps the machine code on disk.
//!
//! Artifacts are keyed by the component's sha256 and a hash of everything
//! that makes compiled code compatible (wasmtime version, engine settings,
//! host CPU features), so a stale artifact is never loaded: a changed
//! engine simply misses the cache and recompiles.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::LoadError;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Whether a precompiled artifact was found on disk.
    pub hit: bool,
    /// Time spent compiling (zero on a hit).
    pub compile_time: Duration,
    /// Time spent loading the compiled artifact.
    pub load_time: Duration,
}

/// The sha256 of component bytes, as lowercase hex: a plugin version's id.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

impl ComponentCache {
    /// A cache in `dir`, or none (always compile) if `dir` is `None`.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.engine_tag)))
    }

    /// The compiled component for `bytes` (whose sha256 is `digest`).
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheStats), LoadError> {
        if let Some(path) = self.artifact_path(digest)
            && path.exists()
        {
            let started = Instant::now();
            match deserialize_file(engine, &path) {
                Ok(component) => {
                    return Ok((
                        component,
                        CacheStats {
                            hit: true,
                            compile_time: Duration::ZERO,
                            load_time: started.elapsed(),
                        },
                    ));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cached component");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }

        let started = Instant::now();
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        if let Some(path) = self.artifact_path(digest)
            && let Err(e) = write_atomically(&path, &compiled)
        {
            // The cache is an optimisation: a read-only disk costs a
            // recompile next time, nothing more.
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
        }
        let started = Instant::now();
        let component = deserialize(engine, &compiled)?;
        Ok((
            component,
            CacheStats {
                hit: false,
                compile_time,
                load_time: started.elapsed(),
            },
        ))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[allow(unsafe_code)]
fn deserialize_file(engine: &Engine, path: &Path) -> Result<Component, LoadError> {
    // SAFETY: the file was written by `ComponentCache::load` from
    // `Engine::precompile_component`, under a name that includes the
    // engine's compatibility hash; wasmtime checks the header again.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, compiled: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: `compiled` was produced just now by this engine's
    // `precompile_component`.
    unsafe { Component::deserialize(engine, compiled) }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))
}
