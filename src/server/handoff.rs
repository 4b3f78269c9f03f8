//! Handing a conversation to a person: `POST /v1/conversations/{id}/handoff`, agents'
//! replies (`POST /v1/conversations/{id}/messages`), and the live feed of a conversation's
//! new messages and state (`GET /v1/conversations/{id}/events`, Server-Sent Events).
//!
//! Feeds are bounded: a public caller may hold a few open per visitor and per client
//! address (429 beyond), and a feed ends, with a last `end` event, when its conversation
//! is erased, its key is revoked or expires, or its widget session expires.
//!
//! The feed is fed in-process (`Live`) after each commit; each message event carries its
//! position in the conversation as the SSE `id`, and a client that reconnects with
//! `Last-Event-ID` (EventSource does this itself) first gets what it missed from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AppState;
use super::api::{blocking, load_conversation, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
#[allow(unused_imports)]
use super::openapi::*;
use super::sse::{self, HEARTBEAT, Heartbeat, KEEP_ALIVE};
use super::views::{ConversationView, MessageView};
use crate::domain::{Conversation, ConversationState, Message};
use crate::ports::{ConversationStore, Notice, Notices, TurnExtras};
use crate::telemetry::unix_now;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/conversations/{id}/handoff", "POST").route(web::post().to(handoff)))
        .service(
            resource("/v1/conversations/{id}/messages", "POST")
                .route(web::post().to(agent_message)),
        )
        .service(resource("/v1/conversations/{id}/events", "GET").route(web::get().to(events)))
        .service(resource("/v1/conversations/{id}/resume", "POST").route(web::post().to(resume)))
        .service(resource("/v1/conversations/{id}/close", "POST").route(web::post().to(close)));
}

/// One live update of a conversation: SSE `id` (message position) and its data.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub id: Option<u32>,
    pub data: LiveData,
}

/// What a feed's `data:` carries, by its `event`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveData {
    /// A message stored at position `id`.
    Message { message: MessageView },
    /// The conversation's state (first on every feed, then on each change).
    State {
        state: ConversationState,
        handoff_reason: Option<String>,
    },
    /// The feed ends: `conversation_erased`, `key_revoked`, `session_expired` or
    /// `server_stopping`.
    End { reason: String },
}

impl LiveEvent {
    fn message(position: u32, message: &Message) -> LiveEvent {
        LiveEvent {
            id: Some(position),
            data: LiveData::Message {
                message: MessageView::from(message),
            },
        }
    }

    fn state(conversation: &Conversation) -> LiveEvent {
        LiveEvent {
            id: None,
            data: LiveData::State {
                state: conversation.state,
                handoff_reason: conversation.handoff_reason.clone(),
            },
        }
    }

    fn end(reason: &str) -> LiveEvent {
        LiveEvent {
            id: None,
            data: LiveData::End {
                reason: reason.to_string(),
            },
        }
    }
}

/// Subscribers to conversations' live feeds, by conversation id, and how many feeds each
/// public caller and client address holds open.
/// With a store other nodes share, what happens here is also told to them
/// (`Notices`), and what they tell is passed on to this node's feeds (`receive`), so a
/// visitor's feed hears an agent's reply whichever node stored it.
#[derive(Default)]
pub struct Live {
    channels: Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>,
    open: Arc<Mutex<HashMap<String, usize>>>,
    notices: Option<Arc<dyn Notices>>,
}

/// A public caller's places among the open feeds (its visitor's and its address's), given
/// back when the feed ends.
pub struct FeedSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
    held: Vec<String>,
}

impl Drop for FeedSlots {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("live lock");
        for key in &self.held {
            if let Some(n) = open.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(key);
                }
            }
        }
    }
}

impl Live {
    /// Feeds that also tell, and hear, the other nodes through `notices`.
    pub fn new(notices: Option<Arc<dyn Notices>>) -> Live {
        Live {
            notices,
            ..Live::default()
        }
    }

    /// Tells the other nodes (best effort: a feed there misses it if this fails).
    fn tell(&self, notice: Notice) {
        if let Some(notices) = &self.notices
            && let Err(e) = notices.send(&notice)
        {
            tracing::warn!("cannot tell the other nodes of a conversation's change: {e:#}");
        }
    }

