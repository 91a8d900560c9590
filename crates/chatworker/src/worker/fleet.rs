//! The fleet: several replicas on one PostgreSQL store behave as one
//! worker. Each event is admitted to the store's queue under its lane (its
//! thread, or its Pub/Sub ordering key) in the order it arrived; a lane is
//! handled by the one replica that holds its claim, one event at a time,
//! whichever replica pulled the events. The replicas that hold deliveries of
//! an event wait for its outcome and settle them by it.
//!
//! One replica's part:
//! - `arrive`: a delivery's event goes into the queue (in this replica's
//!   arrival order per lane: the dispatcher's lanes run it), then its lane
//!   is driven here if no other replica holds it, and the delivery waits for
//!   the outcome.
//! - a driver per lane claimed here: the lane's first unhandled event, its
//!   handler run as in one process (inbox, transaction, outbox), its outcome
//!   recorded; the claim is checked before each event, by the event's
//!   commit, and before each write (see `lease`: a replica that stalled
//!   past its claim stores and sends nothing more for the lane).
//! - the keeper: renews this replica's claims, fetches the outcomes of
//!   events handled elsewhere, takes lanes whose holder died (or that were
//!   let go as an event arrived), and forgets old outcomes.
//!
//! The store being away stops all of it: nothing is admitted, handled or
//! settled; deliveries wait (their leases kept) and /readyz says why.

