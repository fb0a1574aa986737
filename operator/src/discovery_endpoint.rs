//! The discovery endpoint: gRPC `outrigger.discovery.v1.Discovery/Watch`, served beside the
//! identity endpoint by every replica. Each replica keeps an index of the ready pods of every
//! meshed app from the EndpointSlices of the headless Services `<app>-outrigger` (`discovery`
//! keeps those; the EndpointSlice controller copies their `outrigger.dev/discovery-app` label),
//! and pushes an app's pods to each sidecar watching it whenever they change — pod churn reaches
//! callers as fast as the EndpointSlice does, with no cluster DNS in the way. Callers
//! authenticate as at the identity endpoint. Not for the Services themselves (`discovery`).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use outrigger_proto::outrigger::discovery::v1::{
    Endpoints, WatchRequest, discovery_server::Discovery,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, codegen::BoxStream};

use crate::{
    discovery::LABEL_DISCOVERY_APP,
    identity_endpoint::{authenticate, result_label},
    metrics::Metrics,
};

/// The ready pod addresses of every meshed app, by namespace and app, sorted.
pub type PodIndex = BTreeMap<(String, String), Vec<IpAddr>>;

/// The index as the endpoint sees it: `None` until the EndpointSlices are first listed, so no
/// sidecar is told an app has no pods because the list has not come in yet.
pub type PodIndexHandle = watch::Receiver<Option<Arc<PodIndex>>>;

/// What one EndpointSlice contributes: its app and its ready addresses.
fn slice_pods(slice: &EndpointSlice) -> Option<(String, Vec<IpAddr>)> {
    let app = slice.labels().get(LABEL_DISCOVERY_APP)?.clone();
    let ready = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    Some((app, ready))
}

/// The index of the slices seen: per (namespace, slice name), its app and addresses.
fn index_of(slices: &HashMap<(String, String), (String, Vec<IpAddr>)>) -> PodIndex {
    let mut index = PodIndex::new();
    for ((namespace, _), (app, ips)) in slices {
        index
            .entry((namespace.clone(), app.clone()))
            .or_default()
            .extend(ips.iter().copied());
    }
    for ips in index.values_mut() {
        ips.sort_unstable();
        ips.dedup();
    }
    index
}

/// Keeps `tx` current from the EndpointSlices of meshed apps, forever (the watch retries with
/// backoff).
pub async fn run_pod_index(client: Client, tx: watch::Sender<Option<Arc<PodIndex>>>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let events =
        watcher(api, watcher::Config::default().labels(LABEL_DISCOVERY_APP)).default_backoff();
    futures_util::pin_mut!(events);
    let key = |s: &EndpointSlice| (s.namespace().unwrap_or_default(), s.name_any());
    let mut slices = HashMap::new();
    let mut listing: Option<HashMap<_, _>> = None;
    let publish = |slices: &HashMap<_, _>| {
        let index = index_of(slices);
        tx.send_if_modified(|current| {
            if current.as_deref() == Some(&index) {
                return false;
            }
            *current = Some(Arc::new(index));
            true
        });
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(s)) => {
                if let (Some(list), Some(pods)) = (listing.as_mut(), slice_pods(&s)) {
                    list.insert(key(&s), pods);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(list) = listing.take() {
                    slices = list;
                    publish(&slices);
                }
            }
            Ok(watcher::Event::Apply(s)) => {
                match slice_pods(&s) {
                    Some(pods) => slices.insert(key(&s), pods),
                    None => slices.remove(&key(&s)),
                };
                publish(&slices);
            }
            Ok(watcher::Event::Delete(s)) => {
                slices.remove(&key(&s));
                publish(&slices);
            }
            Err(e) => tracing::warn!(error = %e, "EndpointSlice watch failed; retrying"),
        }
    }
}

/// The `Discovery` service.
pub struct DiscoveryService {
    client: Client,
    index: PodIndexHandle,
    metrics: Arc<Metrics>,
}

impl DiscoveryService {
    /// A service answering from `index`, authenticating callers through `client`.
    pub fn new(client: Client, index: PodIndexHandle, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            index,
            metrics,
        }
    }
}

/// How many answers may wait for a slow caller; newer ones replace what it has not read.
const STREAM_BUFFER: usize = 1;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<BoxStream<Endpoints>>, Status> {
        let checked = async {
            let caller = authenticate(&self.client, request.metadata()).await?;
            let WatchRequest { namespace, app } = request.get_ref();
            if namespace.is_empty() || app.is_empty() {
                return Err(Status::invalid_argument("namespace and app are required"));
            }
            Ok(caller)
        }
        .await;
        self.metrics
            .discovery_watch(result_label(&checked, "opened"));
        let caller = checked.inspect_err(|s| {
            tracing::warn!(code = ?s.code(), reason = %s.message(), "discovery watch refused");
        })?;
        let WatchRequest { namespace, app } = request.into_inner();
        tracing::debug!(caller = %format!("{}/{}", caller.namespace, caller.pod_name), %namespace, %app, "discovery watch opened");
        let key = (namespace, app);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut index = self.index.clone();
        tokio::spawn(async move {
            let mut sent: Option<Vec<IpAddr>> = None;
            loop {
                let now = index
                    .borrow_and_update()
                    .as_ref()
                    .map(|i| i.get(&key).cloned().unwrap_or_default());
                if let Some(now) = now.filter(|n| sent.as_ref() != Some(n)) {
                    let message = Endpoints {
                        addresses: now.iter().map(ToString::to_string).collect(),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                    sent = Some(now);
                }
                tokio::select! {
                    changed = index.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(
        namespace: &str,
        name: &str,
        app: Option<&str>,
        endpoints: serde_json::Value,
    ) -> EndpointSlice {
        let mut labels = serde_json::json!({ "kubernetes.io/service-name": "x" });
        if let Some(app) = app {
            labels[LABEL_DISCOVERY_APP] = app.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": namespace, "labels": labels },
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn the_index_holds_each_apps_ready_pods_across_its_slices() {
        let a = slice(
            "shop",
            "users-outrigger-1",
            Some("users"),
            serde_json::json!([
                { "addresses": ["10.0.0.2"], "conditions": { "ready": true } },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.4"] },
            ]),
        );
        let b = slice(
            "shop",
            "users-outrigger-2",
            Some("users"),
            serde_json::json!([{ "addresses": ["10.0.0.1", "10.0.0.2"] }]),
        );
        assert!(slice_pods(&slice("shop", "other", None, serde_json::json!([]))).is_none());
        let mut slices = HashMap::new();
        for s in [&a, &b] {
            slices.insert(
                (s.namespace().unwrap(), s.name_any()),
                slice_pods(s).unwrap(),
            );
        }
        let index = index_of(&slices);
        assert_eq!(
            index[&("shop".to_owned(), "users".to_owned())],
            ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec(),
            "ready or unknown, sorted, once each; not-ready left out"
        );
    }
}
