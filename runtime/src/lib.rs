//! The Outrigger sidecar as a library: a Layotto-compatible gRPC runtime API whose
//! `InvokeService` calls run through invoke filters and a pooled channel into a MOSN-style proxy
//! core that routes them to upstream clusters. `main.rs` only parses flags and calls
//! [`Sidecar::start`]; tests start sidecars in-process the same way.

mod admin;
mod api;
mod channel;
mod config;
mod demo;
mod filter;
mod invoke;
mod metrics;
mod pool;
mod proxy;
mod sidecar;

pub use crate::{
    api::{ApiListener, RuntimeApi, TIMEOUT_METADATA},
    config::{DEFAULT_WATCH_INTERVAL, Live, Overrides, Rejection, Reloader, Snapshot},
    demo::{DEMO_ID, DEMO_METHOD, DEMO_REQUEST, Demo, SampleUpstream, demo_request},
    invoke::{ErrorKind, InvokeError, RpcRequest, RpcResponse},
    metrics::Metrics,
    proxy::{ERROR_HEADER, InProcess, ProxyCore, TIMEOUT_HEADER},
    sidecar::{Options, Sidecar, StartError, wait_for_signal},
};
