//! The proxy core's state: the immutable routing snapshot of one config version (route tables
//! and authorization policies by listener, listener protocols, clusters), swapped atomically on reload, and what every
//! connection of the proxy core shares (the live snapshot, metrics, the shutdown signal). A
//! request keeps the snapshot it started with.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use outrigger_config::{Protocol, RetryOn, RuntimeConfigSpec};
use outrigger_core::{
    LabelStr, Metrics, Observability, ProxyError, RetryLabels, Shutdown, StatusLabel, Workers,
};
use outrigger_identity::{Discovery, Identity};

use crate::{
    authz::Policy,
    cluster::Cluster,
    ratelimit::TokenBucket,
    route::{Route, RouteTable},
};

/// Immutable routing state of one config version.
#[derive(Default)]
pub struct ProxySnapshot {
    /// Route tables by listener name; the shared keys are the listeners' metric label values.
    pub(crate) listeners: HashMap<Arc<str>, Arc<RouteTable>>,
    /// The protocol each listener decodes.
    pub(crate) protocols: HashMap<String, Protocol>,
    /// Clusters by name.
    pub(crate) clusters: HashMap<String, Arc<Cluster>>,
    /// Rate limits of the listeners that have one.
    pub(crate) listener_limits: HashMap<Arc<str>, TokenBucket>,
    /// The route table of streamed pass-through requests (gRPC calls for `dapr-app-id`): the
    /// one of the listener the `http` channel reaches by name.
    pub(crate) passthrough: Option<Arc<RouteTable>>,
    /// Authorization policies of the listeners that have one.
    pub(crate) policies: HashMap<Arc<str>, Policy>,
}

