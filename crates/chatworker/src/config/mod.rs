//! Typed settings, layered: compiled-in defaults (`config/default.toml`),
//! then a file, then `CHATWORKER_<SECTION>__<KEY>` environment variables.
//!
//! [`Config`] is the layered source; [`Config::settings`] reads the
//! runtime's sections (`pubsub`, `chat`, `worker`, `server`) into typed
//! [`Settings`], and [`Config::section`] reads any other section, so a bot
//! keeps its own settings in the same file and variables:
//!
//! ```
//! # fn main() -> Result<(), chatworker::config::ConfigError> {
//! #[derive(serde::Deserialize)]
//! struct Desk {
//!     greeting: String,
//! }
//!
//! let env = [
//!     ("CHATWORKER_PUBSUB__SUBSCRIPTION", "projects/p/subscriptions/bot"),
//!     ("CHATWORKER_DESK__GREETING", "Hello"),
//! ];
//! let config = chatworker::Config::load_from(None, env.map(|(k, v)| (k.into(), v.into())))?;
//! let desk: Desk = config.section("desk")?;
//! let settings = config.settings()?;
//! config.check_sections()?; // a [desk] typo elsewhere, say [dsk], would fail here
//! assert_eq!(desk.greeting, "Hello");
//! assert_eq!(settings.pubsub.subscription()?.id(), "bot");
//! # Ok(())
//! # }
//! ```
//!
//! Every error names the setting (and its environment variable) and what is
//! wrong, so `main` can print one line and exit 2.

mod env;
mod parse;
mod resource;

pub use resource::{SubscriptionName, TopicName};

use env::EnvList;
use figment::providers::{Format, Toml};
use figment::{Figment, Provider};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The runtime's defaults: `config/default.toml`, compiled in so that a
/// binary runs from any directory.
pub(crate) const DEFAULTS: &str = include_str!("../../../../config/default.toml");

/// The file read when no file is given, if it exists.
pub(crate) const DEFAULT_PATH: &str = "config/default.toml";

/// The prefix of environment variables that override settings.
pub(crate) const ENV_PREFIX: &str = "CHATWORKER_";

