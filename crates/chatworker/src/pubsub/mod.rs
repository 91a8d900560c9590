//! Pub/Sub: the only module that knows the Pub/Sub client types. Events come
//! in through a `Source` (the official streaming-pull subscriber: leases,
//! flow control, shutdown) as `Delivery`s, each settled exactly once;
//! dead letters go out through a `TopicPublisher`; [`admin`] creates and
//! checks topics and subscriptions for `chatworker setup`, `check` and `dev`.

pub mod admin;
mod delivery;
mod outage;
mod publisher;
mod source;

pub(crate) use delivery::Delivery;
pub(crate) use publisher::TopicPublisher;
pub(crate) use source::Source;

use crate::config::PubSubSettings;
use crate::reply::BoxError;
use google_cloud_auth::credentials::{Credentials, anonymous};

/// Pub/Sub could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The subscription does not exist: create it.
    #[error(
        "{subscription} does not exist; create it (chatworker setup, or gcloud pubsub subscriptions create)"
    )]
    NotFound {
        /// The subscription.
        subscription: String,
    },
    /// The worker may not use the subscription.
    #[error(
        "no permission to use {subscription}: grant roles/pubsub.subscriber to the worker's service account ({source})"
    )]
    PermissionDenied {
        /// The subscription.
        subscription: String,
        /// What Pub/Sub answered.
        #[source]
        source: BoxError,
    },
    /// A client could not be built, or a call failed.
    #[error("Pub/Sub: {0}")]
    Client(#[source] BoxError),
}

/// Credentials and endpoint: the emulator's when `PUBSUB_EMULATOR_HOST` is
/// set (the Google crates ignore that variable), else Google's with ADC.
fn connection(settings: &PubSubSettings) -> Option<(String, Credentials)> {
    settings
        .emulator_host
        .as_ref()
        .map(|host| (format!("http://{host}"), anonymous::Builder::new().build()))
}