use super::dispatch::Slot;
use super::lease::Lease;
use super::process::{self, InFlight, Shared};
use super::settle::Outcome;
use crate::app::Service;
use crate::event::{Event, decode};
use crate::ops::health::Status;
use crate::ops::metrics::Metrics;
use crate::pubsub::Delivery;
use crate::store::{self, Handled, Next, Queued, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long a claim lives unless renewed: how long a dead replica's lanes
/// wait before another takes them.
const CLAIM_TTL: Duration = Duration::from_secs(5);
/// How often a replica renews its claims.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the outcomes of events handled elsewhere are fetched.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How often lanes without a live claim are looked for.
const ADOPT_EVERY: Duration = Duration::from_millis(250);
/// The most lanes taken over at once.
const ADOPT_AT_ONCE: i64 = 64;
/// How long a handled event's outcome is kept for the deliveries that wait
/// for it (a redelivery later than this is answered by the inbox).
const KEEP_OUTCOMES: Duration = Duration::from_secs(600);
/// The longest pause between tries while the store is away.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// This replica's part of the fleet.
pub(super) struct Fleet {
    store: Arc<dyn store::Fleet>,
    /// This replica, as its claims name it.
    holder: String,
    /// Lanes driven here now, and their claims.
    driving: Mutex<HashMap<String, Arc<Lease>>>,
    /// Deliveries waiting for their event's outcome, by identity.
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<Handled>>>>,
    /// Handlers running at once here (`worker.concurrency`).
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    /// Drivers stop after their event, and no lane is taken.
    stop: CancellationToken,
    /// Claims stop being renewed: once the drivers stopped, or were given
    /// up on at the end of the grace period.
    renewing: CancellationToken,
    tasks: TaskTracker,
    /// The longest a delivery waits for its outcome (`pubsub.max_lease`:
    /// past it Pub/Sub hands the event out again anyway).
    max_wait: Duration,
    /// How long a lane waits behind an event that failed and was nacked,
    /// for its redelivery (as one process's `Order` holds its threads).
    hold: Duration,
    /// Cancelled when the worker starts shutting down: no lane is taken
    /// over, and an event the store cannot admit is given back.
    draining: CancellationToken,
}

impl Fleet {
    pub(super) fn new(
        store: Arc<dyn store::Fleet>,
        concurrency: usize,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        max_wait: Duration,
        hold: Duration,
    ) -> Arc<Self> {
        let holder = format!(
            "{}/{}/{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into()),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        );
        tracing::info!(holder, "fleet mode: lanes are claimed in the shared store");
        Arc::new(Self {
            store,
            holder,
            driving: Mutex::default(),
            waiting: Mutex::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            status,
            stop: CancellationToken::new(),
            renewing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            max_wait,
            hold,
            draining: CancellationToken::new(),
        })
    }

    fn driving(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Lease>>> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Handled>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store answered (or not): readiness follows.
    fn store_answered<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.status.store(None),
            Err(e) => self.status.store(Some(e.to_string())),
        }
    }

    /// Starts the keeper, and the renewal of this replica's claims (a task
    /// of its own, so that nothing else it does can make a claim lapse).
    /// Both run until [`Fleet::stop`].
    pub(super) fn start<A: Service>(self: &Arc<Self>, shared: Arc<Shared<A>>) {
        let fleet = self.clone();
        tokio::spawn(async move { fleet.keep(shared).await });
        let fleet = self.clone();
        tokio::spawn(async move { fleet.renew().await });
    }

    /// The worker is shutting down: no lane is taken over any more.
    pub(super) fn drain(&self) {
        self.draining.cancel();
    }

    /// Renews the claims on the lanes driven here, every second.
    async fn renew(self: Arc<Self>) {
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.renewing.cancelled() => return,
                _ = renew.tick() => {}
            }
            let lanes: Vec<String> = self.driving().keys().cloned().collect();
            self.metrics.fleet_lanes_held(lanes.len());
            if lanes.is_empty() {
                continue;
            }
            let asked = Instant::now();
            let renewed = self.store.renew(&self.holder, &lanes, CLAIM_TTL).await;
            self.store_answered(&renewed);
            let driving = self.driving();
            for lane in renewed.into_iter().flatten() {
                if let Some(lease) = driving.get(&lane) {
                    lease.renewed(asked);
                }
            }
        }
    }

    /// Stops taking lanes and events, waits for the drivers' events in
    /// hand, and gives this replica's claims up, so that the others go on
    /// at once.
    pub(super) async fn stop(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        // The deliveries held here are settled first, their lanes driven
        // (here or elsewhere) meanwhile.
        while !self.waiting().is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.waiting().len();
        if left > 0 {
            tracing::warn!(
                left,
                "fleet: no outcome yet for some events at the end of the grace period; nacked"
            );
        }
        self.stop.cancel();
        self.tasks.close();
        let rest = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let finished = tokio::time::timeout(rest, self.tasks.wait()).await;
        self.renewing.cancel();
        if finished.is_err() {
            // Its claim is kept (it expires): given up, another replica
            // would run the event beside the handler still running here.
            tracing::warn!(
                "fleet: a handler was still running at the end of the grace period; its lane's claim expires within 5 s"
            );
            return;
        }
        if let Err(e) = self.store.release_all(&self.holder).await {
            tracing::warn!(error = %e, "fleet: claims not given up; they expire within 5 s");
        }
    }

    /// Waits for the outcome of `identity`.
    fn wait_for(&self, identity: &str) -> oneshot::Receiver<Handled> {
        let (tx, rx) = oneshot::channel();
        self.waiting()
            .entry(identity.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    /// Hands `handled` to the deliveries waiting for it.
    fn complete(&self, handled: Handled) {
        let waiters = self.waiting().remove(&handled.identity);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(handled.clone());
        }
    }

    /// Drives `lane` here, unless it is driven here already or another
    /// replica holds it.
    fn drive<A: Service>(self: &Arc<Self>, shared: &Arc<Shared<A>>, lane: &str) {
        if self.stop.is_cancelled() {
            return;
        }
        let lease = {
            let mut driving = self.driving();
            if driving.contains_key(lane) {
                return;
            }
            let lease = Arc::new(Lease::new(lane, &self.holder, CLAIM_TTL));
            driving.insert(lane.to_owned(), lease.clone());
            lease
        };
        let fleet = self.clone();
        let shared = shared.clone();
        let lane = lane.to_owned();
        self.tasks.spawn(async move {
            let asked = Instant::now();
            let claimed = fleet.store.claim(&lane, &fleet.holder, CLAIM_TTL).await;
            fleet.store_answered(&claimed);
            match claimed {
                Ok(true) => {
                    lease.renewed(asked);
                    fleet.metrics.fleet_claimed();
                    fleet.run_lane(&shared, &lease).await;
                    if lease.is_lost() {
                        fleet.metrics.fleet_claim_lost();
                    }
                }
                Ok(false) => fleet.metrics.fleet_held_elsewhere(),
                Err(e) => tracing::debug!(error = %e, lane, "fleet: lane not claimed"),
            }
            fleet.driving().remove(&lane);
        });
    }

    /// Handles the lane's events in order while this replica holds it: one
    /// round trip per event records the last outcome, renews the claim and
    /// reads the next event.
    async fn run_lane<A: Service>(self: &Arc<Self>, shared: &Arc<Shared<A>>, lease: &Arc<Lease>) {
        let lane = lease.claim().lane;
        let lane = lane.as_str();
        let mut backoff = Backoff::default();
        // The event handled and not yet recorded.
        let mut done: Option<Handled> = None;
        loop {
            if self.stop.is_cancelled() && done.is_none() {
                return;
            }
            let asked = Instant::now();
            let next = self
                .store
                .next(lane, &self.holder, CLAIM_TTL, done.as_ref(), self.hold)
                .await;
            self.store_answered(&next);
            let next = match next {
                Ok(next) => next,
                // Unrecorded, the event is handled again by whoever holds
                // the lane next: the inbox keeps that from doing anything
                // twice.
                Err(_) if !backoff.pause(&self.stop).await => return,
                Err(_) => continue,
            };
            backoff = Backoff::default();
            if matches!(next, Next::Lost) {
                // Nothing was recorded: the lane's holder records its own.
                lease.lose();
                tracing::warn!(
                    lane,
                    "fleet: the lane's claim passed to another replica (this one was too slow to renew it)"
                );
                return;
            }
            lease.renewed(asked);
            if let Some(handled) = done.take() {
                self.complete(handled);
            }
            let queued = match next {
                Next::Event(queued) => queued,
                Next::Lost => return,
                // Behind a failed event waiting for its redelivery.
                Next::Held => {
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
                // Given up unless an event came meanwhile.
                Next::Idle => match self.store.release_if_idle(lane, &self.holder).await {
                    Ok(true) => return,
                    Ok(false) => continue,
                    Err(_) if !backoff.pause(&self.stop).await => return,
                    Err(_) => continue,
                },
            };
            if self.stop.is_cancelled() {
                return;
            }
            if !queued.wait.is_zero() {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(queued.wait.min(Duration::from_secs(1))) => {}
                }
                continue;
            }
            done = match self.handle(shared, lease, queued).await {
                Step::Record(handled) => Some(handled),
                Step::Again => None,
                Step::Lost => {
                    tracing::warn!(
                        lane,
                        "fleet: this replica stalled past its claim on the lane; it stopped, and the lane's next holder goes on"
                    );
                    return;
                }
            };
        }
    }

    /// Handles one queued event: its outcome, to record; or to be tried
    /// again in its turn (marked so already); or nothing, the claim being
    /// lost meanwhile.
    async fn handle<A: Service>(
        self: &Arc<Self>,
        shared: &Arc<Shared<A>>,
        lease: &Arc<Lease>,
        queued: Queued,
    ) -> Step {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Step::Again;
        };
        let slot = Slot::holding(self.permits.clone(), permit);
        let lane = lease.claim().lane;
        let span = tracing::error_span!(
            "event",
            identity = queued.identity.as_str(),
            lane = lane.as_str()
        );
        let identity = queued.identity.clone();
        let (outcome, detail) = run_queued(shared, &queued, slot, lease.clone())
            .instrument(span)
            .await;
        // Whatever the handler made of it, a replica that lost the lane
        // records nothing: the new holder handles the event (its commit,
        // if this one's went through, is found in the inbox).
        if lease.is_lost() {
            return Step::Lost;
        }
        let attempts = queued.attempts + 1;
        let record = match &outcome {
            // Tried again here, in the lane's order, until the attempts
            // run out; then the deliveries are nacked, and Pub/Sub's policy
            // takes over (its redelivery admits the event again).
            Outcome::Transient if attempts < shared.max_delivery_attempts.max(1) => {
                let wait = retry_wait(attempts);
                tracing::debug!(
                    attempts,
                    ?wait,
                    "fleet: failed for now; tried again in its turn"
                );
                let mut backoff = Backoff::default();
                loop {
                    match self
                        .store
                        .retry_after(&identity, &lane, &self.holder, CLAIM_TTL, wait)
                        .await
                    {
                        Ok(true) => return Step::Again,
                        Ok(false) => {
                            lease.lose();
                            return Step::Lost;
                        }
                        Err(e) => {
                            self.status.store(Some(e.to_string()));
                            if !backoff.pause(&self.stop).await {
                                return Step::Again;
                            }
                        }
                    }
                }
            }
            outcome => outcome.record(),
        };
        Step::Record(Handled {
            identity,
            outcome: record,
            detail,
        })
    }

    /// The keeper: claims renewed, outcomes fetched, orphaned lanes taken.
    async fn keep<A: Service>(self: Arc<Self>, shared: Arc<Shared<A>>) {
        let mut poll = tokio::time::interval(POLL_EVERY);
        let mut adopt = tokio::time::interval(ADOPT_EVERY);
        let mut forget = tokio::time::interval(KEEP_OUTCOMES / 10);
        for interval in [&mut poll, &mut adopt, &mut forget] {
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = poll.tick() => {
                    let identities: Vec<String> = {
                        let mut waiting = self.waiting();
                        // Deliveries that gave up waiting (settled by
                        // their drop) are no longer asked about.
                        waiting.retain(|_, waiters| {
                            waiters.retain(|w| !w.is_closed());
                            !waiters.is_empty()
                        });
                        waiting.keys().cloned().collect()
                    };
                    if identities.is_empty() {
                        continue;
                    }
                    let outcomes = self.store.outcomes(&identities).await;
                    self.store_answered(&outcomes);
                    for handled in outcomes.into_iter().flatten() {
                        self.complete(handled);
                    }
                }
                _ = adopt.tick() => {
                    if self.draining.is_cancelled() {
                        continue;
                    }
                    let lanes = self.store.unclaimed(ADOPT_AT_ONCE).await;
                    self.store_answered(&lanes);
                    for lane in lanes.into_iter().flatten() {
                        self.drive(&shared, &lane);
                    }
                }
                _ = forget.tick() => {
                    if let Err(e) = self.store.forget(KEEP_OUTCOMES).await {
                        tracing::debug!(error = %e, "fleet: old outcomes not removed");
                    }
                }
            }
        }
    }
}