    /// Passes another node's notice on to this node's feeds of that conversation; reads
    /// the messages it names from `store`.
    pub fn receive(&self, notice: Notice, store: &dyn ConversationStore) {
        match notice {
            Notice::Appended {
                conversation,
                first,
                count,
            } => {
                if !self.has_feeds(&conversation) {
                    return;
                }
                let messages = match store.messages(&conversation) {
                    Ok(messages) => messages,
                    Err(e) => {
                        tracing::warn!("cannot read messages another node stored: {e:#}");
                        return;
                    }
                };
                let stored = messages.iter().enumerate().skip(first as usize);
                for (position, message) in stored.take(count as usize) {
                    let event = LiveEvent::message(position as u32, message);
                    self.publish(&conversation, event);
                }
            }
            Notice::State {
                conversation,
                state,
                handoff_reason,
            } => {
                let event = LiveEvent {
                    id: None,
                    data: LiveData::State {
                        state,
                        handoff_reason,
                    },
                };
                self.publish(&conversation, event);
            }
            Notice::Ended {
                conversations,
                reason,
            } => {
                for conversation in &conversations {
                    self.end_here(conversation, &reason);
                }
            }
        }
    }

    fn has_feeds(&self, conversation: &str) -> bool {
        let channels = self.channels.lock().expect("live lock");
        channels
            .get(conversation)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Takes a place under each `(counter, cap)`, all or none; 429 `too_many_feeds` when
    /// one is full.
    pub fn take_slots(&self, wanted: &[(String, usize)]) -> ApiResult<FeedSlots> {
        let mut open = self.open.lock().expect("live lock");
        if let Some((_, cap)) = wanted
            .iter()
            .find(|(key, cap)| open.get(key).is_some_and(|n| n >= cap))
        {
            let mut error = ApiError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_feeds",
                format!("{cap} live feeds are open from here already; close one first"),
            );
            error.retry_after = Some(5);
            return Err(error);
        }
        for (key, _) in wanted {
            *open.entry(key.clone()).or_default() += 1;
        }
        Ok(FeedSlots {
            open: self.open.clone(),
            held: wanted.iter().map(|(key, _)| key.clone()).collect(),
        })
    }

    /// Ends conversations' feeds with a last `end` event (they were erased), on every
    /// node (told in batches that fit a notice).
    pub fn end(&self, conversations: &[String], reason: &str) {
        for conversation in conversations {
            self.end_here(conversation, reason);
        }
        for batch in conversations.chunks(100) {
            self.tell(Notice::Ended {
                conversations: batch.to_vec(),
                reason: reason.to_string(),
            });
        }
    }

    fn end_here(&self, conversation: &str, reason: &str) {
        let sender = self
            .channels
            .lock()
            .expect("live lock")
            .remove(conversation);
        if let Some(sender) = sender {
            let _ = sender.send(LiveEvent::end(reason));
        }
    }

    pub fn subscribe(&self, conversation: &str) -> broadcast::Receiver<LiveEvent> {
        let mut channels = self.channels.lock().expect("live lock");
        channels
            .entry(conversation.to_string())
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }

    fn publish(&self, conversation: &str, event: LiveEvent) {
        let mut channels = self.channels.lock().expect("live lock");
        if let Some(sender) = channels.get(conversation) {
            if sender.receiver_count() == 0 {
                channels.remove(conversation);
            } else {
                let _ = sender.send(event);
            }
        }
    }

    /// Announces the messages a turn just stored, on every node.
    pub fn publish_appended(&self, appended: &crate::ports::Appended) {
        let conversation = appended.conversation.id.as_str();
        for (i, message) in appended.messages.iter().enumerate() {
            let position = appended.first_position + i as u32;
            self.publish(conversation, LiveEvent::message(position, message));
        }
        if !appended.messages.is_empty() {
            self.tell(Notice::Appended {
                conversation: conversation.to_string(),
                first: appended.first_position,
                count: appended.messages.len() as u32,
            });
        }
    }

    /// Forgets a conversation's channel once nobody listens (a feed ended).
    pub fn release(&self, conversation: &str) {
        let mut channels = self.channels.lock().expect("live lock");
        if channels
            .get(conversation)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(conversation);
        }
    }

    /// Announces a conversation's new state, on every node.
    pub fn publish_state(&self, conversation: &Conversation) {
        self.publish(&conversation.id, LiveEvent::state(conversation));
        self.tell(Notice::State {
            conversation: conversation.id.clone(),
            state: conversation.state,
            handoff_reason: conversation.handoff_reason.clone(),
        });
    }
}

/// The chat turn's stored messages and handoffs reach the conversation's feeds.
impl crate::services::turn::TurnListener for Live {
    fn appended(&self, appended: &crate::ports::Appended) {
        self.publish_appended(appended);
    }

