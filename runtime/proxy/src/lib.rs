//! The MOSN-style proxy core: listeners (named in-process ones reached without a socket, and
//! optional real sockets) decoding HTTP/1.1, Bolt or Dubbo (or telling them apart by the first
//! bytes), route tables, clusters with load balancing and per-host pools (multiplexed for
//! Bolt and Dubbo), timeouts and retries. The routing state is one immutable snapshot swapped
//! atomically on reload; a request keeps the snapshot it started with. Not for the gRPC API or
//! the invoke filters, which sit in front of it.

mod bolt;
mod cluster;
mod dubbo;
mod forward;
mod lb;
mod listener;
mod route;
mod xproto;

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use outrigger_config::{ListenerConfig, Protocol, RuntimeConfigSpec};
use parking_lot::Mutex;
use tokio::{io::DuplexStream, sync::watch};

use self::{
    cluster::Cluster,
    listener::BoundListener,
    route::{Route, RouteTable},
};
use crate::metrics::Metrics;

pub use self::forward::{ERROR_HEADER, TIMEOUT_HEADER};
pub(crate) use self::{
    dubbo::error_cause as dubbo_error_cause,
    forward::{ProxyError, strip_hop_by_hop},
};

/// On the proxy's own Bolt answers (beside [`ERROR_HEADER`]): what went wrong, in words.
pub(crate) const ERROR_MESSAGE_HEADER: &str = "x-outrigger-message";

/// Buffer of each direction of an in-process connection.
const IN_PROCESS_BUFFER: usize = 64 * 1024;

/// Immutable routing state of one config version.
#[derive(Default)]
pub(crate) struct ProxySnapshot {
    /// Route tables by listener name; the shared keys are the listeners' metric label values.
    listeners: HashMap<Arc<str>, Arc<RouteTable>>,
    protocols: HashMap<String, Protocol>,
    clusters: HashMap<String, Arc<Cluster>>,
}

impl ProxySnapshot {
    /// Compiles routes and builds clusters (resolving DNS names once). Fails only on input
    /// that validation rejects.
    pub(crate) async fn build(
        spec: &RuntimeConfigSpec,
        metrics: &Metrics,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut clusters = HashMap::new();
        for c in &spec.clusters {
            clusters.insert(c.name.clone(), Cluster::build(c, metrics).await);
        }
        let default_timeout = spec.rpc.timeout();
        let mut tables = HashMap::new();
        for t in &spec.route_tables {
            let mut routes = Vec::with_capacity(t.routes.len());
            for (i, r) in t.routes.iter().enumerate() {
                let Some(cluster) = clusters.get(&r.cluster) else {
                    errors.push(format!(
                        "route table {} route {i}: unknown cluster {}",
                        t.name, r.cluster
                    ));
                    continue;
                };
                match Route::compile(r, cluster.clone(), default_timeout) {
                    Ok(route) => routes.push(route),
                    Err(e) => errors.push(format!("route table {} route {i}: {e}", t.name)),
                }
            }
            tables.insert(
                t.name.clone(),
                Arc::new(RouteTable {
                    name: t.name.clone(),
                    routes,
                }),
            );
        }
        let mut listeners = HashMap::new();
        let mut protocols = HashMap::new();
        for l in &spec.listeners {
            protocols.insert(l.name.clone(), l.protocol);
            match tables.get(&l.route_table) {
                Some(t) => {
                    listeners.insert(Arc::from(l.name.as_str()), t.clone());
                }
                None => errors.push(format!(
                    "listener {}: unknown route table {}",
                    l.name, l.route_table
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                listeners,
                protocols,
                clusters,
            })
        } else {
            Err(errors)
        }
    }

    /// The protocol a listener decodes (HTTP for one not in this snapshot).
    pub(crate) fn listener_protocol(&self, name: &str) -> Protocol {
        self.protocols.get(name).copied().unwrap_or_default()
    }

    /// Resolved addresses of a cluster (for the config dump and tests).
    pub(crate) fn cluster_addresses(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.clusters.get(name).map(|c| c.addresses())
    }
}

/// State shared by every connection of the proxy core.
pub(crate) struct Shared {
    live: ArcSwap<ProxySnapshot>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    default_timeout: ArcSwap<Duration>,
}

impl Shared {
    /// Counts and logs a retry of a request to `cluster` after try `try_no` failed on `addr`.
    pub(crate) fn count_retry(&self, cluster: &Cluster, addr: SocketAddr, try_no: u32) {
        self.metrics
            .proxy_retries
            .get_or_create(&crate::metrics::NameLabels {
                name: cluster.name.to_string(),
            })
            .inc();
        tracing::debug!(cluster = %cluster.name, host = %addr, try_no, "retrying");
    }
}

/// Opens in-process connections to named listeners.
#[derive(Clone)]
pub struct InProcess {
    shared: Arc<Shared>,
}

impl InProcess {
    /// An HTTP connection to the named listener of the live config, without a byte stream.
    pub(crate) fn http(&self, name: &str) -> io::Result<InProcessHttp> {
        if !self.shared.live.load().listeners.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no listener named {name:?} in the live config"),
            ));
        }
        Ok(InProcessHttp {
            shared: self.shared.clone(),
            listener: Arc::from(name),
        })
    }

    /// Connects to the named listener of the live config: an in-memory stream whose other end
    /// the proxy core serves like any accepted connection.
    pub fn connect(&self, name: &str) -> io::Result<DuplexStream> {
        if !self.shared.live.load().listeners.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no listener named {name:?} in the live config"),
            ));
        }
        let (client, server) = tokio::io::duplex(IN_PROCESS_BUFFER);
        tokio::spawn(listener::serve(
            server,
            Arc::from(name),
            self.shared.clone(),
        ));
        Ok(client)
    }
}

