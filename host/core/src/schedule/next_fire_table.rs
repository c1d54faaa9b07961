//! Next-fire times of cron specs against a table worked out by hand: each
//! row is an expression, a zone, an instant, and the first fire time
//! strictly after it. The expected values were worked from the calendar
//! and the zones' published transitions (listed below), not produced by
//! this code, then checked against Python's `croniter` 6 with `zoneinfo`,
//! an independent implementation (`scripts/crosscheck-cron-table`): it
//! agrees on every row but four — it cannot read `5L`, and on a fall-back
//! day it fires a fixed time in both passes, where the rule here (see
//! `spec.rs`) fires it once; those rows follow the rule, by hand.
//!
//! Facts used: 2026-01-01 is a Thursday. Europe/Paris: CET (+1) → CEST
//! (+2) at 2026-03-29 01:00Z, back at 2026-10-25 01:00Z.
//! America/New_York: EST (−5) → EDT (−4) at 2026-03-08 07:00Z, back at
//! 2026-11-01 06:00Z. Australia/Sydney (southern hemisphere): AEDT (+11)
//! → AEST (+10) at 2026-04-04 16:00Z (Sunday 03:00 local → 02:00),
//! AEST → AEDT at 2026-10-03 16:00Z (Sunday 02:00 local → 03:00).
//! Asia/Kolkata +05:30 and Asia/Kathmandu +05:45 all year. 2028 and 2032
//! are leap years; 2026 and 2027 are not.

use super::spec::Spec;

