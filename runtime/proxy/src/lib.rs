//! The MOSN-style proxy core: listeners (named in-process ones reached without a socket, and
//! optional real sockets) decoding HTTP/1.1, Bolt or Dubbo (or telling them apart by the first
//! bytes), route tables, clusters with load balancing and per-host pools (multiplexed for Bolt
//! and Dubbo), and one forwarding pipeline — host choice, per-try deadline, retries — for every
//! protocol, with the same resilience for each: outlier detection, circuit breakers, retry
//! budgets and local rate limits. The routing state is one immutable snapshot swapped atomically on reload; a request
//! keeps the snapshot it started with. The proxy implements the pools' [`LocalListeners`]
//! interface, so channels reach its named listeners without knowing it, and the core's
//! [`outrigger_core::Passthrough`] ([`Streams`]): gRPC calls proxied to h2c (`http2`) clusters. Not for the gRPC API or
//! the invoke filters, which sit in front of it.

mod authz;
mod bolt;
mod breaker;
mod budget;
mod cluster;
mod dubbo;
mod forward;
mod http;
mod lb;
mod limits;
mod listener;
mod mesh;
mod outlier;
mod passthrough;
mod ratelimit;
mod resilience;
mod route;
mod snapshot;
mod xproto;

use std::{io, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use outrigger_config::{ListenerConfig, Protocol, RuntimeConfigSpec};
use outrigger_core::{Metrics, Observability, ProxyError, Shutdown, StreamBody, Workers};
use outrigger_identity::{Discovery, Identity};
use outrigger_pool::{Bolt, Dubbo, LocalHttp, LocalListeners, LocalMux};
use parking_lot::Mutex;

use self::{listener::BoundListener, snapshot::Shared, xproto::ServerProtocol};
pub use self::{passthrough::Streams, snapshot::ProxySnapshot};

/// The named listeners of one proxy core, as channels reach them: the [`LocalListeners`] the
/// pools dial in-process. HTTP hand-offs route on the snapshot the handle is pinned to — the
/// one built with the channels that use it — so a call sees one config version end to end,
/// whatever a reload swaps meanwhile.
#[derive(Clone)]
pub struct InProcess {
    shared: Arc<Shared>,
    pinned: Option<Arc<ProxySnapshot>>,
}

impl InProcess {
    fn snapshot(&self) -> Arc<ProxySnapshot> {
        self.pinned
            .clone()
            .unwrap_or_else(|| self.shared.live.load_full())
    }

    fn check(&self, name: &str) -> io::Result<()> {
        if self.snapshot().listeners.contains_key(name) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no listener named {name:?} in the live config"),
            ))
        }
    }

    /// The hand-off to the named listener for requests in `protocol`, which the listener must
    /// decode (itself, or by telling protocols apart).
    fn mux<P: ServerProtocol>(
        &self,
        name: &str,
        protocol: Protocol,
    ) -> io::Result<Arc<dyn LocalMux<P>>> {
        self.check(name)?;
        let decodes = self.snapshot().listener_protocol(name);
        if decodes != protocol && decodes != Protocol::Auto {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener {name:?} decodes {}, not {}",
                    decodes.as_str(),
                    protocol.as_str()
                ),
            ));
        }
        Ok(Arc::new(InProcessMux {
            shared: self.shared.clone(),
            listener: Arc::from(name),
        }))
    }
}

impl LocalListeners for InProcess {
    fn http(&self, name: &str) -> io::Result<Arc<dyn LocalHttp>> {
        self.check(name)?;
        Ok(Arc::new(InProcessHttp {
            shared: self.shared.clone(),
            snapshot: self.snapshot(),
            listener: Arc::from(name),
        }))
    }

    fn bolt(&self, name: &str) -> io::Result<Arc<dyn LocalMux<Bolt>>> {
        self.mux::<Bolt>(name, Protocol::Bolt)
    }

    fn dubbo(&self, name: &str) -> io::Result<Arc<dyn LocalMux<Dubbo>>> {
        self.mux::<Dubbo>(name, Protocol::Dubbo)
    }
}

/// The Bolt or Dubbo side of a named in-process listener: frames go straight to the proxy
/// core's routing in the caller's task, as if the listener had decoded them, and failures come
/// back typed.
struct InProcessMux {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl<P: ServerProtocol> LocalMux<P> for InProcessMux {
    fn call(&self, request: P::Frame) -> BoxFuture<'_, Result<Option<P::Frame>, ProxyError>> {
        // Boxed: the compiler cannot see that the proxy's upstreams never dial an in-process
        // listener, so the future would be recursive.
        Box::pin(xproto::dispatch::<P>(&self.shared, &self.listener, request))
    }
}

/// The HTTP side of a named in-process listener: requests go straight to the proxy core's
/// routing, as if the listener had decoded them, and failures come back typed.
struct InProcessHttp {
    shared: Arc<Shared>,
    snapshot: Arc<ProxySnapshot>,
    listener: Arc<str>,
}

impl LocalHttp for InProcessHttp {
    fn dispatch(
        &self,
        req: ::http::Request<StreamBody>,
    ) -> BoxFuture<'_, Result<::http::Response<StreamBody>, ProxyError>> {
        // Boxed: the compiler cannot see that the proxy's upstreams never dial an in-process
        // listener, so the future would be recursive.
        let (parts, body) = req.into_parts();
        Box::pin(http::dispatch(
            &self.shared,
            self.snapshot.clone(),
            &self.listener,
            parts,
            body,
            http::Origin::InProcess,
        ))
    }

    fn is_open(&self) -> bool {
        self.snapshot.listeners.contains_key(&*self.listener)
    }
}

