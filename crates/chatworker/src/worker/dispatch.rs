//! Ordered, bounded concurrency: jobs with the same key (a thread) run one after
//! another in arrival order; jobs with different keys run in parallel, at most
//! `concurrency` at once. Knows nothing of events or Pub/Sub: a job is a future
//! made from its [`Slot`], which it may give up while it waits for something
//! that is not work (a write quota), so that other keys run meanwhile.
//!
//! Each key with work has one lane task that drains the key's queue and removes
//! the key when the queue is empty; both happen under one lock, so a job is
//! never left in a queue that no task will run.

use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A unit of work, given its slot when it starts. Dropping it unrun must be
/// safe (it nacks its delivery).
pub(crate) type Job = Box<dyn FnOnce(Slot) -> BoxFuture<'static, ()> + Send>;

/// A running job's share of the concurrency. The job holds it while it
/// works, and may give it up while it waits for something that is not
/// work (a write slot, a backoff) and take one again after, so that a lane
/// that waits does not keep the other keys from running. Its order within
/// its key is untouched: the next job of the key still waits for this one.
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotState>);

struct SlotState {
    permits: Arc<Semaphore>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    fn new(permits: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(SlotState {
            permits,
            held: Mutex::new(Some(permit)),
        }))
    }

    /// A slot holding `permit`, one of `permits` (for work run outside the
    /// dispatcher with the same bound: a fleet's lane drivers).
    pub(crate) fn holding(permits: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        Self::new(permits, permit)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the slot up, if held.
    pub(crate) fn release(&self) {
        self.held().take();
    }

    /// Takes a slot again, waiting for one if all are taken; at once if
    /// the job still holds its own.
    pub(crate) async fn reacquire(&self) {
        if self.held().is_some() {
            return;
        }
        // The semaphore is never closed, so acquiring cannot fail.
        if let Ok(permit) = self.0.permits.clone().acquire_owned().await {
            *self.held() = Some(permit);
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("held", &self.held().is_some())
            .finish()
    }
}

/// Called each time a job is ready to run but every slot is taken.
type OnWait = Arc<dyn Fn() + Send + Sync>;

/// Runs jobs in per-key order with bounded concurrency.
pub(crate) struct Dispatcher {
    queues: Arc<Mutex<HashMap<String, VecDeque<Job>>>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    abort: CancellationToken,
    abandoned: Arc<AtomicU64>,
    on_wait: OnWait,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Dispatcher {
    /// At most `concurrency` jobs run at once.
    pub(crate) fn new(concurrency: usize) -> Self {
        Self {
            queues: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency)),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            abandoned: Arc::default(),
            on_wait: Arc::new(|| {}),
        }
    }

    /// Calls `on_wait` whenever a job is ready to run (first in its key's
    /// queue) but all `concurrency` slots are taken: the sign that the
    /// limit, not the work, holds events back.
    pub(crate) fn on_wait(mut self, on_wait: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_wait = Arc::new(on_wait);
        self
    }

    /// Queues `job` behind every earlier job with the same key.
    pub(crate) fn submit(&self, key: String, job: Job) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get_mut(&key) {
            queue.push_back(job);
            return;
        }
        queues.insert(key.clone(), VecDeque::new());
        drop(queues);
        self.tracker.spawn(lane(
            key,
            job,
            self.queues.clone(),
            self.permits.clone(),
            self.abort.clone(),
            self.abandoned.clone(),
            self.on_wait.clone(),
        ));
    }

    /// Jobs queued or running.
    pub(crate) fn pending(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|q| q.len() + 1)
            .sum()
    }

    /// Accepts no more jobs; waits up to `deadline` for the rest to finish,
    /// then drops whatever has not (which nacks it). Returns how many jobs
    /// were dropped unfinished.
    pub(crate) async fn drain(&self, deadline: Duration) -> u64 {
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tracker.wait().await;
        }
        self.abandoned.load(Ordering::Relaxed)
    }
}