/// One delivery in a fleet: its event is admitted to the queue under
/// `lane`, then the delivery waits (in a task of its own) for the outcome
/// and is settled by it. Runs as the dispatcher's job for `lane`, so that
/// this replica admits a thread's events in the order they arrived; the
/// job ends once the event is admitted.
pub(super) async fn arrive<A: Service>(
    shared: Arc<Shared<A>>,
    fleet: Arc<Fleet>,
    delivery: Delivery,
    identity: String,
    lane: String,
    in_flight: InFlight,
    slot: Slot,
) {
    let published = delivery
        .publish_time
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut backoff = Backoff::default();
    loop {
        let admitted = fleet
            .store
            .enqueue(&identity, &lane, &delivery.data, published)
            .await;
        fleet.store_answered(&admitted);
        match admitted {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: the store is unavailable; the event waits (its lease kept)");
                slot.release();
                if !backoff.pause(&fleet.draining).await {
                    // Dropped unsettled: nacked.
                    return;
                }
                slot.reacquire().await;
            }
        }
    }
    let outcome = fleet.wait_for(&identity);
    fleet.drive(&shared, &lane);
    drop(slot);
    let waiting = fleet.clone();
    let span = tracing::Span::current();
    fleet.tasks.spawn(
        async move {
            let started = Instant::now();
            let handled = tokio::select! {
                handled = outcome => handled.ok(),
                () = tokio::time::sleep(waiting.max_wait) => None,
                // Unsettled, the delivery is nacked as it is dropped.
                () = waiting.stop.cancelled() => return,
            };
            let Some(handled) = handled else {
                tracing::warn!(
                    "fleet: no outcome within the lease; nacked (the event stays in its lane's queue)"
                );
                return;
            };
            waiting.metrics.fleet_waited(started.elapsed());
            let outcome =
                Outcome::from_record(&handled.outcome, delivery.delivery_attempt().is_some());
            // Nacked on its last attempt, the event goes to the dead-letter
            // topic and never comes back; set aside (a panic nothing
            // bounds), it never comes back either, and its copies are set
            // aside too, unhandled. Either way its lane goes on without it.
            let gone = match outcome {
                Outcome::Panicked { bounded: false } => Some(Outcome::SET_ASIDE),
                Outcome::Transient | Outcome::Panicked { bounded: true }
                    if shared.is_last_attempt(&delivery) =>
                {
                    Some(Outcome::GIVEN_UP)
                }
                _ => None,
            };
            if let Some(gone) = gone
                && let Err(e) = waiting.store.let_go(&identity, gone).await
            {
                tracing::warn!(error = %e, "fleet: the lane stays held behind this event until its hold expires");
            }
            process::settle_delivery(
                &shared,
                delivery,
                Some(identity),
                &lane,
                outcome,
                handled.detail,
                in_flight,
                false,
            )
            .await;
        }
        .instrument(span),
    );
}

