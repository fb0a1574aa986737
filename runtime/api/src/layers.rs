//! Tower layers in front of the gRPC services, at the HTTP/2 request level: request ids, gRPC
//! metrics by path and status (and a debug line per call), and the answer for Layotto rpcs the
//! sidecar does not serve. (Setting and propagating the request id and the concurrency limit
//! come from tower-http and tower; see `api::serve`.)

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use outrigger_core::{GrpcLabels, Metrics, PathLabels};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::status::code_label;

/// gRPC paths kept as metric labels (static, so recording allocates nothing); anything else,
/// including rpcs answered UNIMPLEMENTED, is `other`.
const LABELLED_PATHS: [&str; 5] = [
    "/spec.proto.runtime.v1.Runtime/InvokeService",
    "/spec.proto.runtime.v1.Runtime/SayHello",
    "/dapr.proto.runtime.v1.Dapr/InvokeService",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Layotto rpcs this sidecar serves; the others answer UNIMPLEMENTED naming the API.
const SERVED: [&str; 2] = ["SayHello", "InvokeService"];

/// Request ids in UUID v4 form (`x-request-id`, when the caller sent none), from a fast
/// generator rather than the operating system's: they correlate log lines, and need not be
/// unpredictable.
#[derive(Clone, Copy, Default)]
pub(crate) struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = fastrand::u128(..).to_be_bytes();
        // Version 4, variant RFC 4122.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
            at += 2;
        }
        HeaderValue::from_bytes(&out).ok().map(RequestId::new)
    }
}

/// When the call arrived, stamped by the outermost layer: deadlines are measured from here, as
/// tonic measures the caller's `grpc-timeout`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival(pub(crate) Instant);

/// Records every gRPC call by path and status code, and its latency.
#[derive(Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Metrics,
    series: Arc<PathSeries>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Metrics) -> Self {
        GrpcMetricsLayer {
            metrics,
            series: Arc::default(),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            series: self.series.clone(),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
    series: Arc<PathSeries>,
}

/// The latency histogram and the `ok` counter of each labelled path (and `other`), each looked
/// up in its family once, when it is first recorded on, so a call that succeeds hashes no labels
/// and takes no family lock. The handles are the families' own series; another code's counter
/// is looked up in its family.
#[derive(Default)]
struct PathSeries {
    duration: [OnceLock<Histogram>; LABELLED_PATHS.len() + 1],
    ok: [OnceLock<Counter>; LABELLED_PATHS.len() + 1],
}

impl PathSeries {
    fn duration(&self, metrics: &Metrics, path: usize) -> &Histogram {
        self.duration[path].get_or_init(|| {
            let labels = PathLabels {
                path: path_name(path),
            };
            metrics.grpc_duration.get_or_create(&labels).clone()
        })
    }

    fn ok(&self, metrics: &Metrics, path: usize) -> &Counter {
        self.ok[path].get_or_init(|| {
            let labels = GrpcLabels {
                path: path_name(path),
                code: code_label(tonic::Code::Ok),
            };
            metrics.grpc_requests.get_or_create(&labels).clone()
        })
    }
}

/// The index of `path` in [`LABELLED_PATHS`], or one past its end for `other`.
fn path_index(path: &str) -> usize {
    LABELLED_PATHS
        .iter()
        .position(|p| *p == path)
        .unwrap_or(LABELLED_PATHS.len())
}

fn path_name(index: usize) -> &'static str {
    LABELLED_PATHS.get(index).copied().unwrap_or("other")
}

impl<S, B, RB> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let path = path_index(req.uri().path());
        let start = Instant::now();
        req.extensions_mut().insert(Arrival(start));
        // Named in the debug line; only looked at when debug logs are on.
        let request_id = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            req.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        });
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        let series = self.series.clone();
        Box::pin(async move {
            let result = fut.await;
            // Unary errors are trailers-only responses: the status is in the headers. A
            // response without it carries OK in its trailers.
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unavailable,
            };
            series
                .duration(&metrics, path)
                .observe(start.elapsed().as_secs_f64());
            if code == tonic::Code::Ok {
                series.ok(&metrics, path).inc();
            } else {
                metrics
                    .grpc_requests
                    .get_or_create(&GrpcLabels {
                        path: path_name(path),
                        code: code_label(code),
                    })
                    .inc();
            }
            if let Some(request_id) = request_id {
                tracing::debug!(path = path_name(path), ?code, %request_id, elapsed_us = start.elapsed().as_micros() as u64, "grpc call");
            }
            result
        })
    }
}

/// Answers Layotto rpcs other than those in [`SERVED`] with UNIMPLEMENTED and a message naming
/// the API, instead of the generated stub's generic text.
#[derive(Clone, Copy, Default)]
pub(crate) struct UnimplementedLayer;

