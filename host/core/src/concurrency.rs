//! Concurrency limits: at most N jobs of a task running at once across
//! every worker of a store — optionally per value of a job header
//! (`2 by tenant`: at most two per tenant).
//!
//! The operator sets a task's limit when pushing its plugin
//! (`xylem plugin push --concurrency report.build='2 by tenant'`); plugin
//! code cannot. A limit of N is N named locks in the store
//! ([`crate::store::LockStore`]): before a run the worker takes a free one,
//! owned by the job, for the job's lease; its lease keeper renews it with
//! the lease; it is released after the job's outcome is written. A worker
//! that dies holds it only until the lease runs out. A job that finds every
//! slot taken goes back to wait (same attempt, not a failure) and looks
//! again a moment later; its worker slot goes to the next job.

/// A parsed concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    /// Most jobs running at once.
    pub max: u32,
    /// A header whose value gets a limit of its own.
    pub by_header: Option<String>,
}

/// Why a concurrency limit cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "concurrency limit `{text}`: {why} (write N, optionally followed by `by HEADER`, e.g. `2` or `2 by tenant`)"
)]
pub struct ConcurrencyLimitError {
    text: String,
    why: &'static str,
}

/// Most slots a limit may have (each is a lock a blocked job looks at).
pub const MAX_SLOTS: u32 = 1000;

impl std::str::FromStr for ConcurrencyLimit {
    type Err = ConcurrencyLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| ConcurrencyLimitError {
            text: text.to_owned(),
            why,
        };
        let (max, by_header) = crate::keyed::split_by(text).map_err(err)?;
        let max: u32 = max
            .parse()
            .map_err(|_| err("the limit must be a whole number"))?;
        if max == 0 || max > MAX_SLOTS {
            return Err(err("the limit must be between 1 and 1000"));
        }
        Ok(Self { max, by_header })
    }
}

impl ConcurrencyLimit {
    /// The names of the limit's slots (locks) for a job of `task` with
    /// `headers`.
    pub fn slots(&self, task: &str, headers: &[(String, String)]) -> Vec<String> {
        let scope = crate::keyed::scope(task, self.by_header.as_deref(), headers);
        (0..self.max).map(|i| format!("conc:{scope}:{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_name_their_slots() {
        let limit: ConcurrencyLimit = "2 by tenant".parse().unwrap();
        let acme = vec![("tenant".to_owned(), "acme".to_owned())];
        assert_eq!(
            limit.slots("t", &acme),
            ["conc:t:tenant=acme:0", "conc:t:tenant=acme:1"]
        );
        assert_eq!(
            limit.slots("t", &[]),
            ["conc:t:tenant=:0", "conc:t:tenant=:1"]
        );
        let plain: ConcurrencyLimit = "1".parse().unwrap();
        assert_eq!(plain.slots("t", &acme), ["conc:t:0"]);
        for bad in ["", "0", "x", "2 per tenant", "2 by", "1001"] {
            assert!(bad.parse::<ConcurrencyLimit>().is_err(), "{bad}");
        }
    }
}
