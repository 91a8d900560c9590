//! The worker in-process, through the library API, against the emulator and
//! the simulator: shared by the runtime's tests.

#![allow(dead_code)]

use chatworker::Service;
use chatworker::config::Settings;
use chatworker::worker::{Snapshot, WorkerError};
use chatworker_testkit::{Sim, Topic};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The settings a test worker runs with: the emulator, `topic`'s
/// subscription, `sim` with its key, no retries and no pacing unless `env`
/// says otherwise.
pub fn settings(sim: &Sim, topic: &Topic, env: &[(&str, &str)]) -> Settings {
    let mut all = vec![
        (
            "PUBSUB_EMULATOR_HOST".to_owned(),
            chatworker_testkit::emulator_host(),
        ),
        (
            "CHATWORKER_PUBSUB__SUBSCRIPTION".to_owned(),
            topic.subscription.clone(),
        ),
        ("CHATWORKER_CHAT__ENDPOINT".to_owned(), sim.url.clone()),
        (
            "CHATWORKER_CHAT__CREDENTIALS_FILE".to_owned(),
            sim.key_path.display().to_string(),
        ),
        ("CHATWORKER_CHAT__RETRY_ATTEMPTS".to_owned(), "1".into()),
        (
            "CHATWORKER_CHAT__SPACE_WRITES_PER_MINUTE".to_owned(),
            "0".into(),
        ),
        (
            "CHATWORKER_CHAT__PROJECT_WRITES_PER_MINUTE".to_owned(),
            "0".into(),
        ),
    ];
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::load_from(None, all).expect("settings")
}

/// A worker running in this process.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Snapshot, WorkerError>>,
}

impl InProcess {
    /// Runs `app` on `topic`'s subscription until [`InProcess::stop`].
    pub fn start(sim: &Sim, topic: &Topic, app: impl Service, env: &[(&str, &str)]) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chatworker::worker::run(
            settings(sim, topic, env),
            app,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the worker and returns its figures.
    pub async fn stop(mut self) -> Snapshot {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("the worker's task joins")
            .expect("the worker ran")
    }
}
