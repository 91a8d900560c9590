//! Pub/Sub: the only module that knows the Pub/Sub client types. Events come
//! in through a `Source` (the official streaming-pull subscriber, or our
//! REST transport where HTTP/2 cannot pass: leases, flow control, shutdown)
//! as `Delivery`s, each settled exactly once;
//! dead letters go out through a `TopicPublisher`; [`admin`] creates and
//! checks topics and subscriptions for `chatworker setup`, `check` and `dev`.

pub mod admin;
mod delivery;
mod outage;
mod publisher;
mod rest;
mod source;

pub(crate) use delivery::Delivery;
pub(crate) use publisher::TopicPublisher;
pub(crate) use source::Source;

use crate::config::PubSubSettings;
use crate::net::gateway::{Gateway, Link};
use crate::net::{Egress, NoProxy};
use crate::reply::BoxError;
use google_cloud_auth::credentials::{Credentials, anonymous};
use std::sync::Arc;

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

/// Where the Pub/Sub clients connect: the emulator (`PUBSUB_EMULATOR_HOST`,
/// plain HTTP, no credentials), or Google (`pubsub.endpoint`, else the
/// global endpoint) through the [gateway](crate::net::gateway), which takes
/// the network settings' way and reports the link's state.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// For the gRPC clients (subscriber, publisher).
    endpoint: Option<String>,
    /// For the REST admin clients.
    admin_endpoint: Option<String>,
    credentials: Option<Credentials>,
    /// Shared by every client that uses it: it listens while one does.
    gateway: Option<Arc<Gateway>>,
    /// The way out, for the REST transport's own client.
    egress: Egress,
}

/// Google's global Pub/Sub endpoint.
const GOOGLE: &str = "https://pubsub.googleapis.com";

impl Connection {
    /// The connection the settings describe. Starts the gateway, unless the
    /// emulator is used.
    pub(crate) async fn open(
        settings: &PubSubSettings,
        egress: &Egress,
    ) -> Result<Self, PubSubError> {
        if let Some(host) = &settings.emulator_host {
            let endpoint = format!("http://{host}");
            return Ok(Self {
                endpoint: Some(endpoint.clone()),
                admin_endpoint: Some(endpoint),
                credentials: Some(anonymous::Builder::new().build()),
                gateway: None,
                egress: egress.clone(),
            });
        }
        let upstream = match &settings.endpoint {
            Some(url) => url.clone(),
            None => GOOGLE.parse().expect("a URL"),
        };
        let gateway = Gateway::start(egress.clone(), &upstream)
            .await
            .map_err(|e| PubSubError::Client(e.into()))?;
        // The admin clients (REST, reqwest) read HTTP_PROXY themselves: if
        // it would send plain HTTP to loopback through a proxy, they go to
        // Pub/Sub directly (their own way, by the environment) instead.
        let admin_endpoint = match env_proxies_loopback() {
            true => {
                tracing::warn!(
                    "HTTP_PROXY (or ALL_PROXY) is set and NO_PROXY does not list 127.0.0.1, so Pub/Sub's admin calls (the subscription check, the probe) cannot use the worker's gateway: they go to Pub/Sub by the environment's proxy and the system's CAs, not by network.*; add 127.0.0.1 and localhost to NO_PROXY (the chatworker binary does it itself)"
                );
                upstream.as_str().trim_end_matches('/').to_owned()
            }
            false => gateway.endpoint(),
        };
        Ok(Self {
            endpoint: Some(gateway.endpoint()),
            admin_endpoint: Some(admin_endpoint),
            credentials: None,
            gateway: Some(Arc::new(gateway)),
            egress: egress.clone(),
        })
    }

    /// The link to Pub/Sub, when it goes through the gateway.
    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        self.gateway.as_ref().map(|gateway| gateway.link())
    }
}

/// Whether reqwest, as configured by the environment, would send a plain
/// HTTP request for 127.0.0.1 to a proxy.
fn env_proxies_loopback() -> bool {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let proxied = var(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]).is_some();
    let exempt = var(&["NO_PROXY", "no_proxy"])
        .is_some_and(|list| NoProxy::parse(&list).matches("127.0.0.1"));
    proxied && !exempt
}
