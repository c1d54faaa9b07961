//! Compiled code shared through the store, so a fleet of workers compiles
//! a big component once, not once per machine.
//!
//! Compiled code is native code the worker runs outside the sandbox, so it
//! is shared only under a key the operator gives every machine of the
//! cluster (`XYLEM_ARTIFACT_KEY`, at least 32 characters) and never keeps
//! in the store: whoever compiles a component uploads its machine code
//! with an HMAC-SHA256 over the component's sha256, the engine's
//! compatibility id and the code; a worker that finds it in the store
//! checks the HMAC in constant time and deserializes exactly the bytes it
//! verified. Someone who can write to the store but does not hold the key
//! can push plugins (which run sandboxed) but cannot make a worker run
//! native code of theirs: a forged or damaged artifact is refused, logged,
//! and the component compiled locally. Without a key nothing is shared and
//! each machine compiles once into its own cache (`cache.rs`).

use hmac::Mac;
use xylem_core::store::PluginStore;

use crate::cache::{HmacSha256, artifact_mac};

/// Bytes of an HMAC-SHA256 tag, which leads each stored artifact.
const TAG_LEN: usize = 32;
/// Fewest bytes of key accepted.
pub(crate) const MIN_KEY_LEN: usize = 32;
/// Separates this MAC's inputs from any other use of the key.
const DOMAIN: &[u8] = b"xylem shared compiled component v1\0";

/// The cluster's key for compiled code in the store. Never printed.
#[derive(Clone)]
pub(crate) struct SharedKey(Vec<u8>);

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "XYLEM_ARTIFACT_KEY must be at least {MIN_KEY_LEN} bytes (it has {0}): use a random secret, e.g. `openssl rand -hex 32`"
)]
pub struct WeakKey(usize);

impl SharedKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, WeakKey> {
        if key.len() < MIN_KEY_LEN {
            return Err(WeakKey(key.len()));
        }
        Ok(Self(key.to_vec()))
    }

    fn mac(&self, digest: &str, engine_id: &[u8; 32], code: &[u8]) -> HmacSha256 {
        artifact_mac(&self.0, DOMAIN, digest, engine_id, code)
    }

    /// What the store keeps: the tag, then the code.
    pub(crate) fn seal(&self, digest: &str, engine_id: &[u8; 32], code: &[u8]) -> Vec<u8> {
        let tag = self.mac(digest, engine_id, code).finalize().into_bytes();
        let mut sealed = Vec::with_capacity(TAG_LEN + code.len());
        sealed.extend_from_slice(&tag);
        sealed.extend_from_slice(code);
        sealed
    }

    /// The code inside `sealed` if its tag is this key's for `digest` and
    /// this engine; else why not.
    pub(crate) fn open(
        &self,
        digest: &str,
        engine_id: &[u8; 32],
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, &'static str> {
        if sealed.len() < TAG_LEN {
            return Err("it is too short to hold a signature");
        }
        let code = sealed.split_off(TAG_LEN);
        // `verify_slice` compares in constant time.
        self.mac(digest, engine_id, &code)
            .verify_slice(&sealed)
            .map_err(
                |_| "its signature does not match: it was modified, or signed with another key",
            )?;
        Ok(code)
    }
}

/// The store's name for an engine's compiled code.
pub(crate) fn engine_name(engine_id: &[u8; 32]) -> String {
    hex::encode(engine_id)
}

/// Where compiled code is shared: the store, and the key it is signed
/// with.
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub(crate) store: &'a dyn PluginStore,
    pub(crate) key: &'a SharedKey,
}

impl Shared<'_> {
    /// The verified code the store keeps for `digest` on this engine, if
    /// any. Anything unusable is logged and treated as absent.
    pub(crate) async fn fetch(&self, digest: &str, engine_id: &[u8; 32]) -> Option<Vec<u8>> {
        let sealed = match self.store.compiled(digest, &engine_name(engine_id)).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(digest, error = %e, "cannot read compiled code from the store: compiling here");
                return None;
            }
        };
        match self.key.open(digest, engine_id, sealed) {
            Ok(code) => Some(code),
            Err(reason) => {
                tracing::warn!(
                    digest,
                    reason,
                    "refusing compiled code from the store: compiling here"
                );
                None
            }
        }
    }

    /// Uploads this machine's code for `digest`, signed.
    pub(crate) async fn upload(&self, digest: &str, engine_id: &[u8; 32], code: &[u8]) {
        let sealed = self.key.seal(digest, engine_id, code);
        if let Err(e) = self
            .store
            .put_compiled(digest, &engine_name(engine_id), &sealed)
            .await
        {
            tracing::warn!(digest, error = %e, "cannot share compiled code through the store");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ENGINE: [u8; 32] = [3; 32];

    #[test]
    fn only_code_sealed_with_the_key_for_this_component_and_engine_opens() {
        let key = SharedKey::new(&[1; 32]).unwrap();
        let sealed = key.seal("d1", &ENGINE, b"machine code");
        assert_eq!(
            key.open("d1", &ENGINE, sealed.clone()).unwrap(),
            b"machine code"
        );
        // Another component, another engine, another key, a flipped bit.
        assert!(key.open("d2", &ENGINE, sealed.clone()).is_err());
        assert!(key.open("d1", &[4; 32], sealed.clone()).is_err());
        let other = SharedKey::new(&[2; 32]).unwrap();
        assert!(other.open("d1", &ENGINE, sealed.clone()).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.open("d1", &ENGINE, flipped).is_err());
        assert!(key.open("d1", &ENGINE, sealed[..10].to_vec()).is_err());
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(SharedKey::new(b"too short").is_err());
        assert!(SharedKey::new(&[0; MIN_KEY_LEN]).is_ok());
    }
}
