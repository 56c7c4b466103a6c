//! Building failures: one constructor per error code the rules use, so call sites read as
//! the protocol does (`fail::stale_epoch(...)`).

use crate::types::{ErrorCode, Failure};

/// Longest id (room, user, channel, key, lock name) the rules accept, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// A failure with `code` and `message`.
pub fn failure(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// `INVALID_PAYLOAD`: a presence request that does not make sense.
pub fn invalid(message: impl Into<String>) -> Failure {
    failure(ErrorCode::InvalidPayload, message)
}

/// `METADATA_INVALID`: a metadata request that does not make sense.
pub fn metadata_invalid(message: impl Into<String>) -> Failure {
    failure(ErrorCode::MetadataInvalid, message)
}

/// `UNKNOWN_CONNECTION` for `conn_id`.
pub fn unknown_connection(conn_id: &str) -> Failure {
    failure(
        ErrorCode::UnknownConnection,
        format!("connection {conn_id:?} does not exist (it left, expired or was never joined)"),
    )
}

/// `PAYLOAD_TOO_LARGE`.
pub fn too_large(message: impl Into<String>) -> Failure {
    failure(ErrorCode::PayloadTooLarge, message)
}

/// `COMPONENT_FAILED`: the component met something it cannot handle (a bug or a store
/// that replied out of contract).
pub fn internal(message: impl Into<String>) -> Failure {
    failure(ErrorCode::ComponentFailed, message)
}

/// Checks that `value` is a usable id: not empty, at most [`MAX_ID_BYTES`], no control
/// characters. `field` names it in the message; `code` is the error code of a refusal.
pub fn check_id(value: &str, field: &str, code: ErrorCode) -> Result<(), Failure> {
    if value.is_empty() {
        return Err(failure(code, format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(failure(
            code,
            format!(
                "{field} is {} bytes; the limit is {MAX_ID_BYTES}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(failure(
            code,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVALID: ErrorCode = ErrorCode::InvalidPayload;

    /// Ids are refused when empty, too long or holding control characters, and accepted otherwise.
    #[test]
    fn check_id_limits() {
        assert!(check_id("room-1", "roomId", INVALID).is_ok());
        assert!(check_id("ü:{x}/ 1", "roomId", INVALID).is_ok());
        let empty = check_id("", "roomId", INVALID).unwrap_err();
        assert_eq!(empty.code, ErrorCode::InvalidPayload);
        assert!(empty.message.contains("roomId"));
        assert!(check_id(&"x".repeat(MAX_ID_BYTES), "roomId", INVALID).is_ok());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1), "roomId", INVALID).is_err());
        assert!(check_id("a\nb", "roomId", INVALID).is_err());
    }
}
