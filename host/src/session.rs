//! One socket's session, whatever its transport: who it is (its verified token, or nobody
//! in particular in open mode), its presence binding, its rate limit, and the protocol's
//! per-socket rules.
//!
//! - A socket holds at most one presence connection; a second valid join replaces the
//!   first: the component creates the new connection, then removes the old one (its
//!   `leave` is announced before the new `join`). A refused join changes nothing.
//! - A socket heartbeats only the connection it holds.
//! - Metadata and lock requests act as the socket's user: its token's `sub`, or in open
//!   mode the user it joined as.
//! - A socket subscribes to at most `max_subscriptions` message channels; its ack carries
//!   the channel's seq (and, asked `since`, what came after it), and every later message
//!   is pushed in seq order (see `bus` for how nothing around the ack is lost).
//! - A socket whose client says goodbye (a Close frame, a Socket.IO disconnect) leaves as
//!   if it had sent `presence:leave`; one that just drops (network loss, missed pings) or
//!   that a shutting-down node closes keeps its connection, silently, for
//!   `ROSTER_RESUME_GRACE_MS`, so the client can `presence:resume` it on any node
//!   ([`Session::close`]). Its subscriptions end either way.
//! - A socket's token lasts until its `exp` (plus the leeway) unless `auth:refresh` brings a
//!   new one for the same user; then the socket leaves and is closed ([`Session::expiry`]).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::value::RawValue;

use crate::bus::CloseReason;
use crate::bus::{Binding, Peer};
use crate::hub::{Caller, Hub};
use crate::protocol::auth::Verified;
use crate::protocol::ops::{self, Components, Request};
use crate::protocol::{Ack, ApiError, JoinData, Reply, ResumeData};
use crate::runtime::bindings::types::{
    Action, ErrorCode, HeartbeatRequest, HistoryRequest, ResumeRequest, SnapshotRequest,
};

/// One socket's session.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    peer: Arc<Peer>,
    /// Requests per second (bursts of twice that); none when off.
    limiter: Option<DefaultDirectRateLimiter>,
    /// Who the socket is, and until when.
    identity: Verified,
    /// The message channels it subscribes to.
    channels: HashSet<String>,
    /// Its transport, for the request histograms.
    transport: crate::metrics::Transport,
}

impl Session {
    /// A session for `peer`, as `identity` (verified at the handshake, or the open
    /// principal).
    pub fn new(
        hub: Arc<Hub>,
        peer: Arc<Peer>,
        identity: Verified,
        transport: crate::metrics::Transport,
    ) -> Self {
        let limiter = NonZeroU32::new(hub.config().rate_limit_per_sec).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Session {
            hub,
            peer,
            limiter,
            identity,
            channels: HashSet::new(),
            transport,
        }
    }

