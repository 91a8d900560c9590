//! Typed settings, layered: the compiled-in `config/default.toml`, then a file,
//! then `CHATWORKER_<SECTION>__<KEY>` environment variables.
//!
//! Every error names the setting (and its environment variable) and what is
//! wrong, so `main` can print one line and exit 2.

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in defaults: `config/default.toml`, compiled in so that the
/// binary runs from any directory and the texts still live in that file.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "config/default.toml";

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "CHATWORKER_";

/// Google's convention for pointing clients at the Pub/Sub emulator.
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// All settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where events come from.
    pub pubsub: PubSubSettings,
    /// Where replies go.
    pub chat: ChatSettings,
    /// How events are processed.
    pub worker: WorkerSettings,
    /// The default app's texts.
    pub app: AppSettings,
    /// The operations listener (health and metrics).
    pub server: ServerSettings,
}

/// The operations listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `host:port` for `/healthz`, `/readyz` and `/metrics`; empty: off.
    pub listen: String,
    /// How long the pull loop may stall, or Pub/Sub stay unreachable,
    /// before `/healthz` fails.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

/// The Pub/Sub side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubSubSettings {
    /// `projects/P/topics/T`: where Chat publishes the app's events. Only
    /// `chatworker setup` needs it.
    #[serde(default)]
    pub topic: String,
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// `projects/P/topics/T`, or empty for none.
    #[serde(default)]
    pub dead_letter_topic: String,
    /// `projects/P/subscriptions/S` on the dead-letter topic, for reading
    /// what landed there; empty: the dead-letter topic's ID plus `-sub`.
    #[serde(default)]
    pub dead_letter_subscription: String,
    /// `chatworker setup`: the subscription's retry policy, shortest delay
    /// before a nacked event comes back.
    #[serde(with = "humantime_serde")]
    pub min_retry_delay: Duration,
    /// `chatworker setup`: the retry policy's longest delay.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// `chatworker setup`: deliveries before Pub/Sub forwards an event to
    /// the dead-letter topic (5 to 100).
    pub max_delivery_attempts: i32,
    /// Flow control: events held at once.
    pub max_outstanding_messages: i64,
    /// Flow control: bytes of payload held at once.
    pub max_outstanding_bytes: i64,
    /// With no message for this long, Pub/Sub is probed, so that an outage
    /// is logged (the subscriber reconnects silently); 0s turns it off.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How far ahead each lease is extended.
    #[serde(with = "humantime_serde")]
    pub max_lease_extension: Duration,
    /// How long one event may stay leased.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// `host:port` of the emulator, from `PUBSUB_EMULATOR_HOST`; not a file setting.
    #[serde(skip)]
    pub emulator_host: Option<String>,
}