/// Google's convention for pointing clients at the Pub/Sub emulator.
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// The layered configuration, before it is read into types.
pub struct Config {
    figment: Figment,
    file: Option<PathBuf>,
    emulator_host: Option<String>,
    env_proxy: Option<String>,
    env_no_proxy: Option<String>,
    /// The sections read so far, so that [`Config::check_sections`] can
    /// tell a section nobody reads (a typo) from a bot's own.
    read: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Config {
    /// The values themselves stay out: a proxy URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("file", &self.file)
            .field("emulator_host", &self.emulator_host)
            .field("env_proxy", &self.env_proxy.as_deref().map(redacted))
            .field("env_no_proxy", &self.env_no_proxy)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, then `file` (or `config/default.toml` when `None` and
    /// it exists), then the process's environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        let file = match file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError {
                    setting: "--config".into(),
                    env: "command line".into(),
                    problem: format!("{} is not a readable file", path.display()),
                });
            }
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.is_file()),
        };
        if let Some(path) = &file {
            figment = figment.merge(Toml::file(path));
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let emulator_host = env
            .iter()
            .find(|(k, _)| k == EMULATOR_ENV)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(host) = &emulator_host
            && (host.contains("://") || !host.contains(':'))
        {
            return Err(ConfigError {
                setting: "emulator host".into(),
                env: EMULATOR_ENV.into(),
                problem: format!("{host:?} must be HOST:PORT, without a scheme"),
            });
        }
        let first_of = |names: &[&str]| {
            names.iter().find_map(|name| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            })
        };
        let env_proxy = first_of(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]);
        let env_no_proxy = first_of(&["NO_PROXY", "no_proxy"]);
        // Only variables with a `__` are ours: Kubernetes injects
        // CHATWORKER_SERVICE_HOST and friends for a Service named chatworker,
        // and those must not be mistaken for (unknown) settings.
        let ours: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_owned(), v)))
            .filter(|(k, _)| k.contains("__"))
            .collect();
        figment = figment.merge(EnvList(ours));
        Ok(Self {
            figment,
            file,
            emulator_host,
            env_proxy,
            env_no_proxy,
            read: Mutex::default(),
        })
    }

    /// Adds compiled-in defaults for sections of a program's own (below the
    /// file and the environment), as TOML.
    pub fn with_defaults(self, toml: &str) -> Self {
        Self {
            figment: self.figment.join(Toml::string(toml)),
            ..self
        }
    }

    /// The file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The runtime's settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut pubsub: PubSubSettings = self.section("pubsub")?;
        pubsub.emulator_host = self.emulator_host.clone();
        let settings = Settings {
            pubsub,
            chat: self.section("chat")?,
            worker: self.section("worker")?,
            server: self.section("server")?,
            network: {
                let mut network: NetworkSettings = self.section("network")?;
                network.env_proxy = self.env_proxy.clone();
                network.env_no_proxy = self.env_no_proxy.clone();
                network
            },
            store: self.section("store")?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The section `name` (`[name]` in a file, `CHATWORKER_NAME__KEY` in the
    /// environment), read as a `T`; an absent section reads as an empty one.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
        let present = self.figment.find_value(name).is_ok();
        let result = match present {
            true => self.figment.extract_inner::<T>(name),
            false => Figment::new()
                .merge(figment::providers::Serialized::default(
                    name,
                    figment::value::Dict::new(),
                ))
                .extract_inner::<T>(name),
        };
        result.map_err(|e| from_figment(name, e))
    }

    /// Fails on a section that nothing read: a misspelt one (`[pubsb]`,
    /// `CHATWORKER_WORKR__CONCURRENCY`) would otherwise be ignored silently.
    /// Call it once every section the program uses has been read.
    pub fn check_sections(&self) -> Result<(), ConfigError> {
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Ok(data) = self.figment.data() else {
            return Ok(());
        };
        let present = data.values().flat_map(|dict| dict.keys());
        for section in present {
            if !read.contains(section) {
                let mut known: Vec<&str> = read.iter().map(String::as_str).collect();
                known.sort_unstable();
                return Err(ConfigError {
                    setting: section.clone(),
                    env: format!("{ENV_PREFIX}{}__…", section.to_uppercase()),
                    problem: format!(
                        "is not a known section (this program reads {})",
                        known.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The runtime's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// Where events come from.
    pub pubsub: PubSubSettings,
    /// Where replies go.
    pub chat: ChatSettings,
    /// How events are processed.
    pub worker: WorkerSettings,
    /// The operations listener (health and metrics).
    pub server: ServerSettings,
    /// How connections reach Google: proxy, company CAs.
    pub network: NetworkSettings,
    /// Where the app's state, the inbox and the outbox are kept.
    pub store: StoreSettings,
}

/// The store: the app's state, and the inbox and outbox that make each
/// event's effects happen once.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSettings {
    /// `memory:`, `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`;
    /// empty: `memory:` for `run`, SQLite for `chatworker dev`.
    #[serde(default)]
    pub url: String,
    /// How long an event stays in the inbox after its commit; a
    /// redelivery later than that would run its handler again. At least
    /// Pub/Sub's longest redelivery (its 7-day retention).
    #[serde(deserialize_with = "parse::duration_in::<_, 3_600_000, { u64::MAX }>")]
    pub retention: Duration,
    /// The most events the inbox keeps; the oldest go first.
    #[serde(deserialize_with = "parse::int_in::<_, i64, 1_000, { i64::MAX }>")]
    pub max_inbox: i64,
    /// How often housekeeping runs (expired inbox rows and values).
    #[serde(deserialize_with = "parse::duration_in::<_, 1_000, { u64::MAX }>")]
    pub sweep_every: Duration,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &redacted(&self.url))
            .field("retention", &self.retention)
            .field("max_inbox", &self.max_inbox)
            .field("sweep_every", &self.sweep_every)
            .finish()
    }
}

impl StoreSettings {
    /// The URL to open: the setting, else `default`.
    pub fn url_or<'a>(&'a self, default: &'a str) -> &'a str {
        match self.url.trim() {
            "" => default,
            url => url,
        }
    }
}

/// The operations listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerSettings {
    /// Where `/healthz`, `/readyz` and `/metrics` are served; none: off.
    #[serde(deserialize_with = "parse::listen")]
    pub listen: Option<SocketAddr>,
    /// How long the pull loop may stall, or Pub/Sub stay unreachable,
    /// before `/healthz` fails; at least 15s, three of the loop's 5 s beats,
    /// or a busy moment would read as a stall.
    #[serde(deserialize_with = "parse::duration_in::<_, 15_000, { u64::MAX }>")]
    pub stall_after: Duration,
}

/// How connections to Google go: directly, or through an HTTP CONNECT
/// proxy, trusting the system's CAs and the company's own.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NetworkSettings {
    /// The proxy (`http://[USER:PASSWORD@]HOST:PORT`), `"direct"` for none
    /// whatever the environment says, or none (`""`): `HTTPS_PROXY`
    /// (`https_proxy`, `ALL_PROXY`) from the environment.
    #[serde(default)]
    pub proxy: String,
    /// Hosts that bypass the proxy, as `NO_PROXY` is written (hosts,
    /// domains, IP addresses, CIDR blocks, `*`); none (`""`): `NO_PROXY`
    /// (`no_proxy`) from the environment. Loopback and the GKE metadata
    /// server never go through a proxy.
    #[serde(default)]
    pub no_proxy: String,
    /// A PEM bundle of CAs trusted besides the system's, for every TLS
    /// connection (a TLS-inspecting proxy's CA); none: the system's only.
    #[serde(default, deserialize_with = "parse::optional")]
    pub extra_ca_file: Option<PathBuf>,
    /// The proxy from the environment; not a file setting.
    #[serde(skip)]
    pub env_proxy: Option<String>,
    /// `NO_PROXY` from the environment; not a file setting.
    #[serde(skip)]
    pub env_no_proxy: Option<String>,
}

impl std::fmt::Debug for NetworkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A proxy URL may carry a password: shown without it.
        let redact = |url: &str| redacted(url);
        f.debug_struct("NetworkSettings")
            .field("proxy", &redact(&self.proxy))
            .field("no_proxy", &self.no_proxy)
            .field("extra_ca_file", &self.extra_ca_file)
            .field("env_proxy", &self.env_proxy.as_deref().map(redact))
            .field("env_no_proxy", &self.env_no_proxy)
            .finish()
    }
}

