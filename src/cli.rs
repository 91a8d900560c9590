//! The `chatworker` command line: argument parsing and one call into the
//! library per subcommand. Exit codes: 0 done, 1 runtime failure, 2 invalid
//! configuration or usage (one line naming what is wrong).

use crate::chat::{ChatClient, Created, NewMessage, Threading};
use crate::config::Settings;

use crate::names::{ClientMessageId, SpaceName};
use crate::reply::Card;
use crate::sim::faults::ControlPatch;
use crate::sim::keys::{TrustedKey, issue_key_file};
use crate::sim::{SimOptions, serve};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A Pub/Sub-driven runtime for Google Chat apps behind a firewall.
#[derive(Debug, Parser)]
#[command(name = "chatworker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull Chat events from Pub/Sub, answer them, ack; until SIGTERM/SIGINT.
    Run {
        /// Settings file (default: ./config/default.toml if present).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Create the topic, the subscription (retry policy, dead-letter
    /// policy) and the dead-letter topic and subscription; print the IAM
    /// grants it cannot make. Safe to run again.
    Setup {
        /// Settings file (default: ./config/default.toml if present).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Check everything the worker needs (configuration, a Chat token, the
    /// subscription and the right to pull from it) without sending anything.
    Check {
        /// Settings file (default: ./config/default.toml if present).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Send one message with the app's credentials and print it as JSON.
    Send {
        /// Settings file (for chat.endpoint and chat.request_timeout).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The space: spaces/AAA or AAA.
        #[arg(long)]
        space: String,
        /// The message text.
        #[arg(long, required_unless_present = "card")]
        text: Option<String>,
        /// A JSON file holding one card (the `card` of a cardsV2 entry).
        #[arg(long, value_name = "FILE.json")]
        card: Option<PathBuf>,
        /// Post in the app-owned thread with this key (created on first use).
        #[arg(long)]
        thread_key: Option<String>,
        /// Name the message `client-…`, to update or delete it later.
        #[arg(long, value_name = "client-…")]
        message_id: Option<String>,
    },
    /// Everything on loopback: the Pub/Sub emulator, the simulator with its
    /// playground page, and the worker with the default app; until Ctrl-C.
    Dev {
        /// Settings file (default: ./config/default.toml if present).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Address of the simulator and its playground.
        #[arg(long, default_value = "127.0.0.1:8086")]
        listen: String,
        /// The event format the playground publishes: classic or addon.
        #[arg(long, default_value = "classic")]
        event_format: String,
    },
    /// Serve the Chat API simulator.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8086")]
        listen: String,
        /// Trust this service-account key file (repeatable). The file in
        /// GOOGLE_APPLICATION_CREDENTIALS is trusted too.
        #[arg(long, value_name = "KEYFILE")]
        trust: Vec<PathBuf>,
        /// Create a service-account key file here if none exists, and trust it.
        #[arg(long, value_name = "KEYFILE")]
        issue_key: Option<PathBuf>,
        #[command(flatten)]
        faults: FaultArgs,
        #[command(flatten)]
        playground: PlaygroundArgs,
    },
}

/// Where the playground page publishes the events people make.
#[derive(Debug, clap::Args)]
struct PlaygroundArgs {
    /// Publish playground events to this topic (projects/P/topics/T), on the
    /// Pub/Sub emulator named by PUBSUB_EMULATOR_HOST.
    #[arg(long, value_name = "TOPIC")]
    playground_topic: Option<String>,
    /// The app's name, for @mentions.
    #[arg(long, default_value = "chatworker")]
    app_name: String,
    /// A slash command the app has: NAME=ID (repeatable), e.g. /help=1.
    #[arg(long = "command", value_name = "NAME=ID")]
    commands: Vec<String>,
    /// The event format: classic or addon.
    #[arg(long, default_value = "classic")]
    event_format: String,
}

impl PlaygroundArgs {
    fn config(self) -> Result<Option<crate::sim::playground::Config>, Failure> {
        let Some(topic) = self.playground_topic else {
            return Ok(None);
        };
        let host = std::env::var(crate::config::EMULATOR_ENV).map_err(|_| {
            usage("--playground-topic needs PUBSUB_EMULATOR_HOST (the playground publishes to the emulator)")
        })?;
        let mut commands = std::collections::BTreeMap::new();
        for c in self.commands {
            let (name, id) = c
                .split_once('=')
                .and_then(|(n, i)| Some((n.to_owned(), i.parse::<i64>().ok()?)))
                .ok_or_else(|| usage(format!("--command {c:?}: expected NAME=ID, e.g. /help=1")))?;
            commands.insert(name, id);
        }
        let format = match self.event_format.as_str() {
            "classic" => crate::sim::events::Format::Classic,
            "addon" => crate::sim::events::Format::Addon,
            other => return Err(usage(format!("--event-format {other:?}: classic or addon"))),
        };
        Ok(Some(crate::sim::playground::Config {
            pubsub_url: format!("http://{host}"),
            topic,
            app_name: self.app_name,
            commands,
            format,
        }))
    }
}

/// Faults and quotas of the simulator from the start; `POST /_sim/control`
/// changes them at run time.
#[derive(Debug, clap::Args)]
struct FaultArgs {
    /// Delay every API answer by this many milliseconds.
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Answer this share of API calls (0 to 1) with an error.
    #[arg(long, value_name = "RATE")]
    error_rate: Option<f64>,
    /// The errors --error-rate draws from.
    #[arg(long, value_name = "STATUS,…", value_delimiter = ',')]
    error_statuses: Option<Vec<u16>>,
    /// Send Retry-After with 429 and 503 answers.
    #[arg(long, value_name = "SECONDS")]
    retry_after: Option<u64>,
    /// Answer every API call 503 for this long after start.
    #[arg(long, value_name = "MS")]
    outage_ms: Option<u64>,
    /// Answer token requests 503 for this long after start.
    #[arg(long, value_name = "MS")]
    token_outage_ms: Option<u64>,
    /// Lifetime of issued access tokens.
    #[arg(long, value_name = "SECONDS")]
    token_lifetime: Option<u64>,
    /// Enforce a write quota per space per minute (Chat's: 60).
    #[arg(long, value_name = "N")]
    space_writes_per_minute: Option<u32>,
    /// Enforce a write quota per project per minute (Chat's: 3000).
    #[arg(long, value_name = "N")]
    project_writes_per_minute: Option<u32>,
}

impl From<FaultArgs> for ControlPatch {
    fn from(a: FaultArgs) -> Self {
        ControlPatch {
            latency_ms: a.latency_ms,
            error_rate: a.error_rate,
            error_statuses: a.error_statuses,
            retry_after_seconds: a.retry_after,
            outage_ms: a.outage_ms,
            token_outage_ms: a.token_outage_ms,
            token_lifetime_seconds: a.token_lifetime,
            space_writes_per_minute: a.space_writes_per_minute,
            project_writes_per_minute: a.project_writes_per_minute,
            ..ControlPatch::default()
        }
    }
}

/// An error and the exit code it leads to.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl ToString) -> Failure {
    Failure {
        code: 2,
        message: message.to_string(),
    }
}