/// The Chat API side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Base URL of the Chat API.
    pub endpoint: String,
    /// A service-account key file for Chat; empty: Application Default
    /// Credentials.
    #[serde(default)]
    pub credentials_file: String,
    /// A service account to mint `chat.bot` tokens for (keyless, on GKE):
    /// the credentials above, with `cloud-platform`, call IAM Credentials'
    /// `generateAccessToken` for it. Empty: the credentials call Chat
    /// themselves.
    #[serde(default)]
    pub impersonate_service_account: String,
    /// The IAM Credentials API's base URL, for impersonation.
    pub iam_endpoint: String,
    /// Timeout of one API call.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per reply within one delivery (1: no retry).
    pub retry_attempts: u32,
    /// The first backoff delay; it doubles per attempt, with jitter.
    #[serde(with = "humantime_serde")]
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
pub struct WorkerSettings {
    /// Threads handled at once.
    pub concurrency: usize,
    /// Time in-flight events get to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// The default app's texts and commands.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Posted when the app is added to a space.
    pub onboarding_text: String,
    /// Posted for the help command.
    pub help_text: String,
    /// The help slash command's name, e.g. `/help`.
    pub help_command_name: String,
    /// The help command's ID in the Chat API console.
    pub help_command_id: i64,
    /// The reply card's subtitle.
    pub card_subtitle: String,
    /// The reply card's text; `{name}` and `{text}` are replaced.
    pub card_text: String,
    /// The reply card's button label.
    pub button_text: String,
    /// The URL the button opens.
    pub button_url: String,
    /// The label of the card's action button; a click updates the card.
    pub action_button_text: String,
    /// What the card says once the action button was clicked; `{name}` is
    /// the person who clicked.
    pub clicked_text: String,
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
    fn new(setting: &str, problem: impl Into<String>) -> Self {
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
pub fn env_name(setting: &str) -> String {
    format!("{ENV_PREFIX}{}", setting.to_uppercase().replace('.', "__"))
}

impl Settings {
    /// Loads and validates the settings. `file`: the `--config` path; when
    /// `None`, `config/default.toml` is read if it exists.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError {
                    setting: "--config".into(),
                    env: "command line".into(),
                    problem: format!("{} is not a readable file", path.display()),
                });
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if Path::new(DEFAULT_PATH).is_file() => {
                figment = figment.merge(Toml::file(PathBuf::from(DEFAULT_PATH)));
            }
            None => {}
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let emulator_host = env
            .iter()
            .find(|(k, _)| k == EMULATOR_ENV)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        // Only variables with a `__` are ours: Kubernetes injects
        // CHATWORKER_SERVICE_HOST and friends for a Service named chatworker,
        // and those must not be mistaken for (unknown) settings.
        let ours: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_owned(), v)))
            .filter(|(k, _)| k.contains("__"))
            .collect();
        figment = figment.merge(EnvList(ours));
        let mut settings: Settings = figment.extract().map_err(from_figment)?;
        settings.pubsub.emulator_host = emulator_host;
        settings.validate()?;
        Ok(settings)
    }

    /// As [`Settings::load`], for commands that pull events: the
    /// subscription is required.
    pub fn for_worker(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file)?.require_subscription()
    }

    /// Fails unless `pubsub.subscription` is set.
    pub fn require_subscription(self) -> Result<Self, ConfigError> {
        if self.pubsub.subscription.is_empty() {
            return Err(ConfigError::new(
                "pubsub.subscription",
                "is required; set it to projects/PROJECT/subscriptions/SUBSCRIPTION",
            ));
        }
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let sub = &self.pubsub.subscription;
        if !sub.is_empty() && !is_resource(sub, "subscriptions") {
            return Err(ConfigError::new(
                "pubsub.subscription",
                format!(
                    "{sub:?} is not of the form projects/PROJECT/subscriptions/SUBSCRIPTION (IDs of at least 3 characters)"
                ),
            ));
        }
        let dlq = &self.pubsub.dead_letter_topic;
        if !dlq.is_empty() && !is_resource(dlq, "topics") {
            return Err(ConfigError::new(
                "pubsub.dead_letter_topic",
                format!("{dlq:?} is not of the form projects/PROJECT/topics/TOPIC"),
            ));
        }
        for (setting, value, kind) in [
            ("pubsub.topic", &self.pubsub.topic, "topics"),
            (
                "pubsub.dead_letter_subscription",
                &self.pubsub.dead_letter_subscription,
                "subscriptions",
            ),
        ] {
            if !value.is_empty() && !is_resource(value, kind) {
                return Err(ConfigError::new(
                    setting,
                    format!("{value:?} is not of the form projects/PROJECT/{kind}/ID"),
                ));
            }
        }
        let (min, max) = (self.pubsub.min_retry_delay, self.pubsub.max_retry_delay);
        if min > max || max > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "pubsub.max_retry_delay",
                "must be at least pubsub.min_retry_delay and at most 600s (Pub/Sub's limits)",
            ));
        }
        if !(5..=100).contains(&self.pubsub.max_delivery_attempts) {
            return Err(ConfigError::new(
                "pubsub.max_delivery_attempts",
                "must be between 5 and 100 (Pub/Sub's limits)",
            ));
        }
        if self.pubsub.max_outstanding_messages < 1 {
            return Err(ConfigError::new(
                "pubsub.max_outstanding_messages",
                "must be at least 1",
            ));
        }
        if self.pubsub.max_outstanding_bytes < 10 * 1024 * 1024 {
            return Err(ConfigError::new(
                "pubsub.max_outstanding_bytes",
                "must be at least 10485760 (10 MiB), Pub/Sub's largest message, or large events could never be pulled",
            ));
        }
        let ext = self.pubsub.max_lease_extension;
        if !(Duration::from_secs(10)..=Duration::from_secs(600)).contains(&ext) {
            return Err(ConfigError::new(
                "pubsub.max_lease_extension",
                "must be between 10s and 600s (Pub/Sub's limits)",
            ));
        }
        for (setting, url) in [
            ("chat.endpoint", &self.chat.endpoint),
            ("chat.iam_endpoint", &self.chat.iam_endpoint),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    setting,
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let target = &self.chat.impersonate_service_account;
        if !target.is_empty() && !target.contains('@') {
            return Err(ConfigError::new(
                "chat.impersonate_service_account",
                format!(
                    "{target:?} is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)"
                ),
            ));
        }
        if self.chat.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "chat.request_timeout",
                "must be above zero",
            ));
        }
        let chat = &self.chat;
        if chat.retry_attempts == 0 {
            return Err(ConfigError::new(
                "chat.retry_attempts",
                "must be at least 1 (1 means no retry)",
            ));
        }
        if chat.retry_initial_backoff.is_zero() {
            return Err(ConfigError::new(
                "chat.retry_initial_backoff",
                "must be above zero",
            ));
        }
        if chat.retry_max_backoff < chat.retry_initial_backoff {
            return Err(ConfigError::new(
                "chat.retry_max_backoff",
                "must not be below chat.retry_initial_backoff",
            ));
        }
        if chat.retry_budget >= self.pubsub.max_lease {
            return Err(ConfigError::new(
                "chat.retry_budget",
                "must be below pubsub.max_lease, or events would be redelivered while still retrying",
            ));
        }
        if self.worker.concurrency == 0 {
            return Err(ConfigError::new("worker.concurrency", "must be at least 1"));
        }
        if let Some(host) = &self.pubsub.emulator_host
            && (host.contains("://") || !host.contains(':'))
        {
            return Err(ConfigError {
                setting: "emulator host".into(),
                env: EMULATOR_ENV.into(),
                problem: format!("{host:?} must be HOST:PORT, without a scheme"),
            });
        }
        Ok(())
    }

    /// The project of the subscription, e.g. `p` for `projects/p/subscriptions/s`.
    pub fn project(&self) -> &str {
        self.pubsub
            .subscription
            .split('/')
            .nth(1)
            .unwrap_or_default()
    }
}