/// The proxy core of one sidecar.
pub struct ProxyCore {
    shared: Arc<Shared>,
    bound: Mutex<Vec<BoundListener>>,
}

impl ProxyCore {
    /// A proxy core with no listeners, accepting on the runtime it is created on; `apply` gives
    /// it a config. Its connections drain when `shutdown` is signalled.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(metrics: Metrics, shutdown: Shutdown) -> Self {
        Self::meshed(
            metrics,
            shutdown,
            Observability::default(),
            None,
            None,
            Workers::current(),
        )
    }

    /// A proxy core whose requests leave access log lines and continue trace context as `obs`
    /// says, whose TLS listeners and `mesh` clusters use `identity`, whose clusters with
    /// `discovery` learn their pods from `discovery` (else from DNS), and whose listener sockets
    /// are accepted on by every one of `workers`.
    pub fn meshed(
        metrics: Metrics,
        shutdown: Shutdown,
        obs: Observability,
        identity: Option<Arc<Identity>>,
        discovery: Option<Arc<Discovery>>,
        workers: Workers,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                live: ArcSwap::from_pointee(ProxySnapshot::default()),
                metrics,
                shutdown,
                obs,
                identity,
                discovery,
                workers,
            }),
            bound: Mutex::new(Vec::new()),
        }
    }

    /// The sidecar's identity, when it has one.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.shared.identity.as_ref()
    }

    /// Where clusters with `discovery` learn their pods, when not from DNS.
    pub fn discovery(&self) -> Option<&Arc<Discovery>> {
        self.shared.discovery.as_ref()
    }

    /// The handle the gRPC edge hands streamed pass-through requests to.
    pub fn streams(&self) -> Streams {
        Streams {
            shared: self.shared.clone(),
        }
    }

    /// The handle channels use to reach named listeners of the live config.
    pub fn in_process(&self) -> InProcess {
        InProcess {
            shared: self.shared.clone(),
            pinned: None,
        }
    }

    /// The handle for channels built with `snapshot`: their HTTP hand-offs route on it.
    pub fn in_process_pinned(&self, snapshot: Arc<ProxySnapshot>) -> InProcess {
        InProcess {
            shared: self.shared.clone(),
            pinned: Some(snapshot),
        }
    }

    /// The live routing snapshot (what a reload builds the next one from).
    pub fn routing(&self) -> Arc<ProxySnapshot> {
        self.shared.live.load_full()
    }

    /// Makes `snapshot` live. Sockets for addresses not bound yet are bound first, so a bind
    /// error rejects the whole config while the old one keeps serving; an address already bound
    /// keeps its socket, whichever listener it now belongs to (a rename, a move onto a freed
    /// address, changed limits); then the routing state is swapped and sockets no listener
    /// wants any more are closed.
    pub async fn apply(
        &self,
        snapshot: Arc<ProxySnapshot>,
        spec: &RuntimeConfigSpec,
    ) -> Result<(), Vec<String>> {
        let wanted: Vec<&ListenerConfig> = spec
            .listeners
            .iter()
            .filter(|l| l.address.is_some())
            .collect();
        // A TLS listener never serves plaintext for want of an identity, whether its socket is
        // new or kept from the last config.
        let without_identity: Vec<String> = wanted
            .iter()
            .filter(|l| l.tls.is_some() && self.shared.identity.is_none())
            .map(|l| listener::no_identity(&l.name))
            .collect();
        if !without_identity.is_empty() {
            return Err(without_identity);
        }
        let fresh: Vec<&ListenerConfig> = {
            let bound = self.bound.lock();
            wanted
                .iter()
                .copied()
                .filter(|l| !bound.iter().any(|b| b.holds(l)))
                .collect()
        };
        let mut started = Vec::new();
        let mut errors = Vec::new();
        for l in fresh {
            match BoundListener::bind(l, self.shared.clone()).await {
                Ok(b) => started.push(b),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.shared.live.store(snapshot);
        let mut bound = self.bound.lock();
        let mut kept = Vec::with_capacity(wanted.len());
        for l in &wanted {
            if let Some(i) = bound.iter().position(|b| b.holds(l)) {
                let mut b = bound.swap_remove(i);
                b.adopt(l, self.shared.clone());
                kept.push(b);
            }
        }
        // What is left in `bound` no listener wants: dropped here, it stops accepting.
        *bound = kept;
        bound.extend(started);
        Ok(())
    }

    /// Real sockets the listeners are bound to, by listener name.
    pub fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.bound
            .lock()
            .iter()
            .map(|b| (b.name().to_owned(), b.local_addr()))
            .collect()
    }

    /// Whether the live config has a listener of this name.
    pub fn has_listener(&self, name: &str) -> bool {
        self.shared.live.load().listeners.contains_key(name)
    }

    /// Resolved addresses of a cluster in the live config.
    pub fn cluster_addresses(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.shared.live.load().cluster_addresses(name)
    }

    /// Hosts of a cluster in the live config that outlier detection has ejected now.
    pub fn ejected_hosts(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.shared.live.load().ejected_hosts(name)
    }
}