/// The HTTP side of a named in-process listener: requests go straight to the proxy core's
/// routing, as if the listener had decoded them. See `pool::http1`.
pub(crate) struct InProcessHttp {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl InProcessHttp {
    /// Routes and forwards one request. (Boxed: the type system cannot see that the proxy's
    /// upstreams never dial an in-process listener, so the future would be recursive.)
    pub(crate) fn dispatch(
        &self,
        req: http::Request<bytes::Bytes>,
    ) -> futures_util::future::BoxFuture<'_, http::Response<bytes::Bytes>> {
        let (parts, body) = req.into_parts();
        Box::pin(forward::dispatch(&self.shared, &self.listener, parts, body))
    }

    /// Whether the listener is still in the live config.
    pub(crate) fn is_open(&self) -> bool {
        self.shared
            .live
            .load()
            .listeners
            .contains_key(&*self.listener)
    }
}

/// The proxy core of one sidecar.
pub struct ProxyCore {
    shared: Arc<Shared>,
    bound: Mutex<Vec<BoundListener>>,
}

impl ProxyCore {
    /// A proxy core with no listeners; `apply` gives it a config.
    pub fn new(metrics: Metrics, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            shared: Arc::new(Shared {
                live: ArcSwap::from_pointee(ProxySnapshot::default()),
                metrics,
                shutdown,
                default_timeout: ArcSwap::from_pointee(Duration::from_millis(
                    outrigger_config::DEFAULT_TIMEOUT_MS,
                )),
            }),
            bound: Mutex::new(Vec::new()),
        }
    }

    /// The handle channels use to reach named listeners.
    pub fn in_process(&self) -> InProcess {
        InProcess {
            shared: self.shared.clone(),
        }
    }

    /// Makes `snapshot` live: binds sockets for new listener addresses first (so a bind error
    /// rejects the whole config and the old one keeps serving), swaps the routing state, then
    /// closes sockets of listeners that are gone.
    pub(crate) async fn apply(
        &self,
        snapshot: ProxySnapshot,
        spec: &RuntimeConfigSpec,
    ) -> Result<(), Vec<String>> {
        let wanted: Vec<&ListenerConfig> = spec
            .listeners
            .iter()
            .filter(|l| l.address.is_some())
            .collect();
        let mut new = Vec::new();
        let mut errors = Vec::new();
        {
            let bound = self.bound.lock();
            for l in &wanted {
                if !bound.iter().any(|b| b.is(l)) {
                    new.push((*l).clone());
                }
            }
        }
        let mut started = Vec::new();
        for l in new {
            match BoundListener::bind(&l, self.shared.clone()).await {
                Ok(b) => started.push(b),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.shared.live.store(Arc::new(snapshot));
        self.shared
            .default_timeout
            .store(Arc::new(spec.rpc.timeout()));
        let mut bound = self.bound.lock();
        bound.retain(|b| wanted.iter().any(|l| b.is(l)));
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

    /// Resolved addresses of a cluster in the live config.
    pub fn cluster_addresses(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.shared.live.load().cluster_addresses(name)
    }
}
