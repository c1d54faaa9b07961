//! Compiles components once and keeps the machine code on disk.
//!
//! Artifacts are keyed by the component's sha256 and a hash of everything
//! that makes compiled code compatible (wasmtime version, engine settings,
//! host CPU features), so a stale artifact is never loaded: a changed
//! engine simply misses the cache and recompiles.
//!
//! A cached artifact is native code that the process runs, so the cache
//! is guarded:
//!
//! - it lives in a private directory: created with mode 0700; an existing
//!   one must be owned by this process's user (else the cache is not used)
//!   and is made 0700 — and emptied, with a new key — if it was writable by
//!   other users;
//! - each `<name>.cwasm` has a `<name>.mac` beside it: HMAC-SHA256, keyed by
//!   a per-cache secret (`cache.key`, 0600, created on first use), over the
//!   component's sha256, the engine's compatibility hash and the artifact's
//!   bytes. An artifact is read into memory, its MAC checked in constant
//!   time, and only those verified bytes are deserialized. A missing or
//!   wrong MAC is logged, the files deleted and the component recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::LoadError;

/// The secret key file inside the cache directory.
const KEY_FILE: &str = "cache.key";
/// Bytes of the secret key.
const KEY_LEN: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;
/// Separates this MAC's inputs from any other use of the key.
const MAC_DOMAIN: &[u8] = b"xylem compiled-component cache v1\0";

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Whether precompiled machine code was found, on disk or in the store.
    pub hit: bool,
    /// Whether it came from the store (compiled by another machine; see
    /// `docs/sandbox.md`, "Compiled code shared through the store").
    pub shared: bool,
    /// Time spent compiling (zero on a hit).
    pub compile_time: Duration,
    /// Time spent loading the compiled artifact.
    pub load_time: Duration,
}

/// The sha256 of component bytes, as lowercase hex: a plugin version's id.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheDirError {
    /// Creating, reading or fixing the directory failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The path exists but is not a directory.
    #[error("it is not a directory")]
    NotADirectory,
    /// Someone else owns the directory: they could plant native code.
    #[error("it is owned by uid {owner}, not by this process's user (uid {us})")]
    NotOwned {
        /// The directory's owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// The secret key could not be read or created.
    #[error("cannot read or create the cache key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Ownership and modes cannot be checked here.
    #[cfg(not(unix))]
    #[error("file ownership and permissions cannot be checked on this platform")]
    Unsupported,
}

/// The per-cache secret. Never printed.
struct CacheKey([u8; KEY_LEN]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// A checked private directory and its key.
#[derive(Debug)]
struct CacheDir {
    dir: PathBuf,
    key: CacheKey,
}

/// What looking up an artifact found.
#[derive(Debug)]
enum Fetch {
    /// No artifact for this component and engine.
    Missing,
    /// An artifact whose MAC checks out: exactly these bytes were verified.
    Verified(Vec<u8>),
    /// An artifact that must not be loaded, and why.
    Refused(String),
}

#[derive(Debug)]
pub(crate) struct ComponentCache {
    dir: Option<CacheDir>,
    /// sha256 over the engine's compatibility hash: part of every MAC.
    engine_id: [u8; 32],
    /// The first 8 bytes of `engine_id` in hex: part of every file name.
    engine_tag: String,
}

impl ComponentCache {
    /// A cache in `dir`, or none (always compile) if `dir` is `None` or
    /// cannot be made private (logged).
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_id: [u8; 32] = hasher.0.finalize().into();
        let dir = dir.and_then(|dir| match CacheDir::open(&dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(
                    dir = %dir.display(),
                    reason = %e,
                    "not using the compiled-component cache directory: components are compiled on every load"
                );
                None
            }
        });
        Self {
            dir,
            engine_tag: hex::encode(&engine_id[..8]),
            engine_id,
        }
    }

    fn base_name(&self, digest: &str) -> String {
        format!("{digest}-{}", self.engine_tag)
    }

    /// The engine's compatibility id: compiled code is only ever loaded by
    /// an engine with the same id.
    pub(crate) fn engine_id(&self) -> &[u8; 32] {
        &self.engine_id
    }

    /// The compiled component for `digest` from the local cache, if there
    /// is a verified one. A refused artifact is deleted (logged).
    pub(crate) fn lookup(&self, engine: &Engine, digest: &str) -> Option<(Component, CacheStats)> {
        let cache = self.dir.as_ref()?;
        let name = self.base_name(digest);
        let started = Instant::now();
        let reason = match cache.fetch(&name, digest, &self.engine_id) {
            Fetch::Missing => return None,
            Fetch::Refused(reason) => reason,
            Fetch::Verified(artifact) => match deserialize(engine, &artifact) {
                Ok(component) => {
                    return Some((
                        component,
                        CacheStats {
                            hit: true,
                            shared: false,
                            compile_time: Duration::ZERO,
                            load_time: started.elapsed(),
                        },
                    ));
                }
                Err(e) => format!("wasmtime refused it: {e}"),
            },
        };
        tracing::warn!(
            path = %cache.dir.join(format!("{name}.cwasm")).display(),
            %reason,
            "refusing a cached compiled component: deleted, compiling again"
        );
        cache.remove(&name);
        None
    }

    /// Compiles `bytes` (whose sha256 is `digest`), keeps the machine code
    /// in the local cache, and returns it with the component.
    pub(crate) fn compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheStats, Vec<u8>), LoadError> {
        let started = Instant::now();
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        self.keep(digest, &compiled);
        let started = Instant::now();
        let component = deserialize(engine, &compiled)?;
        let stats = CacheStats {
            hit: false,
            shared: false,
            compile_time,
            load_time: started.elapsed(),
        };
        Ok((component, stats, compiled))
    }

    /// Keeps `compiled` — this engine's machine code for `digest`, made
    /// here or verified by its signature — in the local cache.
    pub(crate) fn keep(&self, digest: &str, compiled: &[u8]) {
        if let Some(cache) = &self.dir
            && let Err(e) = cache.store(&self.base_name(digest), digest, &self.engine_id, compiled)
        {
            // The cache is an optimisation: a read-only disk costs a
            // recompile next time, nothing more.
            tracing::warn!(dir = %cache.dir.display(), error = %e, "cannot cache compiled component");
        }
    }
}

