//! The APIs applications call. On the gRPC port: Layotto's `spec.proto.runtime.v1.Runtime` and
//! Dapr's `dapr.proto.runtime.v1.Dapr` (`InvokeService` on both, served by one handler;
//! `SayHello` on Layotto's), with server reflection, and Dapr-style proxying of any other call
//! carrying `dapr-app-id`, behind tower layers in data-path order. On the HTTP port: Dapr's HTTP
//! API (health, `/v1.0/invoke`). A call is decoded into an `RpcRequest` with its deadline, handed
//! to the live invoker, and its outcome mapped to a gRPC or HTTP answer. Not for what happens
//! after the invoker (filters, channels).

mod grpc_proxy;
mod http_api;
mod incoming;
mod layers;
mod status;
mod token;
mod unary;

pub use self::{
    grpc_proxy::APP_ID_METADATA,
    http_api::{Health, HttpApi, serve_http_api},
    token::{API_TOKEN_HEADER, ApiToken},
};

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Method};
pub(crate) use outrigger_core::grpc_timeout;
use outrigger_core::{
    AccessRecord, AttrValue, KindLabels, LabelStr, Metrics, Observability, Passthrough,
    ServerLimits, Shutdown, Span, SpanKind, TRACEPARENT, Workers, is_hop_by_hop, strip_hop_by_hop,
};
use outrigger_invoke::{ErrorKind, InvokeError, Invokers, RpcRequest, deadline_after};
use outrigger_proto::{
    dapr::proto::{common::v1 as dapr_common, runtime::v1 as dapr},
    spec::proto::runtime::v1 as layotto,
};
use tokio::{
    net::{TcpListener, UnixListener},
    runtime::Handle,
    time::Instant,
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

/// gRPC metadata key that overrides the default request timeout, in milliseconds.
pub const TIMEOUT_METADATA: &str = "rpc_request_timeout";

/// How much earlier than the caller's own gRPC deadline the sidecar gives up (at most 5%).
const CALLER_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// [`TIMEOUT_METADATA`] and `grpc-timeout` as header names.
const TIMEOUT_METADATA_NAME: http::HeaderName = http::HeaderName::from_static(TIMEOUT_METADATA);
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The gRPC services that serve `InvokeService`, as their server spans name them.
const LAYOTTO_SERVICE: &str = "spec.proto.runtime.v1.Runtime";
const DAPR_SERVICE: &str = "dapr.proto.runtime.v1.Dapr";

/// Where the API accepts connections.
pub enum ApiListener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix socket (the file is removed on shutdown).
    Unix(UnixListener, PathBuf),
}

impl ApiListener {
    /// Binds `host:port` once per worker (see [`Workers::bind`]) or `unix:///path` once (a stale
    /// socket file at the path is replaced), each listener paired with the runtime that accepts
    /// on it.
    pub async fn bind(address: &str, workers: &Workers) -> std::io::Result<Vec<(Self, Handle)>> {
        let first = workers.handles()[0].clone();
        if let Some(path) = address.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            let listener = {
                let _entered = first.enter();
                UnixListener::bind(&path)?
            };
            return Ok(vec![(ApiListener::Unix(listener, path), first)]);
        }
        Ok(workers
            .bind(address)
            .await?
            .into_iter()
            .map(ApiListener::Tcp)
            .zip(workers.handles().iter().cloned())
            .collect())
    }

    /// The bound address, for logs.
    pub fn describe(&self) -> String {
        match self {
            ApiListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp (unknown: {e})"), |a| a.to_string()),
            ApiListener::Unix(_, p) => format!("unix://{}", p.display()),
        }
    }
}

/// The handler behind both APIs.
#[derive(Clone)]
pub struct RuntimeApi {
    invokers: Arc<dyn Invokers>,
    metrics: Metrics,
    obs: Observability,
}

/// A call decoded from either API's `InvokeServiceRequest`.
struct Call {
    id: String,
    method: String,
    data: Option<prost_types::Any>,
    content_type: String,
    verb: i32,
    query: String,
}

