//! The store: the app's state, and the inbox and outbox that make each
//! event's effects happen once. Three backends behind one interface, chosen
//! by `store.url`: `memory:`, `sqlite://PATH` and `postgres://…`. It knows no
//! Pub/Sub and no Chat types: events are identities, outbox entries are
//! opaque JSON the worker wrote.
//!
//! One event's life in the store:
//! 1. `Store::admit`: is the identity in the inbox? New, committed with
//!    entries still to send, or finished.
//! 2. The handler reads state through its `Txn` and writes into it: the
//!    writes carry the version each value was read at.
//! 3. `Store::commit`: in one transaction, the identity goes into the
//!    inbox, each write is applied if its value's version is still the one
//!    read (compare-and-set; else nothing is, and the handler runs again),
//!    and the outbox entries are stored.
//! 4. The worker sends the entries, marks each update or delete sent (a
//!    create is found again by its ID), and `Store::finish`es the event.
//!
//! The delivery is acked only after that, with every backend: a crash at
//! any point leaves the event unacked, and its redelivery either runs the
//! handler (nothing was committed) or sends what is still unsent.

mod backend;
mod fleet;
mod memory;
mod postgres;
mod sqlite;
mod txn;

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
pub(crate) use backend::Write;
pub(crate) use backend::{
    Admission, Backend, Claim, Commit, Committed, Entry, Key, OutboxEntry, Swept, Versioned, now_ms,
};
pub use backend::{StateRow, StoreError};
pub use fleet::Census;
pub(crate) use fleet::{Bucket, Fleet, Handled, Next, Queued, Reserved};
#[cfg(test)]
pub(crate) use postgres::CONNECTIONS;
pub use txn::{BadState, Scope, StateError, Stored};
pub(crate) use txn::{Txn, TxnOptions};

use std::sync::Arc;
use std::time::Duration;

/// The schema version this worker creates and migrates stores to.
pub const SCHEMA_VERSION: i64 = backend::MIGRATIONS.len() as i64;

/// The store: cheap to clone, shared by every event.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    kind: &'static str,
    /// What replicas share, when the store can be shared (PostgreSQL).
    fleet: Option<Arc<dyn Fleet>>,
    /// Events answered and not yet recorded as finished.
    finishing: Arc<std::sync::Mutex<Vec<String>>>,
    /// A task records them every 50 ms (else each is recorded at once).
    flushed_in_background: bool,
}

/// How many finished events are recorded at once, at most.
const FINISH_BATCH: usize = 256;
/// How often finished events are recorded.
const FINISH_EVERY: Duration = Duration::from_millis(50);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish()
    }
}

