//! Listeners in this process, as a pool sees them: an interface the proxy core implements and
//! hands to whoever builds pools, so that a channel can reach a named listener without a socket
//! and without the pool knowing anything of the proxy. Requests are handed over decoded — HTTP
//! requests, Bolt and Dubbo frames — and come back as the answer or a typed [`ProxyError`], in
//! the calling task: no byte stream, no markers, no task of their own.

use std::{io, sync::Arc};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use outrigger_core::{ProxyError, StreamBody};

use crate::wire::{Bolt, Dubbo, Wire};

/// The named listeners of this process.
pub trait LocalListeners: Send + Sync + 'static {
    /// The HTTP hand-off to the named listener of the live config.
    fn http(&self, name: &str) -> io::Result<Arc<dyn LocalHttp>>;
    /// The Bolt hand-off to the named listener of the live config.
    fn bolt(&self, name: &str) -> io::Result<Arc<dyn LocalMux<Bolt>>>;
    /// The Dubbo hand-off to the named listener of the live config.
    fn dubbo(&self, name: &str) -> io::Result<Arc<dyn LocalMux<Dubbo>>>;
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

/// One named listener taking decoded requests of a multiplexed protocol.
pub trait LocalMux<W: Wire>: Send + Sync + 'static {
    /// Routes and forwards one request frame: the upstream's answer (none for a one-way
    /// request), or the proxy's own failure.
    fn call(&self, request: W::Frame) -> BoxFuture<'_, Result<Option<W::Frame>, ProxyError>>;
}

/// A multiplexed protocol whose requests a named listener of this process can be handed.
pub trait LocalWire: Wire + Sized {
    /// The hand-off to the named listener `name`, in this protocol.
    fn local(listeners: &dyn LocalListeners, name: &str) -> io::Result<Arc<dyn LocalMux<Self>>>;
}

impl LocalWire for Bolt {
    fn local(listeners: &dyn LocalListeners, name: &str) -> io::Result<Arc<dyn LocalMux<Self>>> {
        listeners.bolt(name)
    }
}

impl LocalWire for Dubbo {
    fn local(listeners: &dyn LocalListeners, name: &str) -> io::Result<Arc<dyn LocalMux<Self>>> {
        listeners.dubbo(name)
    }
}
