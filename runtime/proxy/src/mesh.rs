//! Mutual TLS at the proxy core's edges, with the sidecar's identity: a listener with
//! `tls.mode` tells a TLS client from a plaintext one by its first byte, completes the
//! handshake (`strict` closes plaintext, `permissive` serves it) and learns the peer's SPIFFE
//! id; a cluster with `tls.mode: mesh` secures each new upstream connection and verifies the
//! host's id. Every handshake is counted by direction and result. Not for the TLS settings
//! themselves (the `outrigger-identity` crate) or for what is spoken inside.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use outrigger_config::ListenerTlsMode;
use outrigger_core::{Metrics, PlaintextLabels, TlsLabels};
use outrigger_identity::{ClientTls, Identity, SpiffeId, handshake_failure, mesh_server_name};
use outrigger_pool::{Io, Secure, Securing};
use tokio::net::TcpStream;

/// A TLS record carrying a handshake starts with this byte; no HTTP method, Bolt or Dubbo
/// frame does.
const TLS_HANDSHAKE: u8 = 0x16;

fn count(metrics: &Metrics, direction: &'static str, result: &'static str) {
    metrics
        .tls_handshakes
        .get_or_create(&TlsLabels { direction, result })
        .inc();
}

/// Secures a cluster's upstream connections with the sidecar's identity.
pub(crate) struct Originate {
    pub(crate) client: ClientTls,
    pub(crate) metrics: Metrics,
    pub(crate) cluster: Arc<str>,
}

impl Secure for Originate {
    fn secure(&self, stream: TcpStream, addr: SocketAddr) -> Securing<'_> {
        Box::pin(async move {
            let connector = self.client.connector().map_err(io::Error::other)?;
            match connector.connect(mesh_server_name(addr), stream).await {
                Ok(tls) => {
                    count(&self.metrics, "outbound", "ok");
                    Ok(Box::new(tls) as Box<dyn Io>)
                }
                Err(e) => {
                    let result = handshake_failure(&e);
                    count(&self.metrics, "outbound", result);
                    tracing::warn!(cluster = %self.cluster, host = %addr, result, error = %e, "mutual TLS handshake with an upstream failed");
                    Err(e)
                }
            }
        })
    }
}

/// What a TLS listener made of a new connection.
pub(crate) enum Accepted {
    /// Mutual TLS, with the peer's SPIFFE id.
    Tls(Box<dyn Io>, SpiffeId),
    /// Plaintext, on a `permissive` listener.
    Plain(TcpStream),
}

/// Tells TLS from plaintext on `stream` within `timeout` and completes the handshake. `None`
/// when the connection is closed: plaintext on a `strict` listener, a failed or slow
/// handshake, a peer without a usable SPIFFE id, or nothing sent in time.
pub(crate) async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &str,
    mode: ListenerTlsMode,
    identity: &Arc<Identity>,
    metrics: &Metrics,
    timeout: Duration,
) -> Option<Accepted> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(timeout, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        tracing::debug!(%listener, %peer, "nothing sent before the header read timeout; closing");
        return None;
    }
    if first[0] != TLS_HANDSHAKE {
        let action = match mode {
            ListenerTlsMode::Permissive => "accepted",
            ListenerTlsMode::Strict => "refused",
        };
        metrics
            .tls_plaintext
            .get_or_create(&PlaintextLabels {
                listener: listener.to_owned(),
                action,
            })
            .inc();
        if mode == ListenerTlsMode::Strict {
            tracing::info!(%listener, %peer, "plaintext connection refused: the listener is tls strict");
            return None;
        }
        return Some(Accepted::Plain(stream));
    }
    let handshake = identity.acceptor().accept(stream);
    let tls = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let result = handshake_failure(&e);
            count(metrics, "inbound", result);
            tracing::info!(%listener, %peer, result, error = %e, "mutual TLS handshake refused");
            return None;
        }
        Err(_) => {
            count(metrics, "inbound", "timeout");
            tracing::info!(%listener, %peer, "mutual TLS handshake not finished before the header read timeout");
            return None;
        }
    };
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| SpiffeId::of_cert(leaf, identity.trust_domain()));
    match id {
        Some(Ok(id)) => {
            count(metrics, "inbound", "ok");
            tracing::debug!(%listener, %peer, peer_identity = %id, "mutual TLS");
            Some(Accepted::Tls(Box::new(tls), id))
        }
        Some(Err(e)) => {
            count(metrics, "inbound", "bad_identity");
            tracing::info!(%listener, %peer, error = %e, "mutual TLS peer without a usable SPIFFE id; closing");
            None
        }
        None => {
            count(metrics, "inbound", "no_certificate");
            None
        }
    }
}
