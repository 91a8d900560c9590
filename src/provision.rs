//! `chatworker setup` and `chatworker check`: the Pub/Sub resources a
//! deployment needs, created idempotently, and a dry run of everything the
//! worker needs at start. With `source`, the only module that knows Pub/Sub
//! client types; `check` also asks [`crate::chat`] for a token.

use crate::config::{PubSubSettings, Settings};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{SchemaService, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy};
use std::time::Duration;

/// The publisher Chat uses for an app's events.
pub const CHAT_PUBLISHER: &str = "chat-api-push@system.gserviceaccount.com";

/// How long one Pub/Sub or token call of `check` may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `setup` could not finish.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

/// What `setup` did and what it leaves to a person.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per resource: created, already there, or updated.
    pub done: Vec<String>,
    /// IAM grants `setup` cannot make, as `gcloud` commands.
    pub grants: Vec<String>,
}

struct Admins {
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
}

async fn admins(settings: &PubSubSettings) -> Result<Admins, String> {
    let mut topics = TopicAdmin::builder();
    let mut subscriptions = SubscriptionAdmin::builder();
    if let Some((endpoint, credentials)) = crate::source::connection(settings) {
        topics = topics
            .with_endpoint(&endpoint)
            .with_credentials(credentials.clone());
        subscriptions = subscriptions
            .with_endpoint(endpoint)
            .with_credentials(credentials);
    }
    Ok(Admins {
        topics: topics.build().await.map_err(|e| e.to_string())?,
        subscriptions: subscriptions
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| e.to_string())?,
    })
}

fn code(e: &google_cloud_gax::error::Error) -> Option<Code> {
    e.status().map(|s| s.code)
}

/// `projects/P/…/ID` → (P, ID).
fn split(name: &str) -> (&str, &str) {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", project, _, id] => (project, id),
        _ => ("PROJECT", name),
    }
}

/// The dead-letter subscription's name: configured, or derived.
pub fn dead_letter_subscription(settings: &PubSubSettings) -> Option<String> {
    if settings.dead_letter_topic.is_empty() {
        return None;
    }
    if !settings.dead_letter_subscription.is_empty() {
        return Some(settings.dead_letter_subscription.clone());
    }
    let (project, id) = split(&settings.dead_letter_topic);
    Some(format!("projects/{project}/subscriptions/{id}-sub"))
}

fn wkt(d: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::try_from(d).unwrap_or_default()
}

/// Creates what is missing and brings the subscription's policies in line
/// with the settings; running it again changes nothing.
pub async fn setup(settings: &PubSubSettings) -> Result<Report, SetupError> {
    if settings.topic.is_empty() {
        return Err(SetupError(
            "pubsub.topic (CHATWORKER_PUBSUB__TOPIC) is required for setup: the topic Chat publishes to, projects/PROJECT/topics/TOPIC".into(),
        ));
    }
    if settings.subscription.is_empty() {
        return Err(SetupError(
            "pubsub.subscription (CHATWORKER_PUBSUB__SUBSCRIPTION) is required for setup".into(),
        ));
    }
    let admins = admins(settings).await.map_err(SetupError)?;
    let mut report = Report::default();
    report
        .done
        .push(ensure_topic(&admins, &settings.topic).await?);
    let dead_letter = dead_letter_subscription(settings);
    if let Some(dl_subscription) = &dead_letter {
        let topic = &settings.dead_letter_topic;
        report.done.push(ensure_topic(&admins, topic).await?);
        let plain = SubscriptionSpec {
            name: dl_subscription,
            topic,
            retry: None,
            dead_letter: None,
        };
        report.done.push(ensure_subscription(&admins, plain).await?);
    }
    let retry = RetryPolicy::new()
        .set_minimum_backoff(wkt(settings.min_retry_delay))
        .set_maximum_backoff(wkt(settings.max_retry_delay));
    let policy = dead_letter.as_ref().map(|_| {
        DeadLetterPolicy::new()
            .set_dead_letter_topic(&settings.dead_letter_topic)
            .set_max_delivery_attempts(settings.max_delivery_attempts)
    });
    let main = SubscriptionSpec {
        name: &settings.subscription,
        topic: &settings.topic,
        retry: Some(retry),
        dead_letter: policy,
    };
    report.done.push(ensure_subscription(&admins, main).await?);
    report.grants = grants(settings);
    Ok(report)
}

async fn ensure_topic(admins: &Admins, name: &str) -> Result<String, SetupError> {
    match admins.topics.create_topic().set_name(name).send().await {
        Ok(_) => Ok(format!("created topic {name}")),
        Err(e) if code(&e) == Some(Code::AlreadyExists) => Ok(format!("topic {name} exists")),
        Err(e) => Err(SetupError(format!("cannot create topic {name}: {e}"))),
    }
}

struct SubscriptionSpec<'a> {
    name: &'a str,
    topic: &'a str,
    retry: Option<RetryPolicy>,
    dead_letter: Option<DeadLetterPolicy>,
}

