//! The names the operator shares with the sidecar, the Helm chart and users: API group, labels,
//! annotations, ports, paths and defaults. Not for behaviour; every other module reads these
//! instead of spelling the strings itself.

/// API group of the `RuntimeConfig` custom resource.
pub const GROUP: &str = "outrigger.dev";
/// API version of the `RuntimeConfig` custom resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "RuntimeConfig";
/// Plural resource name.
pub const PLURAL: &str = "runtimeconfigs";
/// Short name (`kubectl get rtc`).
pub const SHORT_NAME: &str = "rtc";

/// Field manager used for every server-side apply and patch the operator makes.
pub const FIELD_MANAGER: &str = "outrigger-operator";
/// The controller's name in Events and `app.kubernetes.io/managed-by`.
pub const CONTROLLER_NAME: &str = "outrigger-operator";

/// Prefix of the ConfigMap written for a RuntimeConfig: `outrigger-<name>`.
pub const CONFIG_MAP_PREFIX: &str = "outrigger-";
/// The ConfigMap key holding the sidecar's config file.
pub const CONFIG_FILE_KEY: &str = "runtime.yaml";
/// Where the ConfigMap is mounted in the sidecar.
pub const CONFIG_MOUNT_PATH: &str = "/etc/outrigger";
/// The full path the sidecar reads.
pub const CONFIG_FILE_PATH: &str = "/etc/outrigger/runtime.yaml";

/// Pod annotation opting a pod in (`"true"`) or out (`"false"`).
pub const ANNOTATION_INJECT: &str = "outrigger.dev/inject";
/// Namespace label opting every pod of the namespace in (`enabled`).
pub const NAMESPACE_LABEL_INJECT: &str = "outrigger.dev/inject";
/// Value of [`NAMESPACE_LABEL_INJECT`] that opts a namespace in.
pub const NAMESPACE_INJECT_ENABLED: &str = "enabled";
/// Pod annotation naming the RuntimeConfig the sidecar uses.
pub const ANNOTATION_CONFIG: &str = "outrigger.dev/config";
/// RuntimeConfig used when a pod names none.
pub const DEFAULT_CONFIG_NAME: &str = "default";
/// Pod annotation choosing the sidecar's log level.
pub const ANNOTATION_LOG_LEVEL: &str = "outrigger.dev/log-level";
/// Pod annotation choosing a native sidecar (`"true"`) or a regular container (`"false"`).
pub const ANNOTATION_NATIVE_SIDECAR: &str = "outrigger.dev/native-sidecar";
/// Pod annotation overriding the sidecar's CPU request.
pub const ANNOTATION_CPU_REQUEST: &str = "outrigger.dev/cpu-request";
/// Pod annotation overriding the sidecar's CPU limit.
pub const ANNOTATION_CPU_LIMIT: &str = "outrigger.dev/cpu-limit";
/// Pod annotation overriding the sidecar's memory request.
pub const ANNOTATION_MEMORY_REQUEST: &str = "outrigger.dev/memory-request";
/// Pod annotation overriding the sidecar's memory limit.
pub const ANNOTATION_MEMORY_LIMIT: &str = "outrigger.dev/memory-limit";
/// Pod annotation the injector sets on an opted-in pod it did not inject:
/// `skipped: <reason>`.
pub const ANNOTATION_INJECTION: &str = "outrigger.dev/injection";
/// Prefix of the [`ANNOTATION_INJECTION`] value.
pub const INJECTION_SKIPPED_PREFIX: &str = "skipped: ";
/// Pod annotation, namespace label or namespace annotation: `required` denies an opted-in pod
/// that cannot be injected instead of letting it start without the sidecar.
pub const ANNOTATION_INJECT_POLICY: &str = "outrigger.dev/inject-policy";
/// Value of [`ANNOTATION_INJECT_POLICY`] that fails closed.
pub const INJECT_POLICY_REQUIRED: &str = "required";
/// Reason of the Event recorded on a skipped pod's owner (or its namespace).
pub const EVENT_REASON_INJECTION_SKIPPED: &str = "InjectionSkipped";
/// Label set on every injected pod.
pub const LABEL_INJECTED: &str = "outrigger.dev/injected";
/// Label on the ConfigMap naming the RuntimeConfig it was rendered from.
pub const LABEL_RUNTIME_CONFIG: &str = "outrigger.dev/runtime-config";
/// Annotation with the rendered config's hash: on the ConfigMap (what it holds) and on each
/// injected pod (what the ConfigMap held when the pod was admitted).
pub const ANNOTATION_CONFIG_HASH: &str = "outrigger.dev/config-hash";
/// Namespace whose pods are never injected.
pub const NEVER_INJECT_NAMESPACE: &str = "kube-system";

