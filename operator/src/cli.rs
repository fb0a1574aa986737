//! The `outrigger-operator` command line: `run` (controller + webhook + metrics in a cluster),
//! `webhook` (both webhooks standalone, no API server), and the offline `render`, `inject` and
//! `crdgen`. The Helm chart is written against these flag names. Not for what the commands do
//! (`app`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::{
    inject::{LOG_LEVELS, SidecarSettings},
    mesh_ca::{MeshCaMode, valid_trust_domain},
    names::{
        DEFAULT_CERT_DIR, DEFAULT_IDENTITY_ADDRESS, DEFAULT_IDENTITY_CERT_LIFETIME_SECS,
        DEFAULT_LEASE_NAME, DEFAULT_MESH_CA_SECRET, DEFAULT_METRICS_ADDRESS,
        DEFAULT_MUTATING_WEBHOOK_NAME, DEFAULT_SECRET_NAME, DEFAULT_SERVICE_NAME,
        DEFAULT_SIDECAR_IMAGE, DEFAULT_SIGNER_NAME, DEFAULT_TRUST_DOMAIN,
        DEFAULT_VALIDATING_WEBHOOK_NAME, DEFAULT_WEBHOOK_ADDRESS, MAX_IDENTITY_CERT_LIFETIME_SECS,
        MIN_IDENTITY_CERT_LIFETIME_SECS, SIDECAR_INBOUND_PORT,
    },
    quantity,
    signer::SignerSettings,
};

/// The Outrigger operator: RuntimeConfig controller, sidecar injector and offline tools.
#[derive(Debug, Parser)]
#[command(name = "outrigger-operator", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`) or tracing directives (`info,kube=warn`).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
// Parsed once at start: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in a cluster: the controller (leader-elected), both webhooks and metrics/health.
    Run(RunArgs),
    /// Serve both webhooks over HTTPS without an API server.
    Webhook(WebhookArgs),
    /// Print the ConfigMap the controller would write for a RuntimeConfig (or just runtime.yaml).
    Render(RenderArgs),
    /// Print manifests with the sidecar injected into every Pod template.
    Inject(InjectArgs),
    /// Print the RuntimeConfig CustomResourceDefinition.
    Crdgen,
}

/// How the webhook gets its serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    /// Generate a CA and certificate into a Secret and patch the webhooks' caBundle.
    SelfManaged,
    /// Use the certificate mounted into --cert-dir (e.g. by cert-manager); patch nothing.
    External,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the HTTPS webhook server.
    #[arg(long, default_value = DEFAULT_WEBHOOK_ADDRESS)]
    pub webhook_address: SocketAddr,
    /// Address serving /metrics, /healthz and /readyz over HTTP.
    #[arg(long, default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_address: SocketAddr,
    /// Directory holding tls.crt and tls.key.
    #[arg(long, default_value = DEFAULT_CERT_DIR)]
    pub cert_dir: PathBuf,
    /// Who provides the webhook certificate.
    #[arg(long, value_enum, default_value_t = CertMode::SelfManaged)]
    pub cert_mode: CertMode,
    /// The operator's namespace (its Secret, Lease and Service live here).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Name of the webhook Service (the certificate's DNS names).
    #[arg(long, default_value = DEFAULT_SERVICE_NAME)]
    pub service_name: String,
    /// Secret holding the self-managed CA and certificate.
    #[arg(long, default_value = DEFAULT_SECRET_NAME)]
    pub secret_name: String,
    /// MutatingWebhookConfiguration whose caBundle is patched.
    #[arg(long, default_value = DEFAULT_MUTATING_WEBHOOK_NAME)]
    pub mutating_webhook_name: String,
    /// ValidatingWebhookConfiguration whose caBundle is patched.
    #[arg(long, default_value = DEFAULT_VALIDATING_WEBHOOK_NAME)]
    pub validating_webhook_name: String,
    /// Elect one controller among replicas with a Lease (`--leader-election=false` to disable).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Workload identity: trust domain, mesh CA, certificate lifetime.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Sidecar defaults.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Workload identity flags of `run`: the mesh CA and the Pod Certificates signer
