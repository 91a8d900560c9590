//! `sqlite://PATH`: the embedded store (one file, WAL), for `chatworker
//! dev`, the examples and single-pod deployments. One connection, one call
//! at a time. The event's calls take microseconds and run where their
//! caller runs; housekeeping, which can take longer, runs on tokio's
//! blocking pool.

use super::backend::{
    Admission, Backend, Commit, Committed, Entry, Key, MIGRATIONS, StateRow, StoreError, Swept,
    Versioned,
};
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::{Arc, Mutex};

pub(super) struct Sqlite {
    connection: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("SQLite: {e}"))
}

impl Sqlite {
    /// Opens (creating) the file and brings its schema up to date.
    pub(super) async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let connection = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            if let Some(dir) = std::path::Path::new(&path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
            let mut connection = Connection::open(&path)
                .map_err(|e| unavailable(format!("cannot open {path}: {e}")))?;
            connection
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
                )
                .map_err(unavailable)?;
            migrate(&mut connection)?;
            Ok(connection)
        })
        .await
        .map_err(unavailable)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `f` on the connection, where the caller runs. SQLite's calls
    /// here take microseconds (WAL, `synchronous = NORMAL`: no sync per
    /// commit); handing each to the blocking pool cost more than the call
    /// itself (two thread switches per call, BENCHMARKS.md).
    fn with<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        let result = {
            let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut connection).map_err(unavailable)
        };
        Box::pin(std::future::ready(result))
    }

    /// Runs `f` on the connection on tokio's blocking pool: for calls that
    /// may take long, so that they hold no runtime thread.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let connection = self.connection.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut connection).map_err(unavailable)
            })
            .await
            .map_err(unavailable)?
        })
    }
}

/// Applies the migrations the file lacks, in one transaction.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let tx = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS chatworker_schema (version BIGINT NOT NULL)")
        .map_err(unavailable)?;
    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM chatworker_schema",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step.sqlite).map_err(unavailable)?;
        tx.execute("DELETE FROM chatworker_schema", [])
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO chatworker_schema (version) VALUES (?1)",
            params![i as i64 + 1],
        )
        .map_err(unavailable)?;
        tracing::info!(version = i + 1, "store schema migrated (SQLite)");
    }
    tx.commit().map_err(unavailable)
}

/// The store's next version (the writer holds the file: no one else takes
/// it meanwhile).
fn next_version(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached("UPDATE chatworker_versions SET last = last + 1 RETURNING last")?
        .query_row([], |r| r.get(0))
}

