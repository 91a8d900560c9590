//! Client-side pacing of message writes, so that the worker stays inside
//! Chat's quotas (per space, shared by every app in it, and per project)
//! instead of collecting 429s. GCRA limiters from `governor` in one
//! process; in a fleet, the same GCRA kept in the store's buckets, so that
//! every replica takes its slots from one quota. Knows nothing of Pub/Sub
//! or of what is written.

use super::turn::Turn;
use crate::names::SpaceName;
use crate::ops::metrics::Metrics;
use crate::store::{Bucket, Fleet, Reserved};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often the per-space state is pruned of spaces not written lately.
const PRUNE_EVERY: u64 = 4096;

/// In a fleet, how late a write may start after its slot's time: a write
/// held up longer (waiting for its lane back, a busy CPU) takes a new slot
/// instead, so that late writes never bunch up with the ones on time. Half
/// the 2% the slots leave spare in a minute (1.2 s, whatever the rate: a
/// sliding minute holds one more slot only once writes are that late), the
/// other half for what comes between this check and the request reaching
/// Chat. A new slot wastes the old one: at 250 ms, a loaded replica writing
/// ten a second used only 88% of its quota.
const LATE_AT_MOST: Duration = Duration::from_millis(600);
/// How many times a write that came late takes a new slot before it goes
/// anyway (so that a replica that is always late is not starved).
const LATE_RETRIES: u32 = 3;

/// Write slots per space and per project.
pub(crate) struct WriteQuota {
    space: Option<DefaultKeyedRateLimiter<String>>,
    project: Option<DefaultDirectRateLimiter>,
    acquired: AtomicU64,
    metrics: Arc<Metrics>,
    /// The fleet's shared buckets, when there is a fleet.
    fleet: Option<Arc<dyn Fleet>>,
    per_space: u32,
    per_project: u32,
    /// A failed reservation was reported (the local limiters stand in).
    fleet_failed: std::sync::atomic::AtomicBool,
}

