//! The outbox's entries: what a handler asked to send (a create, an
//! update, a delete), held in its event's transaction and sent from the
//! store after the commit, in order.

use crate::app::{Outlet, OutletFuture};
use crate::names::MessageName;
use crate::reply::SendError;
use crate::reply::compose::{Content, Created, NewMessage};
use crate::store::Txn;
use std::sync::Arc;

/// One entry, as stored (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Op {
    Create(NewMessage),
    Update(MessageName, Content),
    Delete(MessageName),
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
}

/// The handler's outlet while its event is in a transaction: each call
/// becomes an outbox entry, sent after the commit.
pub(super) struct OutboxOutlet(pub Arc<Txn>);

impl Outlet for OutboxOutlet {
    fn create<'a>(&'a self, message: &'a NewMessage) -> OutletFuture<'a, Created> {
        let entry = Op::Create(message.clone()).to_json();
        Box::pin(async move {
            self.0.push(entry?);
            Ok(Created::New)
        })
    }

    fn update<'a>(&'a self, name: &'a MessageName, content: &'a Content) -> OutletFuture<'a, ()> {
        let entry = Op::Update(name.clone(), content.clone()).to_json();
        Box::pin(async move {
            self.0.push(entry?);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, name: &'a MessageName) -> OutletFuture<'a, ()> {
        let entry = Op::Delete(name.clone()).to_json();
        Box::pin(async move {
            self.0.push(entry?);
            Ok(())
        })
    }
}