/// How the subscriber talks to Pub/Sub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Transport {
    /// The streaming pull over gRPC (HTTP/2); if HTTP/2 cannot be
    /// negotiated with Pub/Sub (a proxy that offers only HTTP/1.1), REST,
    /// said once at WARNING.
    #[default]
    Auto,
    /// The streaming pull over gRPC only.
    Grpc,
    /// `subscriptions.pull` over HTTP/1.1.
    Rest,
}

/// The Pub/Sub side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PubSubSettings {
    /// Where Chat publishes the app's events. Only `chatworker setup`
    /// needs it.
    #[serde(default, deserialize_with = "parse::optional")]
    pub topic: Option<TopicName>,
    /// Where the worker pulls from; commands that pull require it
    /// ([`PubSubSettings::subscription`]).
    #[serde(default, rename = "subscription", deserialize_with = "parse::optional")]
    pub subscription_name: Option<SubscriptionName>,
    /// Where undecodable events and permanent failures go; none: they are
    /// logged, counted and acked.
    #[serde(default, deserialize_with = "parse::optional")]
    pub dead_letter_topic: Option<TopicName>,
    /// A subscription on the dead-letter topic, for reading what landed
    /// there; none: the dead-letter topic's ID plus `-sub`.
    #[serde(default, deserialize_with = "parse::optional")]
    pub dead_letter_subscription: Option<SubscriptionName>,
    /// `chatworker setup`: the subscription's retry policy, shortest delay
    /// before a nacked event comes back.
    #[serde(with = "humantime_serde")]
    pub min_retry_delay: Duration,
    /// `chatworker setup`: the retry policy's longest delay (at most 600s).
    #[serde(deserialize_with = "parse::duration_in::<_, 0, 600_000>")]
    pub max_retry_delay: Duration,
    /// `chatworker setup`: deliveries before Pub/Sub forwards an event to
    /// the dead-letter topic (5 to 100).
    #[serde(deserialize_with = "parse::int_in::<_, i32, 5, 100>")]
    pub max_delivery_attempts: i32,
    /// Flow control: events held at once.
    #[serde(deserialize_with = "parse::int_in::<_, i64, 1, { i64::MAX }>")]
    pub max_outstanding_messages: i64,
    /// Flow control: bytes of payload held at once; at least 10 MiB,
    /// Pub/Sub's largest message, or large events could never be pulled.
    #[serde(deserialize_with = "parse::int_in::<_, i64, 10_485_760, { i64::MAX }>")]
    pub max_outstanding_bytes: i64,
    /// With no message for this long, Pub/Sub is probed, so that an outage
    /// is logged (the subscriber reconnects silently); 0s turns it off, and
    /// otherwise it is at least 1s (each probe is a call to Pub/Sub).
    #[serde(deserialize_with = "parse::off_or_at_least::<_, 1_000>")]
    pub probe_interval: Duration,
    /// How far ahead each lease is extended (10s to 600s).
    #[serde(deserialize_with = "parse::duration_in::<_, 10_000, 600_000>")]
    pub max_lease_extension: Duration,
    /// How long one event may stay leased.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// Pub/Sub's endpoint: Google's global one when none, or a locational
    /// (`https://europe-west3-pubsub.googleapis.com`), Private Service
    /// Connect (`https://pubsub-NAME.p.googleapis.com`) or restricted VIP
    /// one. `https://` only (plain HTTP is for the emulator, through
    /// `PUBSUB_EMULATOR_HOST`).
    #[serde(default, deserialize_with = "parse::optional_https_url")]
    pub endpoint: Option<reqwest::Url>,
    /// `/readyz` fails until the streaming pull has connected to Pub/Sub,
    /// and again once it has been unable to connect for this long.
    #[serde(deserialize_with = "parse::duration_in::<_, 1_000, { u64::MAX }>")]
    pub unready_after: Duration,
    /// How the worker pulls: `auto` (the streaming pull over gRPC, falling
    /// back to REST when HTTP/2 cannot be negotiated), `grpc` or `rest`.
    pub transport: Transport,
    /// `host:port` of the emulator, from `PUBSUB_EMULATOR_HOST`; not a file
    /// setting.
    #[serde(skip)]
    pub emulator_host: Option<String>,
}