/// Both APIs' `InvokeServiceRequest`s have the same fields under different types.
macro_rules! call_from {
    ($request:ty) => {
        impl From<$request> for Call {
            fn from(r: $request) -> Self {
                let m = r.message.unwrap_or_default();
                let ext = m.http_extension.unwrap_or_default();
                Self {
                    id: r.id,
                    method: m.method,
                    data: m.data,
                    content_type: m.content_type,
                    verb: ext.verb,
                    query: ext.querystring,
                }
            }
        }
    };
}
call_from!(layotto::InvokeServiceRequest);
call_from!(dapr::InvokeServiceRequest);

/// A successful call's answer, before it is wrapped in either API's response type.
struct Answer {
    data: Option<prost_types::Any>,
    content_type: String,
    metadata: MetadataMap,
    /// The upstream's status (HTTP, Bolt or Dubbo).
    status: u16,
}

const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const BYTES_VALUE: &str = "type.googleapis.com/google.protobuf.BytesValue";

/// How the caller packed the payload into `Any`, so the answer is packed the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packing {
    /// `Any.value` is the payload (Layotto's and Dapr's SDKs; any other type URL).
    Raw,
    /// A `google.protobuf.StringValue` or `BytesValue` holds the payload, as JSON-speaking
    /// clients such as grpcurl write it.
    Wrapper,
}

/// The payload of a request's `Any`.
fn unpack(any: Option<prost_types::Any>) -> Result<(Bytes, Packing), InvokeError> {
    let Some(any) = any else {
        return Ok((Bytes::new(), Packing::Raw));
    };
    let bad = |t: &str, e: prost::DecodeError| {
        InvokeError::new(
            ErrorKind::InvalidArgument,
            format!("data is not a valid {t}: {e}"),
        )
    };
    match any.type_url.as_str() {
        STRING_VALUE => <String as prost::Message>::decode(any.value.as_slice())
            .map(|s| (Bytes::from(s), Packing::Wrapper))
            .map_err(|e| bad("google.protobuf.StringValue", e)),
        BYTES_VALUE => <Bytes as prost::Message>::decode(any.value.as_slice())
            .map(|b| (b, Packing::Wrapper))
            .map_err(|e| bad("google.protobuf.BytesValue", e)),
        _ => Ok((Bytes::from(any.value), Packing::Raw)),
    }
}

/// The answer's `Any`: raw, or in the wrapper the caller used (a string when it is UTF-8).
fn pack(data: Bytes, packing: Packing) -> Option<prost_types::Any> {
    Some(match packing {
        Packing::Raw => prost_types::Any {
            type_url: String::new(),
            value: data.into(),
        },
        Packing::Wrapper => match std::str::from_utf8(&data) {
            Ok(s) => prost_types::Any {
                type_url: STRING_VALUE.to_owned(),
                value: prost::Message::encode_to_vec(&s.to_owned()),
            },
            Err(_) => prost_types::Any {
                type_url: BYTES_VALUE.to_owned(),
                value: prost::Message::encode_to_vec(&data),
            },
        },
    })
}

/// The HTTP verb of `HTTPExtension.verb` (NONE means GET).
fn verb(v: i32) -> Option<Method> {
    Some(match v {
        0 | 1 => Method::GET,
        2 => Method::HEAD,
        3 => Method::POST,
        4 => Method::PUT,
        5 => Method::DELETE,
        6 => Method::CONNECT,
        7 => Method::OPTIONS,
        8 => Method::TRACE,
        9 => Method::PATCH,
        _ => return None,
    })
}

/// Metadata that is about the gRPC call itself, never forwarded as a header.
/// The call's metadata that goes upstream as headers: all but gRPC's own, the sidecar's token and
/// timeout, and hop-by-hop headers. Built in one pass: taking a few names out of the map costs
/// more than copying the rest (a gRPC call always carries `te` and `content-type`).
fn forwarded(mut metadata: HeaderMap) -> HeaderMap {
    if metadata.contains_key(http::header::CONNECTION) {
        // Rare (HTTP/2 forbids it): also drops the headers it names.
        strip_hop_by_hop(&mut metadata);
    }
    let mut out = HeaderMap::with_capacity(metadata.len());
    let mut current = None;
    for (name, value) in metadata {
        // A name comes with its first value only; the next ones are its other values.
        if let Some(name) = name {
            current = (forwardable(name.as_str()) && !is_hop_by_hop(&name)).then_some(name);
        }
        if let Some(name) = &current {
            out.append(name.clone(), value);
        }
    }
    out
}