impl CacheDir {
    /// Creates `dir` (mode 0700) or checks the existing one, and reads or
    /// creates its key.
    fn open(dir: &Path) -> Result<Self, CacheDirError> {
        let exposed = private_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if exposed {
            // Whatever is in there could have been written by another
            // user — including the key. Start over.
            purge(dir);
        }
        let key = match read_key(&key_path) {
            Ok(Some(key)) => key,
            Ok(None) => create_key(dir, &key_path)?,
            Err(reason) => {
                tracing::warn!(
                    path = %key_path.display(),
                    %reason,
                    "discarding the compiled-component cache key and the artifacts it signed"
                );
                purge(dir);
                create_key(dir, &key_path)?
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    fn mac(&self, digest: &str, engine_id: &[u8; 32], artifact: &[u8]) -> HmacSha256 {
        artifact_mac(&self.key.0, MAC_DOMAIN, digest, engine_id, artifact)
    }

    fn fetch(&self, name: &str, digest: &str, engine_id: &[u8; 32]) -> Fetch {
        let artifact_path = self.dir.join(format!("{name}.cwasm"));
        let artifact = match read_file(&artifact_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Fetch::Missing,
            Err(e) => return Fetch::Refused(format!("cannot read it: {e}")),
        };
        let tag = match read_file(&self.dir.join(format!("{name}.mac"))) {
            Ok(tag) => tag,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Fetch::Refused("it has no MAC file".to_owned());
            }
            Err(e) => return Fetch::Refused(format!("cannot read its MAC file: {e}")),
        };
        let tag = match std::str::from_utf8(&tag)
            .ok()
            .and_then(|text| hex::decode(text.trim()).ok())
        {
            Some(tag) if tag.len() == MAC_LEN => tag,
            _ => return Fetch::Refused("its MAC file is malformed".to_owned()),
        };
        // `verify_slice` compares in constant time.
        match self.mac(digest, engine_id, &artifact).verify_slice(&tag) {
            Ok(()) => Fetch::Verified(artifact),
            Err(_) => Fetch::Refused(
                "its MAC does not match: the artifact was modified, or written with another cache's key"
                    .to_owned(),
            ),
        }
    }

    fn store(
        &self,
        name: &str,
        digest: &str,
        engine_id: &[u8; 32],
        artifact: &[u8],
    ) -> io::Result<()> {
        let tag = self
            .mac(digest, engine_id, artifact)
            .finalize()
            .into_bytes();
        // The artifact first: a reader that sees the new artifact with an
        // old or missing MAC refuses it and recompiles, nothing worse.
        write_atomically(&self.dir, &format!("{name}.cwasm"), artifact)?;
        write_atomically(
            &self.dir,
            &format!("{name}.mac"),
            format!("{}\n", hex::encode(tag)).as_bytes(),
        )
    }

    fn remove(&self, name: &str) {
        for file in [format!("{name}.cwasm"), format!("{name}.mac")] {
            let path = self.dir.join(file);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a refused cache file");
            }
        }
    }
}

/// The HMAC-SHA256 that vouches for compiled code — in the local cache
/// (per-cache key) and in the store (`shared.rs`, the cluster's key): over
/// `domain` (which use of the key this is), the component's sha256, the
/// engine's compatibility id and the code, each delimited.
pub(crate) fn artifact_mac(
    key: &[u8],
    domain: &[u8],
    digest: &str,
    engine_id: &[u8; 32],
    code: &[u8],
) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(domain);
    mac.update(digest.as_bytes());
    mac.update(b"\0");
    mac.update(engine_id);
    mac.update(&(code.len() as u64).to_le_bytes());
    mac.update(code);
    mac
}

