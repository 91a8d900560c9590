//! The store test suite, run against every backend: `memory:`, SQLite on
//! a temporary file, and a real PostgreSQL (the server `scripts/test` and
//! `.ci/run` start; its URL in `CHATWORKER_TEST_POSTGRES_URL`), each test on
//! a database of its own.

use super::*;
use std::sync::Arc;

fn key(name: &str) -> Key {
    Key {
        scope: "space",
        owner: "spaces/AAA".into(),
        name: name.into(),
    }
}

fn write(name: &str, expected: Option<i64>, json: Option<&str>) -> Write {
    Write {
        key: key(name),
        expected,
        json: json.map(str::to_owned),
        expires_at: None,
    }
}

fn commit(identity: &str, writes: Vec<Write>, outbox: &[&str]) -> Commit {
    Commit {
        identity: identity.into(),
        writes,
        outbox: outbox.iter().map(|e| OutboxEntry::json_text(e)).collect(),
        claim: None,
    }
}

/// A store of each kind, empty. The Postgres one is a new database on the
/// test server.
pub(super) async fn fresh(kind: &str) -> (Store, Option<tempfile::TempDir>) {
    match kind {
        "memory" => (Store::memory(), None),
        "sqlite" => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            (Store::open(&url).await.expect("sqlite"), Some(dir))
        }
        "postgres" => (
            Store::open(&fresh_postgres().await)
                .await
                .expect("postgres"),
            None,
        ),
        _ => unreachable!(),
    }
}

/// A new, empty database on the test server: its URL.
pub(crate) async fn fresh_postgres() -> String {
    let server = std::env::var("CHATWORKER_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "CHATWORKER_TEST_POSTGRES_URL is not set. The store's tests need a real PostgreSQL: \
             run them with scripts/test (it starts one), or set it to postgres://USER@HOST:PORT/postgres"
        )
    });
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "chatworker_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL server");
    tokio::spawn(connection);
    // One statement per query: neither may run in a transaction block.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .expect("a test database");
    }
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    format!("{base}/{name}")
}

