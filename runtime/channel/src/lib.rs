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
use tower::ServiceExt;

pub(crate) use self::dubbo::PARAMETER_TYPES_METADATA as DUBBO_PARAMETER_TYPES_METADATA;
use crate::{
    invoke::{ErrorKind, InvokeError, InvokeService, RpcRequest, RpcResponse},
    metrics::Metrics,
    pool::{http1::Dial, mux::MuxError},
    proxy::{InProcess, ProxyError},
};

/// gRPC metadata naming the channel (by protocol: `http`, `bolt`, `dubbo`) a call takes.
pub(crate) const PROTOCOL_METADATA: &str = "rpc_protocol";
/// gRPC metadata `rpc_request_type: oneway` sends a Bolt or Dubbo request that gets no
/// answer; the call returns as soon as the request is queued.
pub(crate) const REQUEST_TYPE_METADATA: &str = "rpc_request_type";

/// Idle channel connections are kept this long.
const CHANNEL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// Connect timeout for channels that dial a socket.
const CHANNEL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What one protocol's channel does with a call; [`Channel`] makes it a tower service.
pub(crate) trait Carrier: Send + Sync + 'static {
    /// Carries one call to the proxy core and back.
    fn call(
        &self,
        req: RpcRequest,
    ) -> impl std::future::Future<Output = Result<RpcResponse, InvokeError>> + Send;
}

/// A channel as a tower service. It is always ready: back-pressure is its pool's, where a
/// caller waits for a connection or writer slot until its deadline.
pub(crate) struct Channel<C>(Arc<C>);

impl<C> Channel<C> {
    pub(crate) fn new(carrier: C) -> Self {
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
/// channel of `spec` is reachable through `rpc_protocol`.
pub(crate) async fn build(
    cfg: &ChannelConfig,
    spec: &RuntimeConfigSpec,
    in_process: &InProcess,
    metrics: &Metrics,
) -> Result<InvokeService, String> {
    let default = build_one(cfg, spec, in_process, metrics).await?;
    let mut others = Vec::new();
    for c in spec
        .rpc
        .channels
        .iter()
        .filter(|c| c.protocol != cfg.protocol)
    {
        others.push((c.protocol, build_one(c, spec, in_process, metrics).await?));
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
    in_process: &InProcess,
    metrics: &Metrics,
) -> Result<InvokeService, String> {
    let dial = match cfg.target(spec)? {
        ChannelTarget::Named(name) => Dial::InProcess {
            listeners: in_process.clone(),
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
            }
        }
        ChannelTarget::Unix(path) => Dial::Unix(path),
    };
    let size = usize::try_from(cfg.size).unwrap_or(usize::MAX);
    Ok(match cfg.protocol {
        Protocol::Http => {
            InvokeService::new(Channel::new(http::HttpChannel::new(dial, size, metrics)))
        }
        Protocol::Bolt => {
            InvokeService::new(Channel::new(bolt::BoltChannel::new(dial, cfg, metrics)))
        }
        Protocol::Dubbo => {
            InvokeService::new(Channel::new(dubbo::DubboChannel::new(dial, cfg, metrics)))
        }
        Protocol::Auto => {
            return Err(format!(
                "channel {}: \"auto\" is only for listeners",
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

    fn call(&mut self, mut req: RpcRequest) -> Self::Future {
        let chosen = match req.headers.remove(PROTOCOL_METADATA) {
            None => Ok(self.default.clone()),
            Some(v) => {
                let wanted = v.to_str().unwrap_or_default().trim().to_ascii_lowercase();
                self.channels
                    .iter()
                    .find(|(p, _)| p.as_str() == wanted)
                    .map(|(_, svc)| svc.clone())
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            self.channels.iter().map(|(p, _)| p.as_str()).collect();
                        InvokeError::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "metadata {PROTOCOL_METADATA} {wanted:?} names no configured channel (configured: {})",
                                known.join(", ")
                            ),
                        )
                    })
            }
        };
        Box::pin(async move { chosen?.oneshot(req).await })
    }
}

/// Whether a call asks for a one-way request.
fn one_way(req: &mut RpcRequest) -> Result<bool, InvokeError> {
    match req.headers.remove(REQUEST_TYPE_METADATA) {
        None => Ok(false),
        Some(v) => match v.to_str().unwrap_or_default().trim() {
            "oneway" => Ok(true),
            "" | "sync" => Ok(false),
            other => Err(InvokeError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "metadata {REQUEST_TYPE_METADATA} must be \"oneway\" or \"sync\", not {other:?}"
                ),
            )),
        },
    }
}

/// The invoke error kind of an answer the proxy core generated itself.
fn proxy_error_kind(cause: ProxyError) -> ErrorKind {
    match cause {
        ProxyError::NoRoute => ErrorKind::NotFound,
        ProxyError::Timeout => ErrorKind::DeadlineExceeded,
        ProxyError::Overflow => ErrorKind::ResourceExhausted,
        ProxyError::BadRequest => ErrorKind::InvalidArgument,
        ProxyError::NoHealthyHost | ProxyError::ConnectFailure | ProxyError::Reset => {
            ErrorKind::Unavailable
        }
    }
}

/// The invoke error of a failed call on a multiplexed pool.
fn mux_error(protocol: &str, e: &MuxError) -> InvokeError {
    let kind = match e {
        MuxError::Pool(crate::pool::PoolError::Exhausted { .. }) | MuxError::Overflow { .. } => {
            ErrorKind::ResourceExhausted
        }
        MuxError::Timeout { .. } => ErrorKind::DeadlineExceeded,
        MuxError::Encode { .. } => ErrorKind::InvalidArgument,
        MuxError::Pool(_) | MuxError::Closed { .. } => ErrorKind::Unavailable,
    };
    InvokeError::new(kind, format!("{protocol} channel: {e}"))
}

#[cfg(test)]
mod tests {
    use ::http::{HeaderMap, HeaderValue, Method};
    use tokio::time::Instant;

