//! Timestamps as milliseconds since the Unix epoch: what every store keeps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 text with milliseconds, UTC: `2026-11-22T14:05:09.123Z`.
pub fn format_ms(at: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses RFC 3339 text (`2026-11-22T14:05:09Z`) to [`Millis`].
pub fn parse_rfc3339(text: &str) -> Result<Millis, String> {
    let t = humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("invalid time `{text}`: {e} (try 2026-11-22T14:05:00Z)"))?;
    Ok(t.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let at = parse_rfc3339("2026-11-22T14:05:09.123Z").unwrap();
        assert_eq!(format_ms(at), "2026-11-22T14:05:09.123Z");
        assert!(parse_rfc3339("tomorrow").is_err());
    }
}
