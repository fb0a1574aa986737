//! Streaming pass-through in the proxy core: a whole HTTP/2 request (a native gRPC call that
//! carried `dapr-app-id`) is matched against the pass-through route table — the one of the
//! listener the `http` channel reaches by name — where only routes to `http2` clusters take it,
//! seeing the app id as header `id` and the gRPC path as the path; then it goes to one host of
//! the cluster on its h2c connection, its body and trailers streaming both ways. A streamed
//! request is tried once: its body cannot be replayed. Not for whole-body HTTP/1.1, Bolt or
//! Dubbo requests (see `http`, `xproto`).

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use outrigger_config::Protocol;
use outrigger_core::{
    Cause, Failure, LabelStr, Passthrough, PassthroughFuture, ProxyError, ProxyLabels, StreamBody,
    strip_hop_by_hop,
};

use crate::{cluster::UpstreamPool, http::status, route::RequestView, snapshot::Shared};

/// The metric label of pass-through requests' listener.
const LISTENER_LABEL: &str = "passthrough";

/// What the route matchers see of a pass-through request.
struct H2View<'a> {
    app_id: &'a str,
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
}

impl RequestView for H2View<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Http2
    }

    fn method(&self) -> Option<&str> {
        Some(self.method.as_str())
    }

    fn path(&self) -> Option<&str> {
        Some(self.path)
    }

    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        if name == "id" {
            return pred(self.app_id);
        }
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *pred))
    }
}

/// The proxy core's [`Passthrough`].
#[derive(Clone)]
pub struct Streams {
    pub(crate) shared: Arc<Shared>,
}

impl Passthrough for Streams {
    fn forward(
        &self,
        app_id: &str,
        req: Request<StreamBody>,
        timeout: Option<Duration>,
    ) -> PassthroughFuture {
        let shared = self.shared.clone();
        let app_id = app_id.to_owned();
        Box::pin(async move { forward(&shared, &app_id, req, timeout).await })
    }
}

async fn forward(
    shared: &Shared,
    app_id: &str,
    mut req: Request<StreamBody>,
    timeout: Option<Duration>,
) -> Result<Response<StreamBody>, ProxyError> {
    let snapshot = shared.live.load_full();
    let Some(table) = &snapshot.passthrough else {
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route for app {app_id}: proxying needs an http channel whose listener is a listener name in the config"
            ),
        );
        record(shared, "".into(), status(e.cause()));
        return Err(e);
    };
    let view = H2View {
        app_id,
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    let Some(route) = table.find_view(&view) else {
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route to an http2 cluster in table {} matches {} (id {app_id})",
                table.name,
                req.uri().path()
            ),
        );
        record(shared, "".into(), status(e.cause()));
        return Err(e);
    };
    let cluster = &route.cluster;
    let cluster_label = LabelStr::from(&cluster.name);
    let deadline = route.deadline(timeout);
    let allowed = deadline.saturating_duration_since(tokio::time::Instant::now());
    let Some(host) = cluster.pick() else {
        let e = ProxyError::new(
            Cause::NoHealthyHost,
            format!("cluster {} has no resolved hosts", cluster.name),
        );
        record(shared, cluster_label, status(e.cause()));
        return Err(e);
    };
    let UpstreamPool::Http2(pool) = &host.pool else {
        // Routes only take requests of their cluster's protocol; this is a bug guard.
        return Err(ProxyError::new(
            Cause::NoRoute,
            format!("cluster {} does not speak http2", cluster.name),
        ));
    };
    // `te: trailers` is the one hop-by-hop header HTTP/2 keeps, and gRPC servers require it.
    let te_trailers = req
        .headers()
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(req.headers_mut());
    if te_trailers {
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    // The connection's own authority, as a client dialling the host would send it.
    if let Ok(uri) = http::Uri::builder()
        .scheme("http")
        .authority(host.addr.to_string())
        .path_and_query(
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        )
        .build()
    {
        *req.uri_mut() = uri;
    }
    let addr = host.addr;
    let result = pool.send(req, deadline).await.map_err(|e| {
        let cause = e.cause();
        let message = if cause == Cause::Timeout {
            format!(
                "cluster {} host {addr}: no response headers within {} ms",
                cluster.name,
                allowed.as_millis()
            )
        } else {
            format!("cluster {} host {addr}: {e}", cluster.name)
        };
        ProxyError::new(cause, message)
    });
    drop(host);
    let code = match &result {
        Ok(resp) => resp.status(),
        Err(e) => status(e.cause()),
    };
    record(shared, cluster_label, code);
    result
}

fn record(shared: &Shared, cluster: LabelStr, status: StatusCode) {
    shared
        .metrics
        .proxy_requests
        .get_or_create(&ProxyLabels {
            listener: LabelStr::Static(LISTENER_LABEL),
            cluster,
            status: status.as_u16(),
        })
        .inc();
}
