//! `chatworker check`: a dry run of everything the worker needs at start,
//! sending nothing: a Chat API token, the subscription, the permission to
//! pull from it, and the dead-letter topic when one is configured. Each
//! finding says what was found, or what is wrong and the fix.

use chatworker::chat::ChatClient;
use chatworker::config::Settings;
use chatworker::pubsub::admin::{Admin, AdminError};
use std::time::Duration;

/// How long the token check may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One thing `check` looked at.
#[derive(Debug)]
pub struct Finding {
    /// What was checked.
    pub name: &'static str,
    /// `Ok(what was found)`, or `Err(what is wrong; the fix)`.
    pub result: Result<String, String>,
}

fn finding(name: &'static str, result: Result<String, String>) -> Finding {
    Finding { name, result }
}

/// Everything the worker needs at start, checked in order.
pub async fn check(settings: &Settings) -> Vec<Finding> {
    let mut findings = vec![
        finding("configuration", Ok("valid".into())),
        finding("chat token", chat_token(settings).await),
        finding("store", store(settings).await),
    ];
    let pubsub = &settings.pubsub;
    let admin = match Admin::new(pubsub, &settings.network).await {
        Ok(admin) => admin,
        Err(e) => {
            findings.push(finding("pubsub", Err(e.to_string())));
            return findings;
        }
    };
    let Ok(subscription) = pubsub.subscription() else {
        return findings;
    };
    let unreachable = "fix: check the network path to Pub/Sub (or PUBSUB_EMULATOR_HOST)";
    let exists = match admin.subscription_topic(subscription).await {
        Ok(topic) => Ok(format!("{subscription} exists (topic {topic})")),
        Err(AdminError::NotFound { .. }) => Err(format!(
            "{subscription} does not exist; fix: chatworker setup (with pubsub.topic set), or gcloud pubsub subscriptions create"
        )),
        Err(AdminError::PermissionDenied { .. }) => Err(format!(
            "no permission to read {subscription}; fix: grant roles/pubsub.subscriber on it to the worker's service account"
        )),
        Err(AdminError::Timeout(after)) => Err(format!(
            "Pub/Sub did not answer within {after:?}; {unreachable}"
        )),
        Err(e) => Err(format!("Pub/Sub answered {e}; {unreachable}")),
    };
    let found = exists.is_ok();
    findings.push(finding("subscription", exists));
    if found {
        let permission = "pubsub.subscriptions.consume";
        let may = match admin.may(subscription.as_str(), permission).await {
            Ok(None) => Ok("not checked: the emulator has no IAM".into()),
            Ok(Some(true)) => Ok(format!("{permission} granted")),
            Ok(Some(false)) => Err(format!(
                "{permission} is missing on {subscription}; fix: grant roles/pubsub.subscriber on it to the worker's service account"
            )),
            Err(e) => Err(format!("cannot test {permission}: {e}")),
        };
        findings.push(finding("pull permission", may));
    }
    if let Some(topic) = &pubsub.dead_letter_topic {
        let exists = match admin.topic_exists(topic).await {
            Ok(()) => Ok(format!("{topic} exists")),
            Err(AdminError::NotFound { .. }) => Err(format!(
                "{topic} does not exist; fix: chatworker setup, or clear pubsub.dead_letter_topic"
            )),
            Err(e) => Err(format!("cannot read {topic}: {e}")),
        };
        findings.push(finding("dead-letter topic", exists));
    }
    findings
}

/// Opens the store as the worker will (creating or migrating its schema).
async fn store(settings: &Settings) -> Result<String, String> {
    use chatworker::store::{SCHEMA_VERSION, Store};
    match Store::open(settings.store.url_or("memory:")).await {
        Ok(store) if store.kind() == "memory" => Ok(
            "memory: (the app's state and the inbox are lost on restart; set store.url to keep them)"
                .into(),
        ),
        Ok(store) => match store.census().await {
            Ok(Some(census)) => Ok(format!(
                "{} reachable, schema at version {SCHEMA_VERSION}; a fleet store: {} replicas hold {} threads now, {} events waiting",
                store.kind(),
                census.replicas,
                census.lanes,
                census.waiting
            )),
            Ok(None) => Ok(format!(
                "{} reachable, schema at version {SCHEMA_VERSION}",
                store.kind()
            )),
            Err(e) => Err(format!(
                "{e}; fix: check store.url, that the database is reachable from here, and its credentials"
            )),
        },
        Err(e) => Err(format!(
            "{e}; fix: check store.url, that the database is reachable from here, and its credentials"
        )),
    }
}

async fn chat_token(settings: &Settings) -> Result<String, String> {
    let fix = "set chat.credentials_file (CHATWORKER_CHAT__CREDENTIALS_FILE) or GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run on GKE with Workload Identity";
    let chat = ChatClient::new(&settings.chat, &settings.network)
        .await
        .map_err(|e| format!("{e}; fix: {fix}"))?;
    match tokio::time::timeout(TOKEN_TIMEOUT, chat.check_credentials()).await {
        Ok(Ok(())) => Ok("obtained (scope chat.bot)".into()),
        Ok(Err(e)) => Err(format!("cannot obtain one: {e}; fix: {fix}")),
        Err(_) => Err(format!("no answer within {TOKEN_TIMEOUT:?}; fix: {fix}")),
    }
}
