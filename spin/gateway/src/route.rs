//! The gateway's routes: the paths of `docs/openapi.yaml` that a Spin deployment serves,
//! with their path segments percent-decoded as the host's router does.

use spin_sdk::http::Method;

use crate::protocol::{self, ApiError};
use crate::wit::types::{Channel, ErrorCode};

/// A matched path.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/healthz`.
    Health,
    /// `/readyz`.
    Ready,
    /// `/v1/rooms/{roomId}/connections`.
    Connections { room_id: String },
    /// `/v1/rooms/{roomId}/occupancy`.
    Occupancy { room_id: String },
    /// `/v1/connections/{connId}/heartbeat`.
    Heartbeat { conn_id: String },
    /// `/v1/connections/{connId}`.
    Connection { conn_id: String },
    /// `/v1/channels/{channelType}/{channelName}/metadata`.
    Metadata { channel: Channel },
    /// `/v1/channels/{channelType}/{channelName}/locks/{lockName}`.
    Lock { channel: Channel, lock_name: String },
    /// `/v1/reaper/tick`.
    Tick,
}

impl Route {
    /// Matches a path (without its query).
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let path = path.split('?').next().unwrap_or_default();
        let segments = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .map(decode)
            .collect::<Result<Vec<String>, ApiError>>()?;
        if segments.iter().any(String::is_empty) {
            return Err(protocol::no_such_route());
        }
        let channel = |t: &str, n: &str| Channel {
            channel_type: t.to_owned(),
            channel_name: n.to_owned(),
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match segments.as_slice() {
            ["healthz"] => Route::Health,
            ["readyz"] => Route::Ready,
            ["v1", "rooms", room, "connections"] => Route::Connections {
                room_id: (*room).to_owned(),
            },
            ["v1", "rooms", room, "occupancy"] => Route::Occupancy {
                room_id: (*room).to_owned(),
            },
            ["v1", "connections", conn, "heartbeat"] => Route::Heartbeat {
                conn_id: (*conn).to_owned(),
            },
            ["v1", "connections", conn] => Route::Connection {
                conn_id: (*conn).to_owned(),
            },
            ["v1", "channels", t, n, "metadata"] => Route::Metadata {
                channel: channel(t, n),
            },
            ["v1", "channels", t, n, "locks", lock] => Route::Lock {
                channel: channel(t, n),
                lock_name: (*lock).to_owned(),
            },
            ["v1", "reaper", "tick"] => Route::Tick,
            _ => return Err(protocol::no_such_route()),
        })
    }

    /// The methods the route serves, as an `Allow` header says them.
    pub fn methods(&self) -> &'static str {
        match self {
            Route::Health | Route::Ready | Route::Occupancy { .. } => "GET",
            Route::Connections { .. } => "GET, POST",
            Route::Heartbeat { .. } | Route::Tick => "POST",
            Route::Connection { .. } => "DELETE",
            Route::Metadata { .. } => "GET, PUT, PATCH, DELETE",
            Route::Lock { .. } => "POST, DELETE",
        }
    }

    /// Whether the route serves `method`.
    pub fn allows(&self, method: &Method) -> bool {
        let name = method.to_string();
        self.methods().split(", ").any(|m| m == name)
    }
}

/// Percent-decodes one path segment; what does not decode to UTF-8 is refused.
fn decode(segment: &str) -> Result<String, ApiError> {
    percent_decode(segment, false).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidPayload,
            "a path segment is not percent-encoded UTF-8",
        )
    })
}

/// Percent-decodes `text` (`+` as a space when `plus` is set, as in a query); none when
/// the result is not UTF-8.
fn percent_decode(text: &str, plus: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match byte {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(byte),
            },
            b'+' if plus => out.push(b' '),
            _ => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The page a `GET /v1/rooms/{roomId}/connections` asks for (`cursor`, `limit`).
pub fn snapshot_query(query: &str, room_id: String) -> Result<protocol::SnapshotData, ApiError> {
    let limit = match query_value(query, "limit") {
        None => None,
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidPayload,
                format!("the query is not valid: limit {text:?} is not a count"),
            )
        })?),
    };
    Ok(protocol::SnapshotData {
        room_id,
        cursor: query_value(query, "cursor"),
        limit,
    })
}

/// The first value of `name` in a query string.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true)? == name).then(|| percent_decode(value, true))?
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "unit tests fail loudly")]

    use super::*;

    /// Every documented path matches, segments decoded; anything else is no route.
    #[test]
    fn paths() {
        assert_eq!(
            Route::parse("/v1/rooms/a%20b/connections").unwrap(),
            Route::Connections {
                room_id: "a b".into()
            }
        );
        assert_eq!(
            Route::parse("/v1/channels/t/n/locks/l").unwrap(),
            Route::Lock {
                channel: Channel {
                    channel_type: "t".into(),
                    channel_name: "n".into()
                },
                lock_name: "l".into()
            }
        );
        assert_eq!(Route::parse("/v1/reaper/tick").unwrap(), Route::Tick);
        for missing in ["/", "/v1", "/v1/rooms//connections", "/v1/rooms/x", "/nope"] {
            assert!(Route::parse(missing).is_err(), "{missing}");
        }
        assert!(Route::parse("/v1/connections/%FF").is_err());
    }

    /// Methods follow the spec; queries decode like forms.
    #[test]
    fn methods_and_queries() {
        let route = Route::parse("/v1/channels/t/n/metadata").unwrap();
        assert!(route.allows(&Method::Patch) && !route.allows(&Method::Post));
        assert_eq!(
            query_value("a=1&actorUserId=ada+l%C3%BC", "actorUserId").as_deref(),
            Some("ada lü")
        );
        assert_eq!(query_value("a=1", "actorUserId"), None);
    }
}