/// (expression, zone, after, expected next) — instants in UTC.
const TABLE: &[(&str, &str, &str, &str)] = &[
    // Plain fields, UTC.
    (
        "* * * * *",
        "UTC",
        "2026-03-10T10:15:30Z",
        "2026-03-10T10:16:00Z",
    ),
    (
        "0 9 * * *",
        "UTC",
        "2026-03-10T08:59:59Z",
        "2026-03-10T09:00:00Z",
    ),
    (
        "0 9 * * *",
        "UTC",
        "2026-03-10T09:00:00Z",
        "2026-03-11T09:00:00Z",
    ),
    (
        "*/15 * * * *",
        "UTC",
        "2026-03-10T10:16:00Z",
        "2026-03-10T10:30:00Z",
    ),
    (
        "0 9 * * MON-FRI",
        "UTC",
        "2026-03-13T10:00:00Z",
        "2026-03-16T09:00:00Z",
    ),
    (
        "0 0 1,15 * *",
        "UTC",
        "2026-03-02T00:00:00Z",
        "2026-03-15T00:00:00Z",
    ),
    (
        "0 0 1 JAN,JUL *",
        "UTC",
        "2026-02-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
    ),
    (
        "0 12 * * SUN",
        "UTC",
        "2026-01-01T00:00:00Z",
        "2026-01-04T12:00:00Z",
    ),
    (
        "0 12 * * 7",
        "UTC",
        "2026-01-01T00:00:00Z",
        "2026-01-04T12:00:00Z",
    ),
    (
        "0 12 * * 0",
        "UTC",
        "2026-01-04T12:00:00Z",
        "2026-01-11T12:00:00Z",
    ),
    (
        "0 8-10/2 * * *",
        "UTC",
        "2026-03-10T08:00:00Z",
        "2026-03-10T10:00:00Z",
    ),
    (
        "5 4 * * SAT,SUN",
        "UTC",
        "2026-01-05T00:00:00Z",
        "2026-01-10T04:05:00Z",
    ),
    (
        "0 0 31 * *",
        "UTC",
        "2026-04-01T00:00:00Z",
        "2026-05-31T00:00:00Z",
    ),
    (
        "23 0-20/2 * * *",
        "UTC",
        "2026-05-05T21:00:00Z",
        "2026-05-06T00:23:00Z",
    ),
    (
        "0 0 1 1 *",
        "UTC",
        "2026-12-31T23:59:59Z",
        "2027-01-01T00:00:00Z",
    ),
    (
        "59 23 31 12 *",
        "UTC",
        "2026-12-31T23:59:00Z",
        "2027-12-31T23:59:00Z",
    ),
    // Six fields: seconds first.
    (
        "30 0 9 * * *",
        "UTC",
        "2026-12-01T00:00:00Z",
        "2026-12-01T09:00:30Z",
    ),
    (
        "*/10 * * * * *",
        "UTC",
        "2026-03-10T10:00:05Z",
        "2026-03-10T10:00:10Z",
    ),
    (
        "15,45 30 12 * * *",
        "UTC",
        "2026-03-10T12:30:15Z",
        "2026-03-10T12:30:45Z",
    ),
    (
        "0 0 0 29 2 *",
        "UTC",
        "2026-03-01T00:00:00Z",
        "2028-02-29T00:00:00Z",
    ),
    // L, W, #.
    (
        "0 0 L * *",
        "UTC",
        "2026-02-10T00:00:00Z",
        "2026-02-28T00:00:00Z",
    ),
    (
        "0 0 L 2 *",
        "UTC",
        "2027-06-01T00:00:00Z",
        "2028-02-29T00:00:00Z",
    ),
    (
        "0 0 15W * *",
        "UTC",
        "2026-08-01T00:00:00Z",
        "2026-08-14T00:00:00Z",
    ),
    (
        "0 0 1W * *",
        "UTC",
        "2026-10-15T00:00:00Z",
        "2026-11-02T00:00:00Z",
    ),
    (
        "0 0 * * 5#2",
        "UTC",
        "2026-03-01T00:00:00Z",
        "2026-03-13T00:00:00Z",
    ),
    (
        "0 0 * * MON#1",
        "UTC",
        "2026-06-01T00:00:01Z",
        "2026-07-06T00:00:00Z",
    ),
    (
        "0 0 * * 5L",
        "UTC",
        "2026-04-01T00:00:00Z",
        "2026-04-24T00:00:00Z",
    ),
    // Leap days.
    (
        "0 0 29 2 *",
        "UTC",
        "2026-03-01T00:00:00Z",
        "2028-02-29T00:00:00Z",
    ),
    (
        "0 0 29 2 *",
        "UTC",
        "2028-02-29T00:00:00Z",
        "2032-02-29T00:00:00Z",
    ),
    (
        "0 0 29 2 *",
        "Australia/Sydney",
        "2027-01-01T00:00:00Z",
        "2028-02-28T13:00:00Z",
    ),
    // Shorthands.
    (
        "@hourly",
        "UTC",
        "2026-03-10T10:30:00Z",
        "2026-03-10T11:00:00Z",
    ),
    (
        "@daily",
        "UTC",
        "2026-12-31T12:00:00Z",
        "2027-01-01T00:00:00Z",
    ),
    (
        "@weekly",
        "UTC",
        "2026-01-01T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ),
    (
        "@monthly",
        "UTC",
        "2026-01-31T00:00:01Z",
        "2026-02-01T00:00:00Z",
    ),
    (
        "@yearly",
        "UTC",
        "2026-06-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    ),
    // Zones without a change in sight.
    (
        "0 9 * * *",
        "Europe/Paris",
        "2026-01-15T00:00:00Z",
        "2026-01-15T08:00:00Z",
    ),
    (
        "0 9 * * *",
        "Europe/Paris",
        "2026-07-15T00:00:00Z",
        "2026-07-15T07:00:00Z",
    ),
    (
        "0 9 * * *",
        "Australia/Sydney",
        "2026-01-10T00:00:00Z",
        "2026-01-10T22:00:00Z",
    ),
    (
        "0 9 * * *",
        "Australia/Sydney",
        "2026-07-10T00:00:00Z",
        "2026-07-10T23:00:00Z",
    ),
    (
        "0 0 12 * * *",
        "Asia/Kolkata",
        "2026-05-01T00:00:00Z",
        "2026-05-01T06:30:00Z",
    ),
    (
        "0 0 * * *",
        "Asia/Kathmandu",
        "2026-05-01T00:00:00Z",
        "2026-05-01T18:15:00Z",
    ),
    // DST, northern hemisphere. Spring forward: a fixed time in the gap
    // fires once, at the gap's end; a wildcard skips the missing hour.
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-03-28T12:00:00Z",
        "2026-03-29T01:00:00Z",
    ),
    (
        "0 * * * *",
        "Europe/Paris",
        "2026-03-29T00:30:00Z",
        "2026-03-29T01:00:00Z",
    ),
    (
        "0 2 * * SUN",
        "America/New_York",
        "2026-03-01T08:00:00Z",
        "2026-03-08T07:00:00Z",
    ),
    // Fall back: a fixed time fires at its first pass only; a wildcard
    // fires in both.
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-24T12:00:00Z",
        "2026-10-25T00:30:00Z",
    ),
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
    ),
    (
        "*/30 * * * *",
        "Europe/Paris",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:00:00Z",
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        "2026-11-01T05:30:00Z",
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-11-01T05:30:00Z",
        "2026-11-02T06:30:00Z",
    ),
    // DST, southern hemisphere (Sydney): spring forward in October, fall
    // back in April.
    (
        "30 2 * * *",
        "Australia/Sydney",
        "2026-10-03T00:00:00Z",
        "2026-10-03T16:00:00Z",
    ),
    (
        "30 2 * * *",
        "Australia/Sydney",
        "2026-04-04T00:00:00Z",
        "2026-04-04T15:30:00Z",
    ),
    (
        "30 2 * * *",
        "Australia/Sydney",
        "2026-04-04T15:30:00Z",
        "2026-04-05T16:30:00Z",
    ),
];

