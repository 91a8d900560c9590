//! Creating and inspecting topics and subscriptions: the building blocks of
//! `chatworker setup` (idempotent), `chatworker check` and `chatworker dev`.
//! Only domain types cross this boundary: names, durations and outcomes.

use super::Connection;
use crate::config::{NetworkSettings, PubSubSettings, SubscriptionName, TopicName};
use crate::net::Egress;
use crate::reply::BoxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{SchemaService, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy};
use std::time::Duration;

/// How long one administrative call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An administrative call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The resource does not exist.
    #[error("{what}: {resource} does not exist")]
    NotFound {
        /// What was being done.
        what: String,
        /// The resource.
        resource: String,
        /// What Pub/Sub answered.
        #[source]
        source: BoxError,
    },
    /// The caller may not do this.
    #[error("{what}: no permission on {resource}: {source}")]
    PermissionDenied {
        /// What was being done.
        what: String,
        /// The resource.
        resource: String,
        /// What Pub/Sub answered.
        #[source]
        source: BoxError,
    },
    /// The subscription exists, on another topic.
    #[error(
        "subscription {subscription} exists on another topic ({topic}); choose another pubsub.subscription or delete it"
    )]
    OtherTopic {
        /// The subscription.
        subscription: String,
        /// The topic it is on.
        topic: String,
    },
    /// Pub/Sub did not answer in time.
    #[error("Pub/Sub did not answer within {0:?}")]
    Timeout(Duration),
    /// Anything else: the client could not be built, or Pub/Sub refused.
    #[error("{what}: {source}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
}

/// What an `ensure_*` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ensured {
    /// It did not exist and was created.
    Created,
    /// It existed as asked.
    Existed,
    /// It existed, and its policies were brought in line.
    Updated,
}

/// A subscription as `setup` wants it.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    /// Its name.
    pub name: SubscriptionName,
    /// The topic it reads.
    pub topic: TopicName,
    /// Its ack deadline, in seconds.
    pub ack_deadline_seconds: i32,
    /// The retry policy: the first and the longest delay before a nacked
    /// message returns; none: at once.
    pub retry: Option<(Duration, Duration)>,
    /// The dead-letter policy: where and after how many deliveries.
    pub dead_letter: Option<(TopicName, i32)>,
}

/// Pub/Sub's administrative clients, reaching Pub/Sub as the worker does.
#[derive(Debug)]
pub struct Admin {
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    emulator: bool,
    /// Where the clients connect; keeps the gateway, if any, listening.
    connection: Connection,
}

/// What a failed call on `resource` while doing `what` comes to.
fn failed(
    what: impl Into<String>,
    resource: &str,
) -> impl FnOnce(google_cloud_gax::error::Error) -> AdminError {
    let (what, resource) = (what.into(), resource.to_owned());
    move |e| match e.status().map(|s| s.code) {
        Some(Code::NotFound) => AdminError::NotFound {
            what,
            resource,
            source: e.into(),
        },
        Some(Code::PermissionDenied) => AdminError::PermissionDenied {
            what,
            resource,
            source: e.into(),
        },
        _ => AdminError::Failed {
            what: format!("{what} {resource}"),
            source: e.into(),
        },
    }
}

fn code(e: &google_cloud_gax::error::Error) -> Option<Code> {
    e.status().map(|s| s.code)
}

async fn timed<T>(
    call: impl Future<Output = Result<T, google_cloud_gax::error::Error>>,
) -> Result<Result<T, google_cloud_gax::error::Error>, AdminError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| AdminError::Timeout(CALL_TIMEOUT))
}

impl Admin {
    /// Clients for the Pub/Sub the settings name (the emulator's with
    /// `PUBSUB_EMULATOR_HOST`), reached the way `network` says.
    pub async fn new(
        settings: &PubSubSettings,
        network: &NetworkSettings,
    ) -> Result<Self, AdminError> {
        let setup = |source: BoxError| AdminError::Failed {
            what: "cannot set up a Pub/Sub client".into(),
            source,
        };
        let egress = Egress::from_settings(network).map_err(|e| setup(e.into()))?;
        let connection = Connection::open(settings, &egress)
            .await
            .map_err(|e| setup(e.into()))?;
        let mut topics = TopicAdmin::builder();
        let mut subscriptions = SubscriptionAdmin::builder();
        if let Some(endpoint) = &connection.admin_endpoint {
            topics = topics.with_endpoint(endpoint);
            subscriptions = subscriptions.with_endpoint(endpoint);
        }
        if let Some(credentials) = &connection.credentials {
            topics = topics.with_credentials(credentials.clone());
            subscriptions = subscriptions.with_credentials(credentials.clone());
        }
        let client = |e: google_cloud_gax::client_builder::Error| AdminError::Failed {
            what: "cannot set up a Pub/Sub client".into(),
            source: e.into(),
        };
        Ok(Self {
            topics: topics
                .with_retry_policy(NeverRetry)
                .build()
                .await
                .map_err(client)?,
            subscriptions: subscriptions
                .with_retry_policy(NeverRetry)
                .build()
                .await
                .map_err(client)?,
            emulator: settings.emulator_host.is_some(),
            connection,
        })
    }