async fn ensure_subscription(
    admins: &Admins,
    spec: SubscriptionSpec<'_>,
) -> Result<String, SetupError> {
    let name = spec.name;
    let created = admins
        .subscriptions
        .create_subscription()
        .set_name(name)
        .set_topic(spec.topic)
        .set_ack_deadline_seconds(60)
        .set_or_clear_retry_policy(spec.retry.clone())
        .set_or_clear_dead_letter_policy(spec.dead_letter.clone())
        .send()
        .await;
    match created {
        Ok(_) => return Ok(format!("created subscription {name}")),
        Err(e) if code(&e) == Some(Code::AlreadyExists) => {}
        Err(e) => {
            return Err(SetupError(format!(
                "cannot create subscription {name}: {e}"
            )));
        }
    }
    let existing = admins
        .subscriptions
        .get_subscription()
        .set_subscription(name)
        .send()
        .await
        .map_err(|e| SetupError(format!("cannot read subscription {name}: {e}")))?;
    if existing.topic != spec.topic {
        return Err(SetupError(format!(
            "subscription {name} exists on another topic ({}); choose another pubsub.subscription or delete it",
            existing.topic
        )));
    }
    if existing.retry_policy == spec.retry && existing.dead_letter_policy == spec.dead_letter {
        return Ok(format!("subscription {name} exists with these policies"));
    }
    let subscription = existing
        .set_or_clear_retry_policy(spec.retry)
        .set_or_clear_dead_letter_policy(spec.dead_letter);
    let mask =
        google_cloud_wkt::FieldMask::default().set_paths(["retry_policy", "dead_letter_policy"]);
    admins
        .subscriptions
        .update_subscription()
        .set_subscription(subscription)
        .set_update_mask(mask)
        .send()
        .await
        .map_err(|e| SetupError(format!("cannot update subscription {name}: {e}")))?;
    Ok(format!(
        "updated the retry and dead-letter policies of {name}"
    ))
}

/// The grants only an IAM administrator can make, as `gcloud` commands.
fn grants(settings: &PubSubSettings) -> Vec<String> {
    let (project, topic) = split(&settings.topic);
    let (_, subscription) = split(&settings.subscription);
    let agent = format!(
        "service-$(gcloud projects describe {project} --format='value(projectNumber)')@gcp-sa-pubsub.iam.gserviceaccount.com"
    );
    let mut grants = vec![
        format!(
            "gcloud pubsub topics add-iam-policy-binding {topic} --project={project} --member=serviceAccount:{CHAT_PUBLISHER} --role=roles/pubsub.publisher   # Chat publishes the app's events"
        ),
        format!(
            "gcloud pubsub subscriptions add-iam-policy-binding {subscription} --project={project} --member=serviceAccount:WORKER_SA --role=roles/pubsub.subscriber   # the worker pulls (WORKER_SA: its service account)"
        ),
    ];
    if !settings.dead_letter_topic.is_empty() {
        let (dl_project, dl_topic) = split(&settings.dead_letter_topic);
        grants.extend([
            format!(
                "gcloud pubsub topics add-iam-policy-binding {dl_topic} --project={dl_project} --member=serviceAccount:{agent} --role=roles/pubsub.publisher   # Pub/Sub forwards failing events"
            ),
            format!(
                "gcloud pubsub subscriptions add-iam-policy-binding {subscription} --project={project} --member=serviceAccount:{agent} --role=roles/pubsub.subscriber   # and acks them on the subscription"
            ),
            format!(
                "gcloud pubsub topics add-iam-policy-binding {dl_topic} --project={dl_project} --member=serviceAccount:WORKER_SA --role=roles/pubsub.publisher   # the worker dead-letters what it cannot answer"
            ),
        ]);
    }
    grants
}

/// One thing `check` looked at: what was found, or what is wrong and how
/// to fix it.
#[derive(Debug)]
pub struct Finding {
    /// What was checked.
    pub name: &'static str,
    /// `Ok(what was found)`, or `Err(what is wrong; the fix)`.
    pub result: Result<String, String>,
}

/// Everything the worker needs at start, without sending anything: a Chat
/// API token, the subscription, the permission to pull from it, and the
/// dead-letter topic when one is configured.
pub async fn check(settings: &Settings) -> Vec<Finding> {
    let mut findings = vec![Finding {
        name: "configuration",
        result: Ok("valid".into()),
    }];
    findings.push(Finding {
        name: "chat token",
        result: chat_token(settings).await,
    });
    let pubsub = &settings.pubsub;
    let admins = match admins(pubsub).await {
        Ok(a) => a,
        Err(e) => {
            findings.push(Finding {
                name: "pubsub",
                result: Err(format!("cannot set up a Pub/Sub client: {e}")),
            });
            return findings;
        }
    };
    let subscription = subscription_exists(&admins, &pubsub.subscription).await;
    let exists = subscription.is_ok();
    findings.push(Finding {
        name: "subscription",
        result: subscription,
    });
    if exists {
        findings.push(Finding {
            name: "pull permission",
            result: may(pubsub, &pubsub.subscription, "pubsub.subscriptions.consume").await,
        });
    }
    if !pubsub.dead_letter_topic.is_empty() {
        findings.push(Finding {
            name: "dead-letter topic",
            result: topic_exists(&admins, &pubsub.dead_letter_topic).await,
        });
    }
    findings
}

