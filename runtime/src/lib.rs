//! The Outrigger sidecar's composition root: the only crate that sees every layer. It builds a
//! config version's snapshot (proxy routing and clusters, channels, the invoke stack) from the
//! crates below, reloads it atomically from a watched file, serves the admin endpoint, wires the
//! gRPC API, proxy core and watcher into one [`Sidecar`] with one shutdown signal, and holds the
//! `outrigger demo`. `main.rs` only parses flags and calls [`Sidecar::start`]; tests start
//! sidecars in-process the same way.
//!
//! ```text
//! outrigger-runtime ──▶ api ──▶ invoke ──▶ core
//!        │      └────▶ channel ──▶ pool ──▶ core
//!        └──▶ proxy ──▶ pool
//! ```

mod admin;
mod config;
mod demo;
mod otlp;
mod sidecar;

pub use outrigger_api::{ApiListener, RuntimeApi, TIMEOUT_METADATA};
pub use outrigger_core::{ERROR_HEADER, Metrics, TIMEOUT_HEADER};
pub use outrigger_invoke::{ErrorKind, InvokeError, RpcRequest, RpcResponse};
pub use outrigger_proxy::{InProcess, ProxyCore};

pub use crate::{
    config::{
        DEFAULT_WATCH_INTERVAL, INBOUND_LISTENER, InboundApp, Live, Overrides, Rejection, Reloader,
        Snapshot,
    },
    demo::{DEMO_ID, DEMO_METHOD, DEMO_REQUEST, Demo, DemoError, SampleUpstream, demo_request},
    sidecar::{Options, Sidecar, StartError, wait_for_signal},
};
