//! Callbacks: `link`, a task enqueued with a job's result when the job
//! succeeds, and `link_error`, one enqueued with its error when it fails
//! for good (dead-lettered: retries used up, or not retryable). A
//! cancelled or expired job fires neither.
//!
//! The callback's arguments follow one rule, which chains use as well:
//! - a callback given no arguments receives the job's result whole (or,
//!   for `link_error`, the error object);
//! - a callback given arguments (a JSON object) receives them with the
//!   result added under `"result"` (or the error under `"error"`),
//!   replacing any value of that name.
//!
//! The error object: `{"id", "task", "attempt", "kind", "message"}` of the
//! job that failed.
//!
//! Each callback's id is chosen when its job is enqueued, so firing it is
//! idempotent: a job delivered twice (its worker died between firing and
//! recording the outcome) enqueues its callback once — the second enqueue
//! finds the id in use. A replay from the dead-letter queue gives
//! `link_error` a new id (the replayed job may fail again, and that is
//! news).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Envelope, Failure};

/// A task to enqueue when a job ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// The callback job's id, given at enqueue (empty until then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Its task.
    pub task: String,
    /// Its own arguments (a JSON object as text), if any: see the module
    /// documentation for how the result joins them. Read from JSON as
    /// text or as the object itself (a canvas file writes the object).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "args_text"
    )]
    pub args: Option<String>,
    /// Its queue (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its priority (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

/// `args` as JSON text, given as text or as a JSON value.
fn args_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    })
}

/// Which end a callback is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `link`: the job succeeded.
    Success,
    /// `link_error`: the job is dead.
    Failure,
}

impl Trigger {
    /// The key the job's result or error takes in arguments given to the
    /// callback, and the option's name.
    pub fn key(self) -> &'static str {
        match self {
            Self::Success => "result",
            Self::Failure => "error",
        }
    }

    /// The option's name, for messages.
    pub fn option(self) -> &'static str {
        match self {
            Self::Success => "link",
            Self::Failure => "link_error",
        }
    }
}

impl Callback {
    /// A callback of `task` with no arguments of its own.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            ..Self::default()
        }
    }

    /// Parses the CLI's spelling: `TASK` or `TASK:{"json":"object"}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Task names may hold ':' too; the arguments start at `:{` (or
        // `:[`, refused below with the reason).
        let at = [text.find(":{"), text.find(":[")]
            .into_iter()
            .flatten()
            .min();
        let (task, args) = match at {
            Some(at) => (&text[..at], Some(text[at + 1..].to_owned())),
            None => (text, None),
        };
        let callback = Self {
            task: task.to_owned(),
            args,
            ..Self::default()
        };
        callback.check_args()?;
        Ok(callback)
    }

    /// Arguments, if given, must be a JSON object (the result joins them).
    pub fn check_args(&self) -> Result<(), String> {
        match &self.args {
            None => Ok(()),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(_)) => Ok(()),
                Ok(_) => Err(format!(
                    "the arguments of callback `{}` must be a JSON object (the result is added to them under \"result\" or \"error\")",
                    self.task
                )),
                Err(e) => Err(format!(
                    "the arguments of callback `{}` are not JSON: {e}",
                    self.task
                )),
            },
        }
    }

    /// The callback's arguments, given `value` (the job's result, or its
    /// error object) — by the rule in the module documentation.
    pub fn args_with(&self, trigger: Trigger, value: Value) -> String {
        let own = self
            .args
            .as_deref()
            .and_then(|text| serde_json::from_str::<Map<String, Value>>(text).ok());
        match own {
            None => value.to_string(),
            Some(mut own) => {
                own.insert(trigger.key().to_owned(), value);
                Value::Object(own).to_string()
            }
        }
    }
}

/// The error object a `link_error` callback receives.
pub fn error_value(job: &Envelope, failure: &Failure) -> Value {
    serde_json::json!({
        "id": job.id,
        "task": job.task,
        "attempt": job.attempt,
        "kind": failure.kind.as_str(),
        "message": failure.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    #[test]
    fn a_bare_callback_gets_the_value_whole_and_one_with_args_gets_it_added() {
        let bare = Callback::new("t");
        assert_eq!(
            bare.args_with(Trigger::Success, serde_json::json!([1, 2])),
            "[1,2]"
        );
        let with = Callback {
            args: Some(r#"{"to":"ops","result":"overwritten"}"#.into()),
            ..Callback::new("t")
        };
        let args: Value =
            serde_json::from_str(&with.args_with(Trigger::Success, serde_json::json!(7))).unwrap();
        assert_eq!(args, serde_json::json!({"to": "ops", "result": 7}));
        let job = Envelope::new("a.b", "{}");
        let failure = Failure::new(FailureKind::PluginError, "boom");
        let args: Value =
            serde_json::from_str(&with.args_with(Trigger::Failure, error_value(&job, &failure)))
                .unwrap();
        assert_eq!(args["error"]["message"], "boom");
        assert_eq!(args["error"]["kind"], "plugin-error");
        assert_eq!(args["error"]["task"], "a.b");
    }

    #[test]
    fn args_read_as_text_or_as_an_object() {
        let text: Callback = serde_json::from_str(r#"{"task":"t","args":"{\"a\":1}"}"#).unwrap();
        let object: Callback = serde_json::from_str(r#"{"task":"t","args":{"a":1}}"#).unwrap();
        assert_eq!(text.args.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(object, text);
    }

    #[test]
    fn the_cli_spelling_parses_and_args_must_be_an_object() {
        assert_eq!(Callback::parse("a.b").unwrap(), Callback::new("a.b"));
        let c = Callback::parse(r#"ns:task:{"x":1}"#).unwrap();
        assert_eq!(c.task, "ns:task");
        assert_eq!(c.args.as_deref(), Some(r#"{"x":1}"#));
        assert!(
            Callback::parse(r#"t:{"x":"#)
                .unwrap_err()
                .contains("not JSON")
        );
        let list = Callback {
            args: Some("[1]".into()),
            ..Callback::new("t")
        };
        assert!(list.check_args().unwrap_err().contains("JSON object"));
    }
}
