//! Test support: a recording HTTP/1.1 upstream on 127.0.0.1:0, an in-process sidecar on free
//! ports, and real tonic clients for both APIs.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod collector;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use outrigger_proto::{
    dapr::proto::{common::v1 as dapr_common, runtime::v1::dapr_client::DaprClient},
    spec::proto::runtime::v1::{
        CommonInvokeRequest, HttpExtension, InvokeServiceRequest, runtime_client::RuntimeClient,
    },
};
use outrigger_runtime::{Metrics, Options, Sidecar};
use parking_lot::Mutex;
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::Channel;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![("content-type", "application/json".to_owned())],
            body: Bytes::from(body.to_owned()),
            delay: Duration::ZERO,
        }
    }
}

type Behaviour = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A real HTTP/1.1 upstream that records what it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// Requests received so far; [`Upstream::received`] waits on it.
    arrivals: tokio::sync::watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(behaviour: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let behaviour: Behaviour = Arc::new(behaviour);
        let (arrived, arrivals) = tokio::sync::watch::channel(0usize);
        let arrived = Arc::new(arrived);
        let task = {
            let (seen, in_flight, max_in_flight) =
                (seen.clone(), in_flight.clone(), max_in_flight.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (seen, in_flight, max_in_flight, behaviour, arrived) = (
                        seen.clone(),
                        in_flight.clone(),
                        max_in_flight.clone(),
                        behaviour.clone(),
                        arrived.clone(),
                    );
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let (seen, in_flight, max_in_flight, behaviour, arrived) = (
                                seen.clone(),
                                in_flight.clone(),
                                max_in_flight.clone(),
                                behaviour.clone(),
                                arrived.clone(),
                            );
                            async move {
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                max_in_flight.fetch_max(now, Ordering::SeqCst);
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let s = Seen {
                                    method: parts.method,
                                    path: parts.uri.path().to_owned(),
                                    query: parts.uri.query().map(str::to_owned),
                                    headers: parts.headers,
                                    body,
                                };
                                let reply = behaviour(&s);
                                seen.lock().push(s);
                                arrived.send_modify(|n| *n += 1);
                                tokio::time::sleep(reply.delay).await;
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                let mut resp = Response::new(Full::new(reply.body));
                                *resp.status_mut() = reply.status;
                                for (k, v) in reply.headers {
                                    resp.headers_mut()
                                        .append(k, v.parse().expect("header value"));
                                }
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            in_flight,
            max_in_flight,
            arrivals,
            task,
        }
    }

    /// Waits until the upstream has received `n` requests in all (a readiness signal, not a
    /// guess of how long that takes); panics after 10 s.
    pub async fn received(&self, n: usize) {
        let mut rx = self.arrivals.clone();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| panic!("the upstream did not receive {n} request(s) within 10 s"))
            .expect("the upstream is running");
    }

    /// An upstream answering `body` with 200 to everything.
    pub async fn fixed(body: &'static str) -> Self {
        Self::start(move |_| Reply::ok(body)).await
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// Requests it is answering right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A loopback address nothing listens on.
pub async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// A config with one HTTP channel to a named listener routing ids starting with `svc` to
/// `hosts`; `route_extra` is inserted after that route's `cluster:` line (e.g. a retry policy).
pub fn config(hosts: &[SocketAddr], extra_rpc: &str, route_extra: &str) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| format!("{{address: \"{h}\"}}"))
        .collect();
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc:
  timeoutMs: 3000
{extra_rpc}
  channels: [{{protocol: http, size: 16, listener: egress}}]
listeners:
  - {{name: egress, protocol: http, routeTable: main}}
routeTables:
  - name: main
    routes:
      - match: {{headers: [{{name: id, prefix: svc}}]}}
        cluster: backend
{route_extra}
clusters:
  - name: backend
    hosts: [{hosts}]
    connectTimeoutMs: 200
"#,
        hosts = hosts.join(", ")
    )
}

/// A sidecar started in-process from `yaml`, with clients for both APIs.
pub struct Running {
    pub sidecar: Sidecar,
    pub layotto: RuntimeClient<Channel>,
    pub dapr: DaprClient<Channel>,
    pub metrics: Metrics,
}

pub async fn start(yaml: &str) -> Running {
    start_with(yaml, Options::default()).await
}

pub async fn start_with(yaml: &str, mut options: Options) -> Running {
    let spec = outrigger_config::load_yaml(yaml).expect("valid test config");
    // Tests run side by side: a config that leaves Dapr's HTTP API on its default port gets an
    // ephemeral one.
    if !yaml.contains("httpApi") && options.overrides.http_api_address.is_none() {
        options.overrides.http_api_address = Some("127.0.0.1:0".to_owned());
    }
    let metrics = Metrics::new();
    let sidecar = Sidecar::start(spec, options, metrics.clone())
        .await
        .expect("sidecar starts");
    let url = format!("http://{}", sidecar.grpc_address());
    let layotto = RuntimeClient::connect(url.clone()).await.expect("connect");
    let dapr = DaprClient::connect(url).await.expect("connect");
    Running {
        sidecar,
        layotto,
        dapr,
        metrics,
    }
}

/// A gRPC channel to the sidecar's API on the unix socket at `path` (the URI is not dialled:
/// the connector opens the socket).
pub async fn unix_channel(path: &std::path::Path) -> tonic::transport::Channel {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://unix")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("unix connect")
}

/// Callers sending `InvokeService` in a loop, one task per client, until [`Calls::stop`].
pub struct Calls {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Calls {
    pub fn start(
        clients: impl IntoIterator<Item = RuntimeClient<tonic::transport::Channel>>,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ok, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = clients
            .into_iter()
            .map(|mut client| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match client
                            .invoke_service(layotto_req("svc", "m", "", 0, ""))
                            .await
                        {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                eprintln!("call failed: {e:?}");
                                failures.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the callers and waits for them: the calls answered and the calls failed.
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("join");
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

/// A Layotto `InvokeServiceRequest`.
pub fn layotto_req(
    id: &str,
    method: &str,
    body: &str,
    verb: i32,
    query: &str,
) -> InvokeServiceRequest {
    InvokeServiceRequest {
        id: id.to_owned(),
        message: Some(CommonInvokeRequest {
            method: method.to_owned(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body.as_bytes().to_vec(),
            }),
            content_type: String::new(),
            http_extension: (verb != 0 || !query.is_empty()).then(|| HttpExtension {
                verb,
                querystring: query.to_owned(),
            }),
        }),
    }
}

/// A Dapr `InvokeServiceRequest`.
pub fn dapr_req(
    id: &str,
    method: &str,
    body: &str,
) -> outrigger_proto::dapr::proto::runtime::v1::InvokeServiceRequest {
    outrigger_proto::dapr::proto::runtime::v1::InvokeServiceRequest {
        id: id.to_owned(),
        message: Some(dapr_common::InvokeRequest {
            method: method.to_owned(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body.as_bytes().to_vec(),
            }),
            content_type: "application/json".to_owned(),
            http_extension: None,
        }),
    }
}

/// Body text of an `Any`.
pub fn text(any: Option<prost_types::Any>) -> String {
    String::from_utf8(any.unwrap_or_default().value).expect("utf-8 body")
}

/// GET on the admin endpoint: (status, body).
pub async fn admin_get(sidecar: &Sidecar, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(sidecar.admin_address())
        .await
        .expect("admin connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("admin answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The address a proxy listener of `rt` is bound to.
pub fn bound(rt: &Running, name: &str) -> SocketAddr {
    rt.sidecar
        .proxy()
        .bound_addresses()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
        .expect("listener bound")
}