impl WriteQuota {
    /// Limits of `per_space` and `per_project` writes per minute; 0 means no
    /// limit.
    pub(crate) fn new(per_space: u32, per_project: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            space: quota(per_space).map(RateLimiter::keyed),
            project: quota(per_project).map(RateLimiter::direct),
            acquired: AtomicU64::new(0),
            metrics,
            fleet: None,
            per_space,
            per_project,
            fleet_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same quotas, kept in the fleet's store.
    pub(crate) fn shared(mut self, fleet: Arc<dyn Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The buckets a write into `space` takes a slot from.
    fn buckets(&self, space: &SpaceName) -> Vec<Bucket> {
        // 2% under the quota, without a burst: calls jitter (a loaded
        // replica's by hundreds of milliseconds), and no server's sliding
        // minute may see more than the quota (a burst of a second's share on
        // top of a minute's steady rate would be that much over). At 1%
        // under, one loaded run put 61 writes in a minute at 60/min.
        let bucket = |name: String, per_minute: u32| Bucket {
            name,
            period: Duration::from_secs(60).mul_f64(1.02) / per_minute,
            burst: 1,
        };
        let mut buckets = Vec::with_capacity(2);
        if self.per_space > 0 {
            buckets.push(bucket(format!("space/{space}"), self.per_space));
        }
        if self.per_project > 0 {
            buckets.push(bucket("project".into(), self.per_project));
        }
        buckets
    }

    /// Takes a slot from the fleet's buckets and waits for its time; `None`
    /// when the store cannot be asked (the local limiters stand in).
    async fn acquire_shared(
        &self,
        fleet: &Arc<dyn Fleet>,
        space: &SpaceName,
        turn: &dyn Turn,
    ) -> Option<Duration> {
        let buckets = self.buckets(space);
        if buckets.is_empty() {
            return Some(Duration::ZERO);
        }
        let started = Instant::now();
        let mut waited = false;
        let mut late = 0;
        loop {
            let asked = Instant::now();
            let reserved = match self.reserve(fleet, &buckets, turn).await {
                Ok(reserved) => reserved,
                Err(e) => {
                    if !self.fleet_failed.swap(true, Relaxed) {
                        tracing::warn!(error = %e, "the fleet's shared write quota cannot be reached; this replica paces its writes alone meanwhile");
                    }
                    return None;
                }
            };
            self.fleet_failed.store(false, Relaxed);
            // Never before the slot; late, as judged from the earliest it
            // can be.
            let due = reserved.earliest();
            let go = reserved.latest();
            let slept = go > Instant::now();
            let mut woke = Instant::now();
            if slept {
                waited = true;
                turn.release();
                tokio::time::sleep_until(go.into()).await;
                woke = Instant::now();
                turn.reacquire().await;
            }
            let resumed = Instant::now();
            // A write the turn may not make any more (a fleet's claim lost)
            // or that is out of time takes no new slot: it is refused next.
            if resumed <= due + LATE_AT_MOST
                || late >= LATE_RETRIES
                || turn.may_write().is_err()
                || Instant::now() >= turn.retry_deadline()
            {
                break;
            }
            // Its slot passed unused: the write takes a new one.
            late += 1;
            self.metrics.shared_quota_late();
            // Where the time went: a connection waited for (no lateness),
            // the statement's round trip (the slot somewhere in it), the
            // timer when it slept, the lane.
            tracing::debug!(
                space = %space,
                late_ms = resumed.duration_since(due).as_millis() as u64,
                connection_ms = reserved.sent.saturating_duration_since(asked).as_millis() as u64,
                statement_ms = reserved.answered.duration_since(reserved.sent).as_millis() as u64,
                slept,
                timer_ms = woke.saturating_duration_since(go).as_millis() as u64,
                lane_ms = resumed.duration_since(woke).as_millis() as u64,
                "a write came late for its shared-quota slot; it takes a new one"
            );
        }
        if waited {
            self.metrics.shared_quota_waited(started.elapsed());
        }
        Some(started.elapsed())
    }

    /// Reserves a slot in `buckets` (see [`Reserved`]).
    /// The store failing for a moment must not make every replica pace
    /// itself at the whole quota: tried again until the write's own
    /// deadline.
    async fn reserve(
        &self,
        fleet: &Arc<dyn Fleet>,
        buckets: &[Bucket],
        turn: &dyn Turn,
    ) -> Result<Reserved, crate::store::StoreError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match fleet.reserve(buckets).await {
                Ok(reserved) => return Ok(reserved),
                Err(e) if Instant::now() + pause >= turn.retry_deadline() => return Err(e),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Waits until one more write into `space` fits both quotas, and takes
    /// the slot. While it waits, `turn` gives up its lane. Returns how long
    /// it waited.
    pub(crate) async fn acquire(&self, space: &SpaceName, turn: &dyn Turn) -> Duration {
        if let Some(fleet) = &self.fleet
            && let Some(waited) = self.acquire_shared(fleet, space, turn).await
        {
            return waited;
        }
        let started = Instant::now();
        let mut waited = false;
        if let Some(limiter) = &self.space {
            let key = space.to_string();
            if limiter.check_key(&key).is_err() {
                waited = true;
                turn.release();
                limiter.until_key_ready(&key).await;
            }
            if self.acquired.fetch_add(1, Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        if let Some(limiter) = &self.project
            && limiter.check().is_err()
        {
            waited = true;
            turn.release();
            limiter.until_ready().await;
        }
        if waited {
            turn.reacquire().await;
            self.metrics.quota_waited(started.elapsed());
        }
        started.elapsed()
    }
}

/// `n` per minute, spread evenly, with a burst of one second's share: a
/// stricter reading of "n per minute" than a bucket of `n` would be, so that
/// a server counting in sliding windows sees no more than `n` either.
fn quota(per_minute: u32) -> Option<Quota> {
    let n = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(per_minute / 60).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs(60) / n.get()).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(name: &str) -> SpaceName {
        SpaceName::parse(name).expect("space name")
    }

    #[tokio::test]
    async fn writes_into_one_space_are_paced() {
        let metrics = Arc::new(Metrics::default());
        // 600 per minute: one write per 100 ms, burst of 10.
        let quota = WriteQuota::new(600, 0, metrics.clone());
        let started = Instant::now();
        for _ in 0..15 {
            quota
                .acquire(&space("spaces/AAAA"), &Counted::default())
                .await;
        }
        // 10 at once, then 5 more at 100 ms each.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(metrics.snapshot().quota_waits >= 5);
    }

    #[tokio::test]
    async fn spaces_do_not_share_their_quota_but_share_the_project() {
        let metrics = Arc::new(Metrics::default());
        let quota = WriteQuota::new(60, 0, metrics.clone());
        for i in 0..20 {
            let waited = quota
                .acquire(&space(&format!("spaces/S{i:03}")), &Counted::default())
                .await;
            assert!(waited < Duration::from_millis(50), "{waited:?}");
        }
        assert_eq!(metrics.snapshot().quota_waits, 0);

        let quota = WriteQuota::new(0, 600, metrics.clone());
        let started = Instant::now();
        for i in 0..15 {
            quota
                .acquire(&space(&format!("spaces/S{i:03}")), &Counted::default())
                .await;
        }
        assert!(started.elapsed() >= Duration::from_millis(450));
    }

    /// A turn that counts how often it was given up and taken back.
    #[derive(Default)]
    struct Counted {
        released: std::sync::atomic::AtomicU32,
        reacquired: std::sync::atomic::AtomicU32,
    }

    impl Turn for Counted {
        fn release(&self) {
            self.released.fetch_add(1, Relaxed);
        }
        fn reacquire(&self) -> futures::future::BoxFuture<'_, ()> {
            self.reacquired.fetch_add(1, Relaxed);
            Box::pin(async {})
        }
        fn retry_deadline(&self) -> Instant {
            Instant::now()
        }
    }

    #[tokio::test]
    async fn a_write_that_waits_gives_up_its_lane_meanwhile() {
        let metrics = Arc::new(Metrics::default());
        let quota = WriteQuota::new(600, 0, metrics);
        let turn = Counted::default();
        for _ in 0..10 {
            quota.acquire(&space("spaces/HOT"), &turn).await;
        }
        assert_eq!(
            turn.released.load(Relaxed),
            0,
            "a burst's share waits for nothing"
        );
        quota.acquire(&space("spaces/HOT"), &turn).await;
        assert_eq!(
            turn.released.load(Relaxed),
            1,
            "the lane is given up while waiting"
        );
        assert_eq!(
            turn.reacquired.load(Relaxed),
            1,
            "and taken back before the write"
        );
    }

    /// Gets its lane back only after `slow` (a replica whose lanes are all
    /// busy, or whose CPU is).
    struct Slow {
        slow: Duration,
    }

    impl Turn for Slow {
        fn release(&self) {}
        fn reacquire(&self) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(tokio::time::sleep(self.slow))
        }
        fn retry_deadline(&self) -> Instant {
            Instant::now() + Duration::from_secs(10)
        }
    }

    /// In a fleet, a write that gets its lane back long after its slot's
    /// time takes a new slot: going late, it would bunch up with the writes
    /// on time and a sliding minute would see more than the quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_late_for_its_shared_slot_takes_a_new_one() {
        let url = crate::store::suite::fresh_postgres().await;
        let store = crate::store::Store::open(&url).await.expect("postgres");
        let fleet = store.fleet().expect("a fleet store").clone();
        let metrics = Arc::new(Metrics::default());
        // One write a second in the space.
        let quota = WriteQuota::new(60, 0, metrics.clone()).shared(fleet);
        let hot = space("spaces/LATE");
        let on_time = Slow {
            slow: Duration::ZERO,
        };
        quota.acquire(&hot, &on_time).await;
        // The next slot is a second away; the lane comes back 1.5 s later.
        let late = Slow {
            slow: Duration::from_millis(1500),
        };
        quota.acquire(&hot, &late).await;
        let snapshot = metrics.snapshot();
        // Its slot passed unused; the new one was free at once (nothing
        // else was written meanwhile), so it went without waiting again.
        assert_eq!(snapshot.shared_quota_late, 1, "{snapshot:?}");
        // And that new slot counts: the next write waits its second.
        let next = Instant::now();
        quota.acquire(&hot, &on_time).await;
        let waited = next.elapsed();
        assert!(
            waited > Duration::from_millis(800) && waited < Duration::from_millis(1300),
            "{waited:?}"
        );
    }

    /// In a fleet, the time a reservation waits for one of the store's
    /// connections is not lateness: the slot is taken only once the
    /// statement reaches the server. Counted from the ask, a loaded replica
    /// (its connections busy) judged its writes late, each took a second
    /// slot, and a burst used 73% of its quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reservation_that_waits_for_a_connection_is_not_late() {
        let url = crate::store::suite::fresh_postgres().await;
        let store = crate::store::Store::open(&url).await.expect("postgres");
        let fleet = store.fleet().expect("a fleet store").clone();
        // Another session locks the buckets for a second; meanwhile as many
        // reservations as the store has connections, blocked by it, hold
        // every one of them.
        let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("a session of its own");
        tokio::spawn(connection);
        locker
            .batch_execute("BEGIN; LOCK TABLE chatworker_buckets IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("the buckets locked");
        let blocked: Vec<_> = (0..crate::store::CONNECTIONS)
            .map(|i| {
                let fleet = fleet.clone();
                tokio::spawn(async move {
                    let bucket = Bucket {
                        name: format!("space/spaces/BUSY{i}"),
                        period: Duration::from_secs(1),
                        burst: 1,
                    };
                    fleet.reserve(&[bucket]).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A write asks for its slot: it waits for a connection.
        let metrics = Arc::new(Metrics::default());
        let quota = WriteQuota::new(60, 0, metrics.clone()).shared(fleet.clone());
        let write = tokio::spawn(async move {
            let on_time = Slow {
                slow: Duration::ZERO,
            };
            let asked = Instant::now();
            quota.acquire(&space("spaces/WAITS"), &on_time).await;
            asked.elapsed()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        locker.batch_execute("COMMIT").await.expect("unlocked");
        for reservation in blocked {
            reservation.await.expect("task").expect("reserved");
        }
        let took = write.await.expect("task");
        assert!(took > Duration::from_millis(900), "it waited: {took:?}");
        // Its slot, free, was taken when its statement was sent, and it
        // went at once.
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.shared_quota_late, 0, "{snapshot:?}");
        // From the fleet's bucket, not the local limiters: the space's next
        // slot is about a second away.
        let next = fleet
            .reserve(&[Bucket {
                name: "space/spaces/WAITS".into(),
                period: Duration::from_secs(60).mul_f64(1.02) / 60,
                burst: 1,
            }])
            .await
            .expect("reserved");
        assert!(next.wait > Duration::from_millis(500), "{next:?}");
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(quota(0).is_none());
        let q = quota(60).expect("a quota");
        assert_eq!(q.burst_size().get(), 1);
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert_eq!(quota(3000).expect("a quota").burst_size().get(), 50);
    }
}