/// Feeds whatever is hashed into a sha256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let out = self.0.clone().finalize();
        u64::from_le_bytes(std::array::from_fn(|i| out[i]))
    }
}

/// Deletes every file the cache may have written (key, artifacts, MACs,
/// temporary files) in `dir`, nothing else.
fn purge(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == KEY_FILE
            || name.ends_with(".cwasm")
            || name.ends_with(".mac")
            || name.starts_with(".tmp-");
        if ours && let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete a cache file");
        }
    }
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so
/// a reader sees the old file or the whole new one.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(dir, name);
    let result = create_private(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A name no other writer (thread or process) uses at the same time.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}-{name}", std::process::id()))
}

/// Reads the key: `Ok(None)` if there is none, `Err` if the file is not a
/// private key of ours.
fn read_key(path: &Path) -> Result<Option<CacheKey>, String> {
    let mut file = match open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    check_key_file(&meta)?;
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(CacheKey(key)))
}

/// Creates a fresh random key as `path`, atomically: it is written in
/// full under a temporary name, then hard-linked into place, which fails
/// if another process created the key first — then that key is used.
fn create_key(dir: &Path, path: &Path) -> Result<CacheKey, CacheDirError> {
    let fail = |reason: String| CacheDirError::Key {
        path: path.to_owned(),
        reason,
    };
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| fail(format!("no randomness: {e}")))?;
    let tmp = temp_path(dir, KEY_FILE);
    let written = create_private(&tmp).and_then(|mut file| {
        file.write_all(&key)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new compiled-component cache key");
            Ok(CacheKey(key))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_key(path) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(fail("it vanished while being created".to_owned())),
            Err(reason) => Err(fail(reason)),
        },
        Err(e) => Err(fail(e.to_string())),
    }
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_no_follow(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(unix)]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use super::{CacheDirError, KEY_LEN};

    /// This process's effective uid.
    #[allow(unsafe_code)]
    fn effective_uid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Makes sure `dir` is a directory only this user can write to:
    /// creates it with mode 0700, or checks the existing one. Returns
    /// whether it was writable by others (and has just been made 0700).
    pub(super) fn private_dir(dir: &Path) -> Result<bool, CacheDirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(CacheDirError::NotADirectory);
        }
        let us = effective_uid();
        if meta.uid() != us {
            return Err(CacheDirError::NotOwned {
                owner: meta.uid(),
                us,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 == 0 {
            return Ok(false);
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        tracing::warn!(
            dir = %dir.display(),
            mode = %format!("{mode:04o}"),
            "the compiled-component cache directory was writable by other users: \
             its mode is now 0700 and its contents (key, artifacts) are discarded"
        );
        Ok(true)
    }

    pub(super) fn check_key_file(meta: &fs::Metadata) -> Result<(), String> {
        if !meta.is_file() {
            return Err("it is not a regular file".to_owned());
        }
        let us = effective_uid();
        if meta.uid() != us {
            return Err(format!("it is owned by uid {}, not uid {us}", meta.uid()));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(format!("its mode is {mode:04o}, not 0600"));
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(format!("it has {} bytes, not {KEY_LEN}", meta.len()));
        }
        Ok(())
    }

    /// A new file, mode 0600; fails if `path` exists.
    pub(super) fn create_private(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    /// Opens for reading, refusing a symbolic link.
    pub(super) fn open_no_follow(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }
}

#[cfg(not(unix))]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::path::Path;

    use super::CacheDirError;

    pub(super) fn private_dir(_dir: &Path) -> Result<bool, CacheDirError> {
        Err(CacheDirError::Unsupported)
    }

    pub(super) fn check_key_file(_meta: &fs::Metadata) -> Result<(), String> {
        Err(CacheDirError::Unsupported.to_string())
    }

    pub(super) fn create_private(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    pub(super) fn open_no_follow(path: &Path) -> io::Result<File> {
        File::open(path)
    }
}

use os::{check_key_file, create_private, open_no_follow, private_dir};

#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, compiled: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: `compiled` was either produced just now by this engine's
    // `precompile_component`, or read into memory (from the private cache
    // directory, or from the store) and authenticated there by its HMAC
    // (keyed by the cache's secret, or by the cluster's shared key, bound
    // to the component's sha256 and this engine's compatibility hash) —
    // so it is bytes an engine like this one wrote and a holder of the key
    // vouched for. The very bytes verified are the ones deserialized;
    // wasmtime checks the header again.
    unsafe { Component::deserialize(engine, compiled) }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const ENGINE: [u8; 32] = [7; 32];
    const DIGEST: &str = "00ff";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_cache_dir_is_0700_and_its_key_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("components");
        let cache = CacheDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        cache.store("x", DIGEST, &ENGINE, b"artifact").unwrap();
        assert_eq!(mode(&dir.join("x.cwasm")), 0o600);
        // Reopening reads the same key.
        let again = CacheDir::open(&dir).unwrap();
        assert_eq!(again.key.0, cache.key.0);
    }

    #[test]
    fn only_verified_bytes_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(tmp.path()).unwrap();
        assert!(matches!(cache.fetch("x", DIGEST, &ENGINE), Fetch::Missing));
        cache.store("x", DIGEST, &ENGINE, b"artifact").unwrap();
        match cache.fetch("x", DIGEST, &ENGINE) {
            Fetch::Verified(bytes) => assert_eq!(bytes, b"artifact"),
            other => panic!("{other:?}"),
        }
        // Bound to the component and the engine.
        assert!(matches!(
            cache.fetch("x", "11ff", &ENGINE),
            Fetch::Refused(_)
        ));
        assert!(matches!(
            cache.fetch("x", DIGEST, &[8; 32]),
            Fetch::Refused(_)
        ));
        // A flipped byte.
        fs::write(tmp.path().join("x.cwasm"), b"artifacT").unwrap();
        assert!(matches!(
            cache.fetch("x", DIGEST, &ENGINE),
            Fetch::Refused(_)
        ));
        // No MAC.
        cache.store("x", DIGEST, &ENGINE, b"artifact").unwrap();
        fs::remove_file(tmp.path().join("x.mac")).unwrap();
        assert!(matches!(
            cache.fetch("x", DIGEST, &ENGINE),
            Fetch::Refused(_)
        ));
    }

    #[test]
    fn another_caches_artifact_and_mac_are_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let theirs = CacheDir::open(a.path()).unwrap();
        let ours = CacheDir::open(b.path()).unwrap();
        theirs.store("x", DIGEST, &ENGINE, b"evil").unwrap();
        for file in ["x.cwasm", "x.mac"] {
            fs::copy(a.path().join(file), b.path().join(file)).unwrap();
        }
        assert!(matches!(
            ours.fetch("x", DIGEST, &ENGINE),
            Fetch::Refused(_)
        ));
    }

    #[test]
    fn a_world_writable_dir_is_made_private_and_emptied() {
        let tmp = tempfile::tempdir().unwrap();
        let first = CacheDir::open(tmp.path()).unwrap();
        first.store("x", DIGEST, &ENGINE, b"artifact").unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let second = CacheDir::open(tmp.path()).unwrap();
        assert_eq!(mode(tmp.path()), 0o700);
        assert_ne!(first.key.0, second.key.0, "a new key");
        assert!(!tmp.path().join("x.cwasm").exists());
    }

    #[test]
    fn a_key_readable_by_others_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let first = CacheDir::open(tmp.path()).unwrap();
        let key = tmp.path().join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let second = CacheDir::open(tmp.path()).unwrap();
        assert_ne!(first.key.0, second.key.0);
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn a_file_is_not_a_cache_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(CacheDir::open(&file).is_err());
    }
}
