//! The outbox's entries: what a handler asked to send (a create, an
//! update, a delete), held in its event's transaction and sent from the
//! store after the commit, in order.

use crate::app::{Outlet, OutletFuture};
use crate::names::MessageName;
use crate::reply::SendError;
use crate::reply::compose::{Content, Created, NewMessage};
use crate::store::{OutboxEntry, Txn};
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
    /// Its JSON. One that cannot be encoded (nothing here can fail to,
    /// but a failure must not lose the entry silently) is stored as a value
    /// no version reads back: met on a redelivery, it is logged and skipped
    /// as a refusal.
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| serde_json::json!({ "Unencodable": e.to_string() }).to_string())
    }

    /// The entry the transaction commits: the op itself, its JSON made when
    /// the store needs it.
    pub(super) fn entry(self: &Arc<Self>) -> OutboxEntry {
        let op = self.clone();
        OutboxEntry::new(move || op.to_json())
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
}

/// The handler's outlet while its event is in a transaction: each call
/// becomes an outbox entry (stored as JSON), sent after the commit; the
/// entries are kept as they are too, so that the first sending reads none
/// back.
pub(super) struct OutboxOutlet {
    txn: Arc<Txn>,
    ops: Mutex<Vec<Arc<Op>>>,
}

impl OutboxOutlet {
    pub(super) fn new(txn: Arc<Txn>) -> Self {
        Self {
            txn,
            ops: Mutex::default(),
        }
    }

    /// The entries, in order.
    pub(super) fn take(&self) -> Vec<Arc<Op>> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, op: Op) -> Result<(), SendError> {
        let op = Arc::new(op);
        // One lock for both lists, so that concurrent sends keep one order.
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        self.txn.push(op.entry());
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
