//! Learning the pods of meshed apps from the operator's discovery endpoint: one gRPC stream per
//! app (`Watch`), shared by every cluster that discovers it, pushing the app's ready pod
//! addresses as its EndpointSlices change. A stream that breaks is opened again with jittered
//! backoff, and its subscribers keep the last addresses meanwhile; a stream nobody follows any
//! more is closed. The endpoint is verified against the identity's current trust bundle. Not for
//! what clusters do with the addresses (the proxy core).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use outrigger_config::OperatorEndpoint;
use outrigger_core::Shutdown;
use outrigger_proto::outrigger::discovery::v1::{WatchRequest, discovery_client::DiscoveryClient};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{
    operator::{OperatorChannel, OperatorError, backoff},
    store::Identity,
};

/// The ready pods of one app: `None` until the endpoint first answers.
pub type Addresses = Option<Arc<[IpAddr]>>;

/// The sidecar's client of the discovery endpoint.
pub struct Discovery {
    channel: OperatorChannel,
    identity: Arc<Identity>,
    shutdown: Shutdown,
    streams: Mutex<HashMap<(String, String), watch::Sender<Addresses>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("endpoint", &self.channel.endpoint())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A client of the endpoint `cfg` names, verifying it against `identity`'s trust bundle;
    /// its streams stop at `shutdown`.
    pub fn new(
        cfg: &OperatorEndpoint,
        identity: Arc<Identity>,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, OperatorError> {
        Ok(Arc::new(Self {
            channel: OperatorChannel::new(cfg, crate::tls::provider())?,
            identity,
            shutdown,
            streams: Mutex::new(HashMap::new()),
        }))
    }

    /// `host:port` of the endpoint.
    pub fn endpoint(&self) -> &str {
        self.channel.endpoint()
    }

    /// The ready pods of `app` in `namespace`, kept current while the receiver lives.
    pub fn watch(self: &Arc<Self>, namespace: &str, app: &str) -> watch::Receiver<Addresses> {
        let key = (namespace.to_owned(), app.to_owned());
        let mut streams = self.streams.lock();
        if let Some(tx) = streams.get(&key).filter(|tx| !tx.is_closed()) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        streams.insert(key.clone(), tx.clone());
        tokio::spawn(self.clone().stream(key, tx));
        rx
    }

    /// Follows one app until nobody does or the sidecar stops, reconnecting after failures.
    async fn stream(self: Arc<Self>, key: (String, String), tx: watch::Sender<Addresses>) {
        let (namespace, app) = (&key.0, &key.1);
        let mut failures = 0u32;
        loop {
            match self.follow(namespace, app, &tx).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    tracing::warn!(endpoint = self.endpoint(), %namespace, %app, error = %e, "discovery stream failed; the last known pods stay in use");
                    failures = failures.saturating_add(1);
                }
            }
            if tx.is_closed() || self.shutdown.is_signalled() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff(failures)) => {}
                () = tx.closed() => break,
                () = self.shutdown.signalled() => break,
            }
        }
        let mut streams = self.streams.lock();
        if streams.get(&key).is_some_and(|t| t.same_channel(&tx)) {
            streams.remove(&key);
        }
    }

    /// One stream: every answer is published, until it ends, fails, nobody follows or the
    /// sidecar stops.
    async fn follow(
        &self,
        namespace: &str,
        app: &str,
        tx: &watch::Sender<Addresses>,
    ) -> Result<(), OperatorError> {
        let token = self.channel.read_token().await?;
        let channel = self
            .channel
            .connect(self.identity.current().trust.roots.clone())
            .await?;
        let request = self.channel.authorized(
            WatchRequest {
                namespace: namespace.to_owned(),
                app: app.to_owned(),
            },
            &token,
        )?;
        let mut stream = DiscoveryClient::new(channel)
            .watch(request)
            .await
            .map_err(|s| self.channel.failed(&s))?
            .into_inner();
        loop {
            let message = tokio::select! {
                m = stream.message() => m.map_err(|s| self.channel.failed(&s))?,
                () = tx.closed() => return Ok(()),
                () = self.shutdown.signalled() => return Ok(()),
            };
            let Some(endpoints) = message else {
                return Ok(());
            };
            let mut addresses: Vec<IpAddr> = endpoints
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            let changed = tx.borrow().as_deref() != Some(addresses.as_slice());
            if changed {
                tracing::info!(%namespace, %app, pods = ?addresses, "discovered pods");
                tx.send_replace(Some(addresses.into()));
            }
        }
    }
}
