//! When a schedule fires: a cron expression in an IANA time zone, a fixed
//! interval, or once at a time.
//!
//! Cron expressions are read by the `croner` crate — 5 fields, or 6 with
//! seconds first; names (`MON`, `JAN`), ranges, steps, lists, `L`, `W`,
//! `#`, and `@hourly` / `@daily` / `@weekly` / `@monthly` / `@yearly` —
//! and evaluated on the zone's wall clock with `jiff` (the IANA database is
//! bundled, so a machine without `/usr/share/zoneinfo` agrees with one that
//! has it). Chosen over the `cron` crate, which has no `L`/`W`/`#` and
//! wants six fields.
//!
//! Daylight saving changes, the rule (croner's, after Vixie cron):
//! - **spring forward**: a fixed time that does not exist that day (02:30
//!   when clocks jump from 02:00 to 03:00) fires once, at the first minute
//!   after the gap (03:00); a wildcard or stepped field skips the missing
//!   times;
//! - **fall back**: a fixed time that happens twice (02:30 when clocks go
//!   from 03:00 back to 02:00) fires once, at its first occurrence; a
//!   wildcard or stepped field fires in both passes.
//!
//! So a daily 02:30 job runs exactly once on both change days.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    /// A cron expression on the wall clock of an IANA time zone.
    Cron {
        /// The expression, e.g. `0 9 * * MON-FRI`.
        expr: String,
        /// The zone, e.g. `Europe/Paris` (default `UTC`).
        #[serde(default = "utc")]
        tz: String,
    },
    /// Every `every_ms`, counted from the schedule's anchor (its creation).
    Every {
        /// The interval, in ms.
        every_ms: u64,
    },
    /// Once, at this time.
    At {
        /// When, in ms since the epoch.
        at: Millis,
    },
}

fn utc() -> String {
    "UTC".to_owned()
}

/// Why a spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The cron expression does not parse.
    #[error("cron expression `{expr}`: {why}")]
    Cron {
        /// The expression.
        expr: String,
        /// croner's message.
        why: String,
    },
    /// No such time zone.
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Paris or America/New_York)")]
    TimeZone(String),
    /// An interval of zero, or under the shortest allowed.
    #[error("an interval must be at least 1s, not {0} ms")]
    Interval(u64),
    /// A time outside the calendar.
    #[error("{0}")]
    Time(String),
}

/// Shortest interval of an `every` schedule.
pub const MIN_INTERVAL_MS: u64 = 1000;

impl Spec {
    /// A cron spec, checked: the expression parses and the zone exists.
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Self, SpecError> {
        let spec = Self::Cron {
            expr: expr.trim().to_owned(),
            tz: tz.unwrap_or("UTC").to_owned(),
        };
        spec.check()?;
        Ok(spec)
    }

    /// Checks a spec read from anywhere (a file, the store).
    pub fn check(&self) -> Result<(), SpecError> {
        match self {
            Self::Cron { expr, tz } => {
                parse_cron(expr)?;
                zone(tz)?;
                Ok(())
            }
            Self::Every { every_ms } if *every_ms < MIN_INTERVAL_MS => {
                Err(SpecError::Interval(*every_ms))
            }
            Self::Every { .. } | Self::At { .. } => Ok(()),
        }
    }

    /// The first fire time strictly after `after`; `anchor` is where an
    /// interval counts from. `None`: it never fires again (a one-shot that
    /// has passed, or a cron expression with no future match).
    pub fn next_after(&self, after: Millis, anchor: Millis) -> Result<Option<Millis>, SpecError> {
        match self {
            Self::At { at } => Ok((*at > after).then_some(*at)),
            Self::Every { every_ms } => {
                let every = Millis::try_from(*every_ms).unwrap_or(Millis::MAX).max(1);
                if after < anchor {
                    return Ok(Some(anchor));
                }
                let periods = (after - anchor) / every + 1;
                Ok(Some(anchor.saturating_add(periods.saturating_mul(every))))
            }
            Self::Cron { expr, tz } => {
                let cron = parse_cron(expr)?;
                let zone = zone(tz)?;
                let start = jiff::Timestamp::from_millisecond(after)
                    .map_err(|e| SpecError::Time(e.to_string()))?
                    .to_zoned(zone);
                match cron.find_next_occurrence(&start, false) {
                    Ok(next) => Ok(Some(next.timestamp().as_millisecond())),
                    Err(croner::errors::CronError::TimeSearchLimitExceeded) => Ok(None),
                    Err(e) => Err(SpecError::Time(e.to_string())),
                }
            }
        }
    }

    /// The next `count` fire times after `after`.
    pub fn upcoming(
        &self,
        after: Millis,
        anchor: Millis,
        count: usize,
    ) -> Result<Vec<Millis>, SpecError> {
        let mut times = Vec::with_capacity(count);
        let mut from = after;
        while times.len() < count {
            match self.next_after(from, anchor)? {
                Some(next) => {
                    times.push(next);
                    from = next;
                }
                None => break,
            }
        }
        Ok(times)
    }