fn runtime(message: impl ToString) -> Failure {
    Failure {
        code: 1,
        message: message.to_string(),
    }
}

impl Cli {
    /// Runs the command; returns the process exit code.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> ExitCode {
        let result = match self.command {
            Command::Run { config } => run(config, shutdown).await,
            Command::Setup { config } => setup(config).await,
            Command::Check { config } => check(config).await,
            Command::Send {
                config,
                space,
                text,
                card,
                thread_key,
                message_id,
            } => send(config, space, text, card, thread_key, message_id).await,
            Command::Dev {
                config,
                listen,
                event_format,
            } => dev(config, listen, event_format, shutdown).await,
            Command::Sim {
                listen,
                trust,
                issue_key,
                faults,
                playground,
            } => match playground.config() {
                Ok(playground) => {
                    sim(
                        listen,
                        trust,
                        issue_key,
                        faults.into(),
                        playground,
                        shutdown,
                    )
                    .await
                }
                Err(f) => Err(f),
            },
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                eprintln!("chatworker: {}", f.message);
                ExitCode::from(f.code)
            }
        }
    }
}

async fn run(
    config: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let settings = Settings::for_worker(config.as_deref()).map_err(usage)?;
    let app = crate::default_app::app(settings.app.clone());
    match crate::worker::run(settings, app, shutdown).await {
        Ok(_) => Ok(()),
        Err(crate::worker::WorkerError::Chat(e)) => Err(usage(e)),
        Err(e) => Err(runtime(e)),
    }
}

async fn setup(config: Option<PathBuf>) -> Result<(), Failure> {
    let settings = Settings::load(config.as_deref())
        .and_then(Settings::require_subscription)
        .map_err(usage)?;
    if settings.pubsub.topic.is_empty() {
        return Err(usage(
            "configuration error: pubsub.topic (CHATWORKER_PUBSUB__TOPIC): is required for setup; set it to the topic Chat publishes to, projects/PROJECT/topics/TOPIC",
        ));
    }
    let report = crate::provision::setup(&settings.pubsub)
        .await
        .map_err(runtime)?;
    for line in &report.done {
        println!("{line}");
    }
    if settings.pubsub.emulator_host.is_some() {
        println!("\nOn the emulator there is no IAM. On Google Cloud, grant:");
    } else {
        println!("\nGrants setup cannot make (run them as an IAM administrator):");
    }
    for grant in &report.grants {
        println!("  {grant}");
    }
    Ok(())
}

