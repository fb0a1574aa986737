//! Clusters: a named group of upstream hosts, each with its own bounded connection pool (an
//! HTTP/1.1 pool, a multiplexed one for Bolt and Dubbo clusters, one h2c connection for http2
//! clusters), a load balancer over
//! them, and DNS names resolved at build and re-resolved periodically (a host that survives a
//! refresh keeps its pool), plus the cluster's resilience state: its outlier detector (picks
//! skip ejected hosts) and circuit breaker (its cap on connection waiters is shared by the
//! host pools). Not for routing (see `route`) or for the exchange itself (see `forward` and
//! `xproto`).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use outrigger_codec::Limits;
use outrigger_config::{ClusterConfig, DEFAULT_INBOUND_PORT, HostConfig, Protocol};

use outrigger_core::{Cause, Metrics, NameLabels, ProxyError};
use outrigger_identity::{Discovery, Identity, PeerPolicy};
use outrigger_pool::{
    Bolt, Dial, Dubbo, H2Pool, Heartbeat, Http1Connector, Http1Pool, MuxPool, MuxSettings,
    PoolSettings, Secure,
};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::{
    breaker::Breaker,
    lb::{Balancer, weighted_schedule},
    mesh::Originate,
    outlier::{HostHealth, Judged, Outlier, Verdict},
};

/// One upstream address with its pool.
pub(crate) struct Host {
    pub(crate) addr: SocketAddr,
    /// The host as configured (`name:port` or `ip:port`): the `Host` header of requests that
    /// arrive without one.
    pub(crate) authority: http::HeaderValue,
    pub(crate) weight: u32,
    pub(crate) dial: Dial,
    pub(crate) pool: UpstreamPool,
    in_flight: AtomicUsize,
    health: HostHealth,
}

impl Judged for Arc<Host> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn health(&self) -> &HostHealth {
        &self.health
    }
}

/// A host's connection pool, in the cluster's protocol.
pub(crate) enum UpstreamPool {
    /// HTTP/1.1: one request per connection at a time.
    Http(Http1Pool),
    /// Bolt: multiplexed.
    Bolt(MuxPool<Bolt>),
    /// Dubbo: multiplexed.
    Dubbo(MuxPool<Dubbo>),
    /// HTTP/2 (h2c): one connection, streams bounded by `maxConnections`.
    Http2(H2Pool),
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .finish()
    }
}

/// Counts a request in flight on a host for as long as it lives.
pub(crate) struct InFlight(Arc<Host>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for InFlight {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.0
    }
}

#[derive(Debug, Default)]
struct HostSet {
    hosts: Vec<Arc<Host>>,
    schedule: Vec<usize>,
}

/// A cluster of upstream hosts.
pub(crate) struct Cluster {
    /// Shared, so that metric labels take it without copying.
    pub(crate) name: Arc<str>,
    cfg: ClusterConfig,
    balancer: Balancer,
    hosts: ArcSwap<HostSet>,
    metrics: Metrics,
    /// Ejects failing hosts, when configured.
    outlier: Option<Outlier>,
    /// Caps requests, connection waiters and retries, when configured.
    pub(crate) breaker: Option<Breaker>,
    /// Retries refused by the retry budgets of routes to this cluster.
    pub(crate) budget_exhausted: Counter,
    /// Mutual TLS on every connection (`tls.mode: mesh`).
    secure: Option<Arc<dyn Secure>>,
    /// The host entries resolved: `hosts`, or the discovered app's headless Service.
    entries: Vec<HostConfig>,
}

