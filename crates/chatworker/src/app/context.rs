//! What a handler can do while it runs: reply now (a "working…" placeholder
//! before slow work, say), update or delete the app's own messages, and
//! reach the app's shared state.
//!
//! Every message sent through the context gets a deterministic `client-` ID
//! from the event and the send's position, so a redelivered event that sends
//! the same things in the same order creates nothing twice: Chat answers 409
//! and the context returns the message already there. Where the messages go
//! is the context's [`Outlet`]: the worker's (quota, retries, Chat) or a
//! test's ([`super::testing`]), which records them.

use crate::event::Event;
use crate::names::{ClientMessageId, MessageName, SpaceName};
use crate::reply::compose::{Content, Created, NewMessage, check_cards, compose};
use crate::reply::{Markup, Reply, SendError, Update};
use crate::store::{Key, Scope, StateError, Stored, Txn};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What an [`Outlet`] call comes to.
pub(crate) type OutletFuture<'a, T> = BoxFuture<'a, Result<T, SendError>>;

/// Where a context's messages go: the worker sends them to Chat (within the
/// quotas, with retries), a test records them. Object-safe, so that the
/// context, and with it every handler, knows neither.
pub(crate) trait Outlet: Send + Sync + 'static {
    /// Creates one message.
    fn create<'a>(&'a self, message: &'a NewMessage) -> OutletFuture<'a, Created>;
    /// Writes `content` over the app's message `name`.
    fn update<'a>(&'a self, name: &'a MessageName, content: &'a Content) -> OutletFuture<'a, ()>;
    /// Deletes the app's message `name`.
    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()>;
}

/// A message the context sent (or found already sent by an earlier
/// delivery of the same event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The message's name with its client-assigned ID,
    /// `spaces/S/messages/client-…`, usable to update or delete it.
    pub name: MessageName,
}

/// The handler's side of one event's processing, with the app's state `S`.
///
/// Cheap to clone; clones share the event, the position of the next message
/// and the state. A [`crate::App`] hands every handler a `Context<S>` with
/// the state given to [`crate::App::with_state`].
///
/// ```no_run
/// use chatworker::{Context, HandlerError, Message, Reply};
///
/// struct Jobs;
/// impl Jobs {
///     async fn run(&self, _what: &str) -> Result<String, HandlerError> {
///         Ok("done".into())
///     }
/// }
///
/// async fn build(ctx: Context<Jobs>, message: Message) -> Result<(), HandlerError> {
///     let working = ctx.placeholder("Working…").await?;
///     let result = ctx.state().run(message.argument()).await?;
///     ctx.update(&working.name, Reply::text(result)).await?;
///     Ok(())
/// }
/// ```
pub struct Context<S = ()> {
    inner: Arc<Inner>,
    state: Arc<S>,
}

struct Inner {
    outlet: Arc<dyn Outlet>,
    /// Where a placeholder goes: at once, even when `outlet` holds the
    /// event's other messages for its outbox.
    immediate: Option<Arc<dyn Outlet>>,
    /// The event's transaction: its state, and (through `outlet`) its
    /// outbox.
    txn: Option<Arc<Txn>>,
    event: Arc<Event>,
    identity: String,
    next: AtomicUsize,
    /// Calls made through the outlet: creates, updates and deletes.
    writes: AtomicUsize,
    markup: Markup,
}

impl<S> Clone for Context<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("event", &self.inner.event.kind.label())
            .field("space", &self.inner.event.space.name)
            .field("next", &self.position())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `event`, whose messages go to `outlet`; `identity` is
    /// what their IDs derive from.
    pub(crate) fn new(
        outlet: Arc<dyn Outlet>,
        event: Arc<Event>,
        identity: String,
        markup: Markup,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                outlet,
                immediate: None,
                txn: None,
                event,
                identity,
                next: AtomicUsize::new(0),
                writes: AtomicUsize::new(0),
                markup,
            }),
            state: Arc::new(()),
        }
    }
}

impl Context {
    /// The same context, its next message at position `n`. Only before the
    /// context is shared.
    pub(crate) fn starting_at(self, n: usize) -> Self {
        self.inner.next.store(n, Ordering::SeqCst);
        self
    }

    /// The same context with the event's transaction: state reads and
    /// writes go to it; `immediate` is where a placeholder goes (the
    /// context's outlet being the outbox). Only before the context is
    /// shared.
    pub(crate) fn with_txn(mut self, txn: Arc<Txn>, immediate: Option<Arc<dyn Outlet>>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("a context not yet shared");
        inner.txn = Some(txn);
        inner.immediate = immediate;
        self
    }
}

impl<S> Context<S> {
    /// Reads the state value `name` of `scope` (the app, the event's space,
    /// its thread, or the person who caused it) as a `T`, inside the
    /// event's transaction: what the handler sets is committed with its
    /// replies, once. See [`Stored`].
    pub async fn load<T: serde::de::DeserializeOwned>(
        &self,
        scope: Scope,
        name: &str,
    ) -> Result<Stored<T>, StateError> {
        let txn = self.inner.txn.as_ref().ok_or(StateError::NoStore)?;
        let event = &self.inner.event;
        let owner = match scope {
            Scope::App => String::new(),
            Scope::Space => event.space.name.to_string(),
            Scope::Thread => event
                .thread
                .as_ref()
                .map(ToString::to_string)
                .ok_or(StateError::NoOwner("thread"))?,
            Scope::User => event
                .sender()
                .and_then(|u| u.name.as_ref())
                .map(ToString::to_string)
                .ok_or(StateError::NoOwner("user"))?,
        };
        let key = Key {
            scope: scope.label(),
            owner,
            name: name.to_owned(),
        };
        txn.load(key).await
    }

