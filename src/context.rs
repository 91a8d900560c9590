//! What a handler can do while it runs: reply now (a "working…" placeholder
//! before slow work, say), update or delete the app's own messages, and
//! reach the app's shared state.
//!
//! Every message sent through the context gets a deterministic `client-` ID
//! from the event and the send's position, so a redelivered event that sends
//! the same things in the same order creates nothing twice: Chat answers 409
//! and the context returns the message already there. Every write waits for
//! a slot in the per-space and per-project write quotas.

use crate::chat::{Content, Created, NewMessage, SendError};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::names::{ClientMessageId, MessageName, SpaceName};
use crate::reply::{Markup, Reply, Update};
use crate::sender::Sender;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
///     let result = ctx.state().run(&message.text).await?;
///     ctx.update(&working.name, Reply::text(result)).await?;
///     Ok(())
/// }
/// ```
pub struct Context<S = ()> {
    inner: Arc<Inner>,
    state: Arc<S>,
}

struct Inner {
    /// `None`: a context for tests, which sends nothing.
    sender: Option<Arc<Sender>>,
    event: Arc<Event>,
    identity: String,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
    markup: Markup,
    skipped: Mutex<Option<&'static str>>,
    /// When Pub/Sub received the event, for the reply latency metric;
    /// taken (once) by the first message created.
    published: Mutex<Option<std::time::SystemTime>>,
    /// When the worker received the event, for the handling latency metric;
    /// taken (once) by the first Chat request.
    received: Mutex<Option<std::time::Instant>>,
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
    pub(crate) fn new(
        sender: Arc<Sender>,
        event: Arc<Event>,
        identity: String,
        metrics: Arc<Metrics>,
        markup: Markup,
        published: Option<std::time::SystemTime>,
        received: Option<std::time::Instant>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sender: Some(sender),
                event,
                identity,
                next: AtomicUsize::new(0),
                metrics,
                markup,
                skipped: Mutex::new(None),
                published: Mutex::new(published),
                received: Mutex::new(received),
            }),
            state: Arc::new(()),
        }
    }
}

impl Context {
    /// A context for testing handlers: it carries `event` and sends
    /// nothing (every send, update or delete fails permanently). Replies a
    /// handler returns can be checked as they are.
    ///
    /// ```
    /// use chatworker::{App, Context, Service};
    /// use chatworker::event::decode;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let app = App::new().message(|_ctx, m: chatworker::Message| async move { m.text });
    /// let event = decode(br#"{"type": "MESSAGE", "space": {"name": "spaces/A"},
    ///     "message": {"name": "spaces/A/messages/M", "text": "hi"}}"#)?;
    /// let replies = app.handle(&Context::for_test(event.clone()), &event).await?;
    /// assert_eq!(replies[0].text.as_deref(), Some("hi"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_test(event: Event) -> Self {
        Self {
            inner: Arc::new(Inner {
                sender: None,
                event: Arc::new(event),
                identity: "test".into(),
                next: AtomicUsize::new(0),
                metrics: Arc::new(Metrics::default()),
                markup: Markup::default(),
                skipped: Mutex::new(None),
                published: Mutex::new(None),
                received: Mutex::new(None),
            }),
            state: Arc::new(()),
        }
    }
}