/// Which identities a mesh cluster's hosts may present: `tls.identities`, else any identity of
/// the discovered app's namespace, else any of the trust domain.
fn peer_policy(cfg: &ClusterConfig) -> PeerPolicy {
    let listed = cfg
        .tls
        .as_ref()
        .map_or(&[][..], |t| t.identities.as_slice());
    match (&cfg.discovery, listed.is_empty()) {
        (Some(d), true) => PeerPolicy::Namespace(d.namespace.clone()),
        _ => PeerPolicy::from_identities(listed),
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

impl Cluster {
    /// Builds a cluster and resolves its hosts once (waiting at most the connect timeout for
    /// DNS). When any host is a DNS name, a task re-resolves it until the cluster is dropped.
    /// With `tls.mode: mesh`, every connection is secured with `identity` (which validation
    /// guarantees; without it the cluster is refused).
    pub(crate) async fn build(
        cfg: &ClusterConfig,
        metrics: &Metrics,
        identity: Option<&Arc<Identity>>,
        discovery: Option<&Arc<Discovery>>,
    ) -> Result<Arc<Self>, String> {
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let secure: Option<Arc<dyn Secure>> = match identity {
            _ if !cfg.mesh_tls() => None,
            Some(identity) => Some(Arc::new(Originate {
                client: identity.client(peer_policy(cfg)),
                metrics: metrics.clone(),
                cluster: name.clone(),
            })),
            None => {
                return Err(format!(
                    "cluster {}: tls mode mesh needs the sidecar's identity, which is loaded at start (set `identity` and restart)",
                    cfg.name
                ));
            }
        };
        let cluster = Arc::new(Self {
            secure,
            entries: cfg.host_entries(),
            cfg: cfg.clone(),
            balancer: Balancer::new(cfg.lb),
            hosts: ArcSwap::from_pointee(HostSet::default()),
            metrics: metrics.clone(),
            outlier: cfg
                .outlier_detection
                .as_ref()
                .map(|o| Outlier::new(name.clone(), o, metrics)),
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(|b| Breaker::new(name.clone(), b, metrics)),
            budget_exhausted: metrics
                .retry_budget_exhausted
                .get_or_create(&NameLabels {
                    name: cfg.name.clone(),
                })
                .clone(),
            name,
        });
        let first_wait = cfg.connect_timeout().max(Duration::from_secs(1));
        if let (Some(d), Some(discovery)) = (&cfg.discovery, discovery) {
            // Pushed by the operator: the app's pods as its EndpointSlices change.
            let mut pods = discovery.watch(&d.namespace, &d.app);
            let port = d.port.unwrap_or(DEFAULT_INBOUND_PORT);
            let _ = tokio::time::timeout(first_wait, pods.wait_for(Option::is_some)).await;
            cluster.install_pods(pods.borrow().as_deref(), port);
            tokio::spawn(follow(Arc::downgrade(&cluster), pods, port));
            return Ok(cluster);
        }
        let _ = tokio::time::timeout(first_wait, cluster.resolve()).await;
        let has_names = cluster
            .entries
            .iter()
            .any(|h| h.address.parse::<SocketAddr>().is_err());
        if has_names {
            tokio::spawn(refresh(Arc::downgrade(&cluster), cfg.dns_refresh()));
        }
        Ok(cluster)
    }

    /// Resolves every host entry and swaps in the new host set, keeping the pools of hosts
    /// that are still there.
    async fn resolve(&self) {
        let mut resolved: Vec<(SocketAddr, u32, &str)> = Vec::new();
        for h in &self.entries {
            if let Ok(addr) = h.address.parse::<SocketAddr>() {
                resolved.push((addr, h.weight, &h.address));
                continue;
            }
            match tokio::net::lookup_host(h.address.as_str()).await {
                Ok(addrs) => resolved.extend(addrs.map(|a| (a, h.weight, h.address.as_str()))),
                Err(e) => tracing::warn!(
                    cluster = %self.name, host = %h.address, error = %e,
                    "dns resolution failed; keeping no address for this host until the next refresh"
                ),
            }
        }
        self.install(resolved);
    }

    /// Swaps in the pods discovery pushed (`None`: nothing heard yet, so nothing changes).
    fn install_pods(&self, pods: Option<&[std::net::IpAddr]>, port: u16) {
        let Some(pods) = pods else { return };
        let entry = self.entries.first().map_or("", |h| h.address.as_str());
        self.install(
            pods.iter()
                .map(|ip| (SocketAddr::new(*ip, port), 1, entry))
                .collect(),
        );
    }

    /// Swaps in `resolved` (address, weight, configured entry), keeping the pools of hosts that
    /// are still there.
    fn install(&self, mut resolved: Vec<(SocketAddr, u32, &str)>) {
        // The same address twice (a name resolving to an address listed too) is one host, with
        // the first entry's weight.
        let mut seen = std::collections::HashSet::with_capacity(resolved.len());
        resolved.retain(|(a, _, _)| seen.insert(*a));
        let current = self.hosts.load();
        let hosts: Vec<Arc<Host>> = resolved
            .into_iter()
            .map(|(addr, weight, configured)| {
                current
                    .hosts
                    .iter()
                    .find(|h| h.addr == addr && h.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(self.new_host(addr, weight, configured)))
            })
            .collect();
        let unchanged = hosts.len() == current.hosts.len()
            && hosts
                .iter()
                .zip(current.hosts.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if unchanged {
            return;
        }
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
        tracing::info!(cluster = %self.name, hosts = ?hosts.iter().map(|h| h.addr).collect::<Vec<_>>(), "cluster hosts updated");
        self.hosts.store(Arc::new(HostSet {
            schedule: weighted_schedule(&weights),
            hosts,
        }));
    }

    fn new_host(&self, addr: SocketAddr, weight: u32, configured: &str) -> Host {
        let dial = Dial::Tcp {
            addr,
            connect_timeout: self.cfg.connect_timeout(),
            secure: self.secure.clone(),
        };
        let name = format!("upstream/{}/{addr}", self.name);
        let size = usize::try_from(self.cfg.max_connections).unwrap_or(usize::MAX);
        let mux_settings = |name| MuxSettings {
            name,
            size,
            idle_timeout: self.cfg.idle_timeout(),
            heartbeat: Heartbeat::from_config(&self.cfg.heartbeat),
            limits: Limits::default(),
        };
        // The circuit breaker's cap on connection waiters is shared by every host's pool.
        let waiters = self.breaker.as_ref().map(|b| b.waiters.clone());
        let pool = match self.protocol() {
            Protocol::Bolt => UpstreamPool::Bolt(MuxPool::with_wait_limit(
                mux_settings(name),
                dial.clone(),
                &self.metrics,
                waiters,
            )),
            Protocol::Dubbo => UpstreamPool::Dubbo(MuxPool::with_wait_limit(
                mux_settings(name),
                dial.clone(),
                &self.metrics,
                waiters,
            )),
            Protocol::Http2 => UpstreamPool::Http2(H2Pool::new(dial.clone(), size)),
            Protocol::Http | Protocol::Auto => UpstreamPool::Http(Http1Pool::with_wait_limit(
                PoolSettings {
                    name,
                    size,
                    idle_timeout: self.cfg.idle_timeout(),
                },
                Http1Connector { dial: dial.clone() },
                &self.metrics,
                waiters,
            )),
        };
        let authority = http::HeaderValue::from_str(configured)
            .or_else(|_| http::HeaderValue::from_str(&addr.to_string()))
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        Host {
            addr,
            authority,
            weight,
            dial,
            pool,
            in_flight: AtomicUsize::new(0),
            health: HostHealth::default(),
        }
    }

    /// The config the cluster was built from.
    pub(crate) fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The protocol the cluster's hosts speak.
    pub(crate) fn protocol(&self) -> Protocol {
        match self.cfg.protocol {
            Protocol::Auto => Protocol::Http,
            p => p,
        }
    }

    /// Picks a host for one request and counts the request on it. Ejected hosts are skipped:
    /// when the balancer's choice is one, it is asked again, then the next host that is not
    /// ejected is taken; `None` when no host is resolved or every one is ejected.
    pub(crate) fn pick(&self) -> Option<InFlight> {
        let set = self.hosts.load();
        let n = set.hosts.len();
        let load = |i: usize| set.hosts[i].in_flight.load(Ordering::Relaxed);
        let mut i = self.balancer.pick(n, load, &set.schedule)?;
        if let Some(outlier) = &self.outlier {
            let now = Instant::now();
            let up = |i: usize| outlier.available(&set.hosts[i], &set.hosts, now);
            if !up(i) {
                i = (0..n.min(3))
                    .filter_map(|_| self.balancer.pick(n, load, &set.schedule))
                    .find(|&j| up(j))
                    .or_else(|| (1..n).map(|k| (i + k) % n).find(|&j| up(j)))?;
            }
        }
        let host = set.hosts[i].clone();
        host.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(host))
    }

    /// The proxy's answer when [`Cluster::pick`] found no host.
    pub(crate) fn no_healthy_host(&self) -> ProxyError {
        let n = self.hosts.load().hosts.len();
        let message = if n == 0 {
            format!("cluster {} has no resolved hosts", self.name)
        } else {
            format!("cluster {}: all {n} hosts ejected", self.name)
        };
        ProxyError::new(Cause::NoHealthyHost, message)
    }

    /// Takes note, for outlier detection, of what one try said about `host`.
    pub(crate) fn observe(&self, host: &InFlight, verdict: Verdict) {
        if let Some(outlier) = &self.outlier {
            let set = self.hosts.load();
            outlier.observe(&host.0, &set.hosts, verdict, Instant::now());
        }
    }

    /// Hosts ejected now.
    pub(crate) fn ejected(&self) -> Vec<SocketAddr> {
        self.outlier.as_ref().map_or_else(Vec::new, |o| {
            o.ejected(&self.hosts.load().hosts, Instant::now())
        })
    }

    /// Addresses currently resolved.
    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        self.hosts.load().hosts.iter().map(|h| h.addr).collect()
    }
}

/// Installs each set of pods discovery pushes until the cluster is dropped (checked at least
/// every [`FOLLOW_CHECK`]).
async fn follow(
    cluster: Weak<Cluster>,
    mut pods: tokio::sync::watch::Receiver<outrigger_identity::Addresses>,
    port: u16,
) {
    loop {
        let changed = tokio::time::timeout(FOLLOW_CHECK, pods.changed()).await;
        let Some(c) = cluster.upgrade() else { return };
        match changed {
            Ok(Ok(())) => c.install_pods(pods.borrow_and_update().as_deref(), port),
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
}

/// How often a discovery follower checks that its cluster still exists.
const FOLLOW_CHECK: Duration = Duration::from_secs(30);

async fn refresh(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.resolve().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lb: &str, hosts: &[(&str, u32)]) -> ClusterConfig {
        serde_json::from_value(serde_json::json!({
            "name": "users",
            "lb": lb,
            "hosts": hosts
                .iter()
                .map(|(a, w)| serde_json::json!({"address": a, "weight": w}))
                .collect::<Vec<_>>(),
        }))
        .expect("cluster")
    }

    #[test]
    fn a_discovery_cluster_accepts_its_namespace_unless_told_otherwise() {
        let discovered: ClusterConfig = serde_json::from_value(serde_json::json!({
            "name": "users", "discovery": {"app": "users", "namespace": "shop"},
        }))
        .expect("cluster");
        assert_eq!(
            peer_policy(&discovered),
            PeerPolicy::Namespace("shop".into())
        );
        let pinned: ClusterConfig = serde_json::from_value(serde_json::json!({
            "name": "users", "discovery": {"app": "users", "namespace": "shop"},
            "tls": {"mode": "mesh", "identities": ["spiffe://cluster.local/ns/shop/sa/users"]},
        }))
        .expect("cluster");
        assert_eq!(
            peer_policy(&pinned),
            PeerPolicy::OneOf(vec!["spiffe://cluster.local/ns/shop/sa/users".into()])
        );
        let listed: ClusterConfig = serde_json::from_value(serde_json::json!({
            "name": "users", "hosts": [{"address": "10.0.0.7:34906"}], "tls": {"mode": "mesh"},
        }))
        .expect("cluster");
        assert_eq!(peer_policy(&listed), PeerPolicy::TrustDomain);
    }

    #[tokio::test]
    async fn a_mesh_cluster_without_an_identity_is_refused() {
        let discovered: ClusterConfig = serde_json::from_value(serde_json::json!({
            "name": "users", "discovery": {"app": "users", "namespace": "shop"},
        }))
        .expect("cluster");
        let err = Cluster::build(&discovered, &Metrics::new(), None, None)
            .await
            .expect_err("no identity");
        assert!(
            err.contains("cluster users: tls mode mesh needs the sidecar's identity"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn hosts_are_resolved_once_and_kept_with_their_pools() {
        let cluster = Cluster::build(
            &config(
                "round_robin",
                &[
                    ("127.0.0.1:7001", 1),
                    ("127.0.0.1:7002", 1),
                    ("127.0.0.1:7001", 1),
                ],
            ),
            &Metrics::new(),
            None,
            None,
        )
        .await
        .expect("cluster");
        let addrs: Vec<String> = cluster
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:7001", "127.0.0.1:7002"],
            "duplicates collapse"
        );
        let before: Vec<*const Host> = cluster.hosts.load().hosts.iter().map(Arc::as_ptr).collect();
        cluster.resolve().await;
        let after: Vec<*const Host> = cluster.hosts.load().hosts.iter().map(Arc::as_ptr).collect();
        assert_eq!(
            before, after,
            "a refresh that finds the same hosts keeps them (and their pools)"
        );
        assert!(matches!(
            cluster.hosts.load().hosts[0].pool,
            UpstreamPool::Http(_)
        ));
    }

    #[tokio::test]
    async fn picks_follow_the_policy_and_count_requests_in_flight() {
        let rr = Cluster::build(
            &config(
                "round_robin",
                &[("127.0.0.1:7001", 1), ("127.0.0.1:7002", 1)],
            ),
            &Metrics::new(),
            None,
            None,
        )
        .await
        .expect("cluster");
        let picks: Vec<u16> = (0..4)
            .map(|_| rr.pick().expect("a host").addr.port())
            .collect();
        assert_eq!(picks, [7001, 7002, 7001, 7002]);

        let lr = Cluster::build(
            &config(
                "least_request",
                &[("127.0.0.1:7001", 1), ("127.0.0.1:7002", 1)],
            ),
            &Metrics::new(),
            None,
            None,
        )
        .await
        .expect("cluster");
        let busy = lr.pick().expect("a host");
        let busy_port = busy.addr.port();
        for _ in 0..20 {
            assert_ne!(
                lr.pick().expect("a host").addr.port(),
                busy_port,
                "the host with a request in flight is avoided"
            );
        }
        drop(busy);
        let set = lr.hosts.load();
        assert!(
            set.hosts
                .iter()
                .all(|h| h.in_flight.load(Ordering::Relaxed) == 0)
        );

        let weighted = Cluster::build(
            &config("weighted", &[("127.0.0.1:7001", 3), ("127.0.0.1:7002", 1)]),
            &Metrics::new(),
            None,
            None,
        )
        .await
        .expect("cluster");
        let first = (0..8)
            .filter(|_| weighted.pick().expect("a host").addr.port() == 7001)
            .count();
        assert_eq!(first, 6, "weights 3:1");
    }
}
