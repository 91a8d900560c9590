//! What every backend implements, and the types they share: keys,
//! versions, commits, the inbox's answers, the schema's migrations.

use futures::future::BoxFuture;
use std::time::SystemTime;

/// The store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `store.url` names no backend this build knows, or is malformed.
    #[error("store.url {url:?}: {problem}")]
    Url {
        /// The URL, without a password.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The store cannot be reached or failed for now: the event is nacked
    /// and comes back.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The schema is newer than this worker knows: a newer version ran on
    /// this store.
    #[error(
        "the store's schema is at version {found}, newer than this worker's {known}: run a newer chatworker, or a store of this version"
    )]
    TooNew {
        /// The version in the store.
        found: i64,
        /// The newest this worker knows.
        known: i64,
    },
}

/// A state value's address: its scope, whose it is, and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    /// `app`, `space`, `thread` or `user`.
    pub scope: &'static str,
    /// The space, thread or user's resource name; empty for the app.
    pub owner: String,
    /// The value's name within its scope.
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.owner.is_empty() {
            true => write!(f, "{}/{}", self.scope, self.name),
            false => write!(f, "{} {}/{}", self.scope, self.owner, self.name),
        }
    }
}

/// A stored value as read: its JSON and version. An expired value reads as
/// `json: None` with the version it had, so that writing over it is still a
/// compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Versioned {
    pub json: Option<String>,
    pub version: i64,
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub key: Key,
    /// The version read; `None`: the value did not exist.
    pub expected: Option<i64>,
    /// The new JSON, or `None` to delete.
    pub json: Option<String>,
    /// When the value expires, in milliseconds since the epoch.
    pub expires_at: Option<i64>,
}

/// An outbox entry as committed: its JSON, made when a backend needs it.
/// SQLite and PostgreSQL store it at once; the memory backend keeps the
/// entry as it is and makes its JSON only if a delivery reads it back.
#[derive(Clone)]
pub(crate) struct OutboxEntry(std::sync::Arc<dyn Fn() -> String + Send + Sync>);

impl OutboxEntry {
    /// An entry whose JSON `encode` makes.
    pub(crate) fn new(encode: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(encode))
    }

    /// An entry that is its JSON already.
    #[cfg(test)]
    pub(crate) fn json_text(json: &str) -> Self {
        let json = json.to_owned();
        Self::new(move || json.clone())
    }

    /// Its JSON.
    pub(crate) fn json(&self) -> String {
        (self.0)()
    }
}

impl std::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxEntry")
    }
}

/// What an event's transaction commits.
#[derive(Clone, Debug, Default)]
pub(crate) struct Commit {
    pub identity: String,
    pub writes: Vec<Write>,
    /// The outbox entries, in order.
    pub outbox: Vec<OutboxEntry>,
    /// In a fleet: the lane's claim the commit is made under. Nothing is
    /// stored unless its holder still holds it, and the commit renews it.
    pub claim: Option<Claim>,
}

/// A lane's claim, as a commit made under it names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub lane: String,
    pub holder: String,
    /// How long the claim lives from the commit on.
    pub ttl: std::time::Duration,
}

/// What came of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Stored.
    Done,
    /// A value changed since it was read: nothing was stored.
    Conflict(Key),
    /// Another delivery of the event committed first: nothing was stored.
    Duplicate,
    /// The commit's claim is another replica's now (this one stalled past
    /// it): nothing was stored, and the lane's new holder handles the event.
    Lost,
}

/// An outbox entry still to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: i64,
    pub json: String,
}

/// Where an event stands in the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Never committed: run the handler.
    New,
    /// Committed: send these entries (those not yet marked sent), then
    /// finish it.
    Committed(Vec<Entry>),
    /// Committed and every entry sent.
    Finished,
}

/// A value for the playground and `chatworker` tools.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRow {
    /// `app`, `space`, `thread` or `user`.
    pub scope: String,
    /// Whose: a space, thread or user name; empty for the app.
    pub owner: String,
    /// The value's name.
    pub name: String,
    /// Its JSON.
    pub value: String,
    /// Its version: from one counter for the whole store, never reused.
    pub version: i64,
    /// When it expires, in milliseconds since the epoch.
    pub expires_at: Option<i64>,
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    pub inbox: u64,
    pub state: u64,
}

