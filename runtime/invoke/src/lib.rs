//! The invoke path: what one `InvokeService` call becomes inside the sidecar. It defines the
//! request and response every filter and channel sees (control metadata parsed once into typed
//! fields), the error they report, the filters (each a tower `Layer` + `Service`) and the stack
//! builder that puts them around a channel. Not for gRPC (see `outrigger-api`) or for any wire
//! protocol (see `outrigger-channel`).

mod error;
mod filter;
mod request;
mod stack;

pub use self::{
    error::{ErrorKind, InvokeError},
    request::{
        DubboCall, GROUP_METADATA, InvokeService, NonSuccess, PARAMETER_TYPES_METADATA,
        PROTOCOL_METADATA, REQUEST_TYPE_METADATA, RpcRequest, RpcResponse,
        SERVICE_VERSION_METADATA,
    },
    stack::{Invoker, Invokers, deadline_after},
};