/// Name of the injected container.
pub const SIDECAR_CONTAINER_NAME: &str = "outrigger";
/// Name of the injected config volume.
pub const SIDECAR_VOLUME_NAME: &str = "outrigger-config";
/// The sidecar's gRPC API port (Layotto's).
pub const SIDECAR_GRPC_PORT: i32 = 34904;
/// The sidecar's admin HTTP port.
pub const SIDECAR_ADMIN_PORT: i32 = 34999;
/// The port of the sidecar's Dapr HTTP API (`httpApi.address`, Dapr's).
pub const SIDECAR_HTTP_API_PORT: i32 = 3500;
/// Environment variables an app container gets, naming the sidecar's ports (unless the pod sets
/// them): Dapr's SDKs read `DAPR_HTTP_PORT` and `DAPR_GRPC_PORT`, Layotto's Go and JavaScript
/// SDKs `runtime_GRPC_PORT`.
pub const APP_PORT_ENV: [(&str, i32); 3] = [
    ("DAPR_HTTP_PORT", SIDECAR_HTTP_API_PORT),
    ("DAPR_GRPC_PORT", SIDECAR_GRPC_PORT),
    ("runtime_GRPC_PORT", SIDECAR_GRPC_PORT),
];
/// Pod annotation: `"true"` gives the sidecar's gRPC API a unix socket in a volume shared with
/// every app container, and the app containers the variable an SDK connects to it by.
pub const ANNOTATION_API_SOCKET: &str = "outrigger.dev/api-socket";
/// Name of the in-memory `emptyDir` volume holding the API socket.
pub const API_SOCKET_VOLUME_NAME: &str = "outrigger-api-socket";
/// Where the API socket volume is mounted, in the sidecar and in the app containers.
pub const API_SOCKET_MOUNT_PATH: &str = "/var/run/outrigger/api";
/// The socket the sidecar's gRPC API accepts on (`--grpc-socket`), in [`API_SOCKET_MOUNT_PATH`].
pub const API_SOCKET_PATH: &str = "/var/run/outrigger/api/grpc.sock";
/// `sizeLimit` of the API socket volume: a socket takes no space; the limit only bounds what
/// anything else written there may take from the pod's memory.
pub const API_SOCKET_SIZE_LIMIT: &str = "1Mi";
/// Environment variables an app container of a pod annotated [`ANNOTATION_API_SOCKET`] gets,
/// unless it sets them, so an SDK calls the sidecar over the socket with no code change.
///
/// `DAPR_GRPC_ENDPOINT`, a gRPC target, is read ahead of `DAPR_GRPC_PORT` by every Dapr SDK,
/// but not every one gets through the socket with it:
/// - Go (`dapr/go-sdk` `client/client.go`: `NewClient` reads `DAPR_GRPC_ENDPOINT`,
///   `client/internal/parse.go` turns `unix:///path` into a gRPC target): yes; grpc-go sends
///   `:authority: localhost` on a unix socket.
/// - Java (`dapr/java-sdk` `io.dapr.config.Properties.GRPC_ENDPOINT`, `NetworkUtils` passes the
///   `unix:` target to grpc-java, which needs Netty's native epoll transport for it) and Python
///   (`dapr/python-sdk` `dapr/conf/helpers.py` `GrpcEndpoint`; `dapr` 1.19.0 takes an absolute
///   path, releases without the fix for dapr/python-sdk#1213 refuse it when the client is
///   built): they dial the socket, but send the socket's path as `:authority`, which the
///   sidecar's HTTP/2 server (h2) refuses with `PROTOCOL_ERROR` (hyperium/h2#487).
/// - JavaScript (`dapr/js-sdk` `src/network/GrpcEndpoint.ts` refuses a path) and .NET
///   (`dapr/dotnet-sdk` `DaprDefaults.GetDefaultGrpcEndpoint`; `DaprClientBuilder.Build` wants
///   http or https): no, the client throws when it is built.
///
/// A container that must stay on TCP sets `DAPR_GRPC_ENDPOINT=http://127.0.0.1:34904` itself
/// (every one of these SDKs accepts that value), and the injector leaves it alone.
///
/// Layotto's Go SDK (`mosn/layotto` `sdk/go-sdk`, now `layotto/go-sdk`, `client/client.go`)
/// reads only `runtime_GRPC_PORT` and always dials 127.0.0.1; its apps pass the socket to
/// `client.NewClientWithAddress("unix:///var/run/outrigger/api/grpc.sock")`.
pub const API_SOCKET_ENV: [(&str, &str); 1] = [(
    "DAPR_GRPC_ENDPOINT",
    "unix:///var/run/outrigger/api/grpc.sock",
)];
/// Worker threads of a sidecar without a CPU limit when `--sidecar-threads` is 0 (Istio's
/// sidecar default concurrency): not one per node CPU, which on a large node would be dozens.
pub const SIDECAR_THREADS_WITHOUT_CPU_LIMIT: u32 = 2;
/// The most worker threads derived from a CPU limit (a larger `--sidecar-threads` is used as
/// given).
pub const SIDECAR_THREADS_MAX_DERIVED: u32 = 64;
/// Name of the gRPC container port.
pub const SIDECAR_GRPC_PORT_NAME: &str = "grpc";
/// Name of the admin container port.
pub const SIDECAR_ADMIN_PORT_NAME: &str = "admin";
/// Admin address the injected sidecar listens on (probes reach it from the kubelet).
pub const SIDECAR_ADMIN_LISTEN: &str = "0.0.0.0:34999";
/// UID the sidecar runs as.
pub const SIDECAR_RUN_AS_USER: i64 = 65532;
/// Default sidecar image: the release matching this operator.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!(
    "ghcr.io/outrigger-dev/outrigger:",
    env!("CARGO_PKG_VERSION")
);