async fn check(config: Option<PathBuf>) -> Result<(), Failure> {
    let settings = Settings::for_worker(config.as_deref()).map_err(usage)?;
    let findings = crate::provision::check(&settings).await;
    let mut failed = 0;
    for finding in &findings {
        match &finding.result {
            Ok(found) => println!("ok    {}: {found}", finding.name),
            Err(problem) => {
                failed += 1;
                println!("FAIL  {}: {problem}", finding.name);
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(runtime(format!("{n} of {} checks failed", findings.len()))),
    }
}

async fn send(
    config: Option<PathBuf>,
    space: String,
    text: Option<String>,
    card: Option<PathBuf>,
    thread_key: Option<String>,
    message_id: Option<String>,
) -> Result<(), Failure> {
    let settings = Settings::load(config.as_deref()).map_err(usage)?;
    let space = SpaceName::parse_lenient(&space).map_err(|e| usage(format!("--space: {e}")))?;
    let id = message_id
        .map(|id| ClientMessageId::new(&id).map_err(|e| usage(format!("--message-id {id:?}: {e}"))))
        .transpose()?;
    let cards = match card {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("--card {}: {e}", path.display())))?;
            let card: Card = serde_json::from_str(&text)
                .map_err(|e| usage(format!("--card {}: not a card: {e}", path.display())))?;
            vec![("card".to_owned(), card)]
        }
        None => Vec::new(),
    };
    let message = NewMessage {
        space,
        id,
        text,
        cards,
        thread: thread_key.map_or(Threading::New, Threading::Key),
        accessory_buttons: Vec::new(),
        private_to: None,
        notify: crate::reply::Notify::Default,
        markup: settings.chat.markup_syntax,
    };
    let client = ChatClient::new(&settings.chat).await.map_err(usage)?;
    match client.create(&message).await.map_err(runtime)? {
        Created::Message(created) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&created.to_json()).unwrap_or_default()
            );
            Ok(())
        }
        Created::AlreadyExists => Err(runtime(format!(
            "a message with ID {} already exists in {}",
            message
                .id
                .as_ref()
                .map(ClientMessageId::as_str)
                .unwrap_or_default(),
            message.space
        ))),
    }
}

async fn dev(
    config: Option<PathBuf>,
    listen: String,
    event_format: String,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Failure> {
    let format = match event_format.as_str() {
        "classic" => crate::sim::events::Format::Classic,
        "addon" => crate::sim::events::Format::Addon,
        other => return Err(usage(format!("--event-format {other:?}: classic or addon"))),
    };
    let settings = Settings::load(config.as_deref()).map_err(usage)?;
    let options = crate::dev::DevOptions {
        listen,
        config,
        format,
        ..crate::dev::DevOptions::default()
    };
    crate::dev::run(crate::default_app::app(settings.app), options, shutdown)
        .await
        .map_err(|e| match e {
            crate::dev::DevError::Config(e) => usage(e),
            crate::dev::DevError::Emulator(_) => usage(e),
            e => runtime(e),
        })
}

async fn sim(
    listen: String,
    trust: Vec<PathBuf>,
    issue_key: Option<PathBuf>,
    faults: ControlPatch,
    playground: Option<crate::sim::playground::Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    crate::sim::faults::Faults::default()
        .apply(faults.clone())
        .map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| usage(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(runtime)?;
    let mut keys = Vec::new();
    if let Some(path) = issue_key {
        let email = "chatworker-local@local-project.iam.gserviceaccount.com";
        let key = issue_key_file(&path, email, &format!("http://{addr}/token")).map_err(usage)?;
        tracing::info!(path = %path.display(), email = %key.client_email, "trusting the issued key");
        keys.push(key);
    }
    let from_env = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from);
    for path in trust.iter().chain(from_env.iter()) {
        let key = TrustedKey::from_file(path).map_err(|e| usage(format!("--trust {e}")))?;
        tracing::info!(path = %path.display(), email = %key.client_email, "trusting key");
        keys.push(key);
    }
    if keys.is_empty() {
        tracing::warn!(
            "no trusted keys: every API call will be answered 401 (use --trust or --issue-key)"
        );
    }
    // Scripts wait for this line.
    println!("chat simulator listening on http://{addr}");
    let options = SimOptions {
        trust: keys,
        faults,
        playground,
    };
    serve(listener, options, shutdown).await.map_err(runtime)
}