impl PubSubSettings {
    /// The subscription, which commands that pull require.
    pub fn subscription(&self) -> Result<&SubscriptionName, ConfigError> {
        self.subscription_name.as_ref().ok_or_else(|| {
            ConfigError::new(
                "pubsub.subscription",
                "is required; set it to projects/PROJECT/subscriptions/SUBSCRIPTION",
            )
        })
    }

    /// The dead-letter subscription: configured, or the dead-letter topic's
    /// ID plus `-sub`; none without a dead-letter topic.
    pub fn dead_letter_subscription(&self) -> Option<SubscriptionName> {
        let topic = self.dead_letter_topic.as_ref()?;
        Some(
            self.dead_letter_subscription
                .clone()
                .unwrap_or_else(|| topic.subscription("-sub")),
        )
    }
}

/// The Chat API side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ChatSettings {
    /// Base URL of the Chat API.
    #[serde(deserialize_with = "parse::url")]
    pub endpoint: reqwest::Url,
    /// A service-account key file for Chat; none: Application Default
    /// Credentials.
    #[serde(default, deserialize_with = "parse::optional")]
    pub credentials_file: Option<PathBuf>,
    /// A service account to mint `chat.bot` tokens for (keyless, on GKE):
    /// the credentials above, with `cloud-platform`, call IAM Credentials'
    /// `generateAccessToken` for it. None: the credentials call Chat
    /// themselves.
    #[serde(default, deserialize_with = "parse::service_account")]
    pub impersonate_service_account: Option<String>,
    /// The IAM Credentials API's base URL, for impersonation.
    #[serde(deserialize_with = "parse::url")]
    pub iam_endpoint: reqwest::Url,
    /// Timeout of one API call.
    #[serde(deserialize_with = "parse::duration_in::<_, 1, { u64::MAX }>")]
    pub request_timeout: Duration,
    /// Attempts per reply within one delivery (1: no retry).
    #[serde(deserialize_with = "parse::int_in::<_, u32, 1, { i64::MAX }>")]
    pub retry_attempts: u32,
    /// The first backoff delay; it doubles per attempt, with jitter.
    #[serde(deserialize_with = "parse::duration_in::<_, 1, { u64::MAX }>")]
    pub retry_initial_backoff: Duration,
    /// The longest backoff delay.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// The most time one delivery spends waiting to retry, `Retry-After`
    /// included; past it the event is nacked for a later redelivery.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// Client-side limit of message writes per minute per space (0: none).
    pub space_writes_per_minute: u32,
    /// Client-side limit of message writes per minute per project (0: none).
    pub project_writes_per_minute: u32,
    /// How Chat reads message text (`chat` or `markdown`), sent with every
    /// message and update.
    pub markup_syntax: crate::reply::Markup,
}