/// Mutating webhook path.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
/// Validating webhook path.
pub const VALIDATE_RUNTIMECONFIGS_PATH: &str = "/validate-runtimeconfigs";
/// Mutating webhook path for a registration whose `namespaceSelector` already matched
/// `outrigger.dev/inject=enabled`: every pod it sends is opted in by its namespace. (A path, not
/// a query: the API server accepts only DNS-1123 path segments in a webhook's service path.)
pub const MUTATE_PODS_NAMESPACE_OPTED_IN_PATH: &str = "/mutate-pods/namespace-opted-in";

/// Default webhook listen address.
pub const DEFAULT_WEBHOOK_ADDRESS: &str = "0.0.0.0:9443";
/// Default metrics and health listen address.
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:8080";
/// Where the identity endpoint listens by default.
pub const DEFAULT_IDENTITY_ADDRESS: &str = "0.0.0.0:9444";
/// Default directory holding `tls.crt` and `tls.key`.
pub const DEFAULT_CERT_DIR: &str = "/tmp/outrigger-webhook-certs";
/// Serving certificate file name in the cert directory.
pub const TLS_CERT_FILE: &str = "tls.crt";
/// Serving key file name in the cert directory.
pub const TLS_KEY_FILE: &str = "tls.key";
/// CA certificate key in the webhook Secret.
pub const CA_CERT_FILE: &str = "ca.crt";
/// CA key key in the webhook Secret.
pub const CA_KEY_FILE: &str = "ca.key";
/// Default webhook Service name.
pub const DEFAULT_SERVICE_NAME: &str = "outrigger-webhook";
/// Default webhook TLS Secret name.
pub const DEFAULT_SECRET_NAME: &str = "outrigger-webhook-tls";
/// Default MutatingWebhookConfiguration name.
pub const DEFAULT_MUTATING_WEBHOOK_NAME: &str = "outrigger-sidecar-injector";
/// Default ValidatingWebhookConfiguration name.
pub const DEFAULT_VALIDATING_WEBHOOK_NAME: &str = "outrigger-runtimeconfig-validator";
/// Default leader-election Lease name.
pub const DEFAULT_LEASE_NAME: &str = "outrigger-operator";
/// Pod annotation: the app's port; the sidecar gets the listener `inbound` forwarding to it.
pub const ANNOTATION_APP_PORT: &str = "outrigger.dev/app-port";
/// Pod annotation: what the app speaks behind `inbound` (`http`, `http2`, `bolt`, `dubbo`, `auto`).
pub const ANNOTATION_APP_PROTOCOL: &str = "outrigger.dev/app-protocol";
/// The app protocols `outrigger.dev/app-protocol` takes.
pub const APP_PROTOCOLS: &[&str] = &["http", "http2", "bolt", "dubbo", "auto"];
/// The inbound listener's port (other sidecars call it).
pub const SIDECAR_INBOUND_PORT: u16 = 34906;
/// Name of the inbound container port.
pub const SIDECAR_INBOUND_PORT_NAME: &str = "inbound";

