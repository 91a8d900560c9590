//! Google's Pub/Sub emulator as a child process: started on a free loopback
//! port in its own process group, stopped (the launcher script and its JVM
//! together) on drop, and restartable, for `chatworker dev` and for tests
//! that crash or restart it. Or one already running, named by
//! `PUBSUB_EMULATOR_HOST`, which is used as it is and never stopped.

use std::time::{Duration, Instant};

/// The environment variable Google's clients read for the emulator's address.
pub const HOST_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// How long a starting emulator (a JVM) may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The emulator is missing or did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// Google's emulator is not installed.
    #[error(
        "the Pub/Sub emulator is not installed. Install it with \
         `gcloud components install pubsub-emulator beta` (or \
         `apt-get install google-cloud-cli-pubsub-emulator`; it needs Java 17), \
         or point PUBSUB_EMULATOR_HOST at a running one"
    )]
    NotInstalled,
    /// No free loopback port could be found.
    #[error("cannot find a free loopback port for the Pub/Sub emulator: {0}")]
    Port(#[source] std::io::Error),
    /// The launcher could not be run.
    #[error("cannot start the Pub/Sub emulator ({launcher}): {source}")]
    Spawn {
        /// The launcher tried.
        launcher: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// It started but did not answer in time.
    #[error("the Pub/Sub emulator did not answer within {0:?}")]
    Timeout(Duration),
}

/// A Pub/Sub emulator: started here, or one that was already running.
#[derive(Debug)]
pub struct Emulator {
    host: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl Emulator {
    /// The emulator at `host` (`HOST:PORT`) when given, else a new one.
    pub async fn ensure(host: Option<String>) -> Result<Self, EmulatorError> {
        match host {
            Some(host) => Ok(Self {
                port: host
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                host,
                child: None,
            }),
            None => Self::start().await,
        }
    }

    /// Starts a new emulator on a free loopback port and waits until it
    /// answers.
    pub async fn start() -> Result<Self, EmulatorError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(EmulatorError::Port)?
            .port();
        let mut emulator = Self {
            host: format!("127.0.0.1:{port}"),
            port,
            child: None,
        };
        emulator.restart().await?;
        Ok(emulator)
    }

    /// `HOST:PORT`, as `PUBSUB_EMULATOR_HOST` takes it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Starts the emulator (again) on its port; it forgets all topics and
    /// subscriptions when it stops.
    pub async fn restart(&mut self) -> Result<(), EmulatorError> {
        let launcher = launcher().ok_or(EmulatorError::NotInstalled)?;
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&launcher)
            .args(["--host=127.0.0.1", &format!("--port={}", self.port)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| EmulatorError::Spawn {
                launcher: launcher.clone(),
                source,
            })?;
        self.child = Some(child);
        tracing::info!(host = %self.host, "starting the Pub/Sub emulator");
        let url = format!("http://{}/v1/projects/ready/topics", self.host);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmulatorError::Timeout(START_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops an emulator started here with `signal` (`TERM`, or `KILL` to
    /// simulate a crash), the launcher script and its JVM together.
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop("TERM");
    }
}

/// The emulator's launcher: `PUBSUB_EMULATOR_LAUNCHER`, else the one in the
/// Google Cloud SDK that `gcloud` reports.
fn launcher() -> Option<String> {
    if let Ok(path) = std::env::var("PUBSUB_EMULATOR_LAUNCHER")
        && !path.is_empty()
    {
        return Some(path);
    }
    let out = std::process::Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .output()
        .ok()?;
    let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = format!("{root}/platform/pubsub-emulator/bin/cloud-pubsub-emulator");
    std::path::Path::new(&path).is_file().then_some(path)
}
