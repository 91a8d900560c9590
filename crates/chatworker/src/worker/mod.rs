//! The worker: pulls deliveries from [`crate::pubsub`], decodes them, hands
//! each to the [`Service`] (usually an [`crate::App`]) through the
//! dispatcher (in order per thread), and settles it once its replies
//! are out.
//!
//! Shutdown is one future passed in by the caller (the binary passes
//! SIGTERM/SIGINT, tests their own): on it the worker stops pulling, lets
//! in-flight events finish within the grace period, nacks the rest, flushes
//! acks and returns.

mod admit;
mod dispatch;
mod fleet;
mod lease;
mod order;
mod outbox;
mod process;
mod settle;

use crate::app::Service;
use crate::chat::{ChatClient, ClientError};
use crate::config::{ConfigError, Settings};
use crate::event::{DecodeError, Event, decode};
use crate::net::Egress;
use crate::ops::health::Status;
use crate::ops::metrics::Metrics;
pub use crate::ops::{ServerError, Snapshot};
use crate::pubsub::{Connection, Delivery, PubSubError, Source, TopicPublisher};
use crate::send::Sender;
use admit::{Admission, Verdict};
use dispatch::Dispatcher;
use futures::FutureExt;
use process::{Held, InFlight, Shared};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Time kept back from the grace period for flushing acks and nacks to
/// Pub/Sub after in-flight work is stopped (acks are batched every 100 ms).
const FLUSH_MARGIN: Duration = Duration::from_secs(2);

/// How long an event returned for its space's backlog is held before its
/// nack, so that a subscription without a retry policy does not hand it
/// back at once.
const RETURN_PAUSE: Duration = Duration::from_secs(1);

/// Added to a thread's hold beyond the subscription's longest retry delay.
const ORDER_HOLD_MARGIN: Duration = Duration::from_secs(60);

/// How often the pull loop reports that it is alive while no event comes.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the start-up credentials check may take before it is reported
/// as failing; past `FIRST_TOKEN_WAIT` it runs beside the pull loop.
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed credentials check, the wait before the next; it doubles
/// up to `CREDENTIALS_RECHECK_MAX`.
const CREDENTIALS_RECHECK_FIRST: Duration = Duration::from_secs(2);

/// The longest wait between credentials checks while none succeeds.
const CREDENTIALS_RECHECK_MAX: Duration = Duration::from_secs(60);