impl ProxySnapshot {
    /// Compiles routes and builds clusters (resolving DNS names once). Fails only on input
    /// that validation rejects.
    ///
    /// A cluster whose config is the same as in `previous` is carried over as it is: its pools
    /// with their open connections, its resolved hosts, its outlier and breaker state.
    pub async fn build(
        spec: &RuntimeConfigSpec,
        metrics: &Metrics,
        previous: &ProxySnapshot,
        identity: Option<&Arc<Identity>>,
        discovery: Option<&Arc<Discovery>>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut clusters = HashMap::new();
        for c in &spec.clusters {
            let kept = previous
                .clusters
                .get(&c.name)
                .filter(|old| old.config() == c)
                .cloned();
            let cluster = match kept {
                Some(old) => old,
                None => match Cluster::build(c, metrics, identity, discovery).await {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            clusters.insert(c.name.clone(), cluster);
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
                    Ok(mut route) => {
                        route.name = Arc::from(format!("{}/{i}", t.name));
                        route.rate_limit = r.rate_limit.as_ref().map(|rl| {
                            TokenBucket::new("route", &format!("{}/{i}", t.name), rl, metrics)
                        });
                        routes.push(route);
                    }
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
        let mut listener_limits = HashMap::new();
        let mut policies = HashMap::new();
        for l in &spec.listeners {
            if let Some(a) = &l.authorization {
                match Policy::compile(a) {
                    Ok(p) => {
                        policies.insert(Arc::from(l.name.as_str()), p);
                    }
                    Err(e) => errors.push(format!("listener {} authorization: {e}", l.name)),
                }
            }
            protocols.insert(l.name.clone(), l.protocol);
            if let Some(rl) = &l.rate_limit {
                listener_limits.insert(
                    Arc::from(l.name.as_str()),
                    TokenBucket::new("listener", &l.name, rl, metrics),
                );
            }
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
        let passthrough = spec
            .rpc
            .channels
            .iter()
            .find(|c| c.protocol == Protocol::Http)
            .and_then(|c| listeners.get(c.listener.as_str()))
            .cloned();
        if errors.is_empty() {
            Ok(Self {
                listeners,
                protocols,
                clusters,
                listener_limits,
                passthrough,
                policies,
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
    pub fn cluster_addresses(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.clusters.get(name).map(|c| c.addresses())
    }

    /// Hosts of a cluster that outlier detection has ejected now (for the config dump).
    pub fn ejected_hosts(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.clusters.get(name).map(|c| c.ejected())
    }

    /// The listener's authorization policy, when it has one.
    pub(crate) fn policy(&self, listener: &str) -> Option<&Policy> {
        if self.policies.is_empty() {
            return None;
        }
        self.policies.get(listener)
    }

    /// Takes a token of the listener's rate limit, when it has one.
    pub(crate) fn admit_listener(&self, listener: &str) -> Result<(), ProxyError> {
        if self.listener_limits.is_empty() {
            return Ok(());
        }
        self.listener_limits
            .get(listener)
            .map_or(Ok(()), TokenBucket::admit)
    }
}

/// State shared by every connection of the proxy core.
pub(crate) struct Shared {
    /// The routing state new requests start from.
    pub(crate) live: ArcSwap<ProxySnapshot>,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: Shutdown,
    /// The access log and whether trace context is handled.
    pub(crate) obs: Observability,
    /// The sidecar's identity, for TLS listeners and `mesh` clusters.
    pub(crate) identity: Option<Arc<Identity>>,
    /// Where clusters with `discovery` learn their pods; DNS when `None`.
    pub(crate) discovery: Option<Arc<Discovery>>,
    /// The runtimes listener sockets are accepted on, one socket each.
    pub(crate) workers: Workers,
}

impl Shared {
    /// Counts and logs a retry of a request to `cluster` after try `try_no` failed on `addr`
    /// meeting `reason`.
    pub(crate) fn count_retry(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        try_no: u32,
        reason: RetryOn,
    ) {
        let reason = match reason {
            RetryOn::ConnectFailure => StatusLabel::Word("connect_failure"),
            RetryOn::Reset => StatusLabel::Word("reset"),
            RetryOn::Status(s) => StatusLabel::Code(u32::from(s)),
        };
        self.metrics
            .proxy_retries
            .get_or_create(&RetryLabels {
                cluster: LabelStr::from(&cluster.name),
                reason,
            })
            .inc();
        tracing::debug!(cluster = %cluster.name, host = %addr, try_no, "retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn spec(lb: &str, port: u16) -> RuntimeConfigSpec {
        outrigger_config::load_yaml(&format!(
            r#"
rpc: {{channels: [{{listener: egress}}]}}
listeners: [{{name: egress, routeTable: t}}]
routeTables: [{{name: t, routes: [{{cluster: a}}, {{cluster: b}}]}}]
clusters:
  - {{name: a, hosts: [{{address: "127.0.0.1:7001"}}]}}
  - {{name: b, lb: {lb}, hosts: [{{address: "127.0.0.1:{port}"}}]}}
"#
        ))
        .expect("valid")
    }

    #[tokio::test]
    async fn unchanged_clusters_are_carried_over_by_a_reload() {
        let metrics = Metrics::new();
        let first = ProxySnapshot::build(
            &spec("round_robin", 7002),
            &metrics,
            &ProxySnapshot::default(),
            None,
            None,
        )
        .await
        .expect("builds");
        let second = ProxySnapshot::build(&spec("random", 7002), &metrics, &first, None, None)
            .await
            .expect("builds");
        assert!(
            Arc::ptr_eq(&first.clusters["a"], &second.clusters["a"]),
            "same config: the same cluster, pools and all"
        );
        assert!(
            !Arc::ptr_eq(&first.clusters["b"], &second.clusters["b"]),
            "a changed cluster is built anew"
        );
    }

    #[tokio::test]
    async fn a_route_counts_its_answers_per_listener_of_a_shared_table() {
        let metrics = Metrics::new();
        let spec = outrigger_config::load_yaml(
            r#"
rpc: {channels: [{listener: egress}]}
listeners: [{name: egress, routeTable: t}, {name: side, routeTable: t, address: "127.0.0.1:0"}]
routeTables: [{name: t, routes: [{cluster: a}]}]
clusters: [{name: a, hosts: [{address: "127.0.0.1:7001"}]}]
"#,
        )
        .expect("valid");
        let snapshot = ProxySnapshot::build(&spec, &metrics, &ProxySnapshot::default(), None, None)
            .await
            .expect("builds");
        let (egress, table) = snapshot.listeners.get_key_value("egress").expect("egress");
        let (side, _) = snapshot.listeners.get_key_value("side").expect("side");
        let route = &table.routes[0];
        for (listener, status) in [
            (egress, StatusCode::OK),
            (egress, StatusCode::OK),
            (side, StatusCode::OK),
            (egress, StatusCode::SERVICE_UNAVAILABLE),
            (egress, StatusCode::OK),
        ] {
            route.count(&metrics, LabelStr::from(listener), status);
        }
        let text = metrics.encode();
        for line in [
            "outrigger_proxy_requests_total{listener=\"egress\",cluster=\"a\",status=\"200\"} 3",
            "outrigger_proxy_requests_total{listener=\"side\",cluster=\"a\",status=\"200\"} 1",
            "outrigger_proxy_requests_total{listener=\"egress\",cluster=\"a\",status=\"503\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
