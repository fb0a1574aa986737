//! `outrigger demo`: the product's main job on an embedded default. It starts a sample upstream
//! (a dubbo-go-style JSON-RPC `UserProvider` over HTTP, as in Layotto's demo), starts the sidecar
//! on its default ports with the embedded config, sends the seed's `GetUser` call through the
//! whole path (gRPC API → `dubbo_json_rpc` filter → HTTP channel → in-process listener → proxy
//! core → upstream), prints the answer and round-trip time, and keeps serving. The sample
//! upstream lives here, never on the production request path.

mod upstream;

use std::{net::SocketAddr, time::Duration};

use outrigger_proto::spec::proto::runtime::v1::{
    CommonInvokeRequest, HttpExtension, InvokeServiceRequest, http_extension::Verb,
    runtime_client::RuntimeClient,
};
use tokio::time::Instant;

pub use self::upstream::SampleUpstream;
use crate::{Metrics, Options, Sidecar};

/// The demo's target id.
pub const DEMO_ID: &str = "org.apache.dubbo.samples.UserProvider";
/// The demo's method.
pub const DEMO_METHOD: &str = "GetUser";
/// The seed's request body.
pub const DEMO_REQUEST: &str =
    r#"{"jsonrpc":"2.0","method":"GetUser","params":["A003"],"id":9527}"#;
/// Where the sample upstream listens when the port is free.
const UPSTREAM_ADDRESS: &str = "127.0.0.1:20001";

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The sample upstream could not start, or the output could not be written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The embedded config does not load (a bug).
    #[error("the embedded config is invalid: {0}")]
    Config(String),
    /// The sidecar did not start.
    #[error(transparent)]
    Start(#[from] crate::StartError),
    /// The gRPC client could not connect to the sidecar.
    #[error("cannot connect to the sidecar: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The demo call failed.
    #[error("the demo call failed: {0}")]
    Call(#[from] tonic::Status),
}

/// A running demo: the sample upstream and the sidecar.
pub struct Demo {
    /// The sample upstream.
    pub upstream: SampleUpstream,
    /// The sidecar.
    pub sidecar: Sidecar,
    /// The demo call's answer.
    pub answer: String,
}

impl Demo {
    /// The embedded config, pointing at `upstream`.
    pub fn config(upstream: SocketAddr) -> String {
        include_str!("runtime.yaml").replace("${UPSTREAM}", &upstream.to_string())
    }

    /// Starts everything and makes the demo call, printing what happens to `out`.
    pub async fn run(
        options: Options,
        metrics: Metrics,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<Demo, DemoError> {
        let upstream = match SampleUpstream::start(UPSTREAM_ADDRESS).await {
            Ok(u) => u,
            Err(_) => SampleUpstream::start("127.0.0.1:0").await?,
        };
        let yaml = Self::config(upstream.address());
        let spec =
            outrigger_config::load_yaml(&yaml).map_err(|e| DemoError::Config(e.to_string()))?;
        let sidecar = Sidecar::start(spec, options, metrics).await?;
        let grpc = sidecar.grpc_address().to_owned();
        writeln!(out, "outrigger demo")?;
        writeln!(
            out,
            "  sample upstream  UserProvider (dubbo-go JSON-RPC over HTTP) on {}",
            upstream.address()
        )?;
        writeln!(
            out,
            "  sidecar          gRPC {grpc}, admin http://{}",
            sidecar.admin_address()
        )?;
        writeln!(
            out,
            "request  InvokeService id={DEMO_ID} method={DEMO_METHOD} verb=POST"
        )?;
        writeln!(out, "         {DEMO_REQUEST}")?;

        let mut client = RuntimeClient::connect(format!("http://{grpc}")).await?;
        let request = demo_request;
        let start = Instant::now();
        let first = client.invoke_service(request()).await?;
        let first_rtt = start.elapsed();
        let start = Instant::now();
        let _ = client.invoke_service(request()).await?;
        let warm_rtt = start.elapsed();
        let resp = first.into_inner();
        let answer = String::from_utf8_lossy(&resp.data.unwrap_or_default().value).into_owned();
        writeln!(out, "answer   {answer}")?;
        writeln!(out, "         content-type: {}", resp.content_type)?;
        writeln!(
            out,
            "rtt      {} (first call, connections opened), {} (second call, pooled)",
            fmt_duration(first_rtt),
            fmt_duration(warm_rtt)
        )?;
        writeln!(out, "serving until Ctrl-C; call it yourself with grpcurl:")?;
        writeln!(
            out,
            "  grpcurl -plaintext -d '{{\"id\":\"{DEMO_ID}\",\"message\":{{\"method\":\"{DEMO_METHOD}\",\
             \"data\":{{\"@type\":\"type.googleapis.com/google.protobuf.StringValue\",\
             \"value\":\"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"method\\\":\\\"GetUser\\\",\\\"params\\\":[\\\"A001\\\"],\\\"id\\\":1}}\"}},\
             \"httpExtension\":{{\"verb\":\"POST\"}}}}}}' {grpc} spec.proto.runtime.v1.Runtime/InvokeService"
        )?;
        writeln!(out, "  curl http://{}/metrics", sidecar.admin_address())?;
        out.flush()?;
        Ok(Demo {
            upstream,
            sidecar,
            answer,
        })
    }
}

/// The seed's call: `GetUser("A003")` on `UserProvider`, JSON-RPC over HTTP POST.
pub fn demo_request() -> InvokeServiceRequest {
    InvokeServiceRequest {
        id: DEMO_ID.to_owned(),
        message: Some(CommonInvokeRequest {
            method: DEMO_METHOD.to_owned(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: DEMO_REQUEST.as_bytes().to_vec(),
            }),
            content_type: String::new(),
            http_extension: Some(HttpExtension {
                verb: Verb::Post as i32,
                querystring: String::new(),
            }),
        }),
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