/// What every backend does. Each call is one round trip (or one
/// transaction) to the backend.
pub(crate) trait Backend: Send + Sync + 'static {
    fn admit<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<Admission, StoreError>>;
    fn read<'a>(
        &'a self,
        key: &'a Key,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>>;
    fn commit(&self, commit: Commit, now: i64) -> BoxFuture<'_, Result<Committed, StoreError>>;
    fn sent<'a>(&'a self, identity: &'a str, seq: i64) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Records these events as answered: finished, their outbox gone.
    fn finish<'a>(&'a self, identities: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes inbox rows (and their outbox) committed before `before`,
    /// the oldest inbox rows beyond `max_inbox`, and expired state.
    fn sweep(
        &self,
        before: i64,
        max_inbox: u64,
        now: i64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>>;
    fn dump(&self, limit: usize, now: i64) -> BoxFuture<'_, Result<Vec<StateRow>, StoreError>>;
}

/// One step of the schema: the SQL that takes a store from the previous
/// version to this one, for each database (the types used mean the same in
/// both; only what one of them lacks differs).
pub(crate) struct Migration {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// The schema's versions, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    // 1: state, inbox, outbox.
    Migration {
        sqlite: V1,
        postgres: V1,
    },
    // 2: versions from one counter for the whole store, so that a value
    // removed (or swept) and written again never takes a version an old
    // read still holds.
    Migration {
        sqlite: "CREATE TABLE chatworker_versions (last BIGINT NOT NULL);
            INSERT INTO chatworker_versions SELECT COALESCE(MAX(version), 0) FROM chatworker_state;",
        postgres: "CREATE SEQUENCE chatworker_versions;
            SELECT setval('chatworker_versions', (SELECT COALESCE(MAX(version), 0) FROM chatworker_state) + 1, false);",
    },
    // 3: what a fleet of replicas shares: the queue of events in arrival
    // order, the claims on threads, the write quota's buckets. A SQLite
    // store serves one process and has none.
    Migration {
        sqlite: "SELECT 1;",
        postgres: FLEET_TABLES,
    },
    // 4: a lane's failed events found by the lane: without it, a lane's
    // holder looking for one that holds the lane scanned every event
    // handled within the hold (the whole queue, in a drain: 6.5 ms a call
    // at 20,000 events, against 0.1 ms with it).
    Migration {
        sqlite: "SELECT 1;",
        postgres: "CREATE INDEX chatworker_queue_failed ON chatworker_queue (lane, handled_at)
            WHERE outcome IN ('transient', 'panicked');",
    },
];

/// The fleet's tables (`store::fleet`).
const FLEET_TABLES: &str = "
    CREATE SEQUENCE chatworker_arrivals;
    CREATE TABLE chatworker_queue (
        identity TEXT PRIMARY KEY,
        lane TEXT NOT NULL,
        seq BIGINT NOT NULL DEFAULT nextval('chatworker_arrivals'),
        event BYTEA NOT NULL,
        published_at BIGINT,
        arrived_at BIGINT NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        not_before BIGINT NOT NULL DEFAULT 0,
        outcome TEXT,
        detail TEXT NOT NULL DEFAULT '',
        handled_at BIGINT
    );
    CREATE INDEX chatworker_queue_pending ON chatworker_queue (lane, seq) WHERE outcome IS NULL;
    CREATE INDEX chatworker_queue_handled ON chatworker_queue (handled_at) WHERE outcome IS NOT NULL;
    CREATE TABLE chatworker_claims (
        lane TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX chatworker_claims_holder ON chatworker_claims (holder);
    CREATE TABLE chatworker_buckets (
        bucket TEXT PRIMARY KEY,
        tat BIGINT NOT NULL
    );";

const V1: &str = "CREATE TABLE chatworker_state (
        scope TEXT NOT NULL,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        version BIGINT NOT NULL,
        expires_at BIGINT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (scope, owner, name)
    );
    CREATE INDEX chatworker_state_expiry ON chatworker_state (expires_at);
    CREATE TABLE chatworker_inbox (
        identity TEXT PRIMARY KEY,
        committed_at BIGINT NOT NULL,
        finished BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX chatworker_inbox_age ON chatworker_inbox (committed_at);
    CREATE TABLE chatworker_outbox (
        identity TEXT NOT NULL,
        seq BIGINT NOT NULL,
        entry TEXT NOT NULL,
        sent BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (identity, seq)
    );";

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
