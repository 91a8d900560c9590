//! `chatworker setup`: the Pub/Sub resources a deployment needs, created
//! idempotently (the topic, the subscription with its retry and dead-letter
//! policies, the dead-letter topic and a subscription to read it), and the
//! IAM grants only an administrator can make, as `gcloud` commands.

use chatworker::config::{NetworkSettings, PubSubSettings, SubscriptionName, TopicName};
use chatworker::pubsub::admin::{Admin, AdminError, Ensured, SubscriptionSpec};

/// The publisher Chat uses for an app's events.
pub const CHAT_PUBLISHER: &str = "chat-api-push@system.gserviceaccount.com";

/// The ack deadline `setup` gives subscriptions, in seconds: the worker
/// extends leases itself, so this only bounds how long a message held by a
/// crashed worker waits before its first lease extension would have come.
const ACK_DEADLINE_SECONDS: i32 = 60;

/// What `setup` did and what it leaves to a person.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per resource: created, already there, or updated.
    pub done: Vec<String>,
    /// IAM grants `setup` cannot make, as `gcloud` commands.
    pub grants: Vec<String>,
}

/// Creates what is missing and brings the subscription's policies in line
/// with the settings; running it again changes nothing.
pub async fn setup(
    settings: &PubSubSettings,
    network: &NetworkSettings,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<Report, AdminError> {
    let admin = Admin::new(settings, network).await?;
    let mut report = Report::default();
    let topic_line = |topic: &TopicName, ensured| match ensured {
        Ensured::Created => format!("created topic {topic}"),
        _ => format!("topic {topic} exists"),
    };
    let subscription_line = |name: &SubscriptionName, ensured| match ensured {
        Ensured::Created => format!("created subscription {name}"),
        Ensured::Updated => format!("updated the retry and dead-letter policies of {name}"),
        _ => format!("subscription {name} exists with these policies"),
    };
    report
        .done
        .push(topic_line(topic, admin.ensure_topic(topic).await?));
    let dead_letter = match (
        &settings.dead_letter_topic,
        settings.dead_letter_subscription(),
    ) {
        (Some(dl_topic), Some(dl_subscription)) => {
            report
                .done
                .push(topic_line(dl_topic, admin.ensure_topic(dl_topic).await?));
            let plain = SubscriptionSpec {
                name: dl_subscription.clone(),
                topic: dl_topic.clone(),
                ack_deadline_seconds: ACK_DEADLINE_SECONDS,
                retry: None,
                dead_letter: None,
            };
            let ensured = admin.ensure_subscription(&plain).await?;
            report
                .done
                .push(subscription_line(&dl_subscription, ensured));
            Some((dl_topic.clone(), settings.max_delivery_attempts))
        }
        _ => None,
    };
    let main = SubscriptionSpec {
        name: subscription.clone(),
        topic: topic.clone(),
        ack_deadline_seconds: ACK_DEADLINE_SECONDS,
        retry: Some((settings.min_retry_delay, settings.max_retry_delay)),
        dead_letter,
    };
    let ensured = admin.ensure_subscription(&main).await?;
    report.done.push(subscription_line(subscription, ensured));
    report.grants = grants(settings, topic, subscription);
    Ok(report)
}

/// The grants only an IAM administrator can make, as `gcloud` commands.
fn grants(
    settings: &PubSubSettings,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Vec<String> {
    let project = topic.project();
    let (topic_id, subscription_id) = (topic.id(), subscription.id());
    let agent = format!(
        "service-$(gcloud projects describe {project} --format='value(projectNumber)')@gcp-sa-pubsub.iam.gserviceaccount.com"
    );
    let mut grants = vec![
        format!(
            "gcloud pubsub topics add-iam-policy-binding {topic_id} --project={project} --member=serviceAccount:{CHAT_PUBLISHER} --role=roles/pubsub.publisher   # Chat publishes the app's events"
        ),
        format!(
            "gcloud pubsub subscriptions add-iam-policy-binding {subscription_id} --project={} --member=serviceAccount:WORKER_SA --role=roles/pubsub.subscriber   # the worker pulls (WORKER_SA: its service account)",
            subscription.project()
        ),
    ];
    if let Some(dead_letter) = &settings.dead_letter_topic {
        let (dl_project, dl_topic) = (dead_letter.project(), dead_letter.id());
        grants.extend([
            format!(
                "gcloud pubsub topics add-iam-policy-binding {dl_topic} --project={dl_project} --member=serviceAccount:{agent} --role=roles/pubsub.publisher   # Pub/Sub forwards failing events"
            ),
            format!(
                "gcloud pubsub subscriptions add-iam-policy-binding {subscription_id} --project={} --member=serviceAccount:{agent} --role=roles/pubsub.subscriber   # and acks them on the subscription",
                subscription.project()
            ),
            format!(
                "gcloud pubsub topics add-iam-policy-binding {dl_topic} --project={dl_project} --member=serviceAccount:WORKER_SA --role=roles/pubsub.publisher   # the worker dead-letters what it cannot answer"
            ),
        ]);
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatworker::config::Settings;

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

    fn names(s: &PubSubSettings) -> (TopicName, SubscriptionName) {
        let topic = s.topic.clone().expect("topic");
        (topic, s.subscription().expect("subscription").clone())
    }

    #[test]
    fn the_dead_letter_subscription_is_named_after_its_topic() {
        assert_eq!(settings("").dead_letter_subscription(), None);
        assert_eq!(
            settings("projects/q/topics/dead")
                .dead_letter_subscription()
                .map(|s| s.to_string()),
            Some("projects/q/subscriptions/dead-sub".to_owned())
        );
    }

    #[test]
    fn grants_name_chat_the_service_agent_and_the_worker() {
        let s = settings("projects/p/topics/dead");
        let (topic, subscription) = names(&s);
        let g = grants(&s, &topic, &subscription).join("\n");
        assert!(g.contains(&format!("add-iam-policy-binding chat --project=p --member=serviceAccount:{CHAT_PUBLISHER} --role=roles/pubsub.publisher")), "{g}");
        assert!(
            g.contains("gcp-sa-pubsub.iam.gserviceaccount.com --role=roles/pubsub.publisher"),
            "{g}"
        );
        assert!(g.contains("add-iam-policy-binding worker --project=p --member=serviceAccount:WORKER_SA --role=roles/pubsub.subscriber"), "{g}");
        let s = settings("");
        let (topic, subscription) = names(&s);
        assert_eq!(grants(&s, &topic, &subscription).len(), 2);
    }
}