/// (`outrigger.dev/identity`).
#[derive(Clone, Debug, Args)]
pub struct IdentityArgs {
    /// SPIFFE trust domain: identities are spiffe://<trust-domain>/ns/<namespace>/sa/<sa>.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN, value_parser = trust_domain_arg)]
    pub trust_domain: String,
    /// Who provides the mesh CA Secret: the operator (self-managed) or a user/cert-manager
    /// (external: tls.crt, tls.key as PKCS#8, ca.crt; re-read every minute).
    #[arg(long, value_enum, default_value_t = MeshCaMode::SelfManaged)]
    pub mesh_ca_mode: MeshCaMode,
    /// Secret in --namespace holding the mesh CA.
    #[arg(long, default_value = DEFAULT_MESH_CA_SECRET)]
    pub mesh_ca_secret: String,
    /// Lifetime of workload certificates in seconds (3600-7862400), cut to each request's
    /// maxExpirationSeconds; refreshed at half of it.
    #[arg(
        long,
        default_value_t = DEFAULT_IDENTITY_CERT_LIFETIME_SECS,
        value_parser = clap::value_parser!(u32)
            .range(i64::from(MIN_IDENTITY_CERT_LIFETIME_SECS)..=i64::from(MAX_IDENTITY_CERT_LIFETIME_SECS))
    )]
    pub identity_cert_lifetime_seconds: u32,
    /// How injected sidecars get their certificate: `auto` (Pod Certificates where the API
    /// server serves them, else the identity endpoint), `pod-certificate` or `csr`.
    #[arg(long, value_enum, default_value_t = IssuanceMode::Auto)]
    pub identity_issuance: IssuanceMode,
    /// Address of the identity endpoint (gRPC over TLS), served by every replica.
    #[arg(long, default_value = DEFAULT_IDENTITY_ADDRESS)]
    pub identity_address: SocketAddr,
    /// `host:port` injected sidecars call the identity endpoint at; default
    /// `<service-name>.<namespace>.svc:<port of --identity-address>`. The endpoint's certificate
    /// carries the Service's DNS names whatever this is.
    #[arg(long)]
    pub identity_endpoint: Option<String>,
}

/// How injected sidecars get their certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IssuanceMode {
    /// Pod Certificates where the API server serves them, else the identity endpoint.
    Auto,
    /// Pod Certificates (`podCertificate` volumes signed by `outrigger.dev/identity`).
    PodCertificate,
    /// The identity endpoint: the sidecar sends a certificate signing request with a projected
    /// ServiceAccount token.
    Csr,
}

impl IdentityArgs {
    /// The signer's settings, for the signer name `outrigger.dev/identity`.
    pub fn signer_settings(&self) -> SignerSettings {
        SignerSettings {
            signer_name: DEFAULT_SIGNER_NAME.to_owned(),
            trust_domain: self.trust_domain.clone(),
            lifetime: std::time::Duration::from_secs(u64::from(
                self.identity_cert_lifetime_seconds,
            )),
        }
    }
}

fn trust_domain_arg(s: &str) -> Result<String, String> {
    if valid_trust_domain(s) {
        Ok(s.to_owned())
    } else {
        Err(
            "a trust domain is lowercase letters, digits, '.', '-' and '_' (e.g. cluster.local)"
                .to_owned(),
        )
    }
}

/// Flags of `webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Directory holding tls.crt and tls.key.
    #[arg(long, default_value = DEFAULT_CERT_DIR)]
    pub cert_dir: PathBuf,
    /// Address of the HTTPS server.
    #[arg(long, default_value = DEFAULT_WEBHOOK_ADDRESS)]
    pub listen: SocketAddr,
    /// Sidecar defaults.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Flags of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// RuntimeConfig YAML file (`-` for stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
    /// Print only runtime.yaml, not the ConfigMap.
    #[arg(long)]
    pub file_only: bool,
}

/// Flags of `inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifests YAML file (`-` for stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
    /// Sidecar defaults.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Operator-wide sidecar defaults; pods override them with annotations.
#[derive(Clone, Debug, Args)]
pub struct SidecarArgs {
    /// Sidecar image.
    #[arg(long, default_value = DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,
    /// Sidecar imagePullPolicy (empty: Kubernetes' default for the tag).
    #[arg(long, default_value = "", value_parser = ["", "Always", "IfNotPresent", "Never"])]
    pub sidecar_image_pull_policy: String,
    /// Inject as a native sidecar (init container with restartPolicy Always).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub native_sidecar: bool,
    /// Sidecar log level.
    #[arg(long, default_value = "info", value_parser = clap::builder::PossibleValuesParser::new(LOG_LEVELS))]
    pub sidecar_log_level: String,
    /// Port of the sidecar's inbound listener in pods annotated `outrigger.dev/app-port`.
    #[arg(long, default_value_t = SIDECAR_INBOUND_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub sidecar_inbound_port: u16,
    /// Sidecar CPU request (empty for none).
    #[arg(long, default_value = "50m", value_parser = quantity_arg)]
    pub sidecar_cpu_request: String,
    /// Sidecar CPU limit (empty for none).
    #[arg(long, default_value = "", value_parser = quantity_arg)]
    pub sidecar_cpu_limit: String,
    /// Sidecar memory request (empty for none).
    #[arg(long, default_value = "32Mi", value_parser = quantity_arg)]
    pub sidecar_memory_request: String,
    /// Sidecar memory limit (empty for none).
    #[arg(long, default_value = "128Mi", value_parser = quantity_arg)]
    pub sidecar_memory_limit: String,
    /// Worker threads of the sidecar (its --threads); 0: its CPU limit in cores rounded up, or 2
    /// when it has no CPU limit.
    #[arg(long, default_value_t = 0)]
    pub sidecar_threads: u32,
}

