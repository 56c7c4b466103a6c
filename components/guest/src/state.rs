//! Presence state documents: JSON objects, merged shallowly.
//!
//! `state` and `patchState` must be JSON objects. A patch replaces the top-level keys it
//! names (a `null` value is stored as `null`, like JavaScript's `{...state, ...patch}`); it
//! is a change only when some key's value differs from what was there. Key order is kept,
//! so a client sees its keys in the order it wrote them.

use serde_json::{Map, Value};

use crate::fail;
use crate::types::Failure;

/// A parsed state document.
pub type State = Map<String, Value>;

/// Parses `text` as a JSON object; `field` names it in the error.
pub fn parse_object(text: &str, field: &str) -> Result<State, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(fail::invalid(format!(
            "{field} must be a JSON object, not {}",
            kind(&other)
        ))),
        Err(error) => Err(fail::invalid(format!("{field} is not valid JSON: {error}"))),
    }
}

/// Serialises a state compactly.
pub fn to_text(state: &State) -> String {
    // Serialising a map of JSON values cannot fail: keys are strings and values are JSON.
    serde_json::to_string(state).unwrap_or_else(|_| String::from("{}"))
}

/// Checks a state's serialised size against the limit.
pub fn check_size(text: &str, field: &str, max_bytes: u32) -> Result<(), Failure> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    if text.len() > limit {
        return Err(fail::too_large(format!(
            "{field} is {} bytes of JSON; the limit is {limit}",
            text.len()
        )));
    }
    Ok(())
}

/// Merges `patch` into `state`; true when a top-level value changed.
pub fn merge(state: &mut State, patch: State) -> bool {
    let mut changed = false;
    for (key, value) in patch {
        match state.get_mut(&key) {
            Some(current) if same(current, &value) => {}
            Some(current) => {
                *current = value;
                changed = true;
            }
            None => {
                state.insert(key, value);
                changed = true;
            }
        }
    }
    changed
}

/// JSON equality as a client sees it: numbers compare by value (`1` equals `1.0`), objects
/// regardless of key order.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|other| same(v, other)))
        }
        _ => a == b,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ErrorCode;
    use serde_json::json;

    fn obj(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// Only objects are states; anything else is INVALID_PAYLOAD naming the field.
    #[test]
    fn parse_accepts_only_objects() {
        assert!(parse_object(r#"{"a":1}"#, "state").is_ok());
        for text in ["[]", "1", "\"x\"", "null", "true"] {
            let err = parse_object(text, "patchState").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPayload);
            assert!(
                err.message.starts_with("patchState must be a JSON object"),
                "{}",
                err.message
            );
        }
        assert!(
            parse_object("{", "state")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
    }

    /// A patch that rewrites the same values is no change; a new or different value is.
    #[test]
    fn merge_reports_top_level_changes() {
        let mut state = obj(json!({"cursor": {"x": 1, "y": 2}, "status": "idle"}));
        assert!(!merge(&mut state, obj(json!({"status": "idle"}))));
        assert!(!merge(
            &mut state,
            obj(json!({"cursor": {"y": 2, "x": 1.0}}))
        ));
        assert!(merge(&mut state, obj(json!({"status": "busy"}))));
        assert!(merge(&mut state, obj(json!({"seat": 3}))));
        assert!(merge(&mut state, obj(json!({"seat": null}))));
        assert!(!merge(&mut state, obj(json!({}))));
        assert_eq!(
            Value::Object(state),
            json!({"cursor": {"x": 1, "y": 2}, "status": "busy", "seat": null})
        );
    }

    /// The merge is shallow: a nested object is replaced, not merged.
    #[test]
    fn merge_is_shallow() {
        let mut state = obj(json!({"cursor": {"x": 1, "y": 2}}));
        assert!(merge(&mut state, obj(json!({"cursor": {"x": 5}}))));
        assert_eq!(Value::Object(state), json!({"cursor": {"x": 5}}));
    }

    /// Key order survives a merge, so clients see keys in the order they wrote them.
    #[test]
    fn merge_keeps_key_order() {
        let mut state = obj(json!({"b": 1, "a": 2}));
        merge(&mut state, obj(json!({"c": 3, "b": 4})));
        assert_eq!(to_text(&state), r#"{"b":4,"a":2,"c":3}"#);
    }

    /// Sizes over the limit are PAYLOAD_TOO_LARGE; at the limit they pass.
    #[test]
    fn size_limit() {
        assert!(check_size("1234", "state", 4).is_ok());
        let err = check_size("12345", "state", 4).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    }
}
