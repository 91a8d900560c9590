//! The worker: pulls deliveries from [`crate::pubsub`], decodes them, hands
//! each to the [`Service`] (usually an [`crate::App`]) through the
//! dispatcher (in order per thread), and settles it once its replies
//! are out.
//!
//! Shutdown is one future passed in by the caller (the binary passes
//! SIGTERM/SIGINT, tests their own): on it the worker stops pulling, lets
//! in-flight events finish within the grace period, nacks the rest, flushes
//! acks and returns.

mod dispatch;
mod process;
mod settle;

use crate::app::Service;
use crate::chat::{ChatClient, ClientError};
use crate::config::{ConfigError, Settings};
use crate::event::{DecodeError, Event, decode};
use crate::ops::health::Status;
use crate::ops::metrics::Metrics;
pub use crate::ops::{ServerError, Snapshot};
use crate::pubsub::{Delivery, PubSubError, Source, TopicPublisher};
use crate::send::Sender;
use dispatch::Dispatcher;
use futures::FutureExt;
use process::{InFlight, Shared};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Time kept back from the grace period for flushing acks and nacks to
/// Pub/Sub after in-flight work is stopped (acks are batched every 100 ms).
const FLUSH_MARGIN: Duration = Duration::from_secs(2);

/// How often the pull loop reports that it is alive while no event comes.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the start-up credentials check may take before it is reported
/// as failing; past `FIRST_TOKEN_WAIT` it runs beside the pull loop.
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The subscription failed for good (deleted, no permission…).
    #[error("Pub/Sub subscription failed: {0}")]
    PubSub(#[from] PubSubError),
    /// The operations listener could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Runs until `shutdown` completes or the subscription fails for good.
/// Returns what the worker did (the same figures as its metrics).
pub async fn run<A: Service>(
    settings: Settings,
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
    let chat = ChatClient::new(&settings.chat).await?;
    // Events are pulled once the first token is there (or has been waited
    // for long enough): it costs the most (a key's first signature seeds the
    // crypto library's random generator, about 0.1 s of CPU), and obtained
    // while the first events arrive it would hold up their replies.
    let mut credentials = tokio::spawn(check_credentials(chat.clone(), status.clone()));
    let _ = tokio::time::timeout(FIRST_TOKEN_WAIT, &mut credentials).await;
    let dead_letter = match &settings.pubsub.dead_letter_topic {
        None => None,
        Some(topic) => Some(TopicPublisher::new(&settings.pubsub, topic).await?),
    };
    let mut source = Source::open(
        &settings.pubsub,
        &subscription,
        metrics.clone(),
        status.clone(),
    )
    .await?;
    let shared = Arc::new(Shared {
        app,
        sender: Arc::new(Sender::new(chat, &settings.chat, metrics.clone())),
        markup: settings.chat.markup_syntax,
        dead_letter,
        subscription: subscription.to_string(),
        metrics,
    });
    let waits = shared.metrics.clone();
    let dispatcher =
        Dispatcher::new(settings.worker.concurrency).on_wait(move || waits.lane_waited());
    tracing::info!(
        subscription = %subscription,
        chat_endpoint = %settings.chat.endpoint,
        emulator = settings.pubsub.emulator_host.as_deref().unwrap_or("no"),
        concurrency = settings.worker.concurrency,
        "worker started"
    );

    tokio::pin!(shutdown);
    // The loop beats while it waits, so that /healthz tells a stalled loop
    // from an idle one.
    let mut beat = tokio::time::interval(HEARTBEAT);
    'pull: loop {
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
        let decoded = decode(&delivery.data);
        if shared.dead_letter.is_none() {
            // Only a dead letter would quote the payload again; without a
            // topic for them, the decoded event is the one copy kept.
            delivery.data = bytes::Bytes::new();
        }
        let r#type = event_type(&decoded);
        shared.metrics.received(r#type);
        // Made now, not when the job first runs: a job still queued at the
        // end of the grace period is dropped unpolled, and its delivery's
        // nack must be counted too.
        let in_flight = InFlight::new(shared.metrics.clone(), r#type);
        let key = lane_key(&decoded, &delivery);
        // Every log line about this event carries its identifiers.
        let span = event_span(&decoded, &delivery, r#type);
        let job = process::process(shared.clone(), delivery, decoded, in_flight).instrument(span);
        dispatcher.submit(key, job.boxed());
    }
    status.stopping();
    tracing::info!(
        in_flight = dispatcher.pending(),
        "shutting down: no longer pulling"
    );
    let grace = settings.worker.shutdown_grace;
    let margin = FLUSH_MARGIN.min(grace / 4);
    let stop = source.stop_handle();
    let stopped = tokio::spawn(async move { stop.stop().await });
    let abandoned = dispatcher.drain(grace - margin).await;
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
        stream_reconnects = snapshot.stream_reconnects,
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
    tracing::info_span!(
        "event",
        message_id = %delivery.message_id,
        kind = r#type,
        space,
        thread,
        delivery_attempt = delivery.delivery_attempt(),
    )
}

/// Reports once, at start-up, when no Chat API token can be obtained: every
/// reply would fail and every event be redelivered until that is fixed, and
/// one clear line says so better than a warning per event.
async fn check_credentials(chat: ChatClient, status: Arc<Status>) {
    let result = tokio::time::timeout(CREDENTIALS_CHECK_TIMEOUT, chat.check_credentials()).await;
    status.credentials(matches!(result, Ok(Ok(()))));
    match result {
        Ok(Ok(())) => tracing::debug!("Chat API credentials obtained"),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cannot obtain Chat API credentials; events will be nacked and redelivered until this is fixed \
             (set GOOGLE_APPLICATION_CREDENTIALS, or run with a service account on GKE)"
        ),
        Err(_) => tracing::warn!(
            timeout = ?CREDENTIALS_CHECK_TIMEOUT,
            "no Chat API credentials yet; events will be nacked and redelivered until they can be obtained"
        ),
    }
}

/// Events of one thread share a lane; events outside threads share their
/// space's; undecodable payloads get a lane of their own.
fn lane_key(decoded: &Result<Event, DecodeError>, delivery: &Delivery) -> String {
    match decoded {
        Ok(event) => match &event.thread {
            Some(thread) => thread.to_string(),
            None => event.space.name.to_string(),
        },
        Err(_) => format!("pubsub/{}", delivery.message_id),
    }
}

fn event_type(decoded: &Result<Event, DecodeError>) -> &'static str {
    match decoded {
        Ok(event) => event.kind.label(),
        Err(_) => crate::ops::metrics::UNDECODABLE,
    }
}