/// `projects/P/<kind>/ID` with Pub/Sub's 3-character minimum for IDs.
fn is_resource(name: &str, kind: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    matches!(parts.as_slice(), ["projects", p, k, id] if !p.is_empty() && *k == kind && id.len() >= 3)
}

fn from_figment(e: figment::Error) -> ConfigError {
    let setting = e.path.join(".");
    let problem = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            return ConfigError::new(&with_field(&e.path, field), "is not a known setting");
        }
        figment::error::Kind::MissingField(field) => {
            return ConfigError::new(&with_field(&e.path, field), "is missing");
        }
        kind => kind.to_string(),
    };
    ConfigError::new(&setting, problem)
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

/// Environment variables already stripped of the prefix, as a figment provider.
struct EnvList(Vec<(String, String)>);

impl figment::Provider for EnvList {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
            // Parsed like TOML scalars: "64" is a number, "true" a boolean.
            let Ok(value) = value.parse::<figment::value::Value>();
            insert_nested(&mut dict, &path, value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_nested(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(None, env)?.require_subscription()
    }

    const SUB: (&str, &str) = (
        "CHATWORKER_PUBSUB__SUBSCRIPTION",
        "projects/p1/subscriptions/sub",
    );

    #[test]
    fn defaults_come_from_the_compiled_in_file() {
        let s = load(&[SUB]).expect("valid");
        assert_eq!(s.chat.endpoint, "https://chat.googleapis.com");
        assert_eq!(s.worker.shutdown_grace, Duration::from_secs(20));
        assert!(s.app.help_text.contains("/help"));
        assert_eq!(s.project(), "p1");
        assert_eq!(s.pubsub.emulator_host, None);
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
        assert_eq!(s.chat.endpoint, "http://127.0.0.1:9000");
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
    }
}
