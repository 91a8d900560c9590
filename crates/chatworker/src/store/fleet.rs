//! What several replicas share beyond state, inbox and outbox: the queue of
//! events in the order they arrived, the claims on threads (lanes), and the
//! write quota's buckets. PostgreSQL only: the fleet's one place of truth,
//! and its clock (every time here is the database's, so that replicas whose
//! clocks differ still agree).
//!
//! - The queue: each event is admitted once, with a sequence number, under
//!   its lane. A lane's events are handled one at a time, lowest sequence
//!   first, by the replica that holds the lane's claim, whichever replica
//!   pulled them. Once handled, the row keeps the outcome for the replicas
//!   that hold deliveries of the event, which settle them by it.
//! - Claims: a lane's claim expires unless its holder renews it; a holder
//!   that died leaves nothing stuck for longer than the claim's time.
//! - Buckets: one GCRA row per quota (a space's, the project's); a write
//!   reserves its slot in one statement and waits until the slot's time.

use super::backend::StoreError;
use super::postgres::{NOW_MS, Postgres, ms};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

/// How long after its publication an event waits before its lane's holder
/// takes it: two events of one thread published this close together may
/// reach two replicas and the store in either order; within the window
/// they are taken in the order Pub/Sub received them. An event pulled
/// later than that (a backlog) does not wait.
const REORDER_WINDOW: Duration = Duration::from_millis(250);

/// An event waiting in the queue, as the lane's holder reads it.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub identity: String,
    /// The Pub/Sub payload.
    pub event: Vec<u8>,
    /// When Pub/Sub received it, in milliseconds since the epoch.
    pub published_at: Option<i64>,
    /// Times its handling failed for now.
    pub attempts: i32,
    /// How long until it may be tried again (zero: now).
    pub wait: Duration,
}

/// What a lane's holder does next.
#[derive(Clone, Debug)]
pub(crate) enum Next {
    /// Handle this event.
    Event(Queued),
    /// Nothing waits in the lane.
    Idle,
    /// The lane's first event failed and waits for Pub/Sub to hand it out
    /// again: the lane's later events wait behind it.
    Held,
    /// The claim is another replica's now.
    Lost,
}

/// A handled event's outcome, as recorded for the replicas that settle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Handled {
    pub identity: String,
    pub outcome: String,
    pub detail: String,
}

/// One quota bucket to take a slot from.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    pub name: String,
    /// One slot every `period`.
    pub period: Duration,
    /// Slots that may go at once.
    pub burst: u32,
}

/// What the fleet shares.
pub(crate) trait Fleet: Send + Sync + 'static {
    /// Admits an event to its lane's queue; a copy already admitted stays
    /// as it is, unless its handling failed in a way a redelivery retries
    /// (its attempts here ran out, or its handler panicked): then it waits
    /// again at its place.
    fn enqueue<'a>(
        &'a self,
        identity: &'a str,
        lane: &'a str,
        event: &'a [u8],
        published_at: Option<i64>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Takes `lane` for `holder` for `ttl`, unless another holder's claim is
    /// alive. Whether `holder` holds it now.
    fn claim<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Extends `holder`'s claims on `lanes` by `ttl` from now (only the
    /// lanes it drives: a claim it lost track of expires). The lanes whose
    /// claims are still `holder`'s.
    fn renew<'a>(
        &'a self,
        holder: &'a str,
        lanes: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Gives every claim of `holder` up (a replica stopping).
    fn release_all<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// One round trip per event for the lane's holder: records `done`
    /// (the event just handled), renews the claim, and reads the lane's
    /// next event.
    ///
    /// An event recorded as failed (transient, panicked) within `hold`
    /// keeps its place: the lane is held behind it until its redelivery
    /// admits it again, or [`Fleet::let_go`].
    fn next<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
        done: Option<&'a Handled>,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Next, StoreError>>;
    /// The event failed and will not come back (its last delivery attempt
    /// was nacked and Pub/Sub dead-letters it, or it was set aside): its
    /// lane goes on without it, and `outcome` is what its copies meet.
    fn let_go<'a>(
        &'a self,
        identity: &'a str,
        outcome: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Gives `lane` up if nothing waits in it; whether it was given up.
    fn release_if_idle<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Counts a failed attempt: the event is tried again after `wait`.
    /// Only while `holder` holds the event's lane (renewed by `ttl`);
    /// whether it did.
    fn retry_after<'a>(
        &'a self,
        identity: &'a str,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// The outcomes of those of `identities` that were handled.
    fn outcomes<'a>(
        &'a self,
        identities: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Handled>, StoreError>>;
    /// Lanes with events waiting and no live claim (their holder died, or
    /// let them go as an event arrived), at most `limit`.
    fn unclaimed(&self, limit: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// Reserves a slot in every bucket (the latest of them counts).
    fn reserve<'a>(&'a self, buckets: &'a [Bucket]) -> BoxFuture<'a, Result<Reserved, StoreError>>;
    /// Removes handled events older than `age`, claims expired that long
    /// ago (a dead replica's on idle lanes), and buckets idle that long.
    fn forget(&self, age: Duration) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// What the fleet looks like now, for `chatworker check`.
    fn census(&self) -> BoxFuture<'_, Result<Census, StoreError>>;
}