fn forwardable(name: &str) -> bool {
    !(name.starts_with("grpc-")
        || name == API_TOKEN_HEADER
        || name == TIMEOUT_METADATA
        || name == "content-type"
        || name == "content-length"
        || name == "te"
        || name == "host")
}

impl RuntimeApi {
    /// A handler invoking through the live invoker `invokers` gives.
    pub fn new(invokers: Arc<dyn Invokers>, metrics: Metrics) -> Self {
        Self {
            invokers,
            metrics,
            obs: Observability::default(),
        }
    }

    /// The same handler, leaving access log lines and continuing trace context as `obs` says
    /// (for both APIs).
    pub fn observed(mut self, obs: Observability) -> Self {
        self.obs = obs;
        self
    }

    async fn invoke(
        &self,
        service: &'static str,
        call: Call,
        metadata: MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Answer, Status> {
        let received = extensions.get::<layers::Arrival>().map(|a| a.0);
        // The server span starts when the call arrived.
        let span = self
            .obs
            .span(|| metadata.get(TRACEPARENT).map(|v| v.as_bytes()))
            .map(|s| match received {
                Some(at) => s.since(at),
                None => s,
            });
        let recorder = self.obs.recorder(span.as_ref());
        if self.obs.access_log.is_none() && recorder.is_none() {
            return self.invoke_outer(call, metadata, received, span).await;
        }
        let arrival = received.unwrap_or_else(Instant::now);
        // The wall-clock time of arrival, from the monotonic time since.
        let start = SystemTime::now()
            .checked_sub(arrival.elapsed())
            .unwrap_or_else(SystemTime::now);
        let mut line = AccessRecord::new("grpc", start);
        line.trace_id = span.map(|s| s.context.trace_id);
        line.target.clone_from(&call.id);
        line.method.clone_from(&call.method);
        line.bytes_in = call.data.as_ref().map_or(0, |a| a.value.len() as u64);
        let result = self.invoke_outer(call, metadata, Some(arrival), span).await;
        let code = match &result {
            Ok(a) => {
                line.status = Some(u32::from(a.status));
                line.bytes_out = a.data.as_ref().map_or(0, |d| d.value.len() as u64);
                tonic::Code::Ok
            }
            Err(status) => status.code(),
        };
        line.grpc_status = Some(code as i32);
        line.duration = arrival.elapsed();
        if let (Some(sink), Some(span)) = (recorder, &span) {
            let mut attrs = vec![
                ("rpc.system", AttrValue::from("grpc")),
                ("rpc.service", service.into()),
                ("rpc.method", "InvokeService".into()),
                ("rpc.grpc.status_code", i64::from(code as i32).into()),
                ("outrigger.target_id", line.target.clone().into()),
                ("outrigger.method", line.method.clone().into()),
            ];
            if let Some(status) = line.status {
                attrs.push(("outrigger.status", i64::from(status).into()));
            }
            let error = result.as_ref().err().map(|s| {
                attrs.push(("error.type", format!("{:?}", s.code()).into()));
                s.message().to_owned()
            });
            sink.record(span.finish(
                SpanKind::Server,
                format!("{service}/InvokeService"),
                attrs,
                error,
            ));
        }
        if let Some(log) = &self.obs.access_log {
            log.log(line);
        }
        result
    }

    async fn invoke_outer(
        &self,
        call: Call,
        metadata: MetadataMap,
        received: Option<Instant>,
        span: Option<Span>,
    ) -> Result<Answer, Status> {
        let (id, method) = (call.id.clone(), call.method.clone());
        let result = self.invoke_inner(call, metadata, received, span).await;
        result.map_err(|e| {
            self.metrics
                .invoke_errors
                .get_or_create(&KindLabels {
                    kind: e.kind().as_str().to_owned(),
                })
                .inc();
            tracing::debug!(%id, %method, error = %e, "invoke failed");
            status::to_status(&id, &method, &e)
        })
    }

    async fn invoke_inner(
        &self,
        call: Call,
        metadata: MetadataMap,
        received: Option<Instant>,
        span: Option<Span>,
    ) -> Result<Answer, InvokeError> {
        let invalid = |m: &str| InvokeError::new(ErrorKind::InvalidArgument, m.to_owned());
        if call.id.is_empty() {
            return Err(invalid("id is required"));
        }
        if call.method.is_empty() {
            return Err(invalid("message.method is required"));
        }
        let verb = verb(call.verb).ok_or_else(|| {
            InvokeError::new(
                ErrorKind::InvalidArgument,
                format!("http_extension.verb {} is not a known HTTP verb", call.verb),
            )
        })?;
        let (data, packing) = unpack(call.data)?;
        let invoker = self.invokers.current();
        let now = received.unwrap_or_else(Instant::now);
        // Looked up by names parsed once, not per call.
        let metadata = metadata.into_headers();
        let timeout = match metadata.get(&TIMEOUT_METADATA_NAME) {
            None => invoker.default_timeout(),
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(invalid(
                        "metadata rpc_request_timeout must be a positive number of milliseconds",
                    ));
                }
            },
        };
        let mut deadline = deadline_after(now, timeout);
        if let Some(t) = metadata
            .get(&GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
        {
            // tonic's server enforces grpc-timeout too, answering CANCELLED. Ending our side a
            // moment earlier makes the caller get DEADLINE_EXCEEDED with a message naming the
            // target; the caller gives up at its deadline anyway.
            let margin = (t / 20).min(CALLER_DEADLINE_MARGIN);
            deadline = deadline.min(deadline_after(now, t.saturating_sub(margin)));
        }
        let mut headers = forwarded(metadata);
        if let Some(span) = span {
            // Upstreams see the sidecar's span as the parent (an HTTP header, a Bolt header,
            // a Dubbo attachment).
            span.context.inject(&mut headers);
        }
        let mut req = RpcRequest::new(call.id, call.method, deadline);
        req.content_type = call.content_type;
        req.data = data;
        req.verb = verb;
        req.query = call.query;
        req.headers = headers;
        req.take_control_metadata()?;
        let invoked = AssertUnwindSafe(invoker.invoke(req)).catch_unwind().await;
        let resp = match invoked {
            Ok(r) => r?,
            Err(_) => {
                tracing::error!("invoke panicked; the call fails, the sidecar keeps serving");
                return Err(InvokeError::new(
                    ErrorKind::Internal,
                    "internal error (panic) in the sidecar",
                ));
            }
        };
        let mut metadata = MetadataMap::new();
        for (name, value) in &resp.headers {
            if name == http::header::CONTENT_TYPE || !forwardable(name.as_str()) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(name.as_str().as_bytes()),
                value
                    .to_str()
                    .map(|s| s.parse::<tonic::metadata::AsciiMetadataValue>()),
            ) && let Ok(v) = v
            {
                metadata.append(k, v);
            }
        }
        Ok(Answer {
            data: pack(resp.data, packing),
            content_type: resp.content_type,
            metadata,
            status: resp.status.as_u16(),
        })
    }
}

