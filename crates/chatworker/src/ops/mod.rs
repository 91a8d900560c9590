//! Operations: what the worker did ([`metrics`]), whether it is alive and
//! ready ([`health`]), the listener that serves both ([`server`]), and its
//! logs ([`logging`]). The worker, the Pub/Sub source and the Chat client
//! report here; nothing here knows Pub/Sub, Chat or event types.

pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod server;

pub use metrics::Snapshot;
pub use server::ServerError;