impl Store {
    /// Opens the store `url` names, creating or migrating its schema. A
    /// store that cannot be reached now is an error.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = crate::config::redacted(url);
        let bad = |problem: String| StoreError::Url {
            url: shown.clone(),
            problem,
        };
        let mut fleet: Option<Arc<dyn Fleet>> = None;
        let (backend, kind): (Arc<dyn Backend>, _) = match url.split_once(':') {
            Some(("memory", _)) => (Arc::new(memory::Memory::default()), "memory"),
            Some(("sqlite", rest)) => {
                let path = rest.trim_start_matches("//");
                if path.is_empty() {
                    return Err(bad("names no file: sqlite://PATH".into()));
                }
                (Arc::new(sqlite::Sqlite::open(path).await?), "sqlite")
            }
            Some(("postgres" | "postgresql", _)) => {
                let postgres = Arc::new(postgres::Postgres::open(url).await?);
                fleet = Some(postgres.clone());
                (postgres, "postgres")
            }
            _ => {
                return Err(bad(
                    "expected memory:, sqlite://PATH or postgres://USER@HOST/DB".into(),
                ));
            }
        };
        let mut store = Self::with_backend(backend, kind);
        store.fleet = fleet;
        Ok(store)
    }

    fn with_backend(backend: Arc<dyn Backend>, kind: &'static str) -> Self {
        let finishing: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        // Records finished events every 50 ms while the store is in use.
        let runtime = tokio::runtime::Handle::try_current().ok();
        if let Some(runtime) = &runtime {
            let weak = Arc::downgrade(&finishing);
            let backend = backend.clone();
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(FINISH_EVERY).await;
                    let Some(finishing) = weak.upgrade() else {
                        return;
                    };
                    let batch =
                        std::mem::take(&mut *finishing.lock().unwrap_or_else(|p| p.into_inner()));
                    drop(finishing);
                    if !batch.is_empty()
                        && let Err(e) = backend.finish(&batch).await
                    {
                        tracing::debug!(error = %e, events = batch.len(), "finished events not recorded; their duplicates would find their messages again");
                    }
                }
            });
        }
        Self {
            backend,
            kind,
            fleet: None,
            finishing,
            flushed_in_background: runtime.is_some(),
        }
    }

    /// An in-memory store, for tests and stateless bots.
    pub fn memory() -> Self {
        Self::with_backend(Arc::new(memory::Memory::default()), "memory")
    }

    /// `memory`, `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What replicas share: the queue, the claims, the quota's buckets;
    /// `None` for a store that serves one process.
    pub(crate) fn fleet(&self) -> Option<&Arc<dyn Fleet>> {
        self.fleet.as_ref()
    }

    /// The fleet sharing this store now (claims and waiting events); `None`
    /// for a store that serves one process.
    pub async fn census(&self) -> Result<Option<Census>, StoreError> {
        match &self.fleet {
            Some(fleet) => fleet.census().await.map(Some),
            None => Ok(None),
        }
    }

    pub(crate) async fn admit(&self, identity: &str) -> Result<Admission, StoreError> {
        self.backend.admit(identity).await
    }

    pub(crate) async fn read(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.backend.read(key, now_ms()).await
    }

    pub(crate) async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        self.backend.commit(commit, now_ms()).await
    }

    pub(crate) async fn sent(&self, identity: &str, seq: i64) -> Result<(), StoreError> {
        self.backend.sent(identity, seq).await
    }

    /// Records the event as answered. Batched: the events finished within
    /// 50 ms are recorded together (one transaction). Until then a
    /// duplicate of the event would find its creates again by their IDs
    /// (its updates and deletes are marked sent one by one), so nothing
    /// depends on the record being immediate.
    pub(crate) async fn finish(&self, identity: &str) -> Result<(), StoreError> {
        let batch = {
            let mut pending = self.finishing.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(identity.to_owned());
            match pending.len() >= FINISH_BATCH || !self.flushed_in_background {
                true => std::mem::take(&mut *pending),
                false => return Ok(()),
            }
        };
        self.backend.finish(&batch).await
    }

    /// Records the finished events not yet recorded (at shutdown, and in
    /// tests).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut *self.finishing.lock().unwrap_or_else(|p| p.into_inner()));
        match batch.is_empty() {
            true => Ok(()),
            false => self.backend.finish(&batch).await,
        }
    }

    /// The stored values (at most `limit`), for the playground.
    pub async fn dump(&self, limit: usize) -> Result<Vec<StateRow>, StoreError> {
        self.backend.dump(limit, now_ms()).await
    }

    /// Removes what housekeeping removes: inbox rows older than
    /// `retention` (their events cannot come back: Pub/Sub keeps a message
    /// at most 7 days) or beyond `max_inbox`, and expired values.
    pub(crate) async fn sweep(
        &self,
        retention: Duration,
        max_inbox: u64,
    ) -> Result<Swept, StoreError> {
        let now = now_ms();
        let before = now - retention.as_millis() as i64;
        self.backend.sweep(before, max_inbox, now).await
    }

    /// Sweeps every `every` until `stop`, logging what went.
    pub(crate) async fn keep_house(
        self,
        every: Duration,
        retention: Duration,
        max_inbox: u64,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.sweep(retention, max_inbox).await {
                Ok(swept) if swept != Swept::default() => tracing::debug!(
                    inbox = swept.inbox,
                    state = swept.state,
                    "store housekeeping"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "store housekeeping failed; trying again later")
                }
            }
        }
    }
}
