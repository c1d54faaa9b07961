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

/// A count read back from a SQL integer column: never negative (0 if the
/// column somehow is), never wrapped.
pub fn sql_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A small count (an attempt, a delivery number) read back from a SQL
/// integer column: clamped to `0..=u32::MAX`, never wrapped.
pub fn sql_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    #[test]
    fn sql_integers_saturate_both_ways() {
        assert_eq!(sql_int(u64::MAX), i64::MAX);
        assert_eq!(sql_int(7_u32), 7);
        assert_eq!(sql_u64(-1), 0);
        assert_eq!(sql_u64(i64::MAX), i64::MAX as u64);
        assert_eq!(sql_u32(-5), 0);
        assert_eq!(sql_u32(i64::from(u32::MAX) + 1), u32::MAX);
        assert_eq!(sql_u32(3), 3);
    }

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
