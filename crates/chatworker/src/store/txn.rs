//! One event's transaction: the values its handler read (with their
//! versions) and wrote, and the outbox entries it asked for, until the
//! worker commits them together. Typed access for handlers is [`Stored`].

use super::Store;
use super::backend::{Commit, Key, OutboxEntry, StoreError, Write, now_ms};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whose a state value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// The app's: one value for every space.
    App,
    /// The event's space's.
    Space,
    /// The event's thread's.
    Thread,
    /// The person's who caused the event.
    User,
}

impl Scope {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Space => "space",
            Self::Thread => "thread",
            Self::User => "user",
        }
    }
}

/// What to do with a stored value that no longer decodes as the type
/// asked for (its type changed in a deploy, say). Either way the key is
/// logged and counted (`chatworker_state_undecodable_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadState {
    /// The handler fails permanently: the event is acked (or
    /// dead-lettered) without effect, and the value stays for a fix.
    #[default]
    Fail,
    /// The value reads as absent; the handler's next write replaces it.
    Reset,
}

/// A state read or write that could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The scope needs something the event does not carry (a thread, a
    /// user).
    #[error("{0} state: this event has no {0}")]
    NoOwner(&'static str),
    /// The stored value does not decode as the type asked for, and the
    /// app's policy is [`BadState::Fail`].
    #[error(
        "state {key} does not decode as {type_name}: {error} (the app's BadState policy is Fail; with Reset it would read as absent)"
    )]
    Undecodable {
        /// The value's address.
        key: String,
        /// The type asked for.
        type_name: &'static str,
        /// The decoder's complaint.
        error: String,
    },
    /// The value could not be encoded as JSON.
    #[error("state {key} cannot be encoded: {error}")]
    Unencodable {
        /// The value's address.
        key: String,
        /// The encoder's complaint.
        error: String,
    },
    /// The context has no store (a hand-made context in a test).
    #[error("this context has no store")]
    NoStore,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The transaction's options, from the app.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxnOptions {
    pub bad_state: BadState,
}

/// One value as the transaction knows it.
#[derive(Clone, Debug)]
struct Slot {
    /// The version read (`None`: absent).
    expected: Option<i64>,
    /// The value now (`None`: absent or removed).
    json: Option<String>,
    expires_at: Option<i64>,
    written: bool,
}

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<Key, Slot>,
    outbox: Vec<OutboxEntry>,
}

