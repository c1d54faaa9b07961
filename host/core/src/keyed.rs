//! Limits kept per value of a job header — `20/s by tenant`,
//! `2 by tenant` — the one rule both rate and concurrency limits use: how
//! the `by HEADER` suffix is written, and which limiter a job counts
//! against.

/// Splits `text` into its first word and the header named by a trailing
/// `by HEADER`, if any. `Err` names what is wrong.
pub(crate) fn split_by(text: &str) -> Result<(&str, Option<String>), &'static str> {
    let mut words = text.split_whitespace();
    let first = words.next().ok_or("it is empty")?;
    let by = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("by"), Some(header), None) => Some(header.to_owned()),
        _ => return Err("only `by HEADER` may follow it"),
    };
    Ok((first, by))
}

/// The scope a job of `task` counts against: the task, or the task and
/// the job's value of header `by` (a job without it shares the empty
/// value's scope).
pub(crate) fn scope(task: &str, by: Option<&str>, headers: &[(String, String)]) -> String {
    match by {
        None => task.to_owned(),
        Some(name) => {
            let value = headers
                .iter()
                .find(|(h, _)| h == name)
                .map_or("", |(_, v)| v.as_str());
            format!("{task}:{name}={value}")
        }
    }
}