fn respond<T>(msg: T, metadata: MetadataMap) -> Response<T> {
    let mut resp = Response::new(msg);
    *resp.metadata_mut() = metadata;
    resp
}

#[tonic::async_trait]
impl layotto::runtime_server::Runtime for RuntimeApi {
    async fn say_hello(
        &self,
        request: Request<layotto::SayHelloRequest>,
    ) -> Result<Response<layotto::SayHelloResponse>, Status> {
        let req = request.into_inner();
        let who = if req.name.is_empty() {
            &req.service_name
        } else {
            &req.name
        };
        let hello = if who.is_empty() {
            "greetings from outrigger".to_owned()
        } else {
            format!("greetings from outrigger, {who}")
        };
        Ok(Response::new(layotto::SayHelloResponse {
            hello,
            data: req.data,
        }))
    }

    async fn invoke_service(
        &self,
        request: Request<layotto::InvokeServiceRequest>,
    ) -> Result<Response<layotto::InvokeResponse>, Status> {
        let (metadata, extensions, msg) = request.into_parts();
        let a = self
            .invoke(LAYOTTO_SERVICE, msg.into(), metadata, &extensions)
            .await?;
        Ok(respond(
            layotto::InvokeResponse {
                data: a.data,
                content_type: a.content_type,
            },
            a.metadata,
        ))
    }
}