async fn lane(
    key: String,
    mut job: Job,
    queues: Arc<Mutex<HashMap<String, VecDeque<Job>>>>,
    permits: Arc<Semaphore>,
    abort: CancellationToken,
    abandoned: Arc<AtomicU64>,
    on_wait: OnWait,
) {
    loop {
        let finished = tokio::select! {
            // Biased so that an abort wins over starting more work.
            biased;
            _ = abort.cancelled() => false,
            _ = async {
                // The semaphore is never closed, so acquire cannot fail.
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(permit) => Ok(permit),
                    Err(_) => {
                        on_wait();
                        permits.clone().acquire_owned().await
                    }
                };
                let Ok(permit) = permit else { return };
                // The lane keeps the slot too, so that a job that drops its
                // own copy still counts until it ends.
                let slot = Slot::new(permits.clone(), permit);
                let work = job(slot.clone());
                // A job that panics ends, like one that returns: its lane
                // goes on with the next job (the worker's jobs catch their
                // handlers' panics themselves; this is the last guard).
                if AssertUnwindSafe(work).catch_unwind().await.is_err() {
                    tracing::error!(key = %key, "a job panicked; its lane goes on");
                }
                drop(slot);
            } => true,
        };
        let mut queues_guard = queues.lock().unwrap_or_else(|p| p.into_inner());
        if !finished {
            let rest = queues_guard.remove(&key).map_or(0, |q| q.len() as u64);
            abandoned.fetch_add(rest + 1, Ordering::Relaxed);
            return;
        }
        match queues_guard.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => job = next,
            None => {
                queues_guard.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A job that ignores its slot.
    fn job(work: impl Future<Output = ()> + Send + 'static) -> Job {
        Box::new(move |_slot| work.boxed())
    }

    fn recorder(
        tx: &mpsc::UnboundedSender<(String, u32)>,
        key: &str,
        n: u32,
        delay_ms: u64,
    ) -> Job {
        let tx = tx.clone();
        let key = key.to_owned();
        job(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = tx.send((key, n));
        })
    }

    #[tokio::test(start_paused = true)]
    async fn one_key_in_order_keys_in_parallel() {
        let d = Dispatcher::new(8);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Thread a: slow first job, fast second; thread b: one fast job.
        d.submit("a".into(), recorder(&tx, "a", 1, 100));
        d.submit("a".into(), recorder(&tx, "a", 2, 1));
        d.submit("b".into(), recorder(&tx, "b", 1, 10));
        assert_eq!(d.pending(), 3);
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        drop(tx);
        let mut order = Vec::new();
        while let Some(item) = rx.recv().await {
            order.push(item);
        }
        // b finished while a's first job still ran; a's jobs kept their order.
        assert_eq!(
            order,
            vec![("b".into(), 1), ("a".into(), 1), ("a".into(), 2)]
        );
        assert_eq!(d.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let d = Dispatcher::new(2);
        let running = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        for i in 0..10 {
            let (running, peak) = (running.clone(), peak.clone());
            d.submit(
                format!("k{i}"),
                job(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                }),
            );
        }
        d.drain(Duration::from_secs(5)).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_that_wait_for_a_slot_are_reported() {
        let waits = Arc::new(AtomicU64::new(0));
        let counted = waits.clone();
        let d = Dispatcher::new(2).on_wait(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let (tx, _rx) = mpsc::unbounded_channel();
        // Five keys, two slots: c, d and e wait for a slot. The second job
        // of a waits for a1 first, which is not reported; then, ready, it
        // finds the freed slots promised to c and d, and waits again.
        for key in ["a", "b", "c", "d", "e"] {
            d.submit(key.into(), recorder(&tx, key, 1, 10));
        }
        d.submit("a".into(), recorder(&tx, "a", 2, 10));
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(waits.load(Ordering::SeqCst), 4);

        // Within the limit, nothing waits.
        let waits = Arc::new(AtomicU64::new(0));
        let counted = waits.clone();
        let d = Dispatcher::new(8).on_wait(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        for key in ["a", "b", "c"] {
            d.submit(key.into(), recorder(&tx, key, 1, 10));
        }
        d.submit("a".into(), recorder(&tx, "a", 2, 10));
        d.drain(Duration::from_secs(5)).await;
        assert_eq!(waits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_job_does_not_wedge_its_key() {
        let d = Dispatcher::new(2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        d.submit("a".into(), job(async { panic!("boom") }));
        d.submit("a".into(), recorder(&tx, "a", 2, 1));
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        drop(tx);
        assert_eq!(rx.recv().await, Some(("a".into(), 2)));
        assert_eq!(d.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_gives_up_its_slot_lets_other_keys_run() {
        // One slot. Key a waits a minute for something that is not work,
        // without its slot; key b runs meanwhile; a then finishes, and its
        // second job still comes after its first.
        let d = Dispatcher::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let waiting = tx.clone();
        d.submit(
            "a".into(),
            Box::new(move |slot: Slot| {
                async move {
                    slot.release();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    slot.reacquire().await;
                    let _ = waiting.send(("a".to_owned(), 1));
                }
                .boxed()
            }),
        );
        d.submit("a".into(), recorder(&tx, "a", 2, 1));
        d.submit("b".into(), recorder(&tx, "b", 1, 1));
        assert_eq!(d.drain(Duration::from_secs(120)).await, 0);
        drop(tx);
        let mut order = Vec::new();
        while let Some(item) = rx.recv().await {
            order.push(item);
        }
        assert_eq!(
            order,
            vec![("b".into(), 1), ("a".into(), 1), ("a".into(), 2)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_drops_what_does_not_finish_in_time() {
        let d = Dispatcher::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        d.submit("a".into(), recorder(&tx, "a", 1, 10));
        d.submit("a".into(), recorder(&tx, "a", 2, 60_000));
        d.submit("a".into(), recorder(&tx, "a", 3, 1));
        d.submit("b".into(), recorder(&tx, "b", 1, 60_000));
        // a1 finishes; a2 and b1 run past the deadline; a3 never starts.
        assert_eq!(d.drain(Duration::from_secs(1)).await, 3);
        drop(tx);
        assert_eq!(rx.recv().await, Some(("a".into(), 1)));
        assert_eq!(rx.recv().await, None);
    }
}