    /// The last fire time at or before `at` (`None`: none since the
    /// anchor), found without walking every tick in between — a beat down
    /// for a year under an every-second schedule asks this once.
    pub fn last_at_or_before(
        &self,
        at: Millis,
        anchor: Millis,
    ) -> Result<Option<Millis>, SpecError> {
        match self {
            Self::At { at: once } => Ok((*once <= at).then_some(*once)),
            Self::Every { every_ms } => {
                let every = Millis::try_from(*every_ms).unwrap_or(Millis::MAX).max(1);
                if at <= anchor {
                    return Ok(None);
                }
                Ok(Some(anchor + (at - anchor) / every * every).filter(|t| *t > anchor))
            }
            Self::Cron { expr, tz } => {
                let cron = parse_cron(expr)?;
                let start = jiff::Timestamp::from_millisecond(at)
                    .map_err(|e| SpecError::Time(e.to_string()))?
                    .to_zoned(zone(tz)?);
                match cron.find_previous_occurrence(&start, true) {
                    Ok(last) => Ok(Some(last.timestamp().as_millisecond())),
                    Err(croner::errors::CronError::TimeSearchLimitExceeded) => Ok(None),
                    Err(e) => Err(SpecError::Time(e.to_string())),
                }
            }
        }
    }

    /// The spec's time zone (UTC for intervals and one-shots).
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, SpecError> {
        match self {
            Self::Cron { tz, .. } => zone(tz),
            _ => Ok(jiff::tz::TimeZone::UTC),
        }
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron, SpecError> {
    croner::Cron::from_str(expr).map_err(|e| SpecError::Cron {
        expr: expr.to_owned(),
        why: field_at_fault(expr).unwrap_or_else(|| e.to_string()),
    })
}

/// A cron field: its name and what it accepts.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, W (15W), ?"),
    ("month", "1-12 or JAN-DEC"),
    (
        "day-of-week",
        "0-7 (0 and 7 are Sunday) or SUN-SAT, L (5L), # (MON#2), ?",
    ),
];

/// Which field of a refused expression is at fault, said with the range
/// that field accepts: each field is tried alone (the others `*`) by
/// croner itself, so this knows nothing of cron syntax but the field
/// order. `None` when no single field is at fault.
fn field_at_fault(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') {
        return Some(format!(
            "unknown shorthand `{}` (known: @yearly, @annually, @monthly, @weekly, @daily, @hourly)",
            expr.trim()
        ));
    }
    let names = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS[..],
        n => {
            return Some(format!(
                "{n} fields; a cron expression has 5 (minute hour day-of-month month day-of-week) or 6 (second first)"
            ));
        }
    };
    for (at, ((name, accepts), text)) in names.iter().zip(&fields).enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|i| if i == at { *text } else { "*" })
            .collect();
        if let Err(e) = croner::Cron::from_str(&alone.join(" ")) {
            return Some(format!(
                "the {name} field `{text}` is not valid ({e}); it accepts {accepts}, with ranges (a-b), steps (*/n), lists (a,b)"
            ));
        }
    }
    None
}

fn zone(name: &str) -> Result<jiff::tz::TimeZone, SpecError> {
    jiff::tz::TimeZone::get(name).map_err(|_| SpecError::TimeZone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> Millis {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn fires(spec: &Spec, from: &str, to: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = ms(from);
        while let Some(next) = spec.next_after(at, 0).unwrap() {
            if next >= ms(to) {
                break;
            }
            out.push(jiff::Timestamp::from_millisecond(next).unwrap().to_string());
            at = next;
        }
        out
    }

    #[test]
    fn a_daily_0230_job_runs_once_on_both_dst_change_days() {
        let spec = Spec::cron("30 2 * * *", Some("Europe/Paris")).unwrap();
        // 2026-03-29: 02:00 CET → 03:00 CEST; 02:30 does not exist: 03:00
        // local, 01:00 UTC.
        assert_eq!(
            fires(&spec, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z"),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // 2026-10-25: 03:00 CEST → 02:00 CET; 02:30 happens twice: the
        // first, 00:30 UTC.
        assert_eq!(
            fires(&spec, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn cron_forms_parse_and_bad_ones_say_why() {
        for good in [
            "0 9 * * MON-FRI",
            "*/15 * * * *",
            "0 0 1,15 JAN,JUL *",
            "30 0 9 * * *",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 5#2",
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
        ] {
            assert!(Spec::cron(good, None).is_ok(), "{good}");
        }
        let err = Spec::cron("61 * * * *", None).unwrap_err().to_string();
        assert!(err.contains("61 * * * *"), "{err}");
        let err = Spec::cron("0 9 * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown time zone `Mars/Olympus`"), "{err}");
        // Six fields: seconds first.
        let spec = Spec::cron("30 0 9 * * *", None).unwrap();
        assert_eq!(
            fires(&spec, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"),
            ["2026-12-01T09:00:30Z"]
        );
    }

    #[test]
    fn intervals_count_from_their_anchor_and_one_shots_fire_once() {
        let every = Spec::Every { every_ms: 30_000 };
        assert_eq!(every.next_after(0, 0).unwrap(), Some(30_000));
        assert_eq!(every.next_after(29_999, 0).unwrap(), Some(30_000));
        assert_eq!(every.next_after(30_000, 0).unwrap(), Some(60_000));
        assert_eq!(every.next_after(5, 1_000).unwrap(), Some(1_000));
        assert!(Spec::Every { every_ms: 10 }.check().is_err());
        let once = Spec::At { at: 5_000 };
        assert_eq!(once.next_after(0, 0).unwrap(), Some(5_000));
        assert_eq!(once.next_after(5_000, 0).unwrap(), None);
        assert_eq!(
            Spec::cron("0 12 * * *", None)
                .unwrap()
                .upcoming(0, 0, 3)
                .unwrap()
                .len(),
            3
        );
    }
}