/// Processing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// Threads handled at once (1 to 100,000).
    #[serde(deserialize_with = "parse::count_in::<_, 1, 100_000>")]
    pub concurrency: usize,
    /// Time in-flight events get to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The largest event payload decoded, in bytes (64 KiB to 10 MiB,
    /// Pub/Sub's largest message); a larger one is set aside, counted as
    /// `too_large`, without being read.
    #[serde(deserialize_with = "parse::int_in::<_, u32, 65_536, 10_485_760>")]
    pub max_event_bytes: u32,
}

/// A setting that is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {setting} ({env}): {problem}")]
pub struct ConfigError {
    /// The setting's dotted name, e.g. `pubsub.subscription`.
    pub setting: String,
    /// The environment variable that sets it.
    pub env: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl ConfigError {
    /// A problem with `setting` (its dotted name).
    pub fn new(setting: &str, problem: impl Into<String>) -> Self {
        let env = if setting.is_empty() {
            "configuration file".to_owned()
        } else {
            env_name(setting)
        };
        Self {
            setting: setting.to_owned(),
            env,
            problem: problem.into(),
        }
    }
}

/// `pubsub.subscription` → `CHATWORKER_PUBSUB__SUBSCRIPTION`.
pub(crate) fn env_name(setting: &str) -> String {
    format!("{ENV_PREFIX}{}", setting.to_uppercase().replace('.', "__"))
}

impl Settings {
    /// Loads the runtime's settings: [`Config::load`], then
    /// [`Config::settings`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Config::load(file)?.settings()
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Config::load_from(file, env)?.settings()
    }

    /// The rules that join several settings; each setting's own range was
    /// checked as it was read.
    fn validate(&self) -> Result<(), ConfigError> {
        let pubsub = &self.pubsub;
        if pubsub.min_retry_delay > pubsub.max_retry_delay {
            return Err(ConfigError::new(
                "pubsub.max_retry_delay",
                "must be at least pubsub.min_retry_delay",
            ));
        }
        let chat = &self.chat;
        if chat.retry_initial_backoff > chat.retry_budget {
            return Err(ConfigError::new(
                "chat.retry_initial_backoff",
                "must not be above chat.retry_budget, or no retry would ever fit",
            ));
        }
        if chat.retry_max_backoff < chat.retry_initial_backoff {
            return Err(ConfigError::new(
                "chat.retry_max_backoff",
                "must not be below chat.retry_initial_backoff",
            ));
        }
        if chat.retry_budget >= pubsub.max_lease {
            return Err(ConfigError::new(
                "chat.retry_budget",
                "must be below pubsub.max_lease, or events would be redelivered while still retrying",
            ));
        }
        Ok(())
    }
}

fn from_figment(section: &str, e: figment::Error) -> ConfigError {
    // figment appends the section to the path it found inside it
    // (`desk.greeting.desk`), or gives the path relative to the section.
    let mut path = e.path.clone();
    if path.len() > 1 && path.last().map(String::as_str) == Some(section) {
        path.pop();
    }
    if path.first().map(String::as_str) != Some(section) {
        path.insert(0, section.to_owned());
    }
    match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            ConfigError::new(&with_field(&path, field), "is not a known setting")
        }
        figment::error::Kind::MissingField(field) => {
            ConfigError::new(&with_field(&path, field), "is missing")
        }
        kind => ConfigError::new(&path.join("."), kind.to_string()),
    }
}

/// The dotted setting name for `field` under `path` (figment sometimes
/// includes the field in the path, sometimes not).
fn with_field(path: &[String], field: &str) -> String {
    match path.last() {
        Some(last) if last == field => path.join("."),
        Some(_) => format!("{}.{field}", path.join(".")),
        None => field.to_owned(),
    }
}

