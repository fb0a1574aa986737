//! Listeners in this process, as a pool sees them: an interface the proxy core implements and
//! hands to whoever builds pools, so that a channel can reach a named listener without a socket
//! and without the pool knowing anything of the proxy. HTTP requests are handed over decoded
//! and come back as a response or a typed [`ProxyError`]; Bolt and Dubbo get an in-memory
//! byte stream the listener serves like an accepted connection.

use std::{io, sync::Arc};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use outrigger_core::{ProxyError, StreamBody};
use tokio::io::DuplexStream;

/// The named listeners of this process.
pub trait LocalListeners: Send + Sync + 'static {
    /// The HTTP hand-off to the named listener of the live config.
    fn http(&self, name: &str) -> io::Result<Arc<dyn LocalHttp>>;
    /// A byte stream to the named listener of the live config, served like an accepted
    /// connection in the listener's protocol.
    fn connect(&self, name: &str) -> io::Result<DuplexStream>;
}

/// One named listener taking decoded HTTP requests.
pub trait LocalHttp: Send + Sync + 'static {
    /// Routes and forwards one request: the upstream's response (its body streamed as it
    /// comes), or the proxy's own failure.
    fn dispatch(
        &self,
        req: Request<StreamBody>,
    ) -> BoxFuture<'_, Result<Response<StreamBody>, ProxyError>>;
    /// Whether the listener is still in the live config.
    fn is_open(&self) -> bool;
}
