//! The gRPC APIs Outrigger speaks, as Rust types: Layotto's runtime and
//! app-callback services (`spec.proto.runtime.v1`) and the service-invocation
//! part of Dapr's API (`dapr.proto.runtime.v1`, `dapr.proto.common.v1`), and the operator's
//! identity and discovery endpoints (`outrigger.identity.v1`, `outrigger.discovery.v1`), with
//! prost messages, tonic clients and tonic server traits for each. Module paths
//! mirror the protobuf packages. The code under `src/gen/` is generated from
//! `proto/` and committed; `tests/codegen.rs` regenerates it and fails on drift.
//! This crate holds no behaviour: serving and routing live in the runtime.
//!
//! Server traits are generated with default methods that answer
//! `UNIMPLEMENTED`, so an implementation only writes the rpcs it serves.
//! Generated modules are exempt from clippy and the workspace's style lints:
//! their shape belongs to prost and tonic.

/// Layotto's API (protobuf package `spec.proto.runtime.v1`).
pub mod spec {
    /// Layotto's API (protobuf package `spec.proto.runtime.v1`).
    pub mod proto {
        /// Layotto's API (protobuf package `spec.proto.runtime.v1`).
        pub mod runtime {
            /// Layotto's `Runtime` and `AppCallback` services and their messages.
            #[allow(clippy::all, missing_docs, rust_2018_idioms, unreachable_pub)]
            pub mod v1 {
                include!("gen/spec.proto.runtime.v1.rs");
            }
        }
    }
}

/// Dapr's API, reduced to service invocation.
pub mod dapr {
    /// Dapr's API, reduced to service invocation.
    pub mod proto {
        /// Dapr's common messages, package `dapr.proto.common.v1`.
        pub mod common {
            /// `InvokeRequest`, `InvokeResponse` and `HttpExtension`.
            #[allow(clippy::all, missing_docs, rust_2018_idioms, unreachable_pub)]
            pub mod v1 {
                include!("gen/dapr.proto.common.v1.rs");
            }
        }

        /// Dapr's sidecar API, package `dapr.proto.runtime.v1`.
        pub mod runtime {
            /// The `Dapr` service, with only `InvokeService`.
            #[allow(clippy::all, missing_docs, rust_2018_idioms, unreachable_pub)]
            pub mod v1 {
                include!("gen/dapr.proto.runtime.v1.rs");
            }
        }
    }
}

/// Outrigger's own APIs.
pub mod outrigger {
    /// The operator's discovery endpoint (protobuf package `outrigger.discovery.v1`).
    pub mod discovery {
        /// The `Discovery` service: the ready pods of a meshed app, pushed as they change.
        #[allow(clippy::all, missing_docs, rust_2018_idioms, unreachable_pub)]
        pub mod v1 {
            include!("gen/outrigger.discovery.v1.rs");
        }
    }

    /// The operator's identity endpoint (protobuf package `outrigger.identity.v1`).
    pub mod identity {
        /// The `Identity` service: a sidecar's certificate signing request, signed by the mesh CA.
        #[allow(clippy::all, missing_docs, rust_2018_idioms, unreachable_pub)]
        pub mod v1 {
            include!("gen/outrigger.identity.v1.rs");
        }
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of every service above and
/// of the files they import (well-known types included), without source info; the
/// operator's `outrigger.*` services are not in it (the sidecar does not serve them).
/// Feed it to a gRPC reflection server.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::FILE_DESCRIPTOR_SET;

    #[test]
    fn descriptor_set_describes_every_service() {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET);
        let set = match set {
            Ok(set) => set,
            Err(err) => panic!("descriptor.bin does not decode: {err}"),
        };
        let mut services: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect();
        services.sort();
        assert_eq!(
            services,
            [
                "dapr.proto.runtime.v1.Dapr",
                "spec.proto.runtime.v1.AppCallback",
                "spec.proto.runtime.v1.Runtime",
            ]
        );
        assert!(
            set.file
                .iter()
                .any(|f| f.name() == "google/protobuf/any.proto"),
            "imports must be bundled so reflection can resolve them"
        );
    }
}