/// A lane's next event, or one that failed within the hold and so still
/// holds the lane: `$1` the lane, `$4` the event just recorded (left out),
/// `$7` the hold. `store::suite` checks that it is planned on indexes.
pub(super) fn next_in_lane() -> String {
    format!(
        "SELECT identity, event, published_at, attempts, not_before, outcome
         FROM chatworker_queue
         WHERE lane = $1 AND identity IS DISTINCT FROM $4
           AND (outcome IS NULL
                OR (outcome IN ('transient', 'panicked') AND handled_at > {NOW_MS} - $7))
         ORDER BY COALESCE(published_at, arrived_at), seq LIMIT 1"
    )
}

/// A write slot reserved in the fleet's buckets. The server reads its clock
/// at some moment between when the statement was sent (its connection
/// already taken: a wait for one is no lateness, the slot not taken yet) and
/// when the answer came; the slot is `wait` after that moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reserved {
    pub(crate) sent: std::time::Instant,
    pub(crate) answered: std::time::Instant,
    pub(crate) wait: Duration,
}

impl Reserved {
    /// The earliest the slot can be, by this process's clock: what a write's
    /// lateness is judged from (so it is never judged on time when late).
    pub(crate) fn earliest(&self) -> std::time::Instant {
        self.sent + self.wait
    }

    /// The latest the slot can be: what a write waits for, so that it never
    /// goes before its slot.
    pub(crate) fn latest(&self) -> std::time::Instant {
        self.answered + self.wait
    }
}

/// The fleet at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Replicas holding a live claim.
    pub replicas: i64,
    /// Threads claimed.
    pub lanes: i64,
    /// Events admitted and not yet handled.
    pub waiting: i64,
}