    use super::*;

    fn answering(name: &'static str) -> InvokeService {
        InvokeService::new(tower::service_fn(move |req: RpcRequest| async move {
            assert!(
                !req.headers.contains_key(PROTOCOL_METADATA),
                "the choice is not forwarded"
            );
            Ok::<_, InvokeError>(RpcResponse {
                data: bytes::Bytes::from_static(name.as_bytes()),
                ..Default::default()
            })
        }))
    }

    fn req(protocol: Option<&'static str>) -> RpcRequest {
        let mut headers = HeaderMap::new();
        if let Some(p) = protocol {
            headers.insert(PROTOCOL_METADATA, HeaderValue::from_static(p));
        }
        RpcRequest {
            id: "svc".into(),
            method: "m".into(),
            content_type: String::new(),
            data: bytes::Bytes::new(),
            verb: Method::GET,
            query: String::new(),
            headers,
            deadline: Instant::now(),
        }
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
            (Some("bolt"), "bolt"),
            (Some(" HTTP "), "http"),
        ] {
            let resp = select
                .clone()
                .oneshot(req(protocol))
                .await
                .expect("answered");
            assert_eq!(resp.data, want.as_bytes(), "{protocol:?}");
        }
        let err = select
            .oneshot(req(Some("dubbo")))
            .await
            .expect_err("no dubbo channel");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.message(),
            "metadata rpc_protocol \"dubbo\" names no configured channel (configured: http, bolt)"
        );
    }

    #[test]
    fn one_way_metadata() {
        let mut r = req(None);
        assert!(!one_way(&mut r).expect("absent"));
        r.headers
            .insert(REQUEST_TYPE_METADATA, HeaderValue::from_static("oneway"));
        assert!(one_way(&mut r).expect("oneway"));
        assert!(
            !r.headers.contains_key(REQUEST_TYPE_METADATA),
            "not forwarded"
        );
        r.headers
            .insert(REQUEST_TYPE_METADATA, HeaderValue::from_static("later"));
        assert_eq!(
            one_way(&mut r).expect_err("unknown").kind(),
            ErrorKind::InvalidArgument
        );
    }
}
