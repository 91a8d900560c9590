//! The outbox's entries: what a handler asked to send (a create, an
//! update, a delete), held in its event's transaction and sent from the
//! store after the commit, in order.

use crate::app::{Outlet, OutletFuture};
use crate::names::MessageName;
use crate::reply::SendError;
use crate::reply::compose::{Content, Created, NewMessage};
use crate::store::Txn;
use std::sync::{Arc, Mutex};

/// One entry, as stored (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Op {
    Create(NewMessage),
    Update(MessageName, Content),
    Delete(MessageName),
    /// Not a message: the handler failed for good after sending what
    /// comes before. Met when sending, it makes the event's outcome that
    /// failure (dead-lettered, when configured) on every delivery until
    /// the event is settled, so that a redelivery does not ack it as
    /// answered.
    Failed {
        reason: String,
        detail: String,
    },
}

impl Op {
    pub(super) fn to_json(&self) -> Result<String, SendError> {
        serde_json::to_string(self)
            .map_err(|e| SendError::permanent(format!("an outbox entry cannot be encoded: {e}")))
    }

    pub(super) fn from_json(json: &str) -> Result<Self, SendError> {
        serde_json::from_str(json)
            .map_err(|e| SendError::permanent(format!("an outbox entry cannot be decoded: {e}")))
    }

    /// Whether sending it twice could undo a later change (an update or a
    /// delete): such an entry is marked sent at once. A create is found
    /// again by its ID.
    pub(super) fn marked_when_sent(&self) -> bool {
        !matches!(self, Self::Create(_))
    }

    /// A failure's reason as the metrics name it.
    pub(super) fn reason(reason: &str) -> &'static str {
        match reason {
            "chat_permanent" => "chat_permanent",
            _ => "handler_permanent",
        }
    }
}

/// The handler's outlet while its event is in a transaction: each call
/// becomes an outbox entry (stored as JSON), sent after the commit; the
/// entries are kept as they are too, so that the first sending reads none
/// back.
pub(super) struct OutboxOutlet {
    txn: Arc<Txn>,
    ops: Mutex<Vec<Op>>,
}

impl OutboxOutlet {
    pub(super) fn new(txn: Arc<Txn>) -> Self {
        Self {
            txn,
            ops: Mutex::default(),
        }
    }

    /// The entries, in order.
    pub(super) fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, op: Op) -> Result<(), SendError> {
        let json = op.to_json()?;
        // One lock for both lists, so that concurrent sends keep one order.
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        self.txn.push(json);
        ops.push(op);
        Ok(())
    }
}

impl Outlet for OutboxOutlet {
    fn create<'a>(&'a self, message: &'a NewMessage) -> OutletFuture<'a, Created> {
        let pushed = self.push(Op::Create(message.clone()));
        Box::pin(std::future::ready(pushed.map(|()| Created::New)))
    }

    fn update<'a>(&'a self, name: &'a MessageName, content: &'a Content) -> OutletFuture<'a, ()> {
        let pushed = self.push(Op::Update(name.clone(), content.clone()));
        Box::pin(std::future::ready(pushed))
    }

    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()> {
        let pushed = self.push(Op::Delete(name.clone()));
        Box::pin(std::future::ready(pushed))
    }
}
