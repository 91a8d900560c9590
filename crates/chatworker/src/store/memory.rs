//! `memory:`: the store in the process's memory, for tests and stateless
//! bots. The same rules as the databases (compare-and-set, inbox, outbox),
//! gone when the process ends: state does not survive a restart, and
//! neither does the inbox, so a redelivered event after a restart runs its
//! handler again (its replies still meet their deterministic IDs).

use super::backend::{
    Admission, Backend, Commit, Committed, Entry, Key, OutboxEntry, StateRow, StoreError, Swept,
    Versioned,
};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Data {
    state: BTreeMap<Key, Value>,
    /// identity → (committed at, finished, outbox entries with sent flags)
    inbox: HashMap<String, Inbox>,
    /// The inbox's identities, oldest first.
    order: VecDeque<String>,
    /// The last version given: one counter for every value.
    versions: i64,
}

/// The most events the in-memory inbox keeps (the oldest go first): it is
/// lost on restart anyway, and it must not grow with the process's age.
/// Duplicates of older events still meet their messages' IDs.
const MEMORY_INBOX: usize = 10_000;

#[derive(Debug)]
struct Value {
    json: String,
    version: i64,
    expires_at: Option<i64>,
}

#[derive(Debug)]
struct Inbox {
    committed_at: i64,
    finished: bool,
    outbox: Vec<(OutboxEntry, bool)>,
}

#[derive(Debug, Default)]
pub(super) struct Memory(Mutex<Data>);

impl Memory {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn live(value: &Value, now: i64) -> bool {
    value.expires_at.is_none_or(|at| at > now)
}

impl Backend for Memory {
    fn admit<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<Admission, StoreError>> {
        let data = self.data();
        let admission = match data.inbox.get(identity) {
            None => Admission::New,
            Some(inbox) if inbox.finished => Admission::Finished,
            Some(inbox) => Admission::Committed(
                inbox
                    .outbox
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, sent))| !sent)
                    .map(|(seq, (entry, _))| Entry {
                        seq: seq as i64,
                        json: entry.json(),
                    })
                    .collect(),
            ),
        };
        Box::pin(std::future::ready(Ok(admission)))
    }

    fn read<'a>(
        &'a self,
        key: &'a Key,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        let read = self.data().state.get(key).map(|value| Versioned {
            json: live(value, now).then(|| value.json.clone()),
            version: value.version,
        });
        Box::pin(std::future::ready(Ok(read)))
    }

    fn commit(&self, commit: Commit, now: i64) -> BoxFuture<'_, Result<Committed, StoreError>> {
        let mut data = self.data();
        let result = 'commit: {
            if data.inbox.contains_key(&commit.identity) {
                break 'commit Committed::Duplicate;
            }
            // Every write's version first: all or nothing.
            for write in &commit.writes {
                let version = data.state.get(&write.key).map(|v| v.version);
                if version != write.expected {
                    break 'commit Committed::Conflict(write.key.clone());
                }
            }
            for write in &commit.writes {
                match &write.json {
                    Some(json) => {
                        data.versions += 1;
                        let version = data.versions;
                        data.state.insert(
                            write.key.clone(),
                            Value {
                                json: json.clone(),
                                version,
                                expires_at: write.expires_at,
                            },
                        );
                    }
                    None => {
                        data.state.remove(&write.key);
                    }
                }
            }
            data.order.push_back(commit.identity.clone());
            let finished = commit.outbox.is_empty();
            // Only answered events go: one still sending keeps its row.
            while data.order.len() > MEMORY_INBOX {
                let Some(oldest) = data.order.front() else {
                    break;
                };
                if !data.inbox.get(oldest).is_none_or(|i| i.finished) {
                    break;
                }
                if let Some(oldest) = data.order.pop_front() {
                    data.inbox.remove(&oldest);
                }
            }
            data.inbox.insert(
                commit.identity,
                Inbox {
                    committed_at: now,
                    finished,
                    outbox: commit.outbox.into_iter().map(|e| (e, false)).collect(),
                },
            );
            Committed::Done
        };
        Box::pin(std::future::ready(Ok(result)))
    }

    fn sent<'a>(&'a self, identity: &'a str, seq: i64) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(inbox) = self.data().inbox.get_mut(identity)
            && let Some(entry) = inbox.outbox.get_mut(seq as usize)
        {
            entry.1 = true;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn finish<'a>(&'a self, identities: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut data = self.data();
        for identity in identities {
            if let Some(inbox) = data.inbox.get_mut(identity) {
                inbox.finished = true;
                inbox.outbox = Vec::new();
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn sweep(
        &self,
        before: i64,
        max_inbox: u64,
        now: i64,
    ) -> BoxFuture<'_, Result<Swept, StoreError>> {
        let mut data = self.data();
        let inbox_before = data.inbox.len();
        data.inbox.retain(|_, inbox| inbox.committed_at >= before);
        // The count bounds answered events only: one still sending keeps
        // its row until the retention passes.
        let mut ages: Vec<(i64, String)> = data
            .inbox
            .iter()
            .filter(|(_, inbox)| inbox.finished)
            .map(|(id, inbox)| (inbox.committed_at, id.clone()))
            .collect();
        if ages.len() as u64 > max_inbox {
            ages.sort();
            let excess = ages.len() - max_inbox as usize;
            for (_, id) in ages.into_iter().take(excess) {
                data.inbox.remove(&id);
            }
        }
        let Data { inbox, order, .. } = &mut *data;
        order.retain(|id| inbox.contains_key(id));
        let state_before = data.state.len();
        data.state.retain(|_, value| live(value, now));
        let swept = Swept {
            inbox: (inbox_before - data.inbox.len()) as u64,
            state: (state_before - data.state.len()) as u64,
        };
        Box::pin(std::future::ready(Ok(swept)))
    }

    fn dump(&self, limit: usize, now: i64) -> BoxFuture<'_, Result<Vec<StateRow>, StoreError>> {
        let rows = self
            .data()
            .state
            .iter()
            .filter(|(_, value)| live(value, now))
            .take(limit)
            .map(|(key, value)| StateRow {
                scope: key.scope.to_owned(),
                owner: key.owner.clone(),
                name: key.name.clone(),
                value: value.json.clone(),
                version: value.version,
                expires_at: value.expires_at,
            })
            .collect();
        Box::pin(std::future::ready(Ok(rows)))
    }
}
