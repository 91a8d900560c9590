//! The subscriber over REST (HTTP/1.1), for ways that cannot carry HTTP/2
//! (some TLS-inspecting proxies): `subscriptions.pull`, `modifyAckDeadline`
//! and `acknowledge`, with the streaming pull's guarantees.
//!
//! - Flow control: a pull asks for no more than the room left under
//!   `pubsub.max_outstanding_messages` and `max_outstanding_bytes`, and no
//!   pull is made while none is left (the service honours `maxMessages`).
//! - Leases: each message's deadline is set to `pubsub.max_lease_extension`
//!   when it arrives, and extended every half of that while it is held, up
//!   to `pubsub.max_lease`.
//! - Settling: every delivery is settled once (ack, nack, or nack when
//!   dropped); settlements go out in the order they were made, batched
//!   every 100 ms, and a failed call is tried again.
//! - Drain: on stop no pull is made, what was pulled but not handed out is
//!   nacked, and the stop waits until every delivery handed out is settled
//!   and the settlements sent, its leases extended meanwhile.
//!
//! A pull that is abandoned by the stop may already hold messages: they
//! come back when the subscription's ack deadline passes, as after a crash.

use super::Delivery;
use super::delivery::{Settle, Settlement, Ticket};
use super::outage::Health;
use backon::{BackoffBuilder, ExponentialBuilder};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_pubsub::model::Message;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The most messages one pull asks for (Pub/Sub's own limit).
const MOST_PER_PULL: i64 = 1000;
/// The most ack IDs in one call: Pub/Sub takes up to 512 KB per request,
/// and an ack ID runs to a few hundred bytes.
const IDS_PER_CALL: usize = 500;
/// How often settlements and new leases are sent.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long a pull may wait for messages: Pub/Sub answers well before
/// (empty when there is nothing), the emulator after about 90 s.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an acknowledge or modifyAckDeadline call may take. Leases are
/// kept by their own task, so a settlement that hangs this long delays no
/// renewal.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a settlement is sent before it is left to the ack
/// deadline (a message not acked comes back; the worker's deterministic
/// reply IDs keep its answer once).
const SETTLE_TRIES: u8 = 5;

/// Pub/Sub's REST API for one subscription.
#[derive(Debug)]
pub(super) struct Api {
    http: reqwest::Client,
    /// `{endpoint}/v1/projects/P/subscriptions/S`.
    base: String,
    credentials: Credentials,
}

impl Api {
    pub(super) fn new(
        http: reqwest::Client,
        endpoint: &str,
        subscription: &str,
        credentials: Credentials,
    ) -> Self {
        Self {
            http,
            base: format!("{}/v1/{subscription}", endpoint.trim_end_matches('/')),
            credentials,
        }
    }

    /// One call: the answer's body, or why there was none.
    async fn call(
        &self,
        verb: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<bytes::Bytes, String> {
        let auth = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            // Only asked for with an entity tag, which this call never sends.
            Ok(CacheableResource::NotModified) => {
                return Err("the credentials returned no headers".into());
            }
            Err(e) => return Err(format!("credentials: {e}")),
        };
        let response = self
            .http
            .post(format!("{}:{verb}", self.base))
            .headers(auth)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| chain(&e))?;
        if status.is_success() {
            return Ok(body);
        }
        // Google's error shape: {"error": {"code", "status", "message"}}.
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |key: &str| error["error"][key].as_str().unwrap_or_default().to_owned();
        Err(format!(
            "{verb}: Pub/Sub answered {} {}: {}",
            status.as_u16(),
            text("status"),
            text("message")
        ))
    }

    async fn pull(&self, max: i64) -> Result<Vec<Received>, String> {
        let body = serde_json::json!({ "maxMessages": max });
        let answer = self.call("pull", body, PULL_TIMEOUT).await?;
        let pulled: PullResponse = serde_json::from_slice(&answer)
            .map_err(|e| format!("pull: Pub/Sub's answer is not a PullResponse: {e}"))?;
        Ok(pulled.received_messages)
    }

    async fn acknowledge(&self, ids: &[String]) -> Result<(), String> {
        let body = serde_json::json!({ "ackIds": ids });
        self.call("acknowledge", body, CALL_TIMEOUT).await.map(drop)
    }

    async fn modify_ack_deadline(&self, ids: &[String], seconds: u64) -> Result<(), String> {
        self.modify_ack_deadline_within(ids, seconds, CALL_TIMEOUT)
            .await
    }

    async fn modify_ack_deadline_within(
        &self,
        ids: &[String],
        seconds: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let body = serde_json::json!({ "ackIds": ids, "ackDeadlineSeconds": seconds });
        self.call("modifyAckDeadline", body, timeout)
            .await
            .map(drop)
    }
}

