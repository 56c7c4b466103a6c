//! One socket's session, whatever its transport: its presence binding, its acting user,
//! its rate limit, and the protocol's per-socket rules.
//!
//! - A socket holds at most one presence connection; a second valid join replaces the
//!   first: the component creates the new connection, then removes the old one (its
//!   `leave` is announced before the new `join`). A refused join changes nothing.
//! - A socket heartbeats only the connection it holds.
//! - Metadata and lock requests act as the user the socket joined as.
//! - A socket that goes away leaves as if it had sent `presence:leave` ([`Session::close`]).

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use crate::bus::{Binding, Peer};
use crate::hub::Hub;
use crate::protocol::ops::{self, Components, Request};
use crate::protocol::{Ack, ApiError, JoinData, Reply};
use crate::runtime::bindings::types::{ErrorCode, HeartbeatRequest};

/// A token bucket: `rate` requests per second, bursts of twice that.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate_per_sec: u32) -> Self {
        let rate = f64::from(rate_per_sec);
        RateLimiter {
            rate,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One socket's session.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    peer: Arc<Peer>,
    limiter: RateLimiter,
}

impl Session {
    /// A session for `peer`.
    pub fn new(hub: Arc<Hub>, peer: Arc<Peer>) -> Self {
        let limiter = RateLimiter::new(hub.config().rate_limit_per_sec);
        Session { hub, peer, limiter }
    }

    /// The acting user: the one this socket joined as.
    fn actor(&self) -> Option<String> {
        self.peer.binding().map(|binding| binding.user_id)
    }

    /// Handles one request.
    ///
    /// The work is boxed: component calls are large futures, and without the box every
    /// socket's task would reserve room for one for its whole life (~3.5 KiB of an idle
    /// socket's memory). One allocation per request costs far less than that.
    pub async fn handle(&mut self, event: &str, data: Option<&RawValue>) -> Reply {
        Box::pin(self.dispatch(event, data)).await
    }

    async fn dispatch(&mut self, event: &str, data: Option<&RawValue>) -> Reply {
        if !self.limiter.allow() {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} requests per second on this socket; slow down",
                    self.hub.config().rate_limit_per_sec
                ),
            ));
        }
        let (_, mut request) = Request::from_event(event, data)?;
        // The socket's own rules; everything else runs as the table says.
        match request {
            Request::Join { data, .. } => self.join(data).await,
            Request::Heartbeat(request) => self.heartbeat(request).await,
            Request::Leave { .. } => self.leave().await,
            _ => {
                request.act_as(self.actor());
                ops::execute(request, &*self.hub).await
            }
        }
    }

    async fn join(&mut self, data: JoinData) -> Reply {
        let current = self.peer.binding();
        let room_id = data.room_id.clone();
        let user_id = data.user_id.clone();
        let new_room = current.as_ref().is_none_or(|b| b.room_id != room_id);
        // Subscribe first, so the joiner sees its own `join` like everyone else (and, with
        // other nodes, so their events for the room already flow when the join lands).
        if new_room {
            self.hub
                .bus
                .subscribe(&room_id, &self.peer)
                .await
                .map_err(|why| {
                    ApiError::new(
                        ErrorCode::StoreUnavailable,
                        format!("cannot follow room {room_id:?}: {why}"),
                    )
                })?;
        }
        // The replaced connection's `leave` is published during the call: unhook it first
        // so the bus does not unsubscribe this socket from a room it stays in.
        if let Some(current) = &current {
            self.hub.bus.unbind(&current.conn_id);
        }
        let replaces = current.as_ref().map(|b| b.conn_id.clone());
        let joined = match ops::join_request(data, replaces, &*self.hub) {
            Ok(request) => self.hub.join(request).await,
            Err(error) => Err(error),
        };
        match joined {
            Ok(joined) => {
                self.peer.set_binding(Some(Binding {
                    conn_id: joined.conn_id.clone(),
                    room_id: room_id.clone(),
                    user_id,
                }));
                self.hub.bus.bind(&joined.conn_id, &self.peer);
                if let Some(old) = current.filter(|old| old.room_id != room_id) {
                    self.hub.bus.unsubscribe(&old.room_id, self.peer.id);
                }
                Ok(Ack::joined(joined))
            }
            Err(error) => {
                // Nothing changed: the socket keeps its connection and its room.
                if let Some(current) = &current {
                    self.hub.bus.bind(&current.conn_id, &self.peer);
                }
                if new_room {
                    self.hub.bus.unsubscribe(&room_id, self.peer.id);
                }
                Err(error)
            }
        }
    }

    async fn heartbeat(&mut self, request: HeartbeatRequest) -> Reply {
        let Some(binding) = self.peer.binding().filter(|b| b.conn_id == request.conn_id) else {
            return Err(ApiError::new(
                ErrorCode::UnknownConnection,
                format!(
                    "connection {:?} is not held by this socket; join first",
                    request.conn_id
                ),
            ));
        };
        match self.hub.heartbeat(request).await {
            Ok(ok) => Ok(Ack::Heartbeat {
                changed: ok.changed,
            }),
            Err(error) => {
                if error.code == ErrorCode::UnknownConnection {
                    // Expired or reaped: this socket no longer holds it and may join again.
                    self.unbind(&binding);
                }
                Err(error)
            }
        }
    }

    async fn leave(&mut self) -> Reply {
        match self.leave_current().await {
            Some(result) => result.map(|_| Ack::Done),
            None => Err(ApiError::new(
                ErrorCode::UnknownConnection,
                "this socket holds no presence connection; join first",
            )),
        }
    }

    fn unbind(&self, binding: &Binding) {
        if self.peer.binding().as_ref() == Some(binding) {
            self.peer.set_binding(None);
        }
        self.hub.bus.unbind(&binding.conn_id);
        self.hub.bus.unsubscribe(&binding.room_id, self.peer.id);
    }

    /// Leaves the connection this socket holds, if any. The socket stays subscribed until
    /// the call returns, so it sees its own `leave`.
    async fn leave_current(
        &mut self,
    ) -> Option<Result<crate::runtime::bindings::types::Left, ApiError>> {
        let binding = self.peer.set_binding(None)?;
        self.hub.bus.unbind(&binding.conn_id);
        let result = self.hub.leave(&binding.conn_id).await;
        self.hub.bus.unsubscribe(&binding.room_id, self.peer.id);
        Some(result)
    }

    /// The socket went away (or is being closed): leave as if it had said so.
    pub async fn close(&mut self) {
        let conn_id = self.peer.binding().map(|binding| binding.conn_id);
        // Boxed for the reason `handle` is.
        match Box::pin(self.leave_current()).await {
            Some(Err(error)) if error.code == ErrorCode::StoreUnavailable => {
                if let Some(conn_id) = conn_id {
                    tracing::info!(%conn_id, "the store is unavailable; the leave will be retried");
                    self.hub.defer_leave(conn_id);
                }
            }
            Some(Err(error)) if error.code != ErrorCode::UnknownConnection => {
                tracing::warn!(%error, "could not announce the leave of a closed socket; the reaper will");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket allows bursts of twice the rate, then refuses; zero means unlimited.
    #[test]
    fn rate_limiter() {
        let mut limiter = RateLimiter::new(5);
        let allowed = (0..20).filter(|_| limiter.allow()).count();
        assert_eq!(allowed, 10);
        let mut unlimited = RateLimiter::new(0);
        assert!((0..1000).all(|_| unlimited.allow()));
    }
}
