//! The shutdown signal: one token created by the composition root and passed down to every
//! server, accept loop, connection and watcher at construction. Signalling it makes them stop
//! accepting and finish what is in flight; connections are spawned through it, so the root can
//! wait until they are done. Nothing reaches up for it.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A clonable handle on the sidecar's shutdown; every clone sees the same signal and tracks
/// into the same set of connection tasks.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken, TaskTracker);

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins shutdown: everything holding a clone stops accepting and drains.
    pub fn signal(&self) {
        self.0.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_signalled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub async fn signalled(&self) {
        self.0.cancelled().await;
    }

    /// Resolves once shutdown has begun; owns its handle, for `'static` futures.
    pub async fn signalled_owned(self) {
        self.0.cancelled_owned().await;
    }

    /// Spawns a connection's task, which shutdown waits for (see [`Shutdown::drained`]).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.1.spawn(task)
    }

    /// Resolves once every task spawned through [`Shutdown::spawn`] has ended (call it after
    /// signalling: connections then finish what is in flight and close).
    pub async fn drained(&self) {
        self.1.close();
        self.1.wait().await;
    }
}
