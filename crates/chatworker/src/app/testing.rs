//! Unit tests for handlers, without Pub/Sub or Chat: a [`TestContext`]
//! carries an event and records every message a handler sends, updates or
//! deletes through its [`Context`], composed as the worker would (the same
//! IDs, threads and split text), and [`TestContext::run`] runs a whole
//! [`Service`] (an [`crate::App`]) and sends its answer the same way.
//!
//! ```
//! use chatworker::testing::{Call, TestContext};
//! use chatworker::{App, Context, HandlerError, Message, Reply};
//!
//! async fn slow(ctx: Context, message: Message) -> Result<Reply, HandlerError> {
//!     let working = ctx.placeholder("Working…").await?;
//!     ctx.update(&working.name, Reply::text(format!("Done: {}", message.argument()))).await?;
//!     Ok(Reply::text("Anything else?"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let event = chatworker::event::decode(br#"{"type": "MESSAGE", "eventTime": "2026-01-01T00:00:00Z",
//!     "space": {"name": "spaces/A"}, "message": {"name": "spaces/A/messages/M", "text": "build"}}"#)?;
//! let test = TestContext::new(event);
//! test.run(&App::new().message(slow)).await?;
//! let calls = test.calls();
//! assert!(matches!(&calls[0], Call::Create(m) if m.text.as_deref() == Some("Working…")));
//! assert!(matches!(&calls[1], Call::Update(m) if m.name == calls[0].name().clone()));
//! assert!(matches!(&calls[2], Call::Create(m) if m.text.as_deref() == Some("Anything else?")));
//! # Ok(())
//! # }
//! ```

use super::HandlerError;
use super::context::{Context, Outlet, OutletFuture};
use super::service::{Answer, Service};
use crate::event::Event;
use crate::names::{MessageName, UserName};
use crate::reply::compose::{Content, Created, NewMessage};
use crate::reply::{Card, Markup, SendError};
use crate::store::{Store, Txn, TxnOptions};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A message as it would have reached Chat.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Posted {
    /// Its name, `spaces/S/messages/client-…`.
    pub name: MessageName,
    /// Its text.
    pub text: Option<String>,
    /// Its cards, with their IDs.
    pub cards: Vec<(String, Card)>,
    /// How many buttons it carries under it.
    pub buttons: usize,
    /// The one person who may see it, for a private message.
    pub private_to: Option<UserName>,
    /// The thread it goes to: the thread's name, an app-owned key, or
    /// `None` for a new thread.
    pub thread: Option<String>,
}

/// One call a handler made, in order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Call {
    /// A message created.
    Create(Posted),
    /// A message written over (text, cards, buttons).
    Update(Posted),
    /// A message deleted.
    Delete(MessageName),
}

impl Call {
    /// The name of the message the call was about.
    pub fn name(&self) -> &MessageName {
        match self {
            Self::Create(m) | Self::Update(m) => &m.name,
            Self::Delete(name) => name,
        }
    }
}

/// An event to handle, and the record of what its handler sent.
#[derive(Clone, Debug)]
pub struct TestContext {
    context: Context,
    outlet: Arc<Recorder>,
    txn: Arc<Txn>,
    store: Store,
}

impl TestContext {
    /// A context for `event`, with the default markup (`chat`) and a store
    /// of its own (in memory).
    pub fn new(event: Event) -> Self {
        Self::with_store(event, Store::memory())
    }

    /// A context for `event` whose state lives in `store`: give each event
    /// of a test the same one ([`TestContext::store`]) to see the state
    /// an earlier one left. [`TestContext::run`] commits what the handler
    /// set (its messages are recorded at once).
    pub fn with_store(event: Event, store: Store) -> Self {
        let identity = event.identity().unwrap_or_else(|| "test".into());
        let outlet = Arc::new(Recorder::default());
        let txn = Arc::new(Txn::new(
            store.clone(),
            identity.clone(),
            TxnOptions::default(),
        ));
        let context = Context::new(outlet.clone(), Arc::new(event), identity, Markup::default())
            .with_txn(txn.clone(), None);
        Self {
            context,
            outlet,
            txn,
            store,
        }
    }

    /// The store this context's state lives in.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Commits what the handler set, as the worker would after it returns.
    /// A value another event changed meanwhile is a transient error (the
    /// worker would run the handler again).
    pub async fn commit(&self) -> Result<(), HandlerError> {
        use crate::store::Committed;
        let mut commit = self.txn.commit();
        // Messages were recorded at once; only the state is committed.
        commit.outbox.clear();
        match self.store.commit(commit).await {
            Ok(Committed::Done | Committed::Duplicate) => Ok(()),
            // A test's commit names no claim.
            Ok(Committed::Lost) => Err(HandlerError::transient("the lane's claim was lost")),
            Ok(Committed::Conflict(key)) => Err(HandlerError::transient(format!(
                "state {key} changed since it was read"
            ))),
            Err(e) => Err(HandlerError::transient(e)),
        }
    }

    /// The context to hand a handler (`.with_state(…)` gives it a state).
    pub fn context(&self) -> Context {
        self.context.clone()
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.outlet.lock().clone()
    }

    /// Runs `service` on the event, then sends the replies it answered, as
    /// the worker would; returns its answer.
    pub async fn run(&self, service: &impl Service) -> Result<Answer, HandlerError> {
        let answer = service.handle(&self.context, self.context.event()).await?;
        for reply in answer.replies() {
            self.context.send(reply.clone()).await?;
        }
        self.commit().await?;
        Ok(answer)
    }
}

/// The test outlet: records calls, and answers a second create with one ID
/// as Chat would (it already exists, and is not recorded twice).
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    created: Mutex<BTreeSet<MessageName>>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Outlet for Recorder {
    fn create<'a>(&'a self, message: &'a NewMessage) -> OutletFuture<'a, Created> {
        Box::pin(async move {
            let name = message
                .name()
                .ok_or_else(|| SendError::permanent("a composed message has no ID"))?;
            let new = self
                .created
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone());
            if !new {
                return Ok(Created::AlreadyExisted);
            }
            use crate::reply::compose::Threading;
            let thread = match &message.thread {
                Threading::Reply(thread) => Some(thread.to_string()),
                Threading::Key(key) => Some(key.clone()),
                Threading::New => None,
            };
            self.lock().push(Call::Create(Posted {
                name,
                text: message.text.clone(),
                cards: message.cards.clone(),
                buttons: message.accessory_buttons.len(),
                private_to: message.private_to.clone(),
                thread,
            }));
            Ok(Created::New)
        })
    }

    fn update<'a>(&'a self, name: &'a MessageName, content: &'a Content) -> OutletFuture<'a, ()> {
        Box::pin(async move {
            self.lock().push(Call::Update(Posted {
                name: name.clone(),
                text: content.text.clone(),
                cards: content.cards.clone(),
                buttons: content.accessory_buttons.len(),
                private_to: None,
                thread: None,
            }));
            Ok(())
        })
    }

    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()> {
        Box::pin(async move {
            self.lock().push(Call::Delete(name.clone()));
            Ok(())
        })
    }
}