/// An error with its causes, which reqwest keeps apart.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<Received>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    ack_id: String,
    #[serde(default)]
    message: Option<Message>,
    /// 0 without a dead-letter policy.
    #[serde(default)]
    delivery_attempt: i32,
}

/// What the stream holds: a lease per message pulled and not yet settled,
/// and the deliveries pulled but not yet handed out.
#[derive(Debug, Default)]
struct Held {
    leases: HashMap<String, Lease>,
    bytes: i64,
    ready: VecDeque<Delivery>,
}

#[derive(Debug)]
struct Lease {
    bytes: i64,
    since: Instant,
    /// Its deadline is still the subscription's: it is extended at the
    /// next flush.
    new: bool,
}

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<Held>,
    /// A lease was released: there may be room to pull.
    freed: Notify,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many messages the next pull may ask for.
    fn room(&self, max_messages: i64, max_bytes: i64) -> i64 {
        let held = self.held();
        match held.bytes >= max_bytes {
            true => 0,
            false => (max_messages - held.leases.len() as i64).clamp(0, MOST_PER_PULL),
        }
    }

    fn release(&self, ack_id: &str) {
        let mut held = self.held();
        if let Some(lease) = held.leases.remove(ack_id) {
            held.bytes -= lease.bytes;
            drop(held);
            self.freed.notify_one();
        }
    }
}

/// A pull under way.
type Pull = Pin<Box<dyn Future<Output = Result<Vec<Received>, String>> + Send>>;

/// The subscription's messages over REST.
pub(super) struct RestStream {
    api: Arc<Api>,
    shared: Arc<Shared>,
    settle: mpsc::UnboundedSender<Settlement>,
    max_messages: i64,
    max_bytes: i64,
    health: Arc<Health>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    /// The pull under way, kept across calls to `next` so that none is
    /// abandoned with messages in it.
    pull: Option<Pull>,
    /// After a failed pull, none is made before this.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    stop: CancellationToken,
    done: watch::Receiver<bool>,
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for RestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestStream")
            .field("base", &self.api.base)
            .finish_non_exhaustive()
    }
}

/// Stops a [`RestStream`]; see [`RestStop::stop`].
#[derive(Clone, Debug)]
pub(crate) struct RestStop {
    stop: CancellationToken,
    done: watch::Receiver<bool>,
}

impl RestStop {
    /// Stops pulling, then waits until every delivery handed out is
    /// settled and the settlements have been sent.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

/// Backoff between failed pulls, and between attempts to rebuild a
/// broken streaming pull.
pub(super) fn backoff() -> Box<dyn Iterator<Item = Duration> + Send> {
    Box::new(
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .without_max_times()
            .with_jitter()
            .build(),
    )
}

impl RestStream {
    /// Starts the stream and the task that keeps its leases and sends its
    /// settlements.
    pub(super) fn start(
        api: Api,
        settings: &crate::config::PubSubSettings,
        health: Arc<Health>,
    ) -> Self {
        let api = Arc::new(api);
        let shared = Arc::new(Shared::default());
        let (settle, settled) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let keeper = Keeper {
            api: api.clone(),
            shared: shared.clone(),
            queue: VecDeque::new(),
        };
        let renewer = Renewer {
            api: api.clone(),
            shared: shared.clone(),
            extension: settings.max_lease_extension,
            max_lease: settings.max_lease,
        };
        // The leases are kept until the keeper is done: through the drain.
        let kept = CancellationToken::new();
        tokio::spawn(renewer.run(kept.clone()));
        tokio::spawn(keeper.run(settled, stop.clone(), done_tx, kept.drop_guard()));
        Self {
            api,
            shared,
            settle,
            max_messages: settings.max_outstanding_messages,
            max_bytes: settings.max_outstanding_bytes,
            health,
            backoff: backoff(),
            pull: None,
            pause: None,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            done,
        }
    }

    /// A handle that stops the stream.
    pub(super) fn stop_handle(&self) -> RestStop {
        RestStop {
            stop: self.stop.clone(),
            done: self.done.clone(),
        }
    }

    /// The next delivery; `None` once stopped. A failed pull is counted in
    /// the health and tried again with backoff.
    pub(super) async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            if let Some(delivery) = self.shared.held().ready.pop_front() {
                return Some(delivery);
            }
            if let Some(pause) = &mut self.pause {
                tokio::select! {
                    () = self.stop.cancelled() => return None,
                    () = pause.as_mut() => self.pause = None,
                }
            }
            let room = loop {
                let freed = self.shared.freed.notified();
                match self.shared.room(self.max_messages, self.max_bytes) {
                    0 => tokio::select! {
                        () = self.stop.cancelled() => return None,
                        () = freed => {}
                    },
                    room => break room,
                }
            };
            let pull = self.pull.get_or_insert_with(|| {
                let api = self.api.clone();
                Box::pin(async move { api.pull(room).await })
            });
            let pulled = tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                pulled = pull.as_mut() => pulled,
            };
            self.pull = None;
            match pulled {
                Ok(received) => {
                    if self.health.restored(false) {
                        self.backoff = backoff();
                    }
                    self.admit(received);
                }
                Err(e) => {
                    self.health.broken(&e, true);
                    let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::debug!(error = %e, delay = ?delay, "Pub/Sub pull failed; trying again");
                    self.pause = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
        }
    }