    fn state_changed(&self, conversation: &Conversation) {
        self.publish_state(conversation);
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandoffRequest {
    /// Why (up to 200 characters); `api` when absent.
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// Marks a conversation handed off and tells its live feed. Idempotent: a conversation
/// already handed off (also by a request racing this one) keeps its first handoff, and
/// only that one is announced (`conversation.handoff`).
async fn hand_off(
    state: &AppState,
    mut conversation: Conversation,
    reason: String,
) -> ApiResult<Conversation> {
    if !conversation.hand_off(&reason, unix_now()) {
        return Ok(conversation);
    }
    let ours = conversation.clone();
    let appended = state
        .stored(move |store| store.append_turn(&conversation, &[], TurnExtras::default()))
        .await?;
    // A racing handoff that landed first keeps its own; only the one that stood is told.
    let stood = &appended.conversation;
    if stood.handed_off_at == ours.handed_off_at && stood.handoff_reason == ours.handoff_reason {
        state.live.publish_state(stood);
    }
    Ok(appended.conversation)
}

#[utoipa::path(post, path = "/v1/conversations/{id}/handoff", tag = "conversations", summary = "Hand a conversation to a person (the bot stops answering it)", request_body = Option<HandoffRequest>, params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 200, description = "The conversation, now handed_off", body = ConversationView), ApiErrors))]
pub(crate) async fn handoff(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body: Option<HandoffRequest> =
        super::error::optional_json(&body, state.limits.max_body_bytes)?;
    let conversation = load_conversation(&state, &caller, &path).await?;
    let reason = match body.and_then(|b| b.reason) {
        Some(reason) => {
            let reason = reason.trim().to_string();
            if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "reason must be up to 200 printable characters",
                ));
            }
            reason
        }
        None => String::new(),
    };
    let reason = if reason.is_empty() {
        "api".into()
    } else {
        reason
    };
    // A conversation has one pending handoff: asking again answers with it, free.
    if !conversation.handed_off() {
        super::chat::charge_budgets(&state, &caller, &conversation.bot_id)?;
    }
    let conversation = hand_off(&state, conversation, reason).await?;
    Ok(HttpResponse::Ok().json(ConversationView::new(&conversation, None)))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/resume", tag = "conversations", summary = "Hand a conversation back to the bot (secret keys, agents)", params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 200, description = "The conversation, now open", body = ConversationView), ApiErrors))]
pub(crate) async fn resume(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    release(&state, &caller, &path, ConversationState::Open).await
}

#[utoipa::path(post, path = "/v1/conversations/{id}/close", tag = "conversations", summary = "Close a handed-off conversation (secret keys, agents): the person is done, and the bot answers what comes next", params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 200, description = "The conversation, now closed", body = ConversationView), ApiErrors))]
pub(crate) async fn close(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    release(&state, &caller, &path, ConversationState::Closed).await
}

/// Takes a conversation from a person (`resume`, `close`); 409 `not_handed_off` when no
/// person has it. Its live feeds get the new state.
async fn release(
    state: &AppState,
    caller: &Caller,
    id: &str,
    to: ConversationState,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let conversation = load_conversation(state, caller, id).await?;
    let id = conversation.id.clone();
    let (stored, changed) = state
        .stored(move |store| store.release_conversation(&id, to, unix_now()))
        .await?;
    if !changed {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "not_handed_off",
            format!(
                "conversation {:?} is {}: only a handed-off one can be given back or closed",
                stored.id,
                stored.state.as_str()
            ),
        ));
    }
    state.live.publish_state(&stored);
    Ok(HttpResponse::Ok().json(ConversationView::new(&stored, None)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentMessage {
    /// `agent`: a person's reply to the visitor.
    #[schema(required = true, value_type = String, pattern = "^agent$")]
    role: Option<String>,
    #[schema(required = true, value_type = String, min_length = 1, max_length = 4000, pattern = "\\S")]
    content: Option<String>,
    /// Who wrote it, as the visitor should see it (up to 100 characters).
    #[schema(max_length = 100)]
    author: Option<String>,
}

#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations", summary = "An agent's reply (secret keys); the conversation becomes handed_off", request_body = AgentMessage, params(("id" = String, Path, description = "Conversation id")), security(("bearer" = [])), responses((status = 201, description = "Stored and sent to the conversation's live feed", body = MessageView), ApiErrors))]
pub(crate) async fn agent_message(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<AgentMessage>,
) -> ApiResult<HttpResponse> {
    caller.require_secret()?;
    let body = body.into_inner();
    match body.role.as_deref() {
        Some("agent") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("role {other:?}: agents post role `agent`"),
            ));
        }
        None => return Err(ApiError::bad_request("missing_field", "role is required")),
    }
    let content = body
        .content
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "content is required"))?;
    let limit = state.limits.max_message_chars;
    if content.chars().count() > limit {
        return Err(ApiError::bad_request(
            "message_too_long",
            format!("the message is longer than {limit} characters"),
        ));
    }
    let author = body
        .author
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    if author
        .as_ref()
        .is_some_and(|a| a.chars().count() > 100 || a.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "author must be up to 100 printable characters",
        ));
    }
    let conversation = load_conversation(&state, &caller, &path).await?;
    // A person answering takes the conversation over.
    let mut conversation = hand_off(&state, conversation, "agent".into()).await?;
    conversation.updated = unix_now();
    let message = Message {
        id: crate::ids::message(),
        role: crate::domain::Role::Agent,
        content,
        created: unix_now(),
        author,
        ..Message::default()
    };
    let (stored, written) = (conversation.clone(), message.clone());
    let appended = state
        .stored(move |store| store.append_turn(&stored, &[written], TurnExtras::default()))
        .await?;
    state.live.publish_appended(&appended);
    Ok(HttpResponse::Created().json(MessageView::from(&message)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// A public key or widget session token, for clients that cannot send headers
    /// (EventSource).
    #[allow(dead_code)]
    access_token: Option<String>,
    /// Replay stored messages after this position (as `Last-Event-ID` does).
    after: Option<u32>,
}

#[utoipa::path(get, path = "/v1/conversations/{id}/events", tag = "conversations", summary = "Live feed of a conversation's new messages (agent replies) and state, as Server-Sent Events", params(("id" = String, Path, description = "Conversation id"), EventsQuery), security(("bearer" = [])), responses((status = 200, description = "text/event-stream: `id:` message position, `data:` {\"event\": \"message\" | \"state\", ...}", content((SseEvent = "text/event-stream"))), ApiErrors))]
pub(crate) async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let conversation = load_conversation(&state, &caller, &path).await?;
    let slots = feed_slots(&state, &caller)?;
    let after = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .or(query.after);
    // Subscribe first, then read the store: nothing falls between the two. The
    // conversation is read again: if it was erased before the subscription, no `end` will
    // come to this channel.
    let mut subscription = Subscription::new(state.clone(), &conversation.id);
    let store = state.store.clone();
    let id = conversation.id.clone();
    let stored = blocking(move || {
        store.get_conversation(&id)?;
        Ok(store.messages(&id)?)
    })
    .await?;
    let mut backlog: Vec<Bytes> = Vec::new();
    let mut last = after;
    if let Some(after) = after {
        for (position, message) in stored.iter().enumerate().skip(after as usize + 1) {
            backlog.push(frame(&LiveEvent::message(position as u32, message)));
            last = Some(position as u32);
        }
    } else {
        last = (stored.len() as u32).checked_sub(1);
    }
    backlog.insert(0, frame(&LiveEvent::state(&conversation)));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let shared = state.clone();
    actix_web::rt::spawn(async move {
        let _slots = slots;
        let id = conversation.id.clone();
        let feed = Feed {
            state: &shared,
            caller: &caller,
            conversation: &id,
        };
        feed.run(backlog, subscription.receiver(), last, tx).await;
    });
    Ok(sse::response(rx, Heartbeat::Producer))
}

