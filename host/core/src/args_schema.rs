//! A task's declared JSON Schema for its arguments: checked when its plugin
//! is loaded, compiled once per plugin version, applied at every enqueue
//! (CLI, [`Client`](crate::Client) and a task's `host.enqueue`).
//!
//! A schema comes from plugin code, so it is untrusted: it may not refer to
//! other documents (no `$ref` to a URL or a file — the host never fetches
//! anything for it), its size is capped, and its `pattern`s run on a
//! linear-time regex engine, so no argument can make a check take long.

use serde_json::Value;

/// Largest schema a task may declare, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// How many of the argument's faults a refusal lists.
const MAX_REPORTED: usize = 3;

/// Why a declared schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Over [`MAX_SCHEMA_BYTES`].
    #[error("its args schema is {0} bytes, over the limit of {MAX_SCHEMA_BYTES}")]
    TooLarge(usize),
    /// Not JSON at all.
    #[error("its args schema is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not a schema this host can use.
    #[error("its args schema is not a valid JSON Schema: {0}")]
    Invalid(String),
}

/// A compiled argument schema.
#[derive(Debug)]
pub struct ArgsSchema {
    validator: jsonschema::Validator,
}

impl ArgsSchema {
    /// Compiles a schema given as JSON text.
    pub fn compile(text: &str) -> Result<Self, SchemaError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge(text.len()));
        }
        let schema: Value = serde_json::from_str(text).map_err(SchemaError::NotJson)?;
        let validator = jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&schema)
            .map_err(|e| SchemaError::Invalid(e.to_string()))?;
        Ok(Self { validator })
    }

    /// Checks arguments against the schema; the refusal names up to three
    /// faults, each with where in the arguments it is.
    pub fn check(&self, args: &Value) -> Result<(), String> {
        if self.validator.is_valid(args) {
            return Ok(());
        }
        let mut faults = Vec::new();
        let mut more = 0;
        for error in self.validator.iter_errors(args) {
            if faults.len() < MAX_REPORTED {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                faults.push(format!("at {at}: {error}"));
            } else {
                more += 1;
            }
        }
        let mut message = faults.join("; ");
        if more > 0 {
            message.push_str(&format!(" (and {more} more)"));
        }
        Err(message)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn counted() -> ArgsSchema {
        ArgsSchema::compile(
            &json!({
                "type": "object",
                "properties": {"count": {"type": "integer", "minimum": 1}},
                "required": ["count"]
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn arguments_are_checked_with_where_and_why() {
        let schema = counted();
        schema.check(&json!({"count": 3})).unwrap();
        let why = schema.check(&json!({"count": "three"})).unwrap_err();
        assert!(why.contains("/count") && why.contains("integer"), "{why}");
        let why = schema.check(&json!({})).unwrap_err();
        assert!(why.contains("count") && why.contains("required"), "{why}");
    }

    #[test]
    fn bad_schemas_are_refused_with_a_reason() {
        assert!(matches!(
            ArgsSchema::compile("{"),
            Err(SchemaError::NotJson(_))
        ));
        assert!(matches!(
            ArgsSchema::compile(r#"{"type": "no-such-type"}"#),
            Err(SchemaError::Invalid(_))
        ));
        let huge = format!(r#"{{"description": "{}"}}"#, "x".repeat(MAX_SCHEMA_BYTES));
        assert!(matches!(
            ArgsSchema::compile(&huge),
            Err(SchemaError::TooLarge(_))
        ));
    }

    #[test]
    fn a_schema_cannot_make_the_host_fetch_or_read_anything() {
        for target in ["http://127.0.0.1:9/schema.json", "file:///etc/passwd"] {
            let schema = json!({"$ref": target}).to_string();
            assert!(
                matches!(ArgsSchema::compile(&schema), Err(SchemaError::Invalid(_))),
                "{target} must be refused"
            );
        }
    }
}