    /// Leases what a pull brought and makes it ready to hand out.
    fn admit(&self, received: Vec<Received>) {
        let now = Instant::now();
        let mut held = self.shared.held();
        for received in received {
            let ticket = Ticket::new(
                received.ack_id.clone(),
                (received.delivery_attempt > 0).then_some(received.delivery_attempt),
                self.settle.clone(),
            );
            let Some(message) = received.message else {
                // Not seen from Pub/Sub; nacked (by the ticket's drop) rather
                // than acked unread.
                tracing::warn!(
                    ack_id = %received.ack_id,
                    "Pub/Sub's pull answer held an ack ID without a message: nacked"
                );
                continue;
            };
            let bytes = message.data.len() as i64;
            held.bytes += bytes;
            held.leases.insert(
                received.ack_id,
                Lease {
                    bytes,
                    since: now,
                    new: true,
                },
            );
            held.ready
                .push_back(Delivery::new(message, Settle::Rest(ticket)));
        }
    }
}

/// The task that sends settlements.
struct Keeper {
    api: Arc<Api>,
    shared: Arc<Shared>,
    /// Settlements not yet sent, in the order they were made, with the
    /// tries so far.
    queue: VecDeque<(Settlement, u8)>,
}

impl Keeper {
    /// Sends settlements until stopped and drained; `leases` stops the
    /// renewer when this returns.
    async fn run(
        mut self,
        mut settled: mpsc::UnboundedReceiver<Settlement>,
        stop: CancellationToken,
        done: watch::Sender<bool>,
        leases: tokio_util::sync::DropGuard,
    ) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    // Pulled but not handed out: back to Pub/Sub (the
                    // tickets' drops nack them).
                    let ready = std::mem::take(&mut self.shared.held().ready);
                    drop(ready);
                }
                Some(settlement) = settled.recv() => {
                    self.shared.release(settlement.ack_id());
                    self.queue.push_back((settlement, 0));
                    while let Ok(settlement) = settled.try_recv() {
                        self.shared.release(settlement.ack_id());
                        self.queue.push_back((settlement, 0));
                    }
                }
                _ = flush.tick() => self.send().await,
            }
            if stopping && self.shared.held().leases.is_empty() {
                while let Ok(settlement) = settled.try_recv() {
                    self.queue.push_back((settlement, 0));
                }
                // What is left is tried a few times, then left to the
                // deadline.
                while !self.queue.is_empty() {
                    self.send().await;
                    if !self.queue.is_empty() {
                        tokio::time::sleep(FLUSH_EVERY).await;
                    }
                }
                drop(leases);
                let _ = done.send(true);
                return;
            }
        }
    }

    /// Sends the queued settlements in order: each run of acks, or of
    /// nacks, as one call.
    async fn send(&mut self) {
        let mut failed = VecDeque::new();
        while let Some((first, _)) = self.queue.front() {
            let ack = matches!(first, Settlement::Ack(_));
            let mut run = Vec::new();
            while let Some((next, _)) = self.queue.front() {
                if matches!(next, Settlement::Ack(_)) != ack || run.len() == IDS_PER_CALL {
                    break;
                }
                run.extend(self.queue.pop_front());
            }
            let ids: Vec<String> = run.iter().map(|(s, _)| s.ack_id().to_owned()).collect();
            let sent = match ack {
                true => self.api.acknowledge(&ids).await,
                false => self.api.modify_ack_deadline(&ids, 0).await,
            };
            if let Err(e) = sent {
                let kept: Vec<(Settlement, u8)> = run
                    .into_iter()
                    .filter_map(|(s, tries)| (tries + 1 < SETTLE_TRIES).then_some((s, tries + 1)))
                    .collect();
                tracing::debug!(error = %e, settlements = ids.len(), kept = kept.len(), "settlements not sent");
                if kept.len() < ids.len() {
                    tracing::warn!(
                        error = %e,
                        lost = ids.len() - kept.len(),
                        "settlements could not reach Pub/Sub; those events come back when their deadline passes (their answers are not sent twice)"
                    );
                }
                failed.extend(kept);
            }
        }
        self.queue = failed;
    }
}