async fn chat_token(settings: &Settings) -> Result<String, String> {
    let fix = "set chat.credentials_file (CHATWORKER_CHAT__CREDENTIALS_FILE) or GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run on GKE with Workload Identity";
    let chat = crate::chat::ChatClient::new(&settings.chat)
        .await
        .map_err(|e| format!("{e}; fix: {fix}"))?;
    match tokio::time::timeout(CALL_TIMEOUT, chat.check_credentials()).await {
        Ok(Ok(())) => Ok("obtained (scope chat.bot)".into()),
        Ok(Err(e)) => Err(format!("cannot obtain one: {e}; fix: {fix}")),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}; fix: {fix}")),
    }
}

async fn subscription_exists(admins: &Admins, name: &str) -> Result<String, String> {
    let call = admins
        .subscriptions
        .get_subscription()
        .set_subscription(name)
        .send();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(s)) => Ok(format!("{name} exists (topic {})", s.topic)),
        Ok(Err(e)) => Err(match code(&e) {
            Some(Code::NotFound) => format!(
                "{name} does not exist; fix: chatworker setup (with pubsub.topic set), or gcloud pubsub subscriptions create"
            ),
            Some(Code::PermissionDenied) => format!(
                "no permission to read {name}; fix: grant roles/pubsub.subscriber on it to the worker's service account"
            ),
            _ => format!(
                "Pub/Sub answered {e}; fix: check the network path to Pub/Sub (or PUBSUB_EMULATOR_HOST)"
            ),
        }),
        Err(_) => Err(format!(
            "Pub/Sub did not answer within {CALL_TIMEOUT:?}; fix: check the network path to Pub/Sub (or PUBSUB_EMULATOR_HOST)"
        )),
    }
}

async fn topic_exists(admins: &Admins, name: &str) -> Result<String, String> {
    match admins.topics.get_topic().set_topic(name).send().await {
        Ok(_) => Ok(format!("{name} exists")),
        Err(e) if code(&e) == Some(Code::NotFound) => Err(format!(
            "{name} does not exist; fix: chatworker setup, or clear pubsub.dead_letter_topic"
        )),
        Err(e) => Err(format!("cannot read {name}: {e}")),
    }
}

/// Whether the worker's credentials hold `permission` on `resource`
/// (IAM's testIamPermissions). The emulator has no IAM: not checked there.
async fn may(
    settings: &PubSubSettings,
    resource: &str,
    permission: &str,
) -> Result<String, String> {
    if settings.emulator_host.is_some() {
        return Ok("not checked: the emulator has no IAM".into());
    }
    // The IAM methods are a mixin served for every Pub/Sub resource; the
    // client exposes them on SchemaService.
    let iam = SchemaService::builder()
        .build()
        .await
        .map_err(|e| format!("cannot set up an IAM client: {e}"))?;
    let call = iam
        .test_iam_permissions()
        .set_resource(resource)
        .set_permissions([permission])
        .send();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) if r.permissions.iter().any(|p| p == permission) => {
            Ok(format!("{permission} granted"))
        }
        Ok(Ok(_)) => Err(format!(
            "{permission} is missing on {resource}; fix: grant roles/pubsub.subscriber on it to the worker's service account"
        )),
        Ok(Err(e)) => Err(format!("cannot test {permission}: {e}")),
        Err(_) => Err(format!("IAM did not answer within {CALL_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dead_letter: &str) -> PubSubSettings {
        let env = [
            ("CHATWORKER_PUBSUB__TOPIC", "projects/p/topics/chat"),
            (
                "CHATWORKER_PUBSUB__SUBSCRIPTION",
                "projects/p/subscriptions/worker",
            ),
            ("CHATWORKER_PUBSUB__DEAD_LETTER_TOPIC", dead_letter),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        Settings::load_from(None, env).expect("valid").pubsub
    }

    #[test]
    fn the_dead_letter_subscription_is_named_after_its_topic() {
        assert_eq!(dead_letter_subscription(&settings("")), None);
        assert_eq!(
            dead_letter_subscription(&settings("projects/q/topics/dead")).as_deref(),
            Some("projects/q/subscriptions/dead-sub")
        );
    }

    #[test]
    fn grants_name_chat_the_service_agent_and_the_worker() {
        let g = grants(&settings("projects/p/topics/dead")).join("\n");
        assert!(g.contains(&format!("add-iam-policy-binding chat --project=p --member=serviceAccount:{CHAT_PUBLISHER} --role=roles/pubsub.publisher")), "{g}");
        assert!(
            g.contains("gcp-sa-pubsub.iam.gserviceaccount.com --role=roles/pubsub.publisher"),
            "{g}"
        );
        assert!(g.contains("add-iam-policy-binding worker --project=p --member=serviceAccount:WORKER_SA --role=roles/pubsub.subscriber"), "{g}");
        assert_eq!(grants(&settings("")).len(), 2);
    }
}