fn ms(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .as_millisecond()
}

fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[test]
fn next_fire_times_match_a_table_worked_by_hand() {
    assert!(TABLE.len() >= 40);
    let mut wrong = Vec::new();
    for (expr, tz, after, want) in TABLE {
        let spec = Spec::cron(expr, Some(tz)).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let got = spec.next_after(ms(after), 0).unwrap().map(utc);
        if got.as_deref() != Some(*want) {
            wrong.push(format!(
                "`{expr}` ({tz}) after {after}: want {want}, got {got:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_last_fire_time_at_or_before_an_instant_is_found_backwards() {
    // The row's expected time is the last at or before itself.
    for (expr, tz, _, want) in TABLE.iter().filter(|r| r.1 == "UTC") {
        let spec = Spec::cron(expr, Some(tz)).unwrap();
        assert_eq!(
            spec.last_at_or_before(ms(want), 0)
                .unwrap()
                .map(utc)
                .as_deref(),
            Some(*want),
            "{expr}"
        );
    }
    let every = Spec::Every { every_ms: 1_000 };
    assert_eq!(every.last_at_or_before(5_500, 0).unwrap(), Some(5_000));
    assert_eq!(every.last_at_or_before(500, 0).unwrap(), None);
    assert_eq!(every.last_at_or_before(2_500, 1_500).unwrap(), Some(2_500));
    let once = Spec::At { at: 7 };
    assert_eq!(once.last_at_or_before(6, 0).unwrap(), None);
    assert_eq!(once.last_at_or_before(7, 0).unwrap(), Some(7));
}

#[test]
fn a_bad_expression_names_its_field_and_what_it_accepts() {
    for (expr, field, accepts) in [
        ("61 * * * *", "minute field `61`", "0-59"),
        ("0 24 * * *", "hour field `24`", "0-23"),
        ("0 0 32 * *", "day-of-month field `32`", "1-31"),
        ("0 0 * 13 *", "month field `13`", "1-12 or JAN-DEC"),
        ("0 0 * * FUNDAY", "day-of-week field `FUNDAY`", "SUN-SAT"),
        ("60 0 0 * * *", "second field `60`", "0-59"),
    ] {
        let err = Spec::cron(expr, None).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains(accepts),
            "{expr}: {err}"
        );
        assert!(err.contains(expr), "{expr}: {err}");
    }
    let err = Spec::cron("0 9 * *", None).unwrap_err().to_string();
    assert!(err.contains("4 fields") && err.contains("5 ("), "{err}");
    let err = Spec::cron("@fortnightly", None).unwrap_err().to_string();
    assert!(err.contains("@daily"), "{err}");
}