/// A proxy URL shown without its credentials: `http://proxy:3128`, with
/// ` (with credentials)` when it has some.
pub(crate) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.has_host() => {
            let credentials = !parsed.username().is_empty() || parsed.password().is_some();
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let shown = format!("{}://{host}{port}", parsed.scheme());
            match credentials {
                true => format!("{shown} (with credentials)"),
                false => shown,
            }
        }
        // Unparsable: the part after the last `@`, which holds no password.
        _ => url.rsplit('@').next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = Settings::load_from(None, env)?;
        settings.pubsub.subscription()?;
        Ok(settings)
    }

    const SUB: (&str, &str) = (
        "CHATWORKER_PUBSUB__SUBSCRIPTION",
        "projects/p1/subscriptions/sub",
    );

    #[test]
    fn a_proxys_password_never_reaches_debug_output() {
        let env = [
            ("HTTPS_PROXY", "http://alice:s3cret-pw@proxy.corp:3128"),
            (
                "CHATWORKER_NETWORK__PROXY",
                "http://bob:0ther-pw@proxy2.corp:8080",
            ),
            SUB,
        ];
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::load_from(None, env).expect("config");
        let settings = config.settings().expect("settings");
        let shown = format!("{config:?} {settings:?}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("0ther-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("proxy.corp:3128 (with credentials)"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_come_from_the_compiled_in_file() {
        let s = load(&[SUB]).expect("valid");
        assert_eq!(s.chat.endpoint.as_str(), "https://chat.googleapis.com/");
        assert_eq!(s.worker.shutdown_grace, Duration::from_secs(20));
        assert_eq!(s.pubsub.subscription().expect("set").project(), "p1");
        assert_eq!(s.pubsub.emulator_host, None);
        assert_eq!(s.pubsub.topic, None, "an empty default is none");
        assert_eq!(s.chat.credentials_file, None);
        assert_eq!(s.server.listen, None);
    }

    #[test]
    fn environment_overrides_and_emulator_host() {
        let s = load(&[
            SUB,
            ("CHATWORKER_CHAT__ENDPOINT", "http://127.0.0.1:9000"),
            ("CHATWORKER_WORKER__CONCURRENCY", "3"),
            ("CHATWORKER_WORKER__SHUTDOWN_GRACE", "5s"),
            ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
            // Injected by Kubernetes for a Service named chatworker: not ours.
            ("CHATWORKER_SERVICE_HOST", "10.0.0.1"),
            ("CHATWORKER_PORT", "tcp://10.0.0.1:80"),
        ])
        .expect("valid");
        assert_eq!(s.chat.endpoint.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(s.worker.concurrency, 3);
        assert_eq!(s.worker.shutdown_grace, Duration::from_secs(5));
        assert_eq!(s.pubsub.emulator_host.as_deref(), Some("127.0.0.1:8085"));
    }

    #[test]
    fn errors_name_the_setting_and_its_variable() {
        let e = load(&[]).expect_err("subscription is required");
        assert_eq!(e.setting, "pubsub.subscription");
        assert!(
            e.to_string().contains("CHATWORKER_PUBSUB__SUBSCRIPTION"),
            "{e}"
        );

        let e = load(&[("CHATWORKER_PUBSUB__SUBSCRIPTION", "my-sub")]).expect_err("bad form");
        assert!(
            e.problem
                .contains("projects/PROJECT/subscriptions/SUBSCRIPTION"),
            "{e}"
        );

        let e = load(&[SUB, ("CHATWORKER_WORKER__CONCURENCY", "3")]).expect_err("typo");
        assert_eq!(e.setting, "worker.concurency");
        assert!(e.problem.contains("not a known setting"), "{e}");

        let e =
            load(&[SUB, ("CHATWORKER_WORKER__SHUTDOWN_GRACE", "soon")]).expect_err("bad duration");
        assert_eq!(e.setting, "worker.shutdown_grace", "{e}");

        let e = load(&[SUB, ("CHATWORKER_WORKER__CONCURRENCY", "-1")]).expect_err("negative");
        assert_eq!(e.setting, "worker.concurrency", "{e}");

        let e =
            load(&[SUB, ("PUBSUB_EMULATOR_HOST", "http://localhost:8085")]).expect_err("scheme");
        assert_eq!(e.env, "PUBSUB_EMULATOR_HOST", "{e}");

        let e = Settings::load_from(Some(Path::new("/nonexistent.toml")), Vec::new())
            .expect_err("no file");
        assert_eq!(e.setting, "--config");

        let e = load(&[SUB, ("CHATWORKER_CHAT__ENDPOINT", "ftp://x")]).expect_err("scheme");
        assert_eq!(e.setting, "chat.endpoint", "{e}");
        let e = load(&[SUB, ("CHATWORKER_PUBSUB__MAX_DELIVERY_ATTEMPTS", "3")]).expect_err("range");
        assert_eq!(e.setting, "pubsub.max_delivery_attempts", "{e}");
        assert!(e.problem.contains("between 5 and 100"), "{e}");
        let e = load(&[SUB, ("CHATWORKER_SERVER__LISTEN", "localhost")]).expect_err("address");
        assert_eq!(e.setting, "server.listen", "{e}");
        let e = load(&[
            SUB,
            ("CHATWORKER_CHAT__IMPERSONATE_SERVICE_ACCOUNT", "nobody"),
        ])
        .expect_err("not an email");
        assert_eq!(e.setting, "chat.impersonate_service_account", "{e}");
        let e = load(&[SUB, ("CHATWORKER_CHAT__RETRY_BUDGET", "2h")]).expect_err("cross-field");
        assert_eq!(e.setting, "chat.retry_budget", "{e}");
    }

    #[test]
    fn ranges_are_checked_with_the_setting_named() {
        for (variable, value, setting) in [
            ("CHATWORKER_SERVER__STALL_AFTER", "2s", "server.stall_after"),
            (
                "CHATWORKER_WORKER__CONCURRENCY",
                "10000000000000000000",
                "worker.concurrency",
            ),
            (
                "CHATWORKER_WORKER__CONCURRENCY",
                "200000",
                "worker.concurrency",
            ),
            (
                "CHATWORKER_PUBSUB__PROBE_INTERVAL",
                "10ms",
                "pubsub.probe_interval",
            ),
            (
                "CHATWORKER_CHAT__RETRY_INITIAL_BACKOFF",
                "45s",
                "chat.retry_initial_backoff",
            ),
            (
                "CHATWORKER_CHAT__ENDPOINT",
                "http://chat.example.com",
                "chat.endpoint",
            ),
            (
                "CHATWORKER_CHAT__IAM_ENDPOINT",
                "http://10.0.0.1:8080",
                "chat.iam_endpoint",
            ),
            (
                "CHATWORKER_WORKER__MAX_EVENT_BYTES",
                "100",
                "worker.max_event_bytes",
            ),
        ] {
            let e = load(&[SUB, (variable, value)]).expect_err(variable);
            assert_eq!(e.setting, setting, "{variable}={value}: {e}");
        }
        // And what stays allowed.
        for (variable, value) in [
            ("CHATWORKER_PUBSUB__PROBE_INTERVAL", "0s"),
            ("CHATWORKER_CHAT__ENDPOINT", "http://127.0.0.1:8086"),
            ("CHATWORKER_CHAT__ENDPOINT", "http://localhost:8086"),
            ("CHATWORKER_CHAT__ENDPOINT", "http://[::1]:8086"),
            ("CHATWORKER_CHAT__ENDPOINT", "https://chat.example.com"),
        ] {
            load(&[SUB, (variable, value)]).unwrap_or_else(|e| panic!("{variable}={value}: {e}"));
        }
    }

    #[test]
    fn a_program_reads_its_own_section_and_typos_are_caught() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Desk {
            greeting: String,
            #[serde(default)]
            shout: bool,
        }
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::load_from(None, pairs).expect("loads")
        };
        let config = env(&[SUB, ("CHATWORKER_DESK__GREETING", "hi")])
            .with_defaults("[desk]\ngreeting = \"hello\"\nshout = true\n");
        let desk: Desk = config.section("desk").expect("reads");
        assert_eq!(desk.greeting, "hi", "the environment beats the defaults");
        assert!(desk.shout, "the program's defaults apply");
        config.settings().expect("valid");
        config.check_sections().expect("every section read");

        let config = env(&[SUB, ("CHATWORKER_DESK__GREETNG", "hi")]);
        let e = config
            .section::<Desk>("desk")
            .expect_err("a typo in the key");
        assert_eq!(e.setting, "desk.greetng", "{e}");

        let config = env(&[SUB, ("CHATWORKER_DSK__GREETING", "hi")]);
        config.settings().expect("valid");
        let e = config.check_sections().expect_err("a section nobody reads");
        assert_eq!(e.setting, "dsk", "{e}");
        assert_eq!(e.env, "CHATWORKER_DSK__…", "{e}");
    }
}