    /// Creates `topic` unless it exists.
    pub async fn ensure_topic(&self, topic: &TopicName) -> Result<Ensured, AdminError> {
        let created = timed(self.topics.create_topic().set_name(topic.as_str()).send()).await?;
        match created {
            Ok(_) => Ok(Ensured::Created),
            Err(e) if code(&e) == Some(Code::AlreadyExists) => Ok(Ensured::Existed),
            Err(e) => Err(failed("cannot create topic", topic.as_str())(e)),
        }
    }

    /// Creates the subscription `spec` describes, or brings an existing
    /// one's retry and dead-letter policies in line with it.
    pub async fn ensure_subscription(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Ensured, AdminError> {
        let name = spec.name.as_str();
        let retry = spec.retry.map(|(min, max)| {
            RetryPolicy::new()
                .set_minimum_backoff(wkt(min))
                .set_maximum_backoff(wkt(max))
        });
        let dead_letter = spec.dead_letter.as_ref().map(|(topic, attempts)| {
            DeadLetterPolicy::new()
                .set_dead_letter_topic(topic.as_str())
                .set_max_delivery_attempts(*attempts)
        });
        let created = timed(
            self.subscriptions
                .create_subscription()
                .set_name(name)
                .set_topic(spec.topic.as_str())
                .set_ack_deadline_seconds(spec.ack_deadline_seconds)
                .set_or_clear_retry_policy(retry.clone())
                .set_or_clear_dead_letter_policy(dead_letter.clone())
                .send(),
        )
        .await?;
        match created {
            Ok(_) => return Ok(Ensured::Created),
            Err(e) if code(&e) == Some(Code::AlreadyExists) => {}
            Err(e) => return Err(failed("cannot create subscription", name)(e)),
        }
        let existing = timed(
            self.subscriptions
                .get_subscription()
                .set_subscription(name)
                .send(),
        )
        .await?
        .map_err(failed("cannot read subscription", name))?;
        if existing.topic != spec.topic.as_str() {
            return Err(AdminError::OtherTopic {
                subscription: name.to_owned(),
                topic: existing.topic,
            });
        }
        if existing.retry_policy == retry && existing.dead_letter_policy == dead_letter {
            return Ok(Ensured::Existed);
        }
        let subscription = existing
            .set_or_clear_retry_policy(retry)
            .set_or_clear_dead_letter_policy(dead_letter);
        let mask = google_cloud_wkt::FieldMask::default()
            .set_paths(["retry_policy", "dead_letter_policy"]);
        timed(
            self.subscriptions
                .update_subscription()
                .set_subscription(subscription)
                .set_update_mask(mask)
                .send(),
        )
        .await?
        .map_err(failed("cannot update subscription", name))?;
        Ok(Ensured::Updated)
    }

    /// The topic `subscription` reads, if the subscription exists.
    pub async fn subscription_topic(
        &self,
        subscription: &SubscriptionName,
    ) -> Result<String, AdminError> {
        let call = self
            .subscriptions
            .get_subscription()
            .set_subscription(subscription.as_str())
            .send();
        let found = timed(call)
            .await?
            .map_err(failed("cannot read subscription", subscription.as_str()))?;
        Ok(found.topic)
    }

    /// Whether `topic` exists.
    pub async fn topic_exists(&self, topic: &TopicName) -> Result<(), AdminError> {
        let call = self.topics.get_topic().set_topic(topic.as_str()).send();
        timed(call)
            .await?
            .map_err(failed("cannot read topic", topic.as_str()))?;
        Ok(())
    }

    /// Deletes `subscription`; one already gone counts as deleted.
    pub async fn delete_subscription(
        &self,
        subscription: &SubscriptionName,
    ) -> Result<(), AdminError> {
        let call = self
            .subscriptions
            .delete_subscription()
            .set_subscription(subscription.as_str())
            .send();
        match timed(call).await? {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(failed("cannot delete subscription", subscription.as_str())(
                e,
            )),
        }
    }

    /// Whether the caller holds `permission` on `resource` (IAM's
    /// `testIamPermissions`); `None` on the emulator, which has no IAM (or
    /// wherever the method is not implemented).
    pub async fn may(&self, resource: &str, permission: &str) -> Result<Option<bool>, AdminError> {
        if self.emulator {
            return Ok(None);
        }
        // The IAM methods are a mixin served for every Pub/Sub resource; the
        // client exposes them on SchemaService.
        let mut iam = SchemaService::builder();
        if let Some(endpoint) = &self.connection.admin_endpoint {
            iam = iam.with_endpoint(endpoint);
        }
        if let Some(credentials) = &self.connection.credentials {
            iam = iam.with_credentials(credentials.clone());
        }
        let iam = iam.build().await.map_err(|e| AdminError::Failed {
            what: "cannot set up an IAM client".into(),
            source: e.into(),
        })?;
        let call = iam
            .test_iam_permissions()
            .set_resource(resource)
            .set_permissions([permission])
            .send();
        match timed(call).await? {
            Ok(granted) => Ok(Some(granted.permissions.iter().any(|p| p == permission))),
            // A Pub/Sub without IAM (an emulator behind an endpoint
            // setting): nothing to test.
            Err(e) if code(&e) == Some(Code::Unimplemented) => Ok(None),
            Err(e) => Err(failed(format!("cannot test {permission} on"), resource)(e)),
        }
    }
}

fn wkt(d: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::try_from(d).unwrap_or_default()
}
