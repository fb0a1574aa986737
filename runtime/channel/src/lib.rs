//! Channels: the last step of the invoke path, carrying a call to the proxy core in one wire
//! protocol — HTTP/1.1 over a bounded pool, Bolt or Dubbo multiplexed on shared connections —
//! to a named in-process listener (no socket), a TCP address or a unix socket. The first
//! configured channel takes every call; gRPC metadata `rpc_protocol` sends one to another.
//! Not for routing or upstream selection, which the proxy core does.

mod bolt;
mod dubbo;
mod http;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use outrigger_config::{ChannelConfig, ChannelTarget, Protocol, RuntimeConfigSpec};
use outrigger_core::Metrics;
use outrigger_invoke::{
    ErrorKind, InvokeError, InvokeService, PROTOCOL_METADATA, RpcRequest, RpcResponse,
};
use outrigger_pool::{Dial, LocalListeners, MuxError};
use tower::ServiceExt;

/// Idle channel connections are kept this long.
const CHANNEL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// Connect timeout for channels that dial a socket.
const CHANNEL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What one protocol's channel does with a call; [`Channel`] makes it a tower service.
trait Carrier: Send + Sync + 'static {
    /// Carries one call to the proxy core and back.
    fn call(
        &self,
        req: RpcRequest,
    ) -> impl std::future::Future<Output = Result<RpcResponse, InvokeError>> + Send;
}

/// A channel as a tower service. It is always ready: back-pressure is its pool's, where a
/// caller waits for a connection or writer slot until its deadline.
struct Channel<C>(Arc<C>);

impl<C> Channel<C> {
    fn new(carrier: C) -> Self {
        Self(Arc::new(carrier))
    }
}

impl<C> Clone for Channel<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: Carrier> tower::Service<RpcRequest> for Channel<C> {
    type Response = RpcResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<RpcResponse, InvokeError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RpcRequest) -> Self::Future {
        let carrier = self.0.clone();
        Box::pin(async move { carrier.call(req).await })
    }
}

/// Builds the channel stage of the invoke path: `cfg` is the default channel, and every other
/// channel of `spec` is reachable through the request's `protocol` (metadata `rpc_protocol`).
/// Named listeners are reached through `local`.
pub async fn build(
    cfg: &ChannelConfig,
    spec: &RuntimeConfigSpec,
    local: &Arc<dyn LocalListeners>,
    metrics: &Metrics,
) -> Result<InvokeService, String> {
    let default = build_one(cfg, spec, local, metrics).await?;
    let mut others = Vec::new();
    for c in spec
        .rpc
        .channels
        .iter()
        .filter(|c| c.protocol != cfg.protocol)
    {
        others.push((c.protocol, build_one(c, spec, local, metrics).await?));
    }
    if cfg.protocol == Protocol::Http && others.is_empty() {
        // A lone HTTP channel, exactly as before channels could be chosen.
        return Ok(default);
    }
    let mut channels = vec![(cfg.protocol, default.clone())];
    channels.extend(others);
    Ok(InvokeService::new(Select {
        default,
        channels: Arc::from(channels),
    }))
}

async fn build_one(
    cfg: &ChannelConfig,
    spec: &RuntimeConfigSpec,
    local: &Arc<dyn LocalListeners>,
    metrics: &Metrics,
) -> Result<InvokeService, String> {
    let dial = match cfg.target(spec)? {
        ChannelTarget::Named(name) => Dial::InProcess {
            listeners: local.clone(),
            name,
        },
        ChannelTarget::Tcp(addr) => {
            let resolved = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("channel {}: cannot resolve {addr}: {e}", cfg.protocol))?
                .next()
                .ok_or_else(|| format!("channel {}: {addr} resolved to nothing", cfg.protocol))?;
            Dial::Tcp {
                addr: resolved,
                connect_timeout: CHANNEL_CONNECT_TIMEOUT,
                secure: None,
            }
        }
        ChannelTarget::Unix(path) => Dial::Unix(path),
    };
    let size = usize::try_from(cfg.size).unwrap_or(usize::MAX);
    Ok(match cfg.protocol {
        Protocol::Http => {
            let max_answer = usize::try_from(spec.grpc.max_message_bytes).unwrap_or(usize::MAX);
            InvokeService::new(Channel::new(http::HttpChannel::new(
                dial, size, max_answer, metrics,
            )))
        }
        Protocol::Bolt => {
            InvokeService::new(Channel::new(bolt::BoltChannel::new(dial, cfg, metrics)))
        }
        Protocol::Dubbo => {
            InvokeService::new(Channel::new(dubbo::DubboChannel::new(dial, cfg, metrics)))
        }
        Protocol::Auto | Protocol::Http2 => {
            return Err(format!(
                "channel {}: a channel speaks http, bolt or dubbo",
                cfg.protocol
            ));
        }
    })
}

/// Sends each call to the channel its `rpc_protocol` metadata names, or to the default.
#[derive(Clone)]
struct Select {
    /// Takes calls that name no channel.
    default: InvokeService,
    /// Every channel (the default too), by protocol.
    channels: Arc<[(Protocol, InvokeService)]>,
}

impl tower::Service<RpcRequest> for Select {
    type Response = RpcResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<RpcResponse, InvokeError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        // Each channel's back-pressure is its pool's, taken per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RpcRequest) -> Self::Future {
        let chosen = match req.protocol {
            None => Ok(self.default.clone()),
            Some(wanted) => self
                .channels
                .iter()
                .find(|(p, _)| *p == wanted)
                .map(|(_, svc)| svc.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = self.channels.iter().map(|(p, _)| p.as_str()).collect();
                    InvokeError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "metadata {PROTOCOL_METADATA} {:?} names no configured channel (configured: {})",
                            wanted.as_str(),
                            known.join(", ")
                        ),
                    )
                }),
        };
        Box::pin(async move { chosen?.oneshot(req).await })
    }
}

/// The invoke error of a failed call on a multiplexed pool.
fn mux_error(protocol: &str, e: MuxError) -> InvokeError {
    let message = format!("{protocol} channel: {e}");
    InvokeError::from_failure(e, message)
}
#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn answering(name: &'static str) -> InvokeService {
        InvokeService::new(tower::service_fn(move |_: RpcRequest| async move {
            Ok::<_, InvokeError>(RpcResponse {
                data: bytes::Bytes::from_static(name.as_bytes()),
                ..Default::default()
            })
        }))
    }

    fn req(protocol: Option<Protocol>) -> RpcRequest {
        let mut r = RpcRequest::new("svc", "m", Instant::now());
        r.protocol = protocol;
        r
    }

    #[tokio::test]
    async fn rpc_protocol_metadata_picks_the_channel() {
        let select = Select {
            default: answering("http"),
            channels: Arc::from(vec![
                (Protocol::Http, answering("http")),
                (Protocol::Bolt, answering("bolt")),
            ]),
        };
        for (protocol, want) in [
            (None, "http"),
            (Some(Protocol::Bolt), "bolt"),
            (Some(Protocol::Http), "http"),
        ] {
            let resp = select
                .clone()
                .oneshot(req(protocol))
                .await
                .expect("answered");
            assert_eq!(resp.data, want.as_bytes(), "{protocol:?}");
        }
        let err = select
            .oneshot(req(Some(Protocol::Dubbo)))
            .await
            .expect_err("no dubbo channel");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.message(),
            "metadata rpc_protocol \"dubbo\" names no configured channel (configured: http, bolt)"
        );
    }
}