/// The task that keeps the leases: a new one's deadline is set at the next
/// flush, and every lease is extended every half `max_lease_extension`
/// until `max_lease`. Apart from the settlements, so that a settlement call
/// that hangs delays no renewal.
struct Renewer {
    api: Arc<Api>,
    shared: Arc<Shared>,
    extension: Duration,
    max_lease: Duration,
}

impl Renewer {
    async fn run(self, stop: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let half = self.extension / 2;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = flush.tick() => self.extend(true).await,
                _ = renew.tick() => self.extend(false).await,
            }
        }
    }

    /// Extends the leases: only the new ones (their deadline is still the
    /// subscription's), or all those held for less than `max_lease`. A
    /// lease stays new until its extension is sent.
    async fn extend(&self, only_new: bool) {
        let ids: Vec<String> = {
            let held = self.shared.held();
            held.leases
                .iter()
                .filter(|(_, lease)| match only_new {
                    true => lease.new,
                    false => lease.since.elapsed() < self.max_lease,
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        // Each call within a renewal period, so that the next one is on time.
        let timeout = (self.extension / 2).clamp(Duration::from_secs(1), CALL_TIMEOUT);
        for ids in ids.chunks(IDS_PER_CALL) {
            match self
                .api
                .modify_ack_deadline_within(ids, self.extension.as_secs(), timeout)
                .await
            {
                Ok(()) => {
                    let mut held = self.shared.held();
                    for id in ids {
                        if let Some(lease) = held.leases.get_mut(id) {
                            lease.new = false;
                        }
                    }
                }
                // The next flush or renewal tries again; a lease that runs
                // out meanwhile brings the message back, answered once still.
                Err(e) => tracing::debug!(error = %e, leases = ids.len(), "leases not extended"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::health::Status;
    use crate::ops::metrics::Metrics;
    use google_cloud_auth::credentials::anonymous;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// What the fake Pub/Sub saw: each modifyAckDeadline's ack IDs.
    type Seen = Arc<Mutex<Vec<Vec<String>>>>;

    /// A fake Pub/Sub over HTTP/1.1: the first pull brings messages `a` and
    /// `b`, later pulls hang; acknowledge hangs; modifyAckDeadline answers
    /// at once and is recorded.
    async fn fake_pubsub() -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let pulled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let seen = recorded.clone();
                let pulled = pulled.clone();
                tokio::spawn(async move {
                    let mut socket = BufReader::new(socket);
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            socket.read_line(&mut header).await.unwrap();
                            if header.trim().is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        socket.read_exact(&mut body).await.unwrap();
                        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let answer = if path.ends_with(":pull") {
                            if pulled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_secs(600)).await;
                            }
                            let message = |id: &str| {
                                serde_json::json!({
                                    "ackId": id,
                                    "message": {"data": "e30=", "messageId": id, "publishTime": "2026-12-04T00:00:00Z"},
                                })
                            };
                            serde_json::json!({"receivedMessages": [message("a"), message("b")]})
                        } else if path.ends_with(":acknowledge") {
                            tokio::time::sleep(Duration::from_secs(600)).await;
                            serde_json::json!({})
                        } else {
                            let ids = body["ackIds"].as_array().unwrap();
                            let ids = ids.iter().map(|id| id.as_str().unwrap().to_owned());
                            seen.lock().unwrap().push(ids.collect());
                            serde_json::json!({})
                        };
                        let answer = answer.to_string();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        socket
                            .get_mut()
                            .write_all(response.as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        (format!("http://{address}"), seen)
    }

    /// A settlement call that hangs (a proxy holding the request, say)
    /// delays no lease renewal: the message still held keeps its lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_acknowledge_delays_no_lease_renewal() {
        let (endpoint, seen) = fake_pubsub().await;
        let env = [(
            "CHATWORKER_PUBSUB__SUBSCRIPTION",
            "projects/ppp/subscriptions/sss",
        )];
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let mut settings = crate::config::Settings::load_from(None, env).unwrap();
        // Shorter than the settings allow, to see renewals within seconds.
        settings.pubsub.max_lease_extension = Duration::from_secs(2);
        let api = Api::new(
            reqwest::Client::new(),
            &endpoint,
            "projects/ppp/subscriptions/sss",
            anonymous::Builder::new().build(),
        );
        let metrics = Arc::new(Metrics::default());
        let status = Arc::new(Status::new(Duration::from_secs(60)));
        let mut stream = RestStream::start(
            api,
            &settings.pubsub,
            Arc::new(Health::new(metrics, status)),
        );
        let first = stream.next().await.expect("a");
        let _held = stream.next().await.expect("b");
        // Its acknowledge hangs; b is held and must keep being renewed.
        first.ack();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let renewals = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|ids| ids.iter().any(|id| id == "b"))
            .count();
        assert!(
            renewals >= 3,
            "b's lease set once and renewed every second: {renewals} calls"
        );
    }
}
