//! `postgres://…`: the store shared by several pods. A few connections,
//! each used by one call at a time (a transaction needs its connection to
//! itself), reconnected when one breaks. Plain TCP: in production, Cloud SQL
//! through its Auth Proxy on loopback, or a private IP inside the VPC.

use super::backend::{
    Admission, Backend, Commit, Committed, Entry, Key, MIGRATIONS, StateRow, StoreError, Swept,
    Versioned,
};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Connections kept.
pub(crate) const CONNECTIONS: usize = 8;
/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call (a statement, a transaction) may take: past it the
/// store counts as unavailable and the connection is dropped. Housekeeping
/// on a large store takes longer, and has its own.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The advisory lock that keeps two pods from migrating at once.
const MIGRATION_LOCK: i64 = 0x6368_6174_776b;

/// The database's clock, in milliseconds since the epoch (SQL).
pub(super) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// `d` in whole milliseconds, as SQL takes it.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) struct Postgres {
    config: tokio_postgres::Config,
    url: String,
    connections: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// A fleet's claim renewals' own connection: no other call holds them up.
    renewals: Mutex<Option<Client>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {e}"))
}

/// The error with its cause (tokio-postgres keeps the server's message in
/// the source).
fn described(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => unavailable(format!("{e}: {}", db.message())),
        None => match std::error::Error::source(&e) {
            Some(cause) => unavailable(format!("{e}: {cause}")),
            None => unavailable(e),
        },
    }
}

impl Postgres {
    /// Connects and brings the schema up to date.
    pub(super) async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = crate::config::redacted(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Url {
            url: shown.clone(),
            problem: format!("{e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let store = Self {
            config,
            url: shown,
            connections: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            renewals: Mutex::new(None),
        };
        let mut client = store.connect().await?;
        migrate(&mut client).await?;
        *store.connections[0].lock().await = Some(client);
        Ok(store)
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            let StoreError::Unavailable(text) = described(e) else {
                unreachable!()
            };
            StoreError::Unavailable(format!("{text} (connecting to {})", self.url))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Runs `f` on one of the connections, (re)connecting it first if
    /// needed. A failed call drops its connection, so the next one starts
    /// afresh.
    pub(super) async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.within(CALL_TIMEOUT, f).await
    }

    /// [`Postgres::with`], allowed `limit`: a server that stopped answering
    /// (a network gone quiet, a lock held) is unavailable, not a hang.
    pub(super) async fn within<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        // A free connection if there is one (a long call, housekeeping's,
        // must not hold up a short one), else the next in turn.
        let start = self.next.fetch_add(1, Relaxed);
        let n = self.connections.len();
        let free = (0..n).find_map(|k| self.connections[(start + k) % n].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.connections[start % n].lock().await,
        };
        self.run_on(&mut slot, tokio::time::Instant::now() + limit, limit, f)
            .await
    }

    /// Runs `f` on the renewals' own connection, all of it (waiting for the
    /// connection included) within `limit`: a renewal later than that is
    /// worth nothing.
    pub(super) async fn renewing<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + limit;
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.renewals.lock()).await else {
            return Err(self.late(limit));
        };
        self.run_on(&mut slot, deadline, limit, f).await
    }

    fn late(&self, limit: Duration) -> StoreError {
        unavailable(format!(
            "no answer within {}ms from {}",
            limit.as_millis(),
            self.url
        ))
    }

    /// Runs `f` on the connection in `slot`, (re)connecting it first if
    /// needed, by `deadline`. A call that failed or ran out of time drops its
    /// connection (its statement may still run), so the next starts afresh.
    async fn run_on<T>(
        &self,
        slot: &mut Option<Client>,
        deadline: tokio::time::Instant,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            match tokio::time::timeout_at(deadline, self.connect()).await {
                Ok(client) => *slot = Some(client?),
                Err(_) => return Err(self.late(limit)),
            }
        }
        let Ok(result) =
            tokio::time::timeout_at(deadline, f(slot.as_mut().expect("connected"))).await
        else {
            *slot = None;
            return Err(self.late(limit));
        };
        result.map_err(|e| {
            if e.as_db_error().is_none() {
                *slot = None;
            }
            described(e)
        })
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(described)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(described)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chatworker_schema (version BIGINT NOT NULL)")
        .await
        .map_err(described)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM chatworker_schema",
            &[],
        )
        .await
        .map_err(described)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(step.postgres).await.map_err(described)?;
        tx.execute("DELETE FROM chatworker_schema", &[])
            .await
            .map_err(described)?;
        tx.execute(
            "INSERT INTO chatworker_schema (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await
        .map_err(described)?;
        tracing::info!(version = i + 1, "store schema migrated (PostgreSQL)");
    }
    tx.commit().await.map_err(described)
}

