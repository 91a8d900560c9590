//! The `chatworker` command line: argument parsing and one call into the
//! library per subcommand. Exit codes: 0 done, 1 runtime failure, 2 invalid
//! configuration or usage (one line naming what is wrong).

use crate::default_app::{self, AppSettings};
use chatworker::chat::ChatClient;
use chatworker::config::{Config, Settings};
use chatworker::names::{ClientMessageId, SpaceName};
use chatworker::reply::Card;
use chatworker::{Reply, worker};
#[cfg(feature = "dev")]
use chatworker_sim::faults::ControlPatch;
#[cfg(feature = "dev")]
use chatworker_sim::keys::{TrustedKey, issue_key_file};
#[cfg(feature = "dev")]
use chatworker_sim::{SimOptions, serve};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
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
    #[cfg(feature = "dev")]
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
    #[cfg(feature = "dev")]
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
#[cfg(feature = "dev")]
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

#[cfg(feature = "dev")]
impl PlaygroundArgs {
    fn config(self) -> Result<Option<chatworker_sim::playground::Config>, Failure> {
        let Some(topic) = self.playground_topic else {
            return Ok(None);
        };
        let host = std::env::var(chatworker::config::EMULATOR_ENV).map_err(|_| {
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
        let format = event_format(&self.event_format)?;
        Ok(Some(chatworker_sim::playground::Config {
            state_url: None,
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
#[cfg(feature = "dev")]
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

#[cfg(feature = "dev")]
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
            #[cfg(feature = "dev")]
            Command::Dev {
                config,
                listen,
                event_format,
            } => dev(config, listen, event_format, shutdown).await,
            #[cfg(feature = "dev")]
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

/// The configuration every command reads: the runtime's sections, and the
/// default app's (`[app]`), so that a file written for `run` serves every
/// command and a section nothing reads is caught.
fn load(config: Option<&Path>) -> Result<(Config, Settings, AppSettings), Failure> {
    let config = Config::load(config)
        .map_err(usage)?
        .with_defaults(default_app::DEFAULTS);
    let settings = config.settings().map_err(usage)?;
    let app = config.section(default_app::SECTION).map_err(usage)?;
    config.check_sections().map_err(usage)?;
    Ok((config, settings, app))
}

async fn run(
    config: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let (config, settings, app) = load(config.as_deref())?;
    if let Some(file) = config.file() {
        tracing::info!(file = %file.display(), "configuration file read");
    }
    match worker::run(settings, default_app::app(app), shutdown).await {
        Ok(_) => Ok(()),
        Err(e @ (worker::WorkerError::Chat(_) | worker::WorkerError::Config(_))) => Err(usage(e)),
        Err(e) => Err(runtime(e)),
    }
}

async fn setup(config: Option<PathBuf>) -> Result<(), Failure> {
    let (_, settings, _) = load(config.as_deref())?;
    let subscription = settings.pubsub.subscription().map_err(usage)?;
    let Some(topic) = &settings.pubsub.topic else {
        return Err(usage(
            "configuration error: pubsub.topic (CHATWORKER_PUBSUB__TOPIC): is required for setup; set it to the topic Chat publishes to, projects/PROJECT/topics/TOPIC",
        ));
    };
    let report = crate::setup::setup(&settings.pubsub, &settings.network, topic, subscription)
        .await
        .map_err(runtime)?;
    for line in &report.done {
        println!("{line}");
    }
    // The store's schema, when one is configured: the worker would create
    // or migrate it at start anyway; setup does it ahead of a rollout.
    if !settings.store.url.trim().is_empty() {
        let store = chatworker::store::Store::open(&settings.store.url)
            .await
            .map_err(runtime)?;
        println!(
            "store {}: schema at version {} (the worker's own; set up or migrated now if it was not)",
            store.kind(),
            chatworker::store::SCHEMA_VERSION
        );
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
    let (_, settings, _) = load(config.as_deref())?;
    settings.pubsub.subscription().map_err(usage)?;
    let egress = chatworker::net::check(&settings).await.map_err(usage)?;
    let mut failed = 0;
    if !egress.is_empty() {
        println!("egress: each host the worker will use, reached the way it will be");
        println!(
            "  {:<42} {:<44} {:<9} {:>8}  tls issuer",
            "host", "way", "http", "latency"
        );
        for host in &egress {
            println!(
                "  {:<42} {:<44} {:<9} {:>8}  {}",
                host.host,
                host.way,
                host.http.unwrap_or("-"),
                host.latency
                    .map(|l| format!("{} ms", l.as_millis()))
                    .unwrap_or_else(|| "-".into()),
                host.issuer.as_deref().unwrap_or("-"),
            );
        }
        for host in &egress {
            match &host.result {
                Ok(()) => println!("ok    egress to {} ({})", host.host, host.purpose),
                Err(problem) => {
                    failed += 1;
                    println!(
                        "FAIL  egress to {} ({}): {problem}",
                        host.host, host.purpose
                    );
                }
            }
        }
    }
    let findings = crate::check::check(&settings).await;
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
        n => Err(runtime(format!(
            "{n} of {} checks failed",
            findings.len() + egress.len()
        ))),
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
    let (_, settings, _) = load(config.as_deref())?;
    let space = SpaceName::parse_lenient(&space).map_err(|e| usage(format!("--space: {e}")))?;
    let mut reply = Reply::default();
    reply.text = text;
    if let Some(id) = message_id {
        let id =
            ClientMessageId::new(&id).map_err(|e| usage(format!("--message-id {id:?}: {e}")))?;
        reply = reply.with_id(id);
    }
    if let Some(path) = card {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| usage(format!("--card {}: {e}", path.display())))?;
        let card: Card = serde_json::from_str(&text)
            .map_err(|e| usage(format!("--card {}: not a card: {e}", path.display())))?;
        reply = reply.with_card("card", card);
    }
    if let Some(key) = thread_key {
        reply = reply.in_thread_key(key);
    }
    let client = ChatClient::new(&settings.chat, &settings.network)
        .await
        .map_err(usage)?;
    let created = client
        .post(&space, reply)
        .await
        .map_err(|e| match e.api_error() {
            // The message is there already: say so in Chat's words.
            Some(answer) if answer.code == 409 => runtime(&answer.message),
            _ => runtime(e),
        })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&created).unwrap_or_default()
    );
    Ok(())
}

/// `--event-format`: the event format the playground publishes.
#[cfg(feature = "dev")]
fn event_format(name: &str) -> Result<chatworker_sim::events::Format, Failure> {
    match name {
        "classic" => Ok(chatworker_sim::events::Format::Classic),
        "addon" => Ok(chatworker_sim::events::Format::Addon),
        other => Err(usage(format!("--event-format {other:?}: classic or addon"))),
    }
}

#[cfg(feature = "dev")]
async fn dev(
    config: Option<PathBuf>,
    listen: String,
    event_format_name: String,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Failure> {
    let format = event_format(&event_format_name)?;
    let (config, _, app) = load(config.as_deref())?;
    let options = chatworker::dev::DevOptions {
        listen,
        format,
        ..chatworker::dev::DevOptions::default()
    };
    chatworker::dev::run_with(config, default_app::app(app), options, shutdown)
        .await
        .map_err(|e| match e {
            chatworker::dev::DevError::Config(e) => usage(e),
            // The emulator is missing, or does not answer: the machine's
            // setup, like the configuration.
            e @ (chatworker::dev::DevError::Emulator(_)
            | chatworker::dev::DevError::Topic { .. }) => usage(e),
            e => runtime(e),
        })
}

#[cfg(feature = "dev")]
async fn sim(
    listen: String,
    trust: Vec<PathBuf>,
    issue_key: Option<PathBuf>,
    faults: ControlPatch,
    playground: Option<chatworker_sim::playground::Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    chatworker_sim::faults::Faults::default()
        .apply(faults.clone())
        .map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| usage(format!("--listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(runtime)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the simulator listens beyond this machine: anyone who reaches it can read and seed its messages and change its faults"
        );
    }
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
        ..SimOptions::default()
    };
    serve(listener, options, shutdown).await.map_err(runtime)
}