impl<S> Layer<S> for UnimplementedLayer {
    type Service = Unimplemented<S>;
    fn layer(&self, inner: S) -> Unimplemented<S> {
        Unimplemented { inner }
    }
}

/// See [`UnimplementedLayer`].
#[derive(Clone)]
pub(crate) struct Unimplemented<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Unimplemented<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::Ready<Result<Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(method) = req
            .uri()
            .path()
            .strip_prefix("/spec.proto.runtime.v1.Runtime/")
            && !SERVED.contains(&method)
        {
            let status = tonic::Status::unimplemented(format!(
                "spec.proto.runtime.v1.Runtime/{method} is not implemented by outrigger: \
                     this sidecar serves {} (Layotto API) and InvokeService (Dapr API)",
                SERVED.join(" and ")
            ));
            return futures_util::future::Either::Right(futures_util::future::ready(Ok(
                status.into_http()
            )));
        }
        futures_util::future::Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use tower_test::mock;

    use super::*;

    fn grpc_answer(code: Option<i32>) -> Response<tonic::body::Body> {
        let mut resp = Response::new(tonic::body::Body::empty());
        if let Some(c) = code {
            resp.headers_mut()
                .insert("grpc-status", c.to_string().parse().expect("value"));
        }
        resp
    }

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    #[tokio::test]
    async fn calls_are_counted_by_path_and_code_and_stamped_with_their_arrival() {
        let metrics = Metrics::new();
        let (svc, mut handle) = mock::pair::<Request<()>, Response<tonic::body::Body>>();
        let mut svc = GrpcMetricsLayer::new(metrics.clone()).layer(svc);
        for (path, code) in [
            ("/spec.proto.runtime.v1.Runtime/InvokeService", None),
            ("/spec.proto.runtime.v1.Runtime/InvokeService", Some(0)),
            ("/dapr.proto.runtime.v1.Dapr/InvokeService", Some(14)),
            ("/some.Other/Thing", Some(12)),
        ] {
            handle.allow(1);
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .expect("ready");
            let call = svc.call(request(path));
            let (req, send) = handle.next_request().await.expect("forwarded");
            assert!(
                req.extensions().get::<Arrival>().is_some(),
                "the arrival time travels with the request"
            );
            send.send_response(grpc_answer(code));
            call.await.expect("answered");
        }
        let text = metrics.encode();
        for line in [
            "outrigger_grpc_requests_total{path=\"/spec.proto.runtime.v1.Runtime/InvokeService\",code=\"ok\"} 2",
            "outrigger_grpc_request_duration_seconds_count{path=\"/spec.proto.runtime.v1.Runtime/InvokeService\"} 2",
            "outrigger_grpc_request_duration_seconds_count{path=\"/dapr.proto.runtime.v1.Dapr/InvokeService\"} 1",
            "outrigger_grpc_requests_total{path=\"/dapr.proto.runtime.v1.Dapr/InvokeService\",code=\"unavailable\"} 1",
            "outrigger_grpc_requests_total{path=\"other\",code=\"unimplemented\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("path=\"other\",code=\"ok\""),
            "no series for a code never counted:\n{text}"
        );
    }

    #[tokio::test]
    async fn layotto_rpcs_not_served_answer_unimplemented_naming_the_api() {
        let (svc, mut handle) = mock::pair::<Request<()>, Response<tonic::body::Body>>();
        let mut svc = UnimplementedLayer.layer(svc);
        handle.allow(1);
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("ready");
        let resp = svc
            .call(request("/spec.proto.runtime.v1.Runtime/GetState"))
            .await
            .expect("answered here");
        let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(
            status.message().starts_with(
                "spec.proto.runtime.v1.Runtime/GetState is not implemented by outrigger"
            ),
            "{}",
            status.message()
        );

        // Served rpcs go through.
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("ready");
        let call = svc.call(request("/spec.proto.runtime.v1.Runtime/InvokeService"));
        let (_, send) = handle.next_request().await.expect("forwarded");
        send.send_response(grpc_answer(None));
        call.await.expect("answered by the service");
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped_and_differ() {
        let req = Request::new(());
        let mut make = FastRequestId;
        let a = make.make_request_id(&req).expect("id");
        let b = make.make_request_id(&req).expect("id");
        let a = a.header_value().to_str().expect("ascii").to_owned();
        assert_ne!(a, b.header_value().to_str().expect("ascii"));
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{a}"
        );
        assert!(groups[2].starts_with('4'), "version 4: {a}");
        assert!(
            matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
            "variant: {a}"
        );
        assert!(
            a.bytes()
                .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