/// A feed's place on its conversation's channel. When it goes (the feed ended, or the
/// request was given up before the feed began), so does the channel, if nobody else
/// listens.
struct Subscription {
    /// Always present until dropped.
    receiver: Option<broadcast::Receiver<LiveEvent>>,
    state: web::Data<AppState>,
    conversation: String,
}

impl Subscription {
    fn new(state: web::Data<AppState>, conversation: &str) -> Subscription {
        Subscription {
            receiver: Some(state.live.subscribe(conversation)),
            state,
            conversation: conversation.to_string(),
        }
    }

    fn receiver(&mut self) -> &mut broadcast::Receiver<LiveEvent> {
        self.receiver.as_mut().expect("present until dropped")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The receiver still counts as a listener: release once it is gone.
        self.receiver = None;
        self.state.live.release(&self.conversation);
    }
}

/// A public caller's places among the open feeds: one per visitor (a widget session's, or
/// a bare public key's client) and one per client address. Secret keys (agents) take none.
fn feed_slots(state: &AppState, caller: &Caller) -> ApiResult<Option<FeedSlots>> {
    if caller.key.kind != crate::keys::KeyKind::Public {
        return Ok(None);
    }
    let visitor = match &caller.visitor {
        Some(visitor) => format!("visitor:{}#{visitor}", caller.key.id),
        None => format!("visitor:{}", caller.tenant),
    };
    let address = caller.tenant.rsplit('@').next().unwrap_or_default();
    let limits = &state.limits;
    state
        .live
        .take_slots(&[
            (visitor, limits.max_feeds_per_visitor),
            (format!("address:{address}"), limits.max_feeds_per_address),
        ])
        .map(Some)
}

