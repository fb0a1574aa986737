//! Invoke filters: each a tower `Layer` + `Service` around the rest of the invoke stack, built
//! from the config by name. Before-invoke filters see the request on its way to the channel;
//! after-invoke filters see the response on its way back. Not for the proxy core's filters.

mod dubbo_generic;
mod dubbo_json_rpc;
mod headers;

use outrigger_config::FilterKind;
use tower::Layer;

pub(crate) use self::{
    dubbo_generic::DubboGenericLayer, dubbo_json_rpc::DubboJsonRpcLayer, headers::HeadersLayer,
};
use crate::invoke::InvokeService;

/// Where in the chain a filter was listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `rpc.beforeInvoke`.
    Before,
    /// `rpc.afterInvoke`.
    After,
}

/// Wraps `inner` in the filter `kind`, listed in `phase`.
pub(crate) fn layer(kind: &FilterKind, phase: Phase, inner: InvokeService) -> InvokeService {
    match kind {
        FilterKind::DubboJsonRpc => InvokeService::new(DubboJsonRpcLayer.layer(inner)),
        FilterKind::DubboGeneric => InvokeService::new(DubboGenericLayer.layer(inner)),
        FilterKind::Headers(cfg) => InvokeService::new(HeadersLayer::new(cfg, phase).layer(inner)),
    }
}