/// The signer the operator acts as for Kubernetes Pod Certificates (`PodCertificateRequest`).
pub const DEFAULT_SIGNER_NAME: &str = "outrigger.dev/identity";
/// Default SPIFFE trust domain of workload identities.
pub const DEFAULT_TRUST_DOMAIN: &str = outrigger_config::DEFAULT_TRUST_DOMAIN;
/// Default Secret holding the mesh CA (in the operator's namespace).
pub const DEFAULT_MESH_CA_SECRET: &str = "outrigger-mesh-ca";
/// Default lifetime of a workload certificate, in seconds (24 h).
pub const DEFAULT_IDENTITY_CERT_LIFETIME_SECS: u32 = 86_400;
/// Shortest lifetime the API server accepts for a pod certificate (1 h).
pub const MIN_IDENTITY_CERT_LIFETIME_SECS: u32 = 3_600;
/// Longest `maxExpirationSeconds` the API server accepts (91 days).
pub const MAX_IDENTITY_CERT_LIFETIME_SECS: u32 = 7_862_400;
/// The key of each RuntimeConfig's ConfigMap holding the mesh trust bundle (PEM roots).
pub const TRUST_BUNDLE_KEY: &str = "trust-bundle.pem";
/// Where injected sidecars find the trust bundle (the config volume, mounted at
/// [`CONFIG_MOUNT_PATH`]).
pub const TRUST_BUNDLE_PATH: &str = "/etc/outrigger/trust-bundle.pem";
/// Pod annotation: the app a pod serves (its headless Service is `<app>-outrigger`); else the
/// label `app.kubernetes.io/name`, else the label `app`.
pub const ANNOTATION_APP: &str = "outrigger.dev/app";
/// Label the injector puts on pods with an inbound listener: their app's name, which the
/// headless Service `<app>-outrigger` selects.
pub const LABEL_APP: &str = "outrigger.dev/app";