/// One event's transaction.
pub(crate) struct Txn {
    store: Store,
    identity: String,
    options: TxnOptions,
    inner: Mutex<Inner>,
    /// Counts undecodable values (the metric), if set.
    on_undecodable: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Txn {
    pub(crate) fn new(store: Store, identity: String, options: TxnOptions) -> Self {
        Self {
            store,
            identity,
            options,
            inner: Mutex::default(),
            on_undecodable: None,
        }
    }

    /// Calls `count` for each value that does not decode.
    pub(crate) fn counting_undecodable(mut self, count: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_undecodable = Some(count);
        self
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value at `key`: as this transaction left it, else as stored.
    async fn json(&self, key: &Key) -> Result<Option<String>, StoreError> {
        if let Some(slot) = self.inner().values.get(key) {
            return Ok(slot.json.clone());
        }
        let read = self.store.read(key).await?;
        let slot = Slot {
            expected: read.as_ref().map(|r| r.version),
            json: read.and_then(|r| r.json),
            expires_at: None,
            written: false,
        };
        let json = slot.json.clone();
        // A concurrent read of the same key in this event keeps the first.
        self.inner().values.entry(key.clone()).or_insert(slot);
        Ok(json)
    }

    fn write(&self, key: &Key, json: Option<String>, expires_at: Option<i64>) {
        let mut inner = self.inner();
        let slot = inner.values.entry(key.clone()).or_insert(Slot {
            expected: None,
            json: None,
            expires_at: None,
            written: false,
        });
        slot.json = json;
        slot.expires_at = expires_at;
        slot.written = true;
    }

    /// Adds an outbox entry.
    pub(crate) fn push(&self, entry: OutboxEntry) {
        self.inner().outbox.push(entry);
    }

    /// Whether the handler asked to send anything.
    pub(crate) fn has_outbox(&self) -> bool {
        !self.inner().outbox.is_empty()
    }

    /// Forgets the state changes, keeping the outbox: a handler that failed
    /// for good changes no state, but what it (or its error hook) sent
    /// still goes out.
    pub(crate) fn drop_writes(&self) {
        self.inner().values.retain(|_, slot| !slot.written);
    }

    /// Whether there is nothing to commit.
    pub(crate) fn is_empty(&self) -> bool {
        let inner = self.inner();
        inner.outbox.is_empty() && !inner.values.values().any(|s| s.written)
    }

    /// What to commit; the outbox entries are taken (a transaction is
    /// committed once).
    pub(crate) fn commit(&self) -> Commit {
        let mut inner = self.inner();
        let writes = inner
            .values
            .iter()
            .filter(|(_, slot)| slot.written)
            .map(|(key, slot)| Write {
                key: key.clone(),
                expected: slot.expected,
                json: slot.json.clone(),
                expires_at: slot.expires_at,
            })
            .collect();
        Commit {
            identity: self.identity.clone(),
            writes,
            outbox: std::mem::take(&mut inner.outbox),
            claim: None,
        }
    }

    /// Reads the value at `key` as a `T`.
    pub(crate) async fn load<T: DeserializeOwned>(
        self: &Arc<Self>,
        key: Key,
    ) -> Result<Stored<T>, StateError> {
        let json = self.json(&key).await?;
        let value = match json.as_deref().map(serde_json::from_str::<T>) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(error)) => {
                if let Some(count) = &self.on_undecodable {
                    count();
                }
                let type_name = std::any::type_name::<T>();
                match self.options.bad_state {
                    BadState::Reset => {
                        tracing::warn!(key = %key, type_name, error = %error, "a stored value does not decode: read as absent (BadState::Reset)");
                        None
                    }
                    BadState::Fail => {
                        tracing::warn!(key = %key, type_name, error = %error, "a stored value does not decode: the handler fails (BadState::Fail)");
                        return Err(StateError::Undecodable {
                            key: key.to_string(),
                            type_name,
                            error: error.to_string(),
                        });
                    }
                }
            }
        };
        Ok(Stored {
            key,
            value,
            txn: self.clone(),
        })
    }
}

/// A state value, read in the event's transaction. Changes made with
/// [`Stored::set`] and [`Stored::remove`] are committed with the event's
/// replies, once, after the handler returns; if another event changed the
/// value meanwhile, nothing is committed and the handler runs again with
/// the new value.
///
/// ```no_run
/// use chatworker::{Command, Context, HandlerError, Reply, Scope};
///
/// async fn count(ctx: Context, _command: Command) -> Result<Reply, HandlerError> {
///     let mut seen = ctx.load::<u64>(Scope::Space, "commands").await?;
///     let n = seen.get().copied().unwrap_or(0) + 1;
///     seen.set(n)?;
///     Ok(Reply::text(format!("{n} commands in this space")))
/// }
/// ```
#[derive(Debug)]
pub struct Stored<T> {
    key: Key,
    value: Option<T>,
    txn: Arc<Txn>,
}

impl<T: Serialize> Stored<T> {
    /// The value, if there is one (and it has not expired).
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The value, taken out.
    pub fn take(&mut self) -> Option<T> {
        self.value.take()
    }

    /// Sets the value, with no expiry.
    pub fn set(&mut self, value: T) -> Result<(), StateError> {
        self.store(value, None)
    }

    /// Sets the value, to expire `ttl` from now: then it reads as absent,
    /// and housekeeping removes it.
    pub fn set_for(&mut self, value: T, ttl: Duration) -> Result<(), StateError> {
        let expires = now_ms().saturating_add(ttl.as_millis() as i64);
        self.store(value, Some(expires))
    }

    /// Removes the value.
    pub fn remove(&mut self) {
        self.value = None;
        self.txn.write(&self.key, None, None);
    }

    /// Where the value lives, as logged: `space spaces/AAA/tickets`.
    pub fn key(&self) -> String {
        self.key.to_string()
    }

    fn store(&mut self, value: T, expires_at: Option<i64>) -> Result<(), StateError> {
        let json = serde_json::to_string(&value).map_err(|e| StateError::Unencodable {
            key: self.key.to_string(),
            error: e.to_string(),
        })?;
        self.txn.write(&self.key, Some(json), expires_at);
        self.value = Some(value);
        Ok(())
    }
}