/// What a lane's driver does after an event.
enum Step {
    /// Records the event's outcome.
    Record(Handled),
    /// Takes the lane's next event (the failed one again, in its time).
    Again,
    /// Stops: the claim is lost.
    Lost,
}

/// Runs a queued event's handler as one process would, under `lease`.
async fn run_queued<A: Service>(
    shared: &Arc<Shared<A>>,
    queued: &Queued,
    slot: Slot,
    lease: Arc<Lease>,
) -> (Outcome, String) {
    let event: Event = match decode(&queued.event) {
        Ok(event) => event,
        Err(e) => return (Outcome::Undecodable(e.reason()), e.to_string()),
    };
    let published = queued
        .published_at
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    process::handle_caught(
        shared,
        published,
        Instant::now(),
        Arc::new(event),
        queued.identity.clone(),
        slot,
        queued.attempts > 0,
        Some(lease),
    )
    .await
}

/// How long a failed event waits before its next try in its lane.
fn retry_wait(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 6) - 1).unwrap_or(0);
    Duration::from_secs(1 << exponent)
}

/// Pauses between tries while the store is away.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    /// Waits the next pause; `false` if stopped meanwhile.
    async fn pause(&mut self, stop: &CancellationToken) -> bool {
        self.0 = self.0.saturating_add(1);
        let wait =
            (Duration::from_millis(100) * 2_u32.saturating_pow(self.0.min(6))).min(MOST_BACKOFF);
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_event_waits_longer_each_time_up_to_half_a_minute() {
        assert_eq!(retry_wait(1), Duration::from_secs(1));
        assert_eq!(retry_wait(3), Duration::from_secs(4));
        assert_eq!(retry_wait(100), Duration::from_secs(32));
    }
}