/// The `end` reason of feeds open on a node that stops: reconnect (to another node).
const SERVER_STOPPING: &str = "server_stopping";

/// One open feed: what it watches and who watches it.
struct Feed<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    conversation: &'a str,
}

impl Feed<'_> {
    /// Sends the backlog, then live events in message order until the client leaves, the
    /// conversation is erased, or what authorised the feed (its key, its session) ends: then
    /// a last `end` event says why. Two turns committed close together can be announced out
    /// of order; a message that arrives past a gap first brings the missing ones from the
    /// store.
    async fn run(
        &self,
        backlog: Vec<Bytes>,
        live: &mut broadcast::Receiver<LiveEvent>,
        mut last: Option<u32>,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) {
        let mut key_changes = self.state.keys.changes();
        let mut stopping = self.state.stopping.subscribe();
        // Revoked between authentication and the line above: no change would come.
        if let Err(reason) = super::sessions::still_valid(self.state, self.caller, unix_now()) {
            let _ = send(&tx, frame(&LiveEvent::end(reason))).await;
            return;
        }
        if *stopping.borrow_and_update() {
            let _ = send(&tx, frame(&LiveEvent::end(SERVER_STOPPING))).await;
            return;
        }
        for bytes in backlog {
            if !send(&tx, bytes).await {
                return;
            }
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            let mut out = Vec::new();
            let mut ended = false;
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) => {
                        ended = matches!(event.data, LiveData::End { .. });
                        if let Some(id) = event.id {
                            if last.is_some_and(|seen| id <= seen) {
                                continue;
                            }
                            let expected = last.map_or(0, |seen| seen + 1);
                            if id > expected {
                                out.extend(self.missed(expected, id).await);
                            }
                            last = Some(id);
                        }
                        out.push(frame(&event));
                    }
                    // Fell behind: the client reconnects and replays from the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = key_changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Err(reason) = super::sessions::still_valid(self.state, self.caller, unix_now()) {
                        out.push(frame(&LiveEvent::end(reason)));
                        ended = true;
                    }
                }
                () = self.expiry() => {
                    let reason = super::sessions::still_valid(self.state, self.caller, unix_now())
                        .err()
                        .unwrap_or("key_revoked");
                    out.push(frame(&LiveEvent::end(reason)));
                    ended = true;
                }
                // The node is stopping (or its state is gone): nothing more will come.
                _ = stopping.changed() => {
                    out.push(frame(&LiveEvent::end(SERVER_STOPPING)));
                    ended = true;
                }
                _ = heartbeat.tick() => out.push(Bytes::from_static(KEEP_ALIVE)),
                _ = tx.closed() => return,
            }
            for bytes in out {
                if !send(&tx, bytes).await {
                    return;
                }
            }
            if ended {
                return;
            }
        }
    }

    /// Sleeps until the caller's session or rotated key expires (forever if neither does).
    async fn expiry(&self) {
        match self.caller.valid_until(&self.state.keys) {
            Some(until) => {
                let wait = until.saturating_sub(unix_now());
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Stored messages `from..to` (positions), for a gap in the live events.
    async fn missed(&self, from: u32, to: u32) -> Vec<Bytes> {
        let store = self.state.store.clone();
        let owned = self.conversation.to_string();
        let stored = tokio::task::spawn_blocking(move || store.messages(&owned))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        stored
            .iter()
            .enumerate()
            .take(to as usize)
            .skip(from as usize)
            .map(|(position, message)| frame(&LiveEvent::message(position as u32, message)))
            .collect()
    }
}

/// Hands bytes to the client's stream; false when the client left or stopped reading for
/// two heartbeats (a feed nobody reads must not hold its place, or miss its end).
async fn send(tx: &tokio::sync::mpsc::Sender<Bytes>, bytes: Bytes) -> bool {
    matches!(
        tokio::time::timeout(2 * HEARTBEAT, tx.send(bytes)).await,
        Ok(Ok(()))
    )
}

fn frame(event: &LiveEvent) -> Bytes {
    sse::with_id(event.id, &event.data)
}
