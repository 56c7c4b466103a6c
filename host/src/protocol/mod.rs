//! The wire protocol: request payloads, acks, pushed events, error codes and the HTTP API's
//! bodies, shared word for word with the Spin components. The code lives in `wire/` at the
//! top of the workspace; see `wire/json.rs` for why it is mounted rather than a crate.

#[path = "../../../wire/json.rs"]
mod json;
pub use json::*;

#[path = "../../../wire/events.rs"]
mod events;
pub use events::*;

#[path = "../../../wire/ops.rs"]
pub mod ops;

#[path = "../../../wire/auth.rs"]
pub mod auth;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    use crate::wit::events::Event;
    use crate::wit::types::{
        self, Conn, ErrorCode, MetadataItem, MetadataOperation, PresenceChange,
    };

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// Wrong types name the field; missing data names the first required field.
    #[test]
    fn decode_errors_name_the_field() {
        let err = decode::<JoinData>(
            Some(&raw(r#"{"roomId":5,"userId":"u"}"#)),
            ErrorCode::InvalidPayload,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        assert!(
            err.message
                .starts_with("data.roomId: invalid type: integer `5`"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("line 1"), "{}", err.message);
        let err = decode::<JoinData>(None, ErrorCode::InvalidPayload).unwrap_err();
        assert!(
            err.message.contains("missing field `roomId`"),
            "{}",
            err.message
        );
        let err = decode::<WriteData>(
            Some(&raw(
                r#"{"channelType":"t","channelName":"n","items":[{"key":"k","value":1}]}"#,
            )),
            ErrorCode::MetadataInvalid,
        )
        .unwrap_err();
        assert!(
            err.message.starts_with("data.items[0].value:"),
            "{}",
            err.message
        );
        let err = decode::<HeartbeatData>(
            Some(&raw(r#"{"connId":"c","epoch":-1}"#)),
            ErrorCode::InvalidPayload,
        )
        .unwrap_err();
        assert!(err.message.starts_with("data.epoch:"), "{}", err.message);
    }

    /// Payloads are objects: arrays, strings and null are refused whatever their contents.
    #[test]
    fn payloads_are_objects() {
        for data in [r#"["lobby","u"]"#, "[]", r#""lobby""#, "null", "5", "true"] {
            let err = decode::<JoinData>(Some(&raw(data)), ErrorCode::InvalidPayload).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPayload);
            assert!(
                err.message.starts_with("data must be a JSON object"),
                "{data}: {}",
                err.message
            );
        }
        let err = decode_body::<HeartbeatBody>(b" []", 100, ErrorCode::InvalidPayload).unwrap_err();
        assert!(err.message.contains("not an array"), "{}", err.message);
    }

    /// `null` optional fields read as absent; extra fields are ignored.
    #[test]
    fn nulls_and_extra_fields() {
        let data = decode::<HeartbeatData>(
            Some(&raw(
                r#"{"connId":"c","epoch":null,"patchState":null,"extra":1}"#,
            )),
            ErrorCode::InvalidPayload,
        )
        .unwrap();
        assert!(data.epoch.is_none() && data.patch_state.is_none());
    }

    /// Acks and errors serialise exactly as the protocol shows them.
    #[test]
    fn ack_shapes() {
        assert_eq!(
            reply_json(&Ok(Ack::Heartbeat { changed: true })),
            r#"{"ok":true,"changed":true}"#
        );
        assert_eq!(reply_json(&Ok(Ack::Done)), r#"{"ok":true}"#);
        let joined = Ack::joined(
            types::Joined {
                conn_id: "c1".into(),
                epoch: 7,
                snapshot: vec![Conn {
                    conn_id: "c1".into(),
                    user_id: "u".into(),
                    state: r#"{"a":1}"#.into(),
                    epoch: 7,
                    last_seen: 9,
                }],
                next: None,
                replace_pending: false,
            },
            "t0k".into(),
        );
        assert_eq!(
            reply_json(&Ok(joined)),
            r#"{"ok":true,"snapshot":[{"connId":"c1","userId":"u","state":{"a":1},"epoch":7,"lastSeen":9}],"self":{"connId":"c1","epoch":7,"resumeToken":"t0k"}}"#
        );
        let partial = Ack::joined(
            types::Joined {
                conn_id: "c1".into(),
                epoch: 7,
                snapshot: Vec::new(),
                next: Some("c0".into()),
                replace_pending: false,
            },
            "t0k".into(),
        );
        assert_eq!(
            reply_json(&Ok(partial)),
            r#"{"ok":true,"snapshot":[],"self":{"connId":"c1","epoch":7,"resumeToken":"t0k"},"partial":true,"cursor":"c0"}"#
        );
        let error = ApiError::new(ErrorCode::StaleEpoch, "old");
        assert_eq!(
            reply_json(&Err(error)),
            r#"{"ok":false,"error":{"code":"STALE_EPOCH","message":"old"}}"#
        );
    }

    /// Events serialise once with the protocol's field names; leave carries the last state.
    #[test]
    fn event_shapes() {
        let published = Published::from_event(Event::Presence(types::PresenceEvent {
            change: PresenceChange::Leave,
            room_id: "r".into(),
            user_id: "u".into(),
            conn_id: "c".into(),
            state: r#"{"status":"away"}"#.into(),
            ts: 5,
            epoch: 6,
        }));
        assert_eq!(published.leave_of.as_deref(), Some("c"));
        assert_eq!(
            published.ws_frame(),
            r#"{"event":"presence:event","data":{"type":"leave","roomId":"r","userId":"u","connId":"c","state":{"status":"away"},"ts":5,"epoch":6}}"#
        );
        let published = Published::from_event(Event::Metadata(types::MetadataEvent {
            operation: MetadataOperation::Update,
            channel: types::Channel {
                channel_type: "t".into(),
                channel_name: "r".into(),
            },
            items: vec![MetadataItem {
                key: "k".into(),
                value: "v".into(),
                revision: 2,
                updated: None,
                author_uid: Some("u".into()),
            }],
            major_revision: 3,
        }));
        assert_eq!(published.room_id, "r");
        assert_eq!(
            published.data.get(),
            r#"{"operation":"update","channelName":"r","channelType":"t","items":[{"key":"k","value":"v","revision":2,"authorUid":"u"}],"majorRevision":3}"#
        );
    }

    /// Bearer tokens: none configured refuses, a wrong or missing one is unauthorised, and
    /// only the exact token passes.
    #[test]
    fn bearer_tokens() {
        let code = |c, a| check_bearer(c, a, "T").map_err(|e| e.code);
        assert_eq!(code(None, Some("Bearer x")), Err(ErrorCode::Forbidden));
        assert_eq!(code(Some(""), Some("Bearer ")), Err(ErrorCode::Forbidden));
        assert_eq!(code(Some("abcdef"), None), Err(ErrorCode::Unauthorized));
        assert_eq!(
            code(Some("abcdef"), Some("abcdef")),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(Some("abcdef"), Some("Bearer abcdeg")),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(Some("abcdef"), Some("Bearer abc")),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(code(Some("abcdef"), Some("Bearer abcdef")), Ok(()));
    }
}