impl<S> Context<S> {
    /// The sender, for a request about to go out.
    fn sender(&self) -> Result<&Sender, SendError> {
        if let Some(received) = take_once(&self.inner.received) {
            self.inner.metrics.first_request(received.elapsed());
        }
        self.inner.sender.as_deref().ok_or_else(|| {
            SendError::Permanent("a test context (Context::for_test) sends nothing".into())
        })
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

    /// The position the next message sent will take; replies returned by
    /// the handler continue from here.
    pub(crate) fn position(&self) -> usize {
        self.inner.next.load(Ordering::SeqCst)
    }

    /// Marks the event as deliberately left unanswered: it is acked and
    /// counted under `reason` (a short, fixed label such as
    /// `"not_allowed"`, used as a metric label).
    pub fn skip(&self, reason: &'static str) {
        *self
            .inner
            .skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    /// The reason given to [`Context::skip`], if any.
    pub fn skipped(&self) -> Option<&'static str> {
        *self
            .inner
            .skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        // A card Chat would refuse is reported here, naming its largest
        // widget, rather than as a bare 400.
        check_cards(&reply)?;
        let messages = crate::worker::new_messages(
            &self.inner.event,
            reply,
            &self.inner.identity,
            index,
            self.inner.markup,
        );
        let first = name_of(&messages[0]);
        for message in &messages {
            self.create(message).await?;
        }
        Ok(Sent { name: first })
    }

    /// Sends a short text now, to be replaced later with
    /// [`Context::update`]: how an app answers at once and works after.
    pub async fn placeholder(&self, text: impl Into<String>) -> Result<Sent, SendError> {
        self.send(Reply::text(text)).await
    }

    /// Sends `reply` to the person who caused the event only (a private
    /// message), in the event's thread.
    pub async fn send_privately(&self, reply: impl Into<Reply>) -> Result<Sent, SendError> {
        let user = self
            .event()
            .sender()
            .and_then(|u| u.name.clone())
            .ok_or_else(|| {
                SendError::Permanent(
                    "a private message needs the event's user, and this event has none".into(),
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
        check_cards(&reply)?;
        let content = Content {
            text: reply.text,
            cards: reply.cards,
            accessory_buttons: reply.accessory_buttons,
            markup: reply.markup.unwrap_or(self.inner.markup),
        };
        self.sender()?.update(name, &content).await.map(|_| ())
    }

    /// Deletes the app's message `name`; one already gone counts as deleted.
    pub async fn delete(&self, name: &MessageName) -> Result<(), SendError> {
        self.sender()?.delete(name).await
    }

    /// The name of the message with client ID `id` in `space` (the event's
    /// space when `None`), for [`Context::update`] and [`Context::delete`].
    pub fn message_name(&self, space: Option<&SpaceName>, id: &ClientMessageId) -> MessageName {
        let space = space.unwrap_or(&self.inner.event.space.name);
        MessageName::parse(&format!("{space}/messages/{id}"))
            .expect("a space name and an ID make a message name")
    }

    fn event_message(&self) -> Result<MessageName, SendError> {
        self.inner
            .event
            .message
            .as_ref()
            .and_then(|m| m.name.clone())
            .ok_or_else(|| {
                SendError::Permanent(format!(
                    "Reply::in_place: this {} event is about no message",
                    self.inner.event.kind.label()
                ))
            })
    }

    async fn create(&self, message: &NewMessage) -> Result<(), SendError> {
        match self.sender()?.create(message).await? {
            Created::Message(_) => {
                self.inner.metrics.reply_created();
                let published = take_once(&self.inner.published);
                if let Some(latency) = published.and_then(|p| p.elapsed().ok()) {
                    self.inner.metrics.first_reply(latency);
                }
            }
            Created::AlreadyExists => self.inner.metrics.reply_already_existed(),
        }
        Ok(())
    }
}

/// What `slot` holds, taken so that only the first caller gets it (each
/// latency metric is observed once per event).
fn take_once<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

fn check_cards(reply: &Reply) -> Result<(), SendError> {
    match reply
        .cards
        .iter()
        .find_map(|(_, c)| crate::card::check(c).err())
    {
        Some(e) => Err(SendError::Permanent(e.to_string())),
        None => Ok(()),
    }
}

/// `spaces/S/messages/client-…` for a message with our ID.
fn name_of(message: &NewMessage) -> MessageName {
    let id = message.id.as_ref().map_or("", |id| id.as_str());
    MessageName::parse(&format!("{}/messages/{id}", message.space))
        .expect("a space name and an ID make a message name")
}