impl Backend for Sqlite {
    fn admit<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<Admission, StoreError>> {
        let identity = identity.to_owned();
        self.with(move |c| {
            let finished: Option<bool> = c
                .prepare_cached("SELECT finished FROM chatworker_inbox WHERE identity = ?1")?
                .query_row(params![identity], |r| r.get(0))
                .optional()?;
            Ok(match finished {
                None => Admission::New,
                Some(true) => Admission::Finished,
                Some(false) => {
                    let mut select = c.prepare_cached(
                        "SELECT seq, entry FROM chatworker_outbox WHERE identity = ?1 AND NOT sent ORDER BY seq",
                    )?;
                    let entries = select
                        .query_map(params![identity], |r| {
                            Ok(Entry {
                                seq: r.get(0)?,
                                json: r.get(1)?,
                            })
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    Admission::Committed(entries)
                }
            })
        })
    }

    fn read<'a>(
        &'a self,
        key: &'a Key,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        let key = key.clone();
        self.with(move |c| {
            c.prepare_cached(
                "SELECT CASE WHEN expires_at IS NULL OR expires_at > ?4 THEN value END, version
                 FROM chatworker_state WHERE scope = ?1 AND owner = ?2 AND name = ?3",
            )?
            .query_row(params![key.scope, key.owner, key.name, now], |r| {
                Ok(Versioned {
                    json: r.get(0)?,
                    version: r.get(1)?,
                })
            })
            .optional()
        })
    }

    fn commit(&self, commit: Commit, now: i64) -> BoxFuture<'_, Result<Committed, StoreError>> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO chatworker_inbox (identity, committed_at, finished) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![commit.identity, now, commit.outbox.is_empty()])?;
            if inserted == 0 {
                return Ok(Committed::Duplicate);
            }
            for write in &commit.writes {
                let k = &write.key;
                let changed = match (&write.json, write.expected) {
                    (Some(json), Some(version)) => {
                        let next = next_version(&tx)?;
                        tx.prepare_cached(
                            "UPDATE chatworker_state SET value = ?4, version = ?8, expires_at = ?5, updated_at = ?6
                             WHERE scope = ?1 AND owner = ?2 AND name = ?3 AND version = ?7",
                        )?
                        .execute(params![k.scope, k.owner, k.name, json, write.expires_at, now, version, next])?
                    }
                    (Some(json), None) => {
                        let next = next_version(&tx)?;
                        tx.prepare_cached(
                            "INSERT INTO chatworker_state (scope, owner, name, value, version, expires_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?7, ?5, ?6) ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![k.scope, k.owner, k.name, json, write.expires_at, now, next])?
                    }
                    (None, Some(version)) => tx
                        .prepare_cached(
                            "DELETE FROM chatworker_state WHERE scope = ?1 AND owner = ?2 AND name = ?3 AND version = ?4",
                        )?
                        .execute(params![k.scope, k.owner, k.name, version])?,
                    // Removing what was not there: still a check that it is not.
                    (None, None) => {
                        let exists: bool = tx
                            .prepare_cached(
                                "SELECT EXISTS (SELECT 1 FROM chatworker_state WHERE scope = ?1 AND owner = ?2 AND name = ?3)",
                            )?
                            .query_row(params![k.scope, k.owner, k.name], |r| r.get(0))?;
                        usize::from(!exists)
                    }
                };
                if changed == 0 {
                    // Dropping the transaction rolls it back.
                    return Ok(Committed::Conflict(write.key.clone()));
                }
            }
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO chatworker_outbox (identity, seq, entry) VALUES (?1, ?2, ?3)",
                )?;
                for (seq, entry) in commit.outbox.iter().enumerate() {
                    insert.execute(params![commit.identity, seq as i64, entry.json()])?;
                }
            }
            tx.commit()?;
            Ok(Committed::Done)
        })
    }

    fn sent<'a>(&'a self, identity: &'a str, seq: i64) -> BoxFuture<'a, Result<(), StoreError>> {
        let identity = identity.to_owned();
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE chatworker_outbox SET sent = TRUE WHERE identity = ?1 AND seq = ?2",
            )?
            .execute(params![identity, seq])
            .map(drop)
        })
    }

    fn finish<'a>(&'a self, identities: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut finished = tx.prepare_cached(
                    "UPDATE chatworker_inbox SET finished = TRUE WHERE identity = ?1",
                )?;
                let mut sent =
                    tx.prepare_cached("DELETE FROM chatworker_outbox WHERE identity = ?1")?;
                for identity in identities {
                    finished.execute(params![identity])?;
                    sent.execute(params![identity])?;
                }
            }
            tx.commit()
        })
    }

    fn sweep(
        &self,
        before: i64,
        max_inbox: u64,
        now: i64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>> {
        self.blocking(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM chatworker_outbox WHERE identity IN (
                    SELECT identity FROM chatworker_inbox WHERE committed_at < ?1
                    UNION SELECT identity FROM (SELECT identity FROM chatworker_inbox WHERE finished ORDER BY committed_at DESC LIMIT -1 OFFSET ?2))",
                params![before, max_inbox as i64],
            )?;
            let inbox = tx.execute(
                "DELETE FROM chatworker_inbox WHERE committed_at < ?1 OR identity IN (
                    SELECT identity FROM chatworker_inbox WHERE finished ORDER BY committed_at DESC LIMIT -1 OFFSET ?2)",
                params![before, max_inbox as i64],
            )?;
            let state = tx.execute(
                "DELETE FROM chatworker_state WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now],
            )?;
            tx.commit()?;
            Ok(Swept {
                inbox: inbox as u64,
                state: state as u64,
            })
        })
    }

    fn dump(&self, limit: usize, now: i64) -> BoxFuture<'_, Result<Vec<StateRow>, StoreError>> {
        self.with(move |c| {
            let mut select = c.prepare_cached(
                "SELECT scope, owner, name, value, version, expires_at FROM chatworker_state
                 WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY scope, owner, name LIMIT ?2",
            )?;
            select
                .query_map(params![now, limit as i64], |r| {
                    Ok(StateRow {
                        scope: r.get(0)?,
                        owner: r.get(1)?,
                        name: r.get(2)?,
                        value: r.get(3)?,
                        version: r.get(4)?,
                        expires_at: r.get(5)?,
                    })
                })?
                .collect()
        })
    }
}