    /// Calls as this socket's principal.
    fn caller(&self) -> Caller<'_> {
        self.hub.caller(self.identity.principal.clone())
    }

    /// The acting user this socket names: in open mode the user it joined as; with a
    /// token, none (the components act as the token's user).
    fn actor(&self) -> Option<String> {
        if self.identity.principal.verified {
            None
        } else {
            self.peer.binding().map(|binding| binding.user_id)
        }
    }

    /// When the socket's token runs out (its `exp` plus the leeway); none in open mode.
    pub fn expiry(&self) -> Option<tokio::time::Instant> {
        if !self.identity.principal.verified || self.identity.expires_at_ms == u64::MAX {
            return None;
        }
        let leeway = self.hub.verifier().map_or(0, |v| v.leeway_ms());
        let ends = self.identity.expires_at_ms.saturating_add(leeway);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Some(tokio::time::Instant::now() + Duration::from_millis(ends.saturating_sub(now)))
    }

    /// Handles one request.
    ///
    /// The work is boxed: component calls are large futures, and without the box every
    /// socket's task would reserve room for one for its whole life (~3.5 KiB of an idle
    /// socket's memory). One allocation per request costs far less than that.
    pub async fn handle(&mut self, event: &str, data: Option<&RawValue>) -> Reply {
        let started = std::time::Instant::now();
        let reply = Box::pin(self.dispatch(event, data)).await;
        self.hub.record_request(
            self.transport,
            event,
            started.elapsed(),
            reply.as_ref().err().map(|error| error.code),
        );
        reply
    }

    async fn dispatch(&mut self, event: &str, data: Option<&RawValue>) -> Reply {
        if self
            .limiter
            .as_ref()
            .is_some_and(|limiter| limiter.check().is_err())
        {
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
            Request::Resume(data) => self.resume(data).await,
            Request::Heartbeat(request) => self.heartbeat(request).await,
            Request::Leave { .. } => self.leave().await,
            Request::AuthRefresh { token } => self.refresh(&token),
            Request::MessageSubscribe { channel, since } => self.subscribe(channel, since).await,
            Request::MessageUnsubscribe { channel } => {
                if self.channels.remove(&channel) {
                    self.hub.bus.unsubscribe_channel(&channel, self.peer.id);
                }
                Ok(Ack::Done)
            }
            _ => {
                request.act_as(self.actor());
                ops::execute(request, &self.caller()).await
            }
        }
    }

    async fn join(&mut self, data: JoinData) -> Reply {
        let caller = self.caller();
        caller.authorize(Action::Join, &data.room_id).await?;
        let current = self.peer.binding();
        let room_id = data.room_id.clone();
        let user_id = data
            .user_id
            .clone()
            .or_else(|| self.identity.principal.user_id.clone())
            .unwrap_or_default();
        // (The component decides who the join is for; this is only the socket's record of
        // it, for the acting user of its metadata requests in open mode.)
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
            self.hub.bus.unbind(&current.conn_id, self.peer.id);
        }
        let replaces = current.as_ref().map(|b| b.conn_id.clone());
        let joined = match ops::join_request(data, replaces, &caller) {
            Ok(request) => {
                let (token, binding) = (request.resume_token.clone(), request.binding);
                caller
                    .join(request)
                    .await
                    .map(|joined| (joined, token, binding))
            }
            Err(error) => Err(error),
        };
        match joined {
            Ok((joined, resume_token, binding)) => {
                self.peer.set_binding(Some(Binding {
                    conn_id: joined.conn_id.clone(),
                    room_id: room_id.clone(),
                    user_id,
                    binding,
                    resume_token: resume_token.clone(),
                }));
                self.hub.bus.bind(&joined.conn_id, &self.peer);
                if let Some(old) = current.filter(|old| old.room_id != room_id) {
                    self.hub.bus.unsubscribe(&old.room_id, self.peer.id);
                }
                Ok(Ack::joined(joined, resume_token))
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

    /// `message:subscribe`: the socket's subscription is registered (pending) before the
    /// channel's seq is read, so a message published meanwhile is either in the history
    /// read or kept for the ack; from the ack's seq on, messages are pushed.
    async fn subscribe(&mut self, channel: String, since: Option<u64>) -> Reply {
        let caller = self.caller();
        caller.authorize(Action::Subscribe, &channel).await?;
        let already = self.channels.contains(&channel);
        let limit = self.hub.config().max_subscriptions;
        if !already && self.channels.len() >= limit {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("a socket subscribes to at most {limit} channels; unsubscribe first"),
            ));
        }
        if !already {
            self.hub
                .bus
                .subscribe_channel(&channel, &self.peer)
                .await
                .map_err(|why| {
                    ApiError::new(
                        ErrorCode::StoreUnavailable,
                        format!("cannot follow channel {channel:?}: {why}"),
                    )
                })?;
        }
        let request = HistoryRequest {
            channel: channel.clone(),
            since,
        };
        let history = match caller.history(request).await {
            Ok(history) => history,
            Err(error) => {
                if !already {
                    self.hub.bus.unsubscribe_channel(&channel, self.peer.id);
                }
                return Err(error);
            }
        };
        if already {
            return Ok(Ack::history(history, since.is_some()));
        }
        let (seq, early) = self.hub.bus.activate(&channel, self.peer.id, history.seq);
        self.channels.insert(channel);
        let mut ack = Ack::history(history, since.is_some());
        if let Ack::Subscribed {
            seq: acked,
            history,
            ..
        } = &mut ack
        {
            *acked = seq;
            if let Some((_, messages)) = history {
                messages.extend(early.iter().map(|message| message.data.clone()));
            }
        }
        Ok(ack)
    }

    /// `presence:resume`: takes over a connection (whose socket dropped, here or on another
    /// node) with its resume token; nothing is announced. The socket's own connection, if
    /// it held another, leaves.
    async fn resume(&mut self, data: ResumeData) -> Reply {
        let caller = self.caller();
        let current = self.peer.binding();
        if current.as_ref().is_some_and(|b| b.conn_id == data.conn_id) {
            return Err(ApiError::new(
                ErrorCode::InvalidPayload,
                format!("this socket already holds connection {:?}", data.conn_id),
            ));
        }
        let binding = caller.nonce()?;
        let request = ResumeRequest {
            conn_id: data.conn_id,
            resume_token: data.resume_token,
            epoch: data.epoch,
            binding,
        };
        let resumed = caller.resume(&request).await?;
        // Follow the room before reading it, so nothing after the snapshot is missed.
        let new_room = current
            .as_ref()
            .is_none_or(|b| b.room_id != resumed.room_id);
        if new_room {
            self.hub
                .bus
                .subscribe(&resumed.room_id, &self.peer)
                .await
                .map_err(|why| {
                    ApiError::new(
                        ErrorCode::StoreUnavailable,
                        format!("cannot follow room {:?}: {why}", resumed.room_id),
                    )
                })?;
        }
        if let Some(old) = &current {
            // The socket's previous connection leaves, as a join's would.
            self.hub.bus.unbind(&old.conn_id, self.peer.id);
            self.peer.set_binding(None);
            if let Err(error) = caller.leave_bound(&old.conn_id, old.binding).await {
                tracing::debug!(%error, "the connection a resume replaced did not leave");
            }
            if old.room_id != resumed.room_id {
                self.hub.bus.unsubscribe(&old.room_id, self.peer.id);
            }
        }
        self.peer.set_binding(Some(Binding {
            conn_id: resumed.conn_id.clone(),
            room_id: resumed.room_id.clone(),
            user_id: resumed.user_id.clone(),
            binding,
            resume_token: request.resume_token.clone(),
        }));
        self.hub.bus.bind(&resumed.conn_id, &self.peer);
        let page = caller
            .snapshot(SnapshotRequest {
                room_id: resumed.room_id.clone(),
                cursor: None,
                limit: None,
            })
            .await;
        let page = match page {
            Ok(page) => page,
            // Resumed all the same; the client pages the room from the start.
            Err(error) if error.code == ErrorCode::StoreUnavailable => {
                crate::runtime::bindings::types::SnapshotPage {
                    conns: Vec::new(),
                    next: Some(String::new()),
                }
            }
            Err(error) => return Err(error),
        };
        Ok(Ack::resumed(resumed, request.resume_token, page))
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
        match self.hub.coalesced_heartbeat(request).await {
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

    /// `auth:refresh`: a new token for the same user replaces the socket's (and its expiry).
    fn refresh(&mut self, token: &str) -> Reply {
        let Some(verifier) = self.hub.verifier() else {
            // Open mode: there is no token to replace.
            return Ok(Ack::Refreshed { expires_at: None });
        };
        let verified = verifier.verify(token)?;
        if verified.principal.user_id != self.identity.principal.user_id {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the new token is another user's; a socket keeps its user",
            ));
        }
        let expires_at = verified.expires_at_ms;
        self.identity = verified;
        Ok(Ack::Refreshed {
            expires_at: Some(expires_at),
        })
    }

    fn unbind(&self, binding: &Binding) {
        if self.peer.binding().as_ref() == Some(binding) {
            self.peer.set_binding(None);
        }
        self.hub.bus.unbind(&binding.conn_id, self.peer.id);
        self.hub.bus.unsubscribe(&binding.room_id, self.peer.id);
    }

    /// Leaves the connection this socket holds, if any (and if it is still this socket's:
    /// a connection another socket resumed stays). The socket stays subscribed until the
    /// call returns, so it sees its own `leave`.
    async fn leave_current(
        &mut self,
    ) -> Option<Result<crate::runtime::bindings::types::Left, ApiError>> {
        let binding = self.peer.set_binding(None)?;
        self.hub.bus.unbind(&binding.conn_id, self.peer.id);
        let result = self
            .hub
            .as_host()
            .leave_bound(&binding.conn_id, binding.binding)
            .await;
        self.hub.bus.unsubscribe(&binding.room_id, self.peer.id);
        Some(result)
    }

    /// Whether the socket's end keeps its connection for a resume: the client did not say
    /// goodbye (its network dropped, it stopped answering pings) or the node is shutting
    /// down, and the grace is on. A socket the server throws out for its behaviour (a slow
    /// reader, a frame too large, an expired token) leaves at once.
    fn keeps_connection(&self) -> bool {
        if self.hub.config().resume_grace_ms == 0 {
            return false;
        }
        match self.peer.close_reason() {
            Some(CloseReason::Shutdown | CloseReason::Idle) => true,
            Some(CloseReason::SlowReader | CloseReason::TooLarge | CloseReason::Expired) => false,
            None => !self.peer.left_cleanly(),
        }
    }

    /// Detaches the connection this socket holds: it stays for the resume grace.
    async fn detach_current(&mut self) {
        let Some(binding) = self.peer.set_binding(None) else {
            return;
        };
        self.hub.bus.unbind(&binding.conn_id, self.peer.id);
        self.hub.bus.unsubscribe(&binding.room_id, self.peer.id);
        if let Err(error) = self
            .hub
            .as_host()
            .detach(&binding.conn_id, binding.binding)
            .await
        {
            // It stays until its TTL runs out, and is reaped then.
            tracing::info!(%error, conn_id = %binding.conn_id, "could not detach a dropped socket's connection; it leaves at its TTL");
        }
    }

    /// The socket went away or is being closed: its subscriptions end, and its connection
    /// leaves (a goodbye, or a close for cause) or waits for a resume (a drop, a shutdown).
    pub async fn close(&mut self) {
        for channel in self.channels.drain() {
            self.hub.bus.unsubscribe_channel(&channel, self.peer.id);
        }
        if self.keeps_connection() {
            Box::pin(self.detach_current()).await;
            return;
        }
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