async fn a_commit_is_admitted_sent_and_finished(store: Store) {
    assert_eq!(store.admit("e1").await.unwrap(), Admission::New);
    let done = store
        .commit(commit("e1", vec![write("n", None, Some("1"))], &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(done, Committed::Done);
    let entries = |seqs: &[(i64, &str)]| {
        Admission::Committed(
            seqs.iter()
                .map(|(seq, json)| Entry {
                    seq: *seq,
                    json: (*json).into(),
                })
                .collect(),
        )
    };
    assert_eq!(
        store.admit("e1").await.unwrap(),
        entries(&[(0, "a"), (1, "b")])
    );
    store.sent("e1", 0).await.unwrap();
    assert_eq!(store.admit("e1").await.unwrap(), entries(&[(1, "b")]));
    store.finish("e1").await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.admit("e1").await.unwrap(), Admission::Finished);
    let read = store.read(&key("n")).await.unwrap().unwrap();
    assert_eq!(read.json.as_deref(), Some("1"));
    // A commit with nothing to send is finished at once.
    store.commit(commit("e2", vec![], &[])).await.unwrap();
    assert_eq!(store.admit("e2").await.unwrap(), Admission::Finished);
}

async fn an_event_commits_once(store: Store) {
    let first = commit("e", vec![write("n", None, Some("1"))], &["a"]);
    assert_eq!(store.commit(first).await.unwrap(), Committed::Done);
    let again = commit("e", vec![write("n", Some(1), Some("2"))], &["b"]);
    assert_eq!(store.commit(again).await.unwrap(), Committed::Duplicate);
    let read = store.read(&key("n")).await.unwrap().unwrap();
    assert_eq!(
        read.json.as_deref(),
        Some("1"),
        "the second commit changed nothing"
    );
}

async fn a_stale_version_conflicts_and_changes_nothing(store: Store) {
    store
        .commit(commit("a", vec![write("n", None, Some("1"))], &[]))
        .await
        .unwrap();
    let first = store.read(&key("n")).await.unwrap().unwrap().version;
    // Written as if absent, and with an old version: both conflict, and
    // the other write in the same commit is not applied either.
    for stale in [None, Some(first + 1000)] {
        let result = store
            .commit(commit(
                "b",
                vec![write("m", None, Some("x")), write("n", stale, Some("2"))],
                &["reply"],
            ))
            .await
            .unwrap();
        assert_eq!(result, Committed::Conflict(key("n")));
        assert_eq!(store.read(&key("m")).await.unwrap(), None);
        assert_eq!(store.admit("b").await.unwrap(), Admission::New);
    }
    let current = commit("b", vec![write("n", Some(first), Some("2"))], &[]);
    assert_eq!(store.commit(current).await.unwrap(), Committed::Done);
    let read = store.read(&key("n")).await.unwrap().unwrap();
    assert_eq!(read.json.as_deref(), Some("2"));
    assert!(read.version > first, "{} after {first}", read.version);
    // Removing, at the version read.
    let remove = commit("c", vec![write("n", Some(read.version), None)], &[]);
    assert_eq!(store.commit(remove).await.unwrap(), Committed::Done);
    assert_eq!(store.read(&key("n")).await.unwrap(), None);
}

/// A value removed and written again never takes a version an old read
/// holds: a write at that old version conflicts (no ABA).
async fn a_value_written_again_after_removal_has_a_new_version(store: Store) {
    store
        .commit(commit("a", vec![write("n", None, Some("1"))], &[]))
        .await
        .unwrap();
    let old = store.read(&key("n")).await.unwrap().unwrap().version;
    let remove = commit("b", vec![write("n", Some(old), None)], &[]);
    assert_eq!(store.commit(remove).await.unwrap(), Committed::Done);
    let again = commit("c", vec![write("n", None, Some("3"))], &[]);
    assert_eq!(store.commit(again).await.unwrap(), Committed::Done);
    let stale = commit("d", vec![write("n", Some(old), Some("2"))], &[]);
    assert_eq!(
        store.commit(stale).await.unwrap(),
        Committed::Conflict(key("n")),
        "written at a version read before the removal"
    );
    let read = store.read(&key("n")).await.unwrap().unwrap();
    assert_eq!(read.json.as_deref(), Some("3"));
}

async fn concurrent_increments_are_all_kept(store: Store) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let read = store.read(&key("counter")).await.unwrap();
                    let n: u64 = read
                        .as_ref()
                        .and_then(|r| r.json.as_deref())
                        .map(|j| j.parse().unwrap())
                        .unwrap_or(0);
                    let w = write(
                        "counter",
                        read.map(|r| r.version),
                        Some(&(n + 1).to_string()),
                    );
                    match store
                        .commit(commit(&format!("inc{i}"), vec![w], &[]))
                        .await
                        .unwrap()
                    {
                        Committed::Done => return tries,
                        Committed::Conflict(_) => continue,
                        other => {
                            panic!("each increment is its own event, under no claim: {other:?}")
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let read = store.read(&key("counter")).await.unwrap().unwrap();
    assert_eq!(read.json.as_deref(), Some("20"));
}

async fn expired_values_read_as_absent_and_are_swept(store: Store) {
    let mut expired = write("old", None, Some("1"));
    expired.expires_at = Some(now_ms() - 1);
    let mut alive = write("new", None, Some("2"));
    alive.expires_at = Some(now_ms() + 60_000);
    store
        .commit(commit("t", vec![expired, alive], &[]))
        .await
        .unwrap();
    let old = store.read(&key("old")).await.unwrap().unwrap();
    assert_eq!(old.json, None, "expired, its version kept");
    let names: Vec<String> = store
        .dump(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["new"]);
    // Writing over an expired value is a compare-and-set on its version.
    let over = commit("u", vec![write("old", Some(old.version), Some("3"))], &[]);
    assert_eq!(store.commit(over).await.unwrap(), Committed::Done);
    let mut expired = write("gone", None, Some("1"));
    expired.expires_at = Some(now_ms() - 1);
    store.commit(commit("v", vec![expired], &[])).await.unwrap();
    let swept = store.sweep(Duration::from_secs(3600), 1_000).await.unwrap();
    assert_eq!(swept.state, 1);
    assert_eq!(store.read(&key("gone")).await.unwrap(), None);
}

async fn housekeeping_bounds_the_inbox(store: Store) {
    // One still sending: the count never removes it.
    store
        .commit(commit("sending", vec![], &["x"]))
        .await
        .unwrap();
    for i in 0..5 {
        store
            .commit(commit(&format!("e{i}"), vec![], &["x"]))
            .await
            .unwrap();
        store.finish(&format!("e{i}")).await.unwrap();
        store.flush().await.unwrap();
        // Distinct commit times, so "oldest" is defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let swept = store.sweep(Duration::from_secs(3600), 3).await.unwrap();
    assert_eq!(swept.inbox, 2, "the two oldest answered beyond 3");
    assert_eq!(store.admit("e0").await.unwrap(), Admission::New);
    assert_eq!(store.admit("e4").await.unwrap(), Admission::Finished);
    assert!(matches!(
        store.admit("sending").await.unwrap(),
        Admission::Committed(_)
    ));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let swept = store.sweep(Duration::ZERO, 1_000).await.unwrap();
    assert_eq!(swept.inbox, 4, "past retention, sending or not");
    assert_eq!(store.admit("e4").await.unwrap(), Admission::New);
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let (store, _dir) = super::fresh("memory").await;
                    super::$test(store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (store, _dir) = super::fresh("sqlite").await;
                    super::$test(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (store, _dir) = super::fresh("postgres").await;
                    super::$test(store).await;
                }
            )*
        }
    };
}

suite!(
    a_commit_is_admitted_sent_and_finished,
    an_event_commits_once,
    a_stale_version_conflicts_and_changes_nothing,
    a_value_written_again_after_removal_has_a_new_version,
    concurrent_increments_are_all_kept,
    expired_values_read_as_absent_and_are_swept,
    housekeeping_bounds_the_inbox,
);

#[tokio::test]
async fn sqlite_migrates_once_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url).await.unwrap();
    store
        .commit(commit("kept", vec![write("n", None, Some("1"))], &[]))
        .await
        .unwrap();
    drop(store);
    // Opened again: nothing migrated twice, nothing lost.
    let store = Store::open(&url).await.unwrap();
    assert!(store.read(&key("n")).await.unwrap().is_some());
    drop(store);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE chatworker_schema SET version = 99", [])
        .unwrap();
    drop(c);
    let error = Store::open(&url).await.unwrap_err();
    assert!(
        matches!(error, StoreError::TooNew { found: 99, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_url_is_a_clear_error() {
    for url in ["redis://x", "sqlite://", "nonsense"] {
        let error = Store::open(url).await.unwrap_err();
        assert!(matches!(error, StoreError::Url { .. }), "{url}: {error}");
    }
    let error = Store::open("postgres://nobody:s3cret@127.0.0.1:1/db")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, StoreError::Unavailable(_)), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
}

/// A value stored as one type and read as another: the policy decides.
#[tokio::test]
async fn an_undecodable_value_fails_or_resets_as_the_app_chose() {
    let store = Store::memory();
    store
        .commit(commit("w", vec![write("n", None, Some("\"text\""))], &[]))
        .await
        .unwrap();
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let txn = |policy| {
        let counted = counted.clone();
        Arc::new(
            Txn::new(store.clone(), "r".into(), TxnOptions { bad_state: policy })
                .counting_undecodable(Arc::new(move || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })),
        )
    };
    let error = txn(BadState::Fail).load::<u64>(key("n")).await.unwrap_err();
    assert!(
        error.to_string().contains("space spaces/AAA/n") && error.to_string().contains("u64"),
        "the key and the type are named: {error}"
    );
    let reset = txn(BadState::Reset);
    let mut value = reset.load::<u64>(key("n")).await.unwrap();
    assert_eq!(value.get(), None);
    value.set(7).unwrap();
    assert_eq!(
        store.commit(reset.commit()).await.unwrap(),
        Committed::Done,
        "written over at the version read"
    );
    assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let read = store.read(&key("n")).await.unwrap().unwrap();
    assert_eq!(read.json.as_deref(), Some("7"));
}

/// A value set with a time-to-live reads as absent once it has passed.
#[tokio::test]
async fn a_value_with_a_time_to_live_expires() {
    let store = Store::memory();
    let txn = Arc::new(Txn::new(store.clone(), "t".into(), TxnOptions::default()));
    let mut seen = txn.load::<String>(key("seen")).await.unwrap();
    seen.set_for("yes".into(), Duration::from_millis(50))
        .unwrap();
    store.commit(txn.commit()).await.unwrap();
    let again = Arc::new(Txn::new(store.clone(), "u".into(), TxnOptions::default()));
    let value = again.load::<String>(key("seen")).await.unwrap();
    assert_eq!(value.get().map(String::as_str), Some("yes"));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let later = Arc::new(Txn::new(store.clone(), "v".into(), TxnOptions::default()));
    assert_eq!(later.load::<String>(key("seen")).await.unwrap().get(), None);
}

/// The in-memory inbox does not grow with the process's age (answered
/// events go, oldest first).
#[tokio::test]
async fn the_memory_inbox_keeps_the_newest_ten_thousand() {
    let store = Store::memory();
    for i in 0..10_001 {
        store
            .commit(commit(&format!("e{i}"), vec![], &[]))
            .await
            .unwrap();
    }
    assert_eq!(store.admit("e0").await.unwrap(), Admission::New);
    assert_eq!(store.admit("e1").await.unwrap(), Admission::Finished);
}

/// What a fleet shares, on a real PostgreSQL: admission once per identity,
/// one holder per lane, a lane's events in arrival order, outcomes for the
/// replicas that wait, a transient outcome admitted again at its place, and
/// the quota's buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_admits_once_claims_lanes_and_shares_the_quota() {
    let (store, _dir) = fresh("postgres").await;
    let fleet = store.fleet().expect("PostgreSQL is a fleet store").clone();
    let ttl = Duration::from_secs(5);
    let hold = Duration::from_secs(60);
    let step = |holder: &'static str, done: Option<Handled>| {
        let fleet = fleet.clone();
        async move {
            fleet
                .next("lane", holder, ttl, done.as_ref(), hold)
                .await
                .unwrap()
        }
    };
    let next = |holder: &'static str, done: Option<Handled>| async move {
        match step(holder, done).await {
            Next::Event(queued) => Some(queued),
            Next::Idle => None,
            other => panic!("{holder}: {other:?}"),
        }
    };
    let handled = |identity: &str, outcome: &str| Handled {
        identity: identity.into(),
        outcome: outcome.into(),
        detail: String::new(),
    };
    fleet.enqueue("e1", "lane", b"one", Some(1)).await.unwrap();
    fleet.enqueue("e2", "lane", b"two", None).await.unwrap();
    // A copy of e1 (another replica's delivery): still one row, first.
    fleet.enqueue("e1", "lane", b"one", Some(1)).await.unwrap();
    assert!(fleet.claim("lane", "a", ttl).await.unwrap());
    assert!(!fleet.claim("lane", "b", ttl).await.unwrap(), "a holds it");
    assert!(fleet.claim("lane", "a", ttl).await.unwrap(), "renewed");
    assert!(matches!(
        fleet.next("lane", "b", ttl, None, hold).await.unwrap(),
        Next::Lost
    ));
    assert_eq!(fleet.unclaimed(10).await.unwrap(), Vec::<String>::new());
    let head = next("a", None).await.expect("e1 waits");
    assert_eq!(
        (head.identity.as_str(), head.event.as_slice()),
        ("e1", &b"one"[..])
    );
    // Recorded and the next read in one round trip.
    let second = next("a", Some(handled("e1", "delivered"))).await.unwrap();
    assert_eq!(second.identity, "e2");
    // Failed for now, e2 waits its turn.
    assert!(
        !fleet
            .retry_after("e2", "lane", "b", ttl, Duration::from_secs(60))
            .await
            .unwrap(),
        "only the lane's holder counts a failed attempt"
    );
    assert!(
        fleet
            .retry_after("e2", "lane", "a", ttl, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let retried = next("a", None).await.unwrap();
    assert_eq!(retried.attempts, 1);
    assert!(retried.wait > Duration::from_secs(50), "{:?}", retried.wait);
    assert!(
        !fleet.release_if_idle("lane", "a").await.unwrap(),
        "e2 waits"
    );
    // Failed for good here, e2 holds the lane until its redelivery comes.
    assert!(matches!(
        step("a", Some(handled("e2", "transient"))).await,
        Next::Held
    ));
    let outcomes = fleet
        .outcomes(&["e1".into(), "e2".into(), "e3".into()])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    // Setting a panic aside leaves a transient failure recorded since alone.
    fleet.let_go("e2", "panicked:set_aside").await.unwrap();
    let e2 = fleet.outcomes(&["e2".into()]).await.unwrap();
    assert_eq!(e2[0].outcome, "transient");
    // Its redelivery admits it again, at its place, attempts reset.
    fleet.enqueue("e2", "lane", b"two", None).await.unwrap();
    let again = next("a", None).await.expect("e2 waits again");
    assert_eq!((again.identity.as_str(), again.attempts), ("e2", 0));
    // Given up, the lane is anyone's; one with events waiting is found.
    assert_eq!(fleet.release_all("a").await.unwrap(), 1);
    assert_eq!(fleet.unclaimed(10).await.unwrap(), ["lane"]);
    assert!(fleet.claim("lane", "b", ttl).await.unwrap());
    let census = store.census().await.unwrap().unwrap();
    assert_eq!((census.replicas, census.lanes, census.waiting), (1, 1, 1));
    // Renewed only for the lanes named.
    assert_eq!(
        fleet
            .renew("b", &["lane".into(), "else".into()], ttl)
            .await
            .unwrap(),
        ["lane"]
    );
    // Failed again and let go (its last attempt): the lane goes on.
    assert!(matches!(
        step("b", Some(handled("e2", "panicked"))).await,
        Next::Held
    ));
    fleet.let_go("e2", "given_up").await.unwrap();
    assert!(next("b", None).await.is_none());
    assert!(fleet.release_if_idle("lane", "b").await.unwrap());
    // Published in the other order than admitted: taken as published; one
    // published just now waits a moment for a sibling that may be late.
    let now = now_ms();
    fleet
        .enqueue("late", "pub", b"x", Some(now - 5_000))
        .await
        .unwrap();
    fleet
        .enqueue("early", "pub", b"x", Some(now - 10_000))
        .await
        .unwrap();
    fleet
        .enqueue("fresh", "fresh", b"x", Some(now))
        .await
        .unwrap();
    for lane in ["pub", "fresh"] {
        assert!(fleet.claim(lane, "c", ttl).await.unwrap());
    }
    let Next::Event(first) = fleet.next("pub", "c", ttl, None, hold).await.unwrap() else {
        panic!("an event waits");
    };
    assert_eq!(
        (first.identity.as_str(), first.wait),
        ("early", Duration::ZERO)
    );
    let Next::Event(fresh) = fleet.next("fresh", "c", ttl, None, hold).await.unwrap() else {
        panic!("an event waits");
    };
    assert!(fresh.wait > Duration::from_millis(100), "{:?}", fresh.wait);
    // An expired claim is anyone's too.
    assert!(fleet.claim("other", "a", Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(fleet.claim("other", "b", ttl).await.unwrap());
    // The quota: 60 a minute, a burst of one: the first write goes at
    // once, the next waits about a second, the one after two.
    let space = [Bucket {
        name: "space/spaces/AAA".into(),
        period: Duration::from_secs(1),
        burst: 1,
    }];
    let mut waits: Vec<Duration> = futures::future::join_all((0..3).map(|_| fleet.reserve(&space)))
        .await
        .into_iter()
        .map(|reserved| reserved.unwrap().wait)
        .collect();
    waits.sort();
    assert!(waits[0] < Duration::from_millis(100), "{waits:?}");
    assert!(
        waits[1] > Duration::from_millis(800) && waits[1] < Duration::from_millis(1100),
        "{waits:?}"
    );
    assert!(waits[2] > Duration::from_millis(1800), "{waits:?}");
    assert_eq!(
        fleet.forget(Duration::ZERO).await.unwrap(),
        2,
        "both outcomes"
    );
}

/// A replica that stalled past its claim (another took the lane since)
/// stores nothing: not its event's commit, with or without state, and not
/// the outcome it would record. The lane's new holder's do go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_under_a_lost_claim_stores_nothing() {
    let (store, _dir) = fresh("postgres").await;
    let fleet = store.fleet().expect("PostgreSQL is a fleet store").clone();
    let ttl = Duration::from_secs(5);
    let under = |holder: &str| Claim {
        lane: "lane".into(),
        holder: holder.into(),
        ttl,
    };
    fleet.enqueue("e1", "lane", b"one", None).await.unwrap();
    assert!(
        fleet
            .claim("lane", "a", Duration::from_millis(50))
            .await
            .unwrap()
    );
    // Held, a's commit goes through and renews the claim.
    let mut held = commit("e0", vec![], &["{}"]);
    held.claim = Some(under("a"));
    assert_eq!(store.commit(held).await.unwrap(), Committed::Done);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !fleet.claim("lane", "b", ttl).await.unwrap(),
        "the commit renewed a's claim"
    );
    // a stalls: its claim runs out and b takes the lane.
    fleet.release_all("a").await.unwrap();
    assert!(
        fleet
            .claim("lane", "a", Duration::from_millis(50))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fleet.claim("lane", "b", ttl).await.unwrap());
    let mut stateless = commit("e1", vec![], &["{\"create\":1}"]);
    stateless.claim = Some(under("a"));
    assert_eq!(store.commit(stateless).await.unwrap(), Committed::Lost);
    let mut stateful = commit("e1", vec![write("n", None, Some("1"))], &[]);
    stateful.claim = Some(under("a"));
    assert_eq!(store.commit(stateful).await.unwrap(), Committed::Lost);
    assert_eq!(store.admit("e1").await.unwrap(), Admission::New);
    assert_eq!(store.read(&key("n")).await.unwrap(), None);
    // Nor is its outcome recorded.
    let done = Handled {
        identity: "e1".into(),
        outcome: "delivered".into(),
        detail: String::new(),
    };
    assert!(matches!(
        fleet
            .next("lane", "a", ttl, Some(&done), Duration::ZERO)
            .await
            .unwrap(),
        Next::Lost
    ));
    assert!(fleet.outcomes(&["e1".into()]).await.unwrap().is_empty());
    // The new holder's commit and outcome go through.
    let mut theirs = commit("e1", vec![write("n", None, Some("1"))], &[]);
    theirs.claim = Some(under("b"));
    assert_eq!(store.commit(theirs).await.unwrap(), Committed::Done);
    assert!(matches!(
        fleet
            .next("lane", "b", ttl, Some(&done), Duration::ZERO)
            .await
            .unwrap(),
        Next::Idle
    ));
    assert_eq!(fleet.outcomes(&["e1".into()]).await.unwrap(), [done]);
}

/// A lane's holder finds the lane's next event, or a failed one that holds
/// it, by the lane: not by scanning every event handled within the hold.
/// With 5,000 events handled (a drain) the lookup `Fleet::next` makes
/// (`fleet::next_in_lane`) is planned on indexes only; without migration 4
/// it was a scan of the whole queue (6.5 ms a call at 20,000 events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_next_event_is_found_by_the_lane() {
    let url = fresh_postgres().await;
    let _store = Store::open(&url).await.expect("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("the test database");
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO chatworker_queue (identity, lane, event, published_at, arrived_at, outcome, handled_at)
             SELECT 'e' || g, 'lane' || g, 'x', 0, 0, 'delivered',
                    (extract(epoch from clock_timestamp()) * 1000)::bigint
             FROM generate_series(1, 5000) g;
             INSERT INTO chatworker_queue (identity, lane, event, published_at, arrived_at)
             VALUES ('waiting', 'lane7', 'x', 0, 0);
             ANALYZE chatworker_queue;",
        )
        .await
        .expect("a drained queue");
    let lookup = super::fleet::next_in_lane()
        .replace("$1", "'lane7'")
        .replace("$4", "'e7'")
        .replace("$7", "120000");
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {lookup}"), &[])
        .await
        .expect("a plan")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}
