//! Retry delays: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

/// First retry delay when neither the task nor the job sets one.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Largest retry delay when neither the task nor the job sets one.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// The delay before attempt `failed_attempt + 1`: `base · 2^(failed_attempt-1)`,
/// capped at `max`; with `jitter`, times a random factor in [0.75, 1.25]
/// so that jobs failing together do not retry together. Each delay is
/// still larger than the one before (until the cap).
pub fn backoff(failed_attempt: u32, base: Duration, max: Duration, jitter: bool) -> Duration {
    let exp = failed_attempt.saturating_sub(1).min(32);
    let raw = base.saturating_mul(1u32 << exp.min(31)).min(max);
    if !jitter {
        return raw;
    }
    raw.mul_f64(rand::rng().random_range(0.75..=1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..100 {
            let d1 = backoff(1, base, max, true);
            let d2 = backoff(2, base, max, true);
            let d3 = backoff(3, base, max, true);
            assert!(d1 < d2 && d2 < d3, "{d1:?} {d2:?} {d3:?}");
            assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125));
            assert!(backoff(30, base, max, true) <= Duration::from_millis(1250));
        }
    }

    #[test]
    fn without_jitter_delays_are_exact() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(1, base, max, false), base);
        assert_eq!(backoff(3, base, max, false), Duration::from_millis(400));
        assert_eq!(backoff(9, base, max, false), max);
    }
}