/// How long the worker waits for its first Chat API token before it starts
/// pulling; past that it pulls anyway, and the check goes on in the
/// background.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(5);

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The settings lack what the worker needs (the subscription).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Chat API credentials could not be set up.
    #[error(transparent)]
    Chat(#[from] ClientError),
    /// The subscription failed for good (deleted, no permission…), or the
    /// dead-letter topic's publisher could not be built.
    #[error("Pub/Sub: {0}")]
    PubSub(#[from] PubSubError),
    /// The operations listener could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The network settings (proxy, CA file) cannot be used.
    #[error(transparent)]
    Network(#[from] crate::net::NetworkError),
    /// The store cannot be opened (unreachable, or its schema too new).
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Runs until `shutdown` completes or the subscription fails for good.
/// Returns what the worker did (the same figures as its metrics). The store
/// is the one `store.url` names (`memory:` when empty).
pub async fn run<A: Service>(
    settings: Settings,
    app: A,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, WorkerError> {
    let store = crate::store::Store::open(settings.store.url_or("memory:")).await?;
    run_with_store(settings, store, app, shutdown).await
}

/// As [`run`], with the store already open (a program that also reads it,
/// as the playground does to show the app's state).
pub async fn run_with_store<A: Service>(
    settings: Settings,
    store: crate::store::Store,
    app: A,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, WorkerError> {
    let subscription = settings.pubsub.subscription()?.clone();
    let status = Arc::new(Status::new(settings.server.stall_after));
    let metrics = Arc::new(Metrics::default());
    // Stops the operations listener once the worker has stopped.
    let stopped = tokio_util::sync::CancellationToken::new();
    let _stop_listener = stopped.clone().drop_guard();
    if let Some(listen) = settings.server.listen {
        let done = stopped.clone();
        crate::ops::server::start(listen, status.clone(), metrics.clone(), async move {
            done.cancelled().await
        })
        .await?;
    }
    let egress = Egress::from_settings(&settings.network)?;
    tokio::spawn(store.clone().keep_house(
        settings.store.sweep_every,
        settings.store.retention,
        settings.store.max_inbox as u64,
        stopped.child_token(),
    ));
    let chat = ChatClient::with_egress(&settings.chat, &egress).await?;
    let connection = Connection::open(&settings.pubsub, &egress).await?;
    // Events are pulled once the first token is there (or has been waited
    // for long enough): it costs the most (a key's first signature seeds the
    // crypto library's random generator, about 0.1 s of CPU), and obtained
    // while the first events arrive it would hold up their replies.
    let mut credentials = tokio::spawn(check_credentials(
        chat.clone(),
        status.clone(),
        stopped.child_token(),
    ));
    let _ = tokio::time::timeout(FIRST_TOKEN_WAIT, &mut credentials).await;
    let dead_letter = match &settings.pubsub.dead_letter_topic {
        None => None,
        Some(topic) => Some(TopicPublisher::new(&connection, topic).await?),
    };
    let mut source = Source::open(
        &connection,
        &settings.pubsub,
        &subscription,
        metrics.clone(),
        status.clone(),
    )
    .await?;
    // What the subscription itself says wins: the worker's setting only
    // stands in when Pub/Sub could not be asked at start.
    let max_delivery_attempts = match source.max_delivery_attempts() {
        Some(n) if n != settings.pubsub.max_delivery_attempts => {
            tracing::info!(
                subscription_says = n,
                setting = settings.pubsub.max_delivery_attempts,
                "the subscription dead-letters after a different number of attempts than pubsub.max_delivery_attempts; using the subscription's"
            );
            n
        }
        Some(n) => n,
        None => settings.pubsub.max_delivery_attempts,
    };
    let store_kind = store.kind();
    // A store replicas can share makes them a fleet: one queue, claims on
    // threads, one write quota.
    let fleet_store = store.fleet().cloned();
    let mut sender = Sender::new(chat, &settings.chat, metrics.clone());
    if let Some(fleet) = &fleet_store {
        sender = sender.sharing_quota(fleet.clone());
    }
    let shared = Arc::new(Shared {
        app,
        store,
        sender: Arc::new(sender),
        markup: settings.chat.markup_syntax,
        dead_letter,
        subscription: subscription.to_string(),
        metrics,
        retry_budget: settings.chat.retry_budget,
        status: status.clone(),
        // A hold outlasts any redelivery the subscription's retry policy can
        // make; past it, the thread goes on without the failed event.
        order: order::Order::new(settings.pubsub.max_retry_delay * 2 + ORDER_HOLD_MARGIN),
        max_delivery_attempts,
    });
    let fleet = fleet_store.map(|store| {
        let fleet = fleet::Fleet::new(
            store,
            settings.worker.concurrency,
            shared.metrics.clone(),
            status.clone(),
            settings.pubsub.max_lease,
            settings.pubsub.max_retry_delay * 2 + ORDER_HOLD_MARGIN,
        );
        fleet.start(shared.clone());
        fleet
    });
    let waits = shared.metrics.clone();
    let dispatcher =
        Dispatcher::new(settings.worker.concurrency).on_wait(move || waits.lane_waited());
    tracing::info!(
        subscription = %subscription,
        chat_endpoint = %settings.chat.endpoint,
        emulator = settings.pubsub.emulator_host.as_deref().unwrap_or("no"),
        concurrency = settings.worker.concurrency,
        store = store_kind,
        "worker started"
    );

    let max_event_bytes = settings.worker.max_event_bytes as usize;
    let held = Arc::new(Held::default());
    // Both are at least 1 (checked with the settings).
    let max_held = usize::try_from(settings.pubsub.max_outstanding_messages).unwrap_or(usize::MAX);
    let max_held_bytes =
        usize::try_from(settings.pubsub.max_outstanding_bytes).unwrap_or(usize::MAX);
    let admission = Admission::new(
        settings.chat.space_writes_per_minute,
        settings.pubsub.max_lease,
        max_held,
        max_held_bytes,
    );
    tokio::pin!(shutdown);
    // The loop beats while it waits, so that /healthz tells a stalled loop
    // from an idle one.
    let mut beat = tokio::time::interval(HEARTBEAT);
    'pull: loop {
        // Flow control on our side: at the limit, nothing more is taken from
        // the stream until an event is let go.
        while held.at_limit(max_held, max_held_bytes) {
            status.beat();
            tokio::select! {
                biased;
                () = &mut shutdown => break 'pull,
                () = held.freed() => {}
                _ = beat.tick() => {}
            }
        }
        // The same `next` future is polled across beats: dropping it while
        // the subscriber opens its stream would abandon that stream, and
        // the emulator then hands messages to the abandoned stream until
        // their ack deadline passes (seen: 20 s delays, and worse).
        let next = source.next();
        tokio::pin!(next);
        let next = loop {
            status.beat();
            tokio::select! {
                // Biased: once shutdown is signalled, no new delivery is taken.
                biased;
                () = &mut shutdown => break 'pull,
                _ = beat.tick() => {}
                next = &mut next => break next,
            }
        };
        let Some(mut delivery) = next else { break };
        let bytes = delivery.data.len();
        // An oversized payload is not read: decoding costs memory in
        // proportion to it.
        let decoded = match bytes {
            bytes if bytes > max_event_bytes => Err(DecodeError::TooLarge {
                bytes,
                max: max_event_bytes,
            }),
            _ => decode(&delivery.data),
        };
        if shared.dead_letter.is_none() && fleet.is_none() {
            // Only a dead letter would quote the payload again; without a
            // topic for them, the decoded event is the one copy kept.
            delivery.data = bytes::Bytes::new();
        }
        let r#type = event_type(&decoded);
        shared.metrics.received(r#type);
        let space = decoded.as_ref().ok().map(|e| e.space.name.to_string());
        // One space may hold only what its write quota can answer within
        // half the lease: beyond that an event would wait for minutes. And
        // once the worker holds three quarters of its budget, a busy space
        // gets no more: the rest is for quiet spaces. Such an event goes back
        // to Pub/Sub, after a pause that keeps a subscription without a retry
        // policy from handing it back at once, again and again.
        let verdict = match &space {
            Some(space) => admission.verdict(held.in_space(space), held.messages(), held.bytes()),
            None => Verdict::Take,
        };
        if verdict != Verdict::Take {
            let space = space.as_deref().unwrap_or_default();
            // Returned on its last attempt, Pub/Sub would dead-letter it
            // unhandled: it is taken (the budget still bounds what the
            // worker holds).
            if shared.is_last_attempt(&delivery) {
                tracing::info!(
                    space,
                    "the space holds all it may, but this is the event's last delivery attempt: taken"
                );
                shared.metrics.last_attempt_taken();
            } else {
                tracing::debug!(space, ?verdict, "event returned to Pub/Sub for later");
                shared.metrics.returned();
                shared.metrics.nacked(r#type);
                // A returned event keeps no payload and does not count
                // against the budget while it waits; the waits are bounded
                // by the budget too, past which returns are not delayed.
                delivery.data = bytes::Bytes::new();
                drop(decoded);
                match held.returning(max_held) {
                    Some(returning) => {
                        tokio::spawn(async move {
                            tokio::time::sleep(RETURN_PAUSE).await;
                            delivery.nack();
                            drop(returning);
                        });
                    }
                    None => delivery.nack(),
                }
                continue;
            }
        }
        // Made now, not when the job first runs: a job still queued at the
        // end of the grace period is dropped unpolled, and its delivery's
        // nack must be counted too.
        let in_flight = InFlight::new(shared.metrics.clone(), held.clone(), r#type, bytes, space);
        let key = lane_key(&decoded, &delivery);
        // Every log line about this event carries its identifiers.
        let span = event_span(&decoded, &delivery, r#type);
        let shared = shared.clone();
        let lane = key.clone();
        // In a fleet, an event with an identity goes into the shared queue;
        // this replica's lane only keeps the order it arrived in.
        let in_fleet = fleet
            .as_ref()
            .and_then(|fleet| Some((fleet, process::identity_of(&decoded, &delivery)?)));
        if let Some((fleet, identity)) = in_fleet {
            let fleet = fleet.clone();
            drop(decoded);
            dispatcher.submit(
                key,
                Box::new(move |slot| {
                    fleet::arrive(shared, fleet, delivery, identity, lane, in_flight, slot)
                        .instrument(span)
                        .boxed()
                }),
            );
            continue;
        }
        dispatcher.submit(
            key,
            Box::new(move |slot| {
                process::process(shared, delivery, decoded, in_flight, lane, slot)
                    .instrument(span)
                    .boxed()
            }),
        );
    }
    status.stopping();
    if let Some(fleet) = &fleet {
        fleet.drain();
    }
    tracing::info!(
        in_flight = dispatcher.pending(),
        "shutting down: no longer pulling"
    );
    let grace = settings.worker.shutdown_grace;
    let margin = FLUSH_MARGIN.min(grace / 4);
    let stop = source.stop_handle();
    let stopped = tokio::spawn(async move { stop.stop().await });
    let started_draining = Instant::now();
    let abandoned = dispatcher.drain(grace - margin).await;
    if let Some(fleet) = &fleet {
        // The events admitted here wait for their outcomes, then this
        // replica's claims are given up.
        fleet
            .stop((grace - margin).saturating_sub(started_draining.elapsed()))
            .await;
    }
    if abandoned > 0 {
        // Each was counted as nacked when its work was dropped (`InFlight`).
        tracing::warn!(
            abandoned,
            "grace period over: unfinished events nacked for redelivery"
        );
    }
    if tokio::time::timeout(margin, stopped).await.is_err() {
        tracing::warn!("Pub/Sub did not confirm the last acks in time; they may be redelivered");
    }
    if let Err(e) = shared.store.flush().await {
        tracing::debug!(error = %e, "finished events not recorded at shutdown");
    }
    let snapshot = shared.metrics.snapshot();
    tracing::info!(
        events_received = snapshot.events_received,
        events_acked = snapshot.events_acked,
        events_nacked = snapshot.events_nacked,
        events_dead_lettered = snapshot.events_dead_lettered,
        replies_created = snapshot.replies_created,
        replies_already_existed = snapshot.replies_already_existed,
        chat_retries = snapshot.chat_retries,
        quota_waits = snapshot.quota_waits,
        quota_wait_seconds = snapshot.quota_wait_seconds,
        lane_waits = snapshot.lane_waits,
        handler_panics = snapshot.handler_panics,
        inbox_repeats = snapshot.inbox_repeats,
        state_conflicts = snapshot.state_conflicts,
        events_deferred = snapshot.events_deferred,
        events_returned = snapshot.events_returned,
        last_attempts_taken = snapshot.last_attempts_taken,
        stream_reconnects = snapshot.stream_reconnects,
        fleet_claims = snapshot.fleet_claims,
        fleet_held_elsewhere = snapshot.fleet_held_elsewhere,
        fleet_claims_lost = snapshot.fleet_claims_lost,
        fleet_waits = snapshot.fleet_waits,
        shared_quota_waits = snapshot.shared_quota_waits,
        shared_quota_late = snapshot.shared_quota_late,
        shared_quota_wait_seconds = snapshot.shared_quota_wait_seconds,
        events_dropped = ?snapshot.events_dropped,
        "worker stopped"
    );
    Ok(snapshot)
}

/// The span every log line about one event carries: the Pub/Sub message
/// ID, the delivery attempt, the event's kind, space and thread.
fn event_span(
    decoded: &Result<Event, DecodeError>,
    delivery: &Delivery,
    r#type: &'static str,
) -> tracing::Span {
    let (space, thread) = match decoded {
        Ok(event) => (
            Some(event.space.name.as_str()),
            event.thread.as_ref().map(|t| t.as_str()),
        ),
        Err(_) => (None, None),
    };
    // At error level, so that it is there whatever the filter lets
    // through: a warning about this event must carry its identifiers even
    // when RUST_LOG=warn.
    tracing::error_span!(
        "event",
        message_id = delivery.message_id.as_str(),
        kind = r#type,
        space,
        thread,
        delivery_attempt = delivery.delivery_attempt(),
    )
}

/// Reports once, at start-up, when no Chat API token can be obtained: every
/// reply would fail and every event be redelivered until that is fixed, and
/// one clear line says so better than a warning per event.
///
/// A failed check is repeated, with backoff, until a token comes (a grant
/// still propagating, an IAM blip): readiness follows, so that a pod whose
/// first token failed becomes ready instead of being killed by its startup
/// probe in a loop. (Any successful Chat call proves the credentials too.)
async fn check_credentials(
    chat: ChatClient,
    status: Arc<Status>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut delay = CREDENTIALS_RECHECK_FIRST;
    let mut failures = 0_u32;
    loop {
        let result =
            tokio::time::timeout(CREDENTIALS_CHECK_TIMEOUT, chat.check_credentials()).await;
        if matches!(result, Ok(Ok(()))) {
            status.credentials(true);
            match failures {
                0 => tracing::debug!("Chat API credentials obtained"),
                n => tracing::info!(failed_checks = n, "Chat API credentials obtained at last"),
            }
            return;
        }
        // A successful call may have proved them meanwhile.
        if status.has_credentials() {
            return;
        }
        status.credentials(false);
        failures += 1;
        // Said on the first failure, then at most about once a minute.
        if failures == 1 || delay == CREDENTIALS_RECHECK_MAX {
            match result {
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    retry_in = ?delay,
                    "cannot obtain Chat API credentials; events will be nacked and redelivered until this is fixed \
                     (set GOOGLE_APPLICATION_CREDENTIALS, or run with a service account on GKE)"
                ),
                _ => tracing::warn!(
                    timeout = ?CREDENTIALS_CHECK_TIMEOUT,
                    retry_in = ?delay,
                    "no Chat API credentials yet; events will be nacked and redelivered until they can be obtained"
                ),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(CREDENTIALS_RECHECK_MAX);
    }
}

/// Events of one thread share a lane; events outside threads share their
/// space's; undecodable payloads get a lane of their own.
/// The lane an event runs in: its Pub/Sub ordering key when the publisher
/// set one, else its thread (or its space, for an event outside threads).
fn lane_key(decoded: &Result<Event, DecodeError>, delivery: &Delivery) -> String {
    lane_of(decoded, &delivery.ordering_key, &delivery.message_id)
}

fn lane_of(decoded: &Result<Event, DecodeError>, ordering_key: &str, message_id: &str) -> String {
    match decoded {
        Ok(_) if !ordering_key.is_empty() => format!("key/{ordering_key}"),
        Ok(event) => match &event.thread {
            Some(thread) => thread.to_string(),
            None => event.space.name.to_string(),
        },
        Err(_) => format!("pubsub/{message_id}"),
    }
}

fn event_type(decoded: &Result<Event, DecodeError>) -> &'static str {
    match decoded {
        Ok(event) => event.kind.label(),
        Err(_) => crate::ops::metrics::UNDECODABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_is_the_ordering_key_else_the_thread_else_the_space() {
        let fixture = |name: &str| {
            let path = format!(
                "{}/../../tests/fixtures/events/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            decode(&std::fs::read(path).expect("fixture"))
        };
        let message = fixture("classic/message.json");
        let thread = message.as_ref().expect("decodes").thread.clone();
        let thread = thread.expect("a thread").to_string();
        assert_eq!(lane_of(&message, "", "1"), thread);
        assert_eq!(lane_of(&message, "orders-42", "1"), "key/orders-42");
        let undecodable = decode(b"not json");
        assert_eq!(lane_of(&undecodable, "orders-42", "7"), "pubsub/7");
    }
}
