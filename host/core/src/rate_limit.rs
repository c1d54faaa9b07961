//! Rate limits: at most N jobs of a task started per second, minute or
//! hour, across every worker of a store — optionally per value of a job
//! header (`20/s by tenant`: each tenant gets 20 a second).
//!
//! A task declares its limit in its options (`rate_limit`). Before a
//! worker runs a job of it, it reserves the job a start slot in the store
//! ([`crate::store::RateLimits`], the generic cell rate algorithm: slots
//! `period / N` apart, one atomic step on every store). A slot that has
//! come runs the job now; a later one puts the job back to wait until
//! exactly then, holding its slot — not failed, not counted as a retry —
//! and the worker slot goes to the next job, so other tasks' jobs are not
//! held up behind it. Each job waits at most once: no thundering herd, no
//! store traffic that grows with the backlog.
//!
//! The limiter bounds when slots fall, not how late a worker gets to one:
//! jobs whose worker was busy (or that waited while a large backlog was
//! being given its slots) start late, and late ones may start close
//! together. Over any stretch of seconds the rate holds; a single second
//! can see more than N after a stall (measured: 32 in the worst second at
//! 20/s on PostgreSQL while 260 jobs got their slots; see
//! docs/queue.md).

use std::time::Duration;

/// A parsed `rate_limit` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per period.
    pub count: u32,
    /// The period: a second, a minute or an hour.
    pub period: Duration,
    /// A header whose value gets a limit of its own (`by tenant`).
    pub by_header: Option<String>,
}

/// Why a `rate_limit` option cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate limit `{text}`: {why} (write N/s, N/m or N/h, optionally followed by `by HEADER`, e.g. `20/s` or `100/m by tenant`)"
)]
pub struct RateLimitError {
    text: String,
    why: &'static str,
}

impl std::str::FromStr for RateLimit {
    type Err = RateLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| RateLimitError {
            text: text.to_owned(),
            why,
        };
        let (rate, by_header) = crate::keyed::split_by(text).map_err(err)?;
        let (count, unit) = rate
            .split_once('/')
            .ok_or_else(|| err("the rate needs a `/`"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| err("the count must be a whole number"))?;
        if count == 0 {
            return Err(err("the count must be at least 1"));
        }
        let period = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err("the unit must be s, m or h")),
        };
        Ok(Self {
            count,
            period,
            by_header,
        })
    }
}

impl RateLimit {
    /// Time between two starts.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }

    /// The limiter's key in the store: per task, and per header value when
    /// the limit is `by` a header (a job without the header shares the
    /// limiter of the empty value).
    pub fn key(&self, task: &str, headers: &[(String, String)]) -> String {
        crate::keyed::scope(task, self.by_header.as_deref(), headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimit, RateLimitError> {
        text.parse()
    }

    #[test]
    fn rates_parse_with_their_unit_and_header() {
        let r = parse("20/s").unwrap();
        assert_eq!(
            (r.count, r.period, r.by_header),
            (20, Duration::from_secs(1), None)
        );
        let r = parse(" 100/m  by tenant ").unwrap();
        assert_eq!(r.period, Duration::from_secs(60));
        assert_eq!(r.by_header.as_deref(), Some("tenant"));
        assert_eq!(parse("5/h").unwrap().period, Duration::from_secs(3600));
        for bad in [
            "",
            "20",
            "0/s",
            "x/s",
            "20/d",
            "20/s per tenant",
            "20/s by",
            "20/s by a b",
            "-1/s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let why = parse("20/d").unwrap_err().to_string();
        assert!(why.contains("unit must be s, m or h"), "{why}");
    }

    #[test]
    fn slots_are_a_period_over_the_count_apart_per_task_and_header_value() {
        assert_eq!(parse("20/s").unwrap().interval(), Duration::from_millis(50));
        assert_eq!(
            parse("100/m").unwrap().interval(),
            Duration::from_millis(600)
        );
        assert_eq!(parse("5/h").unwrap().interval(), Duration::from_secs(720));
        let r = parse("20/s by tenant").unwrap();
        let acme = vec![("tenant".to_owned(), "acme".to_owned())];
        assert_eq!(r.key("t", &acme), "t:tenant=acme");
        assert_eq!(r.key("t", &[]), "t:tenant=");
        assert_eq!(parse("20/s").unwrap().key("t", &acme), "t");
    }
}