impl Fleet for Postgres {
    fn enqueue<'a>(
        &'a self,
        identity: &'a str,
        lane: &'a str,
        event: &'a [u8],
        published_at: Option<i64>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            c.execute(
                &format!(
                    "INSERT INTO chatworker_queue AS q (identity, lane, event, published_at, arrived_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS})
                     ON CONFLICT (identity) DO UPDATE
                     SET outcome = NULL, detail = '', attempts = 0, not_before = 0, handled_at = NULL
                     WHERE q.outcome IN ('transient', 'panicked')"
                ),
                &[&identity, &lane, &event, &published_at],
            )
            .await
            .map(drop)
        }))
    }

    fn claim<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let row = c
                .query_opt(
                    &format!(
                        "INSERT INTO chatworker_claims AS c (lane, holder, expires_at)
                         VALUES ($1, $2, {NOW_MS} + $3)
                         ON CONFLICT (lane) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                         WHERE c.holder = EXCLUDED.holder OR c.expires_at < {NOW_MS}
                         RETURNING holder"
                    ),
                    &[&lane, &holder, &ms(ttl)],
                )
                .await?;
            Ok(row.is_some())
        }))
    }

    fn renew<'a>(
        &'a self,
        holder: &'a str,
        lanes: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        // Quick or not at all: a renewal that waits longer than a claim
        // lives is worth nothing.
        Box::pin(self.renewing(ttl / 4, async move |c: &mut Client| {
            let rows = c
                .query(
                    // A claim locked by a commit under way is skipped: the
                    // commit renews it itself, and waiting for it would hold
                    // up every other lane's renewal.
                    &format!(
                        "UPDATE chatworker_claims SET expires_at = {NOW_MS} + $3
                         WHERE lane IN (
                            SELECT lane FROM chatworker_claims
                            WHERE holder = $1 AND lane = ANY($2)
                            FOR UPDATE SKIP LOCKED
                         ) AND holder = $1
                         RETURNING lane"
                    ),
                    &[&holder, &lanes, &ms(ttl)],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }))
    }

    fn release_all<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(
            self.within(Duration::from_secs(1), async move |c: &mut Client| {
                c.execute(
                    "DELETE FROM chatworker_claims WHERE holder = $1",
                    &[&holder],
                )
                .await
            }),
        )
    }

    fn next<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
        done: Option<&'a Handled>,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Next, StoreError>> {
        let identity = done.map(|d| d.identity.as_str());
        let outcome = done.map(|d| d.outcome.as_str());
        let detail = done.map_or("", |d| d.detail.as_str());
        Box::pin(self.with(async move |c: &mut Client| {
            // The sub-statements see one snapshot: the event just recorded
            // is left out of the next by its identity.
            let row = c
                .query_one(
                    &format!(
                        "WITH claim AS (
                            UPDATE chatworker_claims SET expires_at = {NOW_MS} + $3
                            WHERE lane = $1 AND holder = $2 RETURNING lane
                         ), done AS (
                            UPDATE chatworker_queue SET outcome = $5, detail = $6, handled_at = {NOW_MS}
                            WHERE identity = $4 AND outcome IS NULL AND EXISTS (SELECT 1 FROM claim)
                            RETURNING identity
                         )
                         SELECT (SELECT count(*) FROM claim), (SELECT count(*) FROM done),
                                q.identity, q.event, q.published_at, q.attempts,
                                GREATEST(q.not_before - {NOW_MS}, q.published_at + $8 - {NOW_MS}, 0),
                                q.outcome
                         FROM (SELECT 1) AS one LEFT JOIN LATERAL ({next}) q ON TRUE",
                        next = next_in_lane(),
                    ),
                    &[
                        &lane,
                        &holder,
                        &ms(ttl),
                        &identity,
                        &outcome,
                        &detail,
                        &ms(hold),
                        &ms(REORDER_WINDOW),
                    ],
                )
                .await?;
            if row.get::<_, i64>(0) == 0 {
                return Ok(Next::Lost);
            }
            // The event just recorded as failed is the lane's first (the
            // snapshot does not show its new outcome): it holds the lane.
            if matches!(outcome, Some("transient" | "panicked")) {
                return Ok(Next::Held);
            }
            if row.get::<_, Option<String>>(7).is_some() {
                return Ok(Next::Held);
            }
            Ok(match row.get::<_, Option<String>>(2) {
                None => Next::Idle,
                Some(identity) => Next::Event(Queued {
                    identity,
                    event: row.get(3),
                    published_at: row.get(4),
                    attempts: row.get(5),
                    wait: Duration::from_millis(row.get::<_, i64>(6).max(0) as u64),
                }),
            })
        }))
    }

    fn let_go<'a>(
        &'a self,
        identity: &'a str,
        outcome: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            // Setting a panic aside leaves alone an outcome recorded
            // since by a redelivery's handling (a transient failure).
            c.execute(
                "UPDATE chatworker_queue SET outcome = $2
                 WHERE identity = $1 AND outcome IN ('transient', 'panicked')
                   AND NOT ($2 LIKE 'panicked:%' AND outcome = 'transient')",
                &[&identity, &outcome],
            )
            .await
            .map(drop)
        }))
    }

    fn release_if_idle<'a>(
        &'a self,
        lane: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let released = c
                .execute(
                    "DELETE FROM chatworker_claims WHERE lane = $1 AND holder = $2
                     AND NOT EXISTS (
                        SELECT 1 FROM chatworker_queue WHERE lane = $1 AND outcome IS NULL
                     )",
                    &[&lane, &holder],
                )
                .await?;
            Ok(released > 0)
        }))
    }

    fn retry_after<'a>(
        &'a self,
        identity: &'a str,
        lane: &'a str,
        holder: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let counted = c
                .execute(
                    // The claim renewed (and so locked) in the same
                    // statement: no takeover slips in between.
                    &format!(
                        "WITH claim AS (
                            UPDATE chatworker_claims SET expires_at = {NOW_MS} + $5
                            WHERE lane = $3 AND holder = $4 RETURNING 1
                         )
                         UPDATE chatworker_queue SET attempts = attempts + 1, not_before = {NOW_MS} + $2
                         WHERE identity = $1 AND EXISTS (SELECT 1 FROM claim)"
                    ),
                    &[&identity, &ms(wait), &lane, &holder, &ms(ttl)],
                )
                .await?;
            Ok(counted > 0)
        }))
    }

    fn outcomes<'a>(
        &'a self,
        identities: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Handled>, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let rows = c
                .query(
                    "SELECT identity, outcome, detail FROM chatworker_queue
                     WHERE identity = ANY($1) AND outcome IS NOT NULL",
                    &[&identities],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Handled {
                    identity: r.get(0),
                    outcome: r.get(1),
                    detail: r.get(2),
                })
                .collect())
        }))
    }

    fn unclaimed(&self, limit: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let rows = c
                .query(
                    &format!(
                        "SELECT DISTINCT q.lane FROM chatworker_queue q
                         WHERE q.outcome IS NULL AND NOT EXISTS (
                            SELECT 1 FROM chatworker_claims c
                            WHERE c.lane = q.lane AND c.expires_at >= {NOW_MS}
                         ) LIMIT $1"
                    ),
                    &[&limit],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }))
    }

    fn reserve<'a>(&'a self, buckets: &'a [Bucket]) -> BoxFuture<'a, Result<Reserved, StoreError>> {
        let names: Vec<&str> = buckets.iter().map(|b| b.name.as_str()).collect();
        // Microseconds: a project's slot is 20 ms apart.
        let periods: Vec<i64> = buckets
            .iter()
            .map(|b| i64::try_from(b.period.as_micros()).unwrap_or(i64::MAX))
            .collect();
        let tolerances: Vec<i64> = buckets
            .iter()
            .zip(&periods)
            .map(|(b, p)| p.saturating_mul(i64::from(b.burst.max(1) - 1)))
            .collect();
        Box::pin(self.with(async move |c: &mut Client| {
            // GCRA: a bucket's theoretical arrival time (tat) moves one
            // period per slot; a slot may go `tolerance` before it. The
            // reservation is made now; the writer waits for its time.
            let sent = std::time::Instant::now();
            // Typed: one round trip (no prepare), so that the moment the
            // server reads its clock is close to `sent`.
            let row = c
                .query_typed_one(
                    "WITH now AS (
                        SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint AS us
                     ), asked AS (
                        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS a(bucket, period, tolerance)
                     ), taken AS (
                        INSERT INTO chatworker_buckets AS b (bucket, tat)
                        SELECT asked.bucket, now.us + asked.period FROM asked, now
                        ON CONFLICT (bucket) DO UPDATE
                        SET tat = GREATEST(b.tat, (SELECT us FROM now)) + (EXCLUDED.tat - (SELECT us FROM now))
                        RETURNING b.bucket, b.tat
                     )
                     SELECT COALESCE(MAX(taken.tat - asked.period - asked.tolerance - now.us), 0)
                     FROM taken JOIN asked USING (bucket), now",
                    &[
                        (&names, Type::TEXT_ARRAY),
                        (&periods, Type::INT8_ARRAY),
                        (&tolerances, Type::INT8_ARRAY),
                    ],
                )
                .await?;
            let wait_us: i64 = row.get(0);
            Ok(Reserved {
                sent,
                answered: std::time::Instant::now(),
                wait: Duration::from_micros(wait_us.max(0) as u64),
            })
        }))
    }

    fn census(&self) -> BoxFuture<'_, Result<Census, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            let row = c
                .query_one(
                    &format!(
                        "SELECT
                            (SELECT count(DISTINCT holder) FROM chatworker_claims WHERE expires_at >= {NOW_MS}),
                            (SELECT count(*) FROM chatworker_claims WHERE expires_at >= {NOW_MS}),
                            (SELECT count(*) FROM chatworker_queue WHERE outcome IS NULL)"
                    ),
                    &[],
                )
                .await?;
            Ok(Census {
                replicas: row.get(0),
                lanes: row.get(1),
                waiting: row.get(2),
            })
        }))
    }

    fn forget(&self, age: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.with(async move |c: &mut Client| {
            c.execute(
                &format!(
                    "WITH claims AS (
                        DELETE FROM chatworker_claims WHERE expires_at < {NOW_MS} - $1
                     ), buckets AS (
                        DELETE FROM chatworker_buckets WHERE tat < ({NOW_MS} - $1) * 1000
                     )
                     DELETE FROM chatworker_queue WHERE outcome IS NOT NULL AND handled_at < {NOW_MS} - $1"
                ),
                &[&ms(age)],
            )
            .await
        }))
    }
}
