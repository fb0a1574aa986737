//! Invoke filters: each a tower `Layer` + `Service` around the rest of the invoke stack, built
//! from the config by name. Before-invoke filters see the request on its way to the channel;
//! after-invoke filters see the response on its way back. Not for the proxy core's filters.

mod dubbo_generic;
mod dubbo_json_rpc;
mod headers;

use outrigger_config::FilterKind;
use tower::Layer;

use self::{
    dubbo_generic::DubboGenericLayer, dubbo_json_rpc::DubboJsonRpcLayer, headers::HeadersLayer,
};
use crate::request::InvokeService;

/// Wraps `inner` in the filter `kind`.
pub(crate) fn layer(kind: &FilterKind, inner: InvokeService) -> InvokeService {
    match kind {
        FilterKind::DubboJsonRpc => InvokeService::new(DubboJsonRpcLayer.layer(inner)),
        FilterKind::DubboGeneric => InvokeService::new(DubboGenericLayer.layer(inner)),
        FilterKind::Headers(cfg) => InvokeService::new(HeadersLayer::new(cfg).layer(inner)),
    }
}
