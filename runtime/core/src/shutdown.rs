//! The shutdown signal: one token created by the composition root and passed down to every
//! server, accept loop, connection and watcher at construction. Signalling it makes them stop
//! accepting and finish what is in flight; nothing reaches up for it.

use tokio_util::sync::CancellationToken;

/// A clonable handle on the sidecar's shutdown; every clone sees the same signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

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
}