#[tonic::async_trait]
impl dapr::dapr_server::Dapr for RuntimeApi {
    async fn invoke_service(
        &self,
        request: Request<dapr::InvokeServiceRequest>,
    ) -> Result<Response<dapr_common::InvokeResponse>, Status> {
        let (metadata, extensions, msg) = request.into_parts();
        let a = self
            .invoke(DAPR_SERVICE, msg.into(), metadata, &extensions)
            .await?;
        Ok(respond(
            dapr_common::InvokeResponse {
                data: a.data,
                content_type: a.content_type,
            },
            a.metadata,
        ))
    }
}

/// Settings of the gRPC server (from `grpc` in the config).
#[derive(Clone)]
pub struct GrpcSettings {
    /// Largest message decoded or encoded.
    pub max_message_bytes: usize,
    /// Calls served at once; more wait.
    pub max_concurrent_requests: usize,
    /// Connections served at once; one more is closed as it arrives.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// The token every call must carry in `dapr-api-token`; none checked when `None`.
    pub api_token: Option<ApiToken>,
    /// Where calls carrying `dapr-app-id` go; without it they reach the services (and most
    /// answer UNIMPLEMENTED).
    pub passthrough: Option<Arc<dyn Passthrough>>,
}

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take, so that a
/// peer that vanished without closing frees its connection.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves both APIs and reflection on every listener, each on its runtime, until `shutdown` is
/// signalled, then stops accepting and lets in-flight calls finish; the connection cap and the
/// concurrency limit are shared by all of them.
pub async fn serve(
    listeners: Vec<(ApiListener, Handle)>,
    api: RuntimeApi,
    grpc: GrpcSettings,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let max = grpc.max_message_bytes;
    // Both reflection versions: grpcurl and many tools still speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(outrigger_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().ok();
    let reflection_v1alpha = reflection().build_v1alpha().ok();
    let layotto_svc = layotto::runtime_server::RuntimeServer::new(api.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let dapr_svc = dapr::dapr_server::DaprServer::new(api.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    // In data-path order: request id, metrics (and a debug line), the API token (checked, and
    // removed from every call), concurrency limit, calls for another app (`dapr-app-id`)
    // proxied, `InvokeService` served on the lean path, then the answer for rpcs not served;
    // message size limits sit on each service (and the lean path).
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(layers::FastRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(layers::GrpcMetricsLayer::new(api.metrics.clone()))
        .layer(token::GrpcTokenLayer {
            token: grpc.api_token.clone(),
        })
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            grpc.max_concurrent_requests,
        ))
        .layer(grpc_proxy::GrpcProxyLayer {
            passthrough: grpc.passthrough.clone(),
        })
        .layer(unary::UnaryInvokeLayer {
            api: api.clone(),
            max_message_bytes: max,
        })
        .layer(layers::UnimplementedLayer);
    let mut router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(grpc.max_concurrent_streams))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(layers)
        .add_service(layotto_svc)
        .add_service(dapr_svc);
    if let Some(r) = reflection_v1 {
        router = router.add_service(r);
    }
    if let Some(r) = reflection_v1alpha {
        router = router.add_service(r);
    }
    // One connection cap for every accepting socket.
    let limits = ServerLimits::new(
        LabelStr::Static("grpc"),
        grpc.max_connections,
        Duration::ZERO,
        &api.metrics,
    );
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|(listener, worker)| {
            let (router, limits) = (router.clone(), limits.clone());
            let signal = shutdown.clone().signalled_owned();
            worker.spawn(async move {
                match listener {
                    ApiListener::Tcp(l) => {
                        router
                            .serve_with_incoming_shutdown(incoming::accept(l, limits), signal)
                            .await
                    }
                    ApiListener::Unix(l, path) => {
                        let r = router
                            .serve_with_incoming_shutdown(incoming::accept(l, limits), signal)
                            .await;
                        let _ = std::fs::remove_file(path);
                        r
                    }
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => tracing::error!(error = %e, "a grpc server task ended abnormally"),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_metadata_keeps_what_the_app_sent() {
        let mut m = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "1S"),
            ("user-agent", "grpc-go"),
            ("x-tenant", "a"),
            ("rpc_request_timeout", "100"),
        ] {
            m.append(http::HeaderName::from_static(k), k_v(v));
        }
        m.append("x-tenant", k_v("b"));
        let out = forwarded(m);
        assert_eq!(
            out.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["user-agent", "x-tenant"]
        );
        assert_eq!(
            out.get_all("x-tenant").iter().collect::<Vec<_>>(),
            ["a", "b"],
            "every value of a name"
        );
        let mut m = HeaderMap::new();
        m.append("connection", k_v("x-secret"));
        m.append("x-secret", k_v("1"));
        m.append("x-kept", k_v("1"));
        let out = forwarded(m);
        assert_eq!(
            out.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    fn k_v(v: &'static str) -> http::HeaderValue {
        http::HeaderValue::from_static(v)
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("10Q"), None);
        assert_eq!(
            grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(
            grpc_timeout("18446744073709551615S"),
            None,
            "more than 8 digits"
        );
        assert_eq!(grpc_timeout("123456789m"), None, "more than 8 digits");
        assert_eq!(grpc_timeout("-5S"), None);
        assert_eq!(grpc_timeout("+5S"), None);
    }

    #[test]
    fn payload_packing_round_trips() {
        let raw = prost_types::Any {
            type_url: String::new(),
            value: b"{}".to_vec(),
        };
        assert_eq!(
            unpack(Some(raw)).expect("raw"),
            (Bytes::from_static(b"{}"), Packing::Raw)
        );
        let typed = prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1, 2],
        };
        assert_eq!(
            unpack(Some(typed)).expect("typed").1,
            Packing::Raw,
            "only Any.value is forwarded"
        );
        let wrapped = pack(Bytes::from_static(b"hello"), Packing::Wrapper).expect("packed");
        assert_eq!(wrapped.type_url, STRING_VALUE);
        assert_eq!(
            unpack(Some(wrapped)).expect("string"),
            (Bytes::from_static(b"hello"), Packing::Wrapper)
        );
        let binary = pack(Bytes::from_static(&[0xff, 0x00]), Packing::Wrapper).expect("packed");
        assert_eq!(binary.type_url, BYTES_VALUE);
        assert_eq!(
            unpack(Some(binary)).expect("bytes").0,
            Bytes::from_static(&[0xff, 0x00])
        );
        let broken = prost_types::Any {
            type_url: STRING_VALUE.into(),
            value: vec![0x0a, 0x05],
        };
        let err = unpack(Some(broken)).expect_err("truncated");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    proptest::proptest! {
        /// Whatever a caller puts in `grpc-timeout`: no panic, at most 8 digits honoured, and a
        /// deadline computed from it never overflows.
        #[test]
        fn grpc_timeout_never_panics(v in "\\PC{0,24}", digits in "[0-9]{1,12}", unit in "[HMSmun]") {
            let _ = grpc_timeout(&v);
            let parsed = grpc_timeout(&format!("{digits}{unit}"));
            proptest::prop_assert_eq!(parsed.is_some(), digits.len() <= 8);
            if let Some(t) = parsed {
                let _ = deadline_after(Instant::now(), t);
            }
        }
    }

    #[test]
    fn verbs_follow_the_proto_enum() {
        assert_eq!(verb(0), Some(Method::GET), "NONE means GET");
        assert_eq!(verb(3), Some(Method::POST));
        assert_eq!(verb(9), Some(Method::PATCH));
        assert_eq!(verb(10), None);
    }
}