    /// The event's idempotency key: the same on every delivery of the event
    /// (and in every process). Pass it to other services a handler calls,
    /// so that they too act once: the store covers only its own state and
    /// the app's Chat messages.
    pub fn idempotency_key(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.inner.identity.as_bytes());
        hex::encode(&digest[..16])
    }

    /// The same context carrying another state: how an [`crate::App`] gives
    /// its handlers their state.
    pub fn with_state<T>(&self, state: Arc<T>) -> Context<T> {
        Context {
            inner: self.inner.clone(),
            state,
        }
    }

    /// The app's shared state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The app's shared state, to move into a spawned task.
    pub fn state_arc(&self) -> Arc<S> {
        self.state.clone()
    }

    /// The event being handled.
    pub fn event(&self) -> &Event {
        &self.inner.event
    }

    /// How many messages were sent so far (the position the next one
    /// takes); replies returned by the handler continue from here.
    pub fn position(&self) -> usize {
        self.inner.next.load(Ordering::SeqCst)
    }

    /// Forgets the state the handler changed so far (its messages stay): a
    /// handler that failed leaves no partial state, even when the app's
    /// error hook then answers for it.
    pub(crate) fn drop_state_changes(&self) {
        if let Some(txn) = &self.inner.txn {
            txn.drop_writes();
        }
    }

    /// Whether the handler wrote anything through this context: created,
    /// updated or deleted a message.
    pub(crate) fn wrote(&self) -> bool {
        self.inner.writes.load(Ordering::SeqCst) > 0
    }

    /// Sends `reply` now (in the event's thread unless it says otherwise)
    /// and returns its name. Long text is split into several messages in
    /// one thread; the name is the first one's. A reply built with
    /// [`Reply::updating`] or [`Reply::in_place`] updates that message
    /// instead.
    pub async fn send(&self, reply: impl Into<Reply>) -> Result<Sent, SendError> {
        let reply = reply.into();
        if let Some(update) = &reply.update {
            let name = match update {
                Update::Message(name) => name.clone(),
                Update::EventMessage => self.event_message()?,
            };
            self.update(&name, reply).await?;
            return Ok(Sent { name });
        }
        let index = self.inner.next.fetch_add(1, Ordering::SeqCst);
        check_cards(&reply.cards)?;
        let inner = &self.inner;
        let messages = compose(&inner.event, reply, &inner.identity, index, inner.markup);
        let first = messages[0]
            .name()
            .ok_or_else(|| SendError::permanent("a composed message has no ID"))?;
        for message in &messages {
            inner.writes.fetch_add(1, Ordering::SeqCst);
            inner.outlet.create(message).await?;
        }
        Ok(Sent { name: first })
    }

    /// Sends a short text now, to be replaced later with
    /// [`Context::update`]: how an app answers at once and works after.
    ///
    /// The placeholder goes out at once, outside the event's transaction
    /// (its deterministic ID still keeps it once); everything else the
    /// handler sends waits for the commit.
    pub async fn placeholder(&self, text: impl Into<String>) -> Result<Sent, SendError> {
        let Some(immediate) = &self.inner.immediate else {
            return self.send(Reply::text(text)).await;
        };
        let index = self.inner.next.fetch_add(1, Ordering::SeqCst);
        let inner = &self.inner;
        let messages = compose(
            &inner.event,
            Reply::text(text),
            &inner.identity,
            index,
            inner.markup,
        );
        let first = messages[0]
            .name()
            .ok_or_else(|| SendError::permanent("a composed message has no ID"))?;
        for message in &messages {
            inner.writes.fetch_add(1, Ordering::SeqCst);
            immediate.create(message).await?;
        }
        Ok(Sent { name: first })
    }

    /// Sends `reply` to the person who caused the event only (a private
    /// message), in the event's thread.
    pub async fn send_privately(&self, reply: impl Into<Reply>) -> Result<Sent, SendError> {
        let user = self
            .event()
            .sender()
            .and_then(|u| u.name.clone())
            .ok_or_else(|| {
                SendError::permanent(
                    "a private message needs the event's user, and this event has none",
                )
            })?;
        self.send(reply.into().privately_to(user)).await
    }

    /// Writes `reply`'s text, cards and accessory buttons over the app's
    /// message `name`.
    pub async fn update(
        &self,
        name: &MessageName,
        reply: impl Into<Reply>,
    ) -> Result<(), SendError> {
        let reply = reply.into();
        check_cards(&reply.cards)?;
        let content = Content::of(reply, self.inner.markup);
        self.inner.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.outlet.update(name, &content).await
    }

    /// Deletes the app's message `name`; one already gone counts as deleted.
    pub async fn delete(&self, name: &MessageName) -> Result<(), SendError> {
        self.inner.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.outlet.delete(name).await
    }

    /// The name of the message with client ID `id` in `space` (the event's
    /// space when `None`), for [`Context::update`] and [`Context::delete`].
    pub fn message_name(&self, space: Option<&SpaceName>, id: &ClientMessageId) -> MessageName {
        let space = space.unwrap_or(&self.inner.event.space.name);
        MessageName::in_space(space, id)
    }

    /// The name of this event's message named `key` ([`Reply::with_key`])
    /// in the event's space, for [`Context::update`] and [`Context::delete`].
    pub fn message_name_for_key(&self, key: &str) -> MessageName {
        let id = crate::reply::ids::keyed_id(&self.inner.identity, key);
        MessageName::in_space(&self.inner.event.space.name, &id)
    }

    fn event_message(&self) -> Result<MessageName, SendError> {
        self.inner
            .event
            .message
            .as_ref()
            .and_then(|m| m.name.clone())
            .ok_or_else(|| {
                SendError::permanent(format!(
                    "Reply::in_place: this {} event is about no message",
                    self.inner.event.kind.label()
                ))
            })
    }
}
