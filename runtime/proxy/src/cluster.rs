//! Clusters: a named group of upstream hosts, each with its own bounded connection pool (an
//! HTTP/1.1 pool, a multiplexed one for Bolt and Dubbo clusters, one h2c connection for http2
//! clusters), a load balancer over
//! them, and DNS names resolved at build and re-resolved periodically (a host that survives a
//! refresh keeps its pool). Not for routing (see `route`) or for the exchange itself (see
//! `forward` and `xproto`).

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
use outrigger_config::{ClusterConfig, Protocol};

use outrigger_core::Metrics;
use outrigger_pool::{
    Bolt, Dial, Dubbo, H2Pool, Heartbeat, Http1Connector, Http1Pool, MuxPool, MuxSettings,
    PoolSettings,
};

use crate::lb::{Balancer, weighted_schedule};

/// One upstream address with its pool.
pub(crate) struct Host {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) dial: Dial,
    pub(crate) pool: UpstreamPool,
    in_flight: AtomicUsize,
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

impl Cluster {
    /// Builds a cluster and resolves its hosts once (waiting at most the connect timeout for
    /// DNS). When any host is a DNS name, a task re-resolves it until the cluster is dropped.
    pub(crate) async fn build(cfg: &ClusterConfig, metrics: &Metrics) -> Arc<Self> {
        let cluster = Arc::new(Self {
            name: Arc::from(cfg.name.as_str()),
            cfg: cfg.clone(),
            balancer: Balancer::new(cfg.lb),
            hosts: ArcSwap::from_pointee(HostSet::default()),
            metrics: metrics.clone(),
        });
        let _ = tokio::time::timeout(
            cfg.connect_timeout().max(Duration::from_secs(1)),
            cluster.resolve(),
        )
        .await;
        let has_names = cfg
            .hosts
            .iter()
            .any(|h| h.address.parse::<SocketAddr>().is_err());
        if has_names {
            tokio::spawn(refresh(Arc::downgrade(&cluster), cfg.dns_refresh()));
        }
        cluster
    }

    /// Resolves every host entry and swaps in the new host set, keeping the pools of hosts
    /// that are still there.
    async fn resolve(&self) {
        let mut resolved: Vec<(SocketAddr, u32)> = Vec::new();
        for h in &self.cfg.hosts {
            if let Ok(addr) = h.address.parse::<SocketAddr>() {
                resolved.push((addr, h.weight));
                continue;
            }
            match tokio::net::lookup_host(h.address.as_str()).await {
                Ok(addrs) => resolved.extend(addrs.map(|a| (a, h.weight))),
                Err(e) => tracing::warn!(
                    cluster = %self.name, host = %h.address, error = %e,
                    "dns resolution failed; keeping no address for this host until the next refresh"
                ),
            }
        }
        resolved.dedup_by_key(|(a, _)| *a);
        let current = self.hosts.load();
        let hosts: Vec<Arc<Host>> = resolved
            .into_iter()
            .map(|(addr, weight)| {
                current
                    .hosts
                    .iter()
                    .find(|h| h.addr == addr && h.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(self.new_host(addr, weight)))
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

    fn new_host(&self, addr: SocketAddr, weight: u32) -> Host {
        let dial = Dial::Tcp {
            addr,
            connect_timeout: self.cfg.connect_timeout(),
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
        let pool = match self.protocol() {
            Protocol::Bolt => UpstreamPool::Bolt(MuxPool::new(
                mux_settings(name),
                dial.clone(),
                &self.metrics,
            )),
            Protocol::Dubbo => UpstreamPool::Dubbo(MuxPool::new(
                mux_settings(name),
                dial.clone(),
                &self.metrics,
            )),
            Protocol::Http2 => UpstreamPool::Http2(H2Pool::new(dial.clone(), size)),
            Protocol::Http | Protocol::Auto => UpstreamPool::Http(Http1Pool::new(
                PoolSettings {
                    name,
                    size,
                    idle_timeout: self.cfg.idle_timeout(),
                },
                Http1Connector { dial: dial.clone() },
                &self.metrics,
            )),
        };
        Host {
            addr,
            weight,
            dial,
            pool,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The protocol the cluster's hosts speak.
    pub(crate) fn protocol(&self) -> Protocol {
        match self.cfg.protocol {
            Protocol::Auto => Protocol::Http,
            p => p,
        }
    }

    /// Picks a host for one request and counts the request on it.
    pub(crate) fn pick(&self) -> Option<InFlight> {
        let set = self.hosts.load();
        let i = self.balancer.pick(
            set.hosts.len(),
            |i| set.hosts[i].in_flight.load(Ordering::Relaxed),
            &set.schedule,
        )?;
        let host = set.hosts[i].clone();
        host.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(host))
    }

    /// Addresses currently resolved.
    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        self.hosts.load().hosts.iter().map(|h| h.addr).collect()
    }
}

async fn refresh(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.resolve().await;
    }
}