impl SidecarArgs {
    /// The settings injection uses.
    pub fn settings(&self) -> SidecarSettings {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        SidecarSettings {
            image: self.sidecar_image.clone(),
            image_pull_policy: opt(&self.sidecar_image_pull_policy),
            native_sidecar: self.native_sidecar,
            log_level: self.sidecar_log_level.clone(),
            inbound_port: self.sidecar_inbound_port,
            cpu_request: opt(&self.sidecar_cpu_request),
            cpu_limit: opt(&self.sidecar_cpu_limit),
            memory_request: opt(&self.sidecar_memory_request),
            memory_limit: opt(&self.sidecar_memory_limit),
            threads: self.sidecar_threads,
            identity: None,
        }
    }
}

fn quantity_arg(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    quantity::parse(s)
        .map(|q| q.text)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from([
            "outrigger-operator",
            "run",
            "--namespace",
            "outrigger-system",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.webhook_address.to_string(), "0.0.0.0:9443");
        assert_eq!(run.metrics_address.to_string(), "0.0.0.0:8080");
        assert_eq!(run.cert_dir, PathBuf::from("/tmp/outrigger-webhook-certs"));
        assert_eq!(run.cert_mode, CertMode::SelfManaged);
        assert!(run.leader_election);
        assert_eq!(run.sidecar.settings(), SidecarSettings::default());
        assert_eq!(run.identity.signer_settings(), SignerSettings::default());
        assert_eq!(run.identity.mesh_ca_mode, MeshCaMode::SelfManaged);
        assert_eq!(run.identity.mesh_ca_secret, "outrigger-mesh-ca");
        assert_eq!(cli.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_parse() {
        let cases: [(&[&str], bool); 15] = [
            (
                &[
                    "run",
                    "--namespace",
                    "x",
                    "--trust-domain",
                    "prod.example.com",
                    "--mesh-ca-mode",
                    "external",
                    "--mesh-ca-secret",
                    "mesh-ca",
                    "--identity-cert-lifetime-seconds",
                    "3600",
                ],
                true,
            ),
            (
                &["run", "--namespace", "x", "--trust-domain", "Cluster.Local"],
                false,
            ),
            (&["run", "--namespace", "x", "--trust-domain", ""], false),
            (
                &[
                    "run",
                    "--namespace",
                    "x",
                    "--identity-cert-lifetime-seconds",
                    "600",
                ],
                false,
            ),
            (
                &["run", "--namespace", "x", "--mesh-ca-mode", "vault"],
                false,
            ),
            (
                &[
                    "run",
                    "--namespace",
                    "x",
                    "--leader-election=false",
                    "--cert-mode",
                    "external",
                ],
                true,
            ),
            (
                &[
                    "run",
                    "--namespace",
                    "x",
                    "--native-sidecar",
                    "false",
                    "--log-format",
                    "json",
                ],
                true,
            ),
            (
                &[
                    "webhook",
                    "--cert-dir",
                    "/c",
                    "--listen",
                    "127.0.0.1:8443",
                    "--sidecar-cpu-limit",
                    "500m",
                ],
                true,
            ),
            (&["webhook", "--sidecar-memory-limit", "lots"], false),
            (&["webhook", "--sidecar-threads", "4"], true),
            (&["webhook", "--sidecar-threads", "-1"], false),
            (&["webhook", "--sidecar-log-level", "loud"], false),
            (&["render", "-f", "rc.yaml", "--file-only"], true),
            (
                &[
                    "inject",
                    "-f",
                    "-",
                    "--native-sidecar=false",
                    "--sidecar-cpu-request",
                    "",
                ],
                true,
            ),
            (&["run", "--cert-mode", "manual", "--namespace", "x"], false),
        ];
        for (args, ok) in cases {
            let result = Cli::try_parse_from(
                std::iter::once("outrigger-operator").chain(args.iter().copied()),
            );
            assert_eq!(result.is_ok(), ok, "{args:?}: {:?}", result.err());
        }
        let cli = Cli::try_parse_from([
            "outrigger-operator",
            "inject",
            "-f",
            "-",
            "--native-sidecar=false",
            "--sidecar-cpu-request",
            "",
            "--sidecar-threads=3",
        ])
        .unwrap();
        let Command::Inject(args) = cli.command else {
            panic!()
        };
        let s = args.sidecar.settings();
        assert!(!s.native_sidecar);
        assert_eq!(s.cpu_request, None);
        assert_eq!(s.threads, 3);
    }
}