impl Backend for Postgres {
    fn admit<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<Admission, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
                let row = c
                    .query_opt(
                        "SELECT finished FROM chatworker_inbox WHERE identity = $1",
                        &[&identity],
                    )
                    .await?;
                Ok(match row.map(|r| r.get::<_, bool>(0)) {
                    None => Admission::New,
                    Some(true) => Admission::Finished,
                    Some(false) => {
                        let rows = c
                            .query(
                                "SELECT seq, entry FROM chatworker_outbox WHERE identity = $1 AND NOT sent ORDER BY seq",
                                &[&identity],
                            )
                            .await?;
                        Admission::Committed(
                            rows.iter()
                                .map(|r| Entry {
                                    seq: r.get(0),
                                    json: r.get(1),
                                })
                                .collect(),
                        )
                    }
                })
        }))
    }

    fn read<'a>(
        &'a self,
        key: &'a Key,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let row = c
                .query_opt(
                    "SELECT CASE WHEN expires_at IS NULL OR expires_at > $4 THEN value END, version
                         FROM chatworker_state WHERE scope = $1 AND owner = $2 AND name = $3",
                    &[&key.scope, &key.owner, &key.name, &now],
                )
                .await?;
            Ok(row.map(|r| Versioned {
                json: r.get(0),
                version: r.get(1),
            }))
        }))
    }

    fn commit(&self, commit: Commit, now: i64) -> BoxFuture<'_, Result<Committed, StoreError>> {
        if commit.writes.is_empty() {
            return Box::pin(async move {
                let commit = &commit;
                self.with(async move |c: &mut Client| {
                    // No state: the inbox row and the outbox in one statement.
                    let seqs: Vec<i64> = (0..commit.outbox.len() as i64).collect();
                    let entries: Vec<String> = commit.outbox.iter().map(|e| e.json()).collect();
                    let lane = commit.claim.as_ref().map(|c| c.lane.as_str());
                    let holder = commit.claim.as_ref().map(|c| c.holder.as_str());
                    let ttl = commit.claim.as_ref().map(|c| ms(c.ttl));
                    // Under a claim, nothing is stored unless it is still
                    // this holder's (the row stays locked to the end).
                    let row = c
                        .query_one(
                            &format!(
                                "WITH claim AS (
                            UPDATE chatworker_claims SET expires_at = {NOW_MS} + $8
                            WHERE lane = $6 AND holder = $7 RETURNING 1
                         ), inbox AS (
                            INSERT INTO chatworker_inbox (identity, committed_at, finished)
                            SELECT $1, $2, $3
                            WHERE $6::text IS NULL OR EXISTS (SELECT 1 FROM claim)
                            ON CONFLICT DO NOTHING RETURNING identity
                         ), outbox AS (
                            INSERT INTO chatworker_outbox (identity, seq, entry)
                            SELECT inbox.identity, s.seq, s.entry
                            FROM inbox, unnest($4::bigint[], $5::text[]) AS s(seq, entry)
                            RETURNING 1
                         )
                         SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM claim)"
                            ),
                            &[
                                &commit.identity,
                                &now,
                                &commit.outbox.is_empty(),
                                &seqs,
                                &entries,
                                &lane,
                                &holder,
                                &ttl,
                            ],
                        )
                        .await?;
                    if lane.is_some() && row.get::<_, i64>(1) == 0 {
                        return Ok(Committed::Lost);
                    }
                    Ok(match row.get::<_, i64>(0) {
                        0 => Committed::Duplicate,
                        _ => Committed::Done,
                    })
                })
                .await
            });
        }
        Box::pin(async move {
            let commit = &commit;
            self.with(async move |c: &mut Client| {
                let tx = c.transaction().await?;
                let inserted = tx
                    .execute(
                        "INSERT INTO chatworker_inbox (identity, committed_at, finished) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&commit.identity, &now, &commit.outbox.is_empty()],
                    )
                    .await?;
                if inserted == 0 {
                    return Ok(Committed::Duplicate);
                }
                for write in &commit.writes {
                    let k = &write.key;
                    let changed = match (&write.json, write.expected) {
                        (Some(json), Some(version)) => {
                            tx.execute(
                                "UPDATE chatworker_state SET value = $4, version = nextval('chatworker_versions'), expires_at = $5, updated_at = $6
                                 WHERE scope = $1 AND owner = $2 AND name = $3 AND version = $7",
                                &[&k.scope, &k.owner, &k.name, json, &write.expires_at, &now, &version],
                            )
                            .await?
                        }
                        (Some(json), None) => {
                            tx.execute(
                                "INSERT INTO chatworker_state (scope, owner, name, value, version, expires_at, updated_at)
                                 VALUES ($1, $2, $3, $4, nextval('chatworker_versions'), $5, $6) ON CONFLICT DO NOTHING",
                                &[&k.scope, &k.owner, &k.name, json, &write.expires_at, &now],
                            )
                            .await?
                        }
                        (None, Some(version)) => {
                            tx.execute(
                                "DELETE FROM chatworker_state WHERE scope = $1 AND owner = $2 AND name = $3 AND version = $4",
                                &[&k.scope, &k.owner, &k.name, &version],
                            )
                            .await?
                        }
                        (None, None) => {
                            let exists: bool = tx
                                .query_one(
                                    "SELECT EXISTS (SELECT 1 FROM chatworker_state WHERE scope = $1 AND owner = $2 AND name = $3)",
                                    &[&k.scope, &k.owner, &k.name],
                                )
                                .await?
                                .get(0);
                            u64::from(!exists)
                        }
                    };
                    if changed == 0 {
                        tx.rollback().await?;
                        return Ok(Committed::Conflict(write.key.clone()));
                    }
                }
                for (seq, entry) in commit.outbox.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO chatworker_outbox (identity, seq, entry) VALUES ($1, $2, $3)",
                        &[&commit.identity, &(seq as i64), &entry.json()],
                    )
                    .await?;
                }
                if let Some(claim) = &commit.claim {
                    // Last, so that the claim's row is locked only from
                    // here to the commit (its renewals skip it meanwhile):
                    // no other replica takes the lane in between.
                    let held = tx
                        .execute(
                            &format!(
                                "UPDATE chatworker_claims SET expires_at = {NOW_MS} + $3
                                 WHERE lane = $1 AND holder = $2"
                            ),
                            &[&claim.lane, &claim.holder, &ms(claim.ttl)],
                        )
                        .await?;
                    if held == 0 {
                        return Ok(Committed::Lost);
                    }
                }
                tx.commit().await?;
                Ok(Committed::Done)
            })
            .await
        })
    }

    fn sent<'a>(&'a self, identity: &'a str, seq: i64) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            c.execute(
                "UPDATE chatworker_outbox SET sent = TRUE WHERE identity = $1 AND seq = $2",
                &[&identity, &seq],
            )
            .await
            .map(drop)
        }))
    }

    fn finish<'a>(&'a self, identities: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            // One statement, one round trip, one implicit transaction.
            c.execute(
                "WITH finished AS (
                    UPDATE chatworker_inbox SET finished = TRUE WHERE identity = ANY($1)
                 )
                 DELETE FROM chatworker_outbox WHERE identity = ANY($1)",
                &[&identities],
            )
            .await
            .map(drop)
        }))
    }

    fn sweep(
        &self,
        before: i64,
        max_inbox: u64,
        now: i64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>> {
        let max_inbox = max_inbox.min(i64::MAX as u64) as i64;
        Box::pin(self.within(SWEEP_TIMEOUT, async move |c: &mut Client| {
            // One statement: the outbox rows removed are exactly those of
            // the inbox rows removed.
            let inbox: i64 = c
                .query_one(
                    "WITH old AS (
                        SELECT identity FROM chatworker_inbox WHERE committed_at < $1
                        UNION SELECT identity FROM (
                            SELECT identity FROM chatworker_inbox WHERE finished
                            ORDER BY committed_at DESC OFFSET $2
                        ) excess
                     ), gone AS (
                        DELETE FROM chatworker_inbox WHERE identity IN (SELECT identity FROM old)
                        RETURNING identity
                     ), outbox AS (
                        DELETE FROM chatworker_outbox WHERE identity IN (SELECT identity FROM gone)
                     )
                     SELECT count(*) FROM gone",
                    &[&before, &max_inbox],
                )
                .await?
                .get(0);
            let state = c
                .execute(
                    "DELETE FROM chatworker_state WHERE expires_at IS NOT NULL AND expires_at <= $1",
                    &[&now],
                )
                .await?;
            Ok(Swept {
                inbox: inbox as u64,
                state,
            })
        }))
    }

    fn dump(&self, limit: usize, now: i64) -> BoxFuture<'_, Result<Vec<StateRow>, StoreError>> {
        let limit = limit as i64;
        Box::pin(self.with(async move |c: &mut Client| {
                let rows = c
                    .query(
                        "SELECT scope, owner, name, value, version, expires_at FROM chatworker_state
                         WHERE expires_at IS NULL OR expires_at > $1 ORDER BY scope, owner, name LIMIT $2",
                        &[&now, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| StateRow {
                        scope: r.get(0),
                        owner: r.get(1),
                        name: r.get(2),
                        value: r.get(3),
                        version: r.get(4),
                        expires_at: r.get(5),
                    })
                    .collect())
        }))
    }
}
