//! The turn a write is made for (see [`Turn`]): what the quota and the
//! retries ask of the delivery they work for.

use futures::future::BoxFuture;
use std::time::Instant;

/// The one a write is made for: one delivery's handler. While a write waits
/// for something that is not work (a write slot, a backoff before a retry)
/// it gives up its lane, so that a hot space's waits do not keep other
/// spaces from being answered, and it bounds how long its writes may keep
/// retrying: one deadline for the whole delivery, however many messages.
pub(crate) trait Turn: Send + Sync {
    /// Gives the lane up, if held.
    fn release(&self);
    /// Takes a lane again (at once if still held).
    fn reacquire(&self) -> BoxFuture<'_, ()>;
    /// When the delivery's retries must stop: past it, a transient failure
    /// nacks the event instead of waiting to retry.
    fn retry_deadline(&self) -> Instant;
    /// Whether a write may start now. `Err` ends the delivery's writes at
    /// once, unretried: a fleet's replica whose claim on the lane ran out
    /// writes nothing more for it.
    fn may_write(&self) -> Result<(), crate::reply::SendError> {
        Ok(())
    }
}
