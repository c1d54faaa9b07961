//! How every store writes what it keeps as JSON (envelopes, records'
//! results, errors, logs, plugin specs), and the one error for what it
//! reads back that is not: the same on every adapter.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{StoreError, StoreResult};

/// What a store read back is not what it wrote: `StoreError::Corrupt`.
pub fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A value as the JSON text a store keeps.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A value back from the JSON text a store kept.
pub fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(corrupt)
}

/// A count or size as the signed 64-bit integer SQL stores keep; past
/// `i64::MAX` it saturates rather than wrapping negative.
pub fn sql_int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    #[test]
    fn what_is_written_reads_back_and_garbage_is_corrupt() {
        let e = Envelope::new("t", r#"{"a":1}"#);
        let back: Envelope = from_json(&to_json(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(matches!(
            from_json::<Envelope>("{not json"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn sql_integers_saturate() {
        assert_eq!(sql_int(5_u64), 5);
        assert_eq!(sql_int(u64::MAX), i64::MAX);
        assert_eq!(sql_int(usize::MAX), i64::MAX);
    }
}
