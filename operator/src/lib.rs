//! The Outrigger operator: the `RuntimeConfig` CRD and its controller (spec → ConfigMap), the
//! sidecar-injecting and config-validating admission webhooks, self-managed webhook TLS, leader
//! election, the mesh CA and its Pod Certificates signer (workload identity), and the offline `render` / `inject` / `crdgen` tools that share the same pure
//! functions. `main.rs` only parses the command line ([`Cli`]) and calls [`main`].

mod admission;
mod app;
mod certs;
mod cli;
mod cluster;
mod crd;
mod desired;
mod discovery;
mod discovery_endpoint;
mod endpoint;
mod identity_endpoint;
mod inject;
mod leader;
mod live;
mod logging;
mod manifests;
mod mesh_ca;
mod metrics;
mod names;
mod quantity;
mod reconcile;
mod serve;
mod signer;
mod skips;
mod status;
mod tls;

pub use crate::{
    admission::{
        ClusterView, ConfigLookup, LiveConfig, MutateVerdict, NoCluster, PodAdmission, admit_pod,
        admit_pod_live, mutate_pods, validate_runtime_configs,
    },
    app::main,
    certs::{
        CertBundle, CertError, Plan, SelfManaged, ca_bundle_patch, dns_names, from_secret,
        generate, issue_serving, plan, to_secret, write_cert_dir,
    },
    cli::{
        CertMode, Cli, Command, IdentityArgs, InjectArgs, IssuanceMode, LogFormat, RenderArgs,
        RunArgs, SidecarArgs, WebhookArgs,
    },
    cluster::{ClusterCache, lookup_live},
    crd::{CrdError, Rollout, RuntimeConfig, RuntimeConfigStatus},
    desired::{Desired, config_map_name, desired},
    discovery::{
        LABEL_DISCOVERY_APP, desired_services, run_discovery, service as discovery_service,
    },
    discovery_endpoint::{DiscoveryService, PodIndex, PodIndexHandle, run_pod_index},
    endpoint::{ServingCert, serve_endpoint},
    identity_endpoint::{Caller, IdentityService, caller_of_review, check_csr, check_pod},
    inject::{
        CREDENTIAL_BUNDLE_FILE, IDENTITY_MOUNT_PATH, IDENTITY_TOKEN_EXPIRATION_SECS,
        IDENTITY_TOKEN_FILE, IDENTITY_VOLUME_NAME, Injection, Issuance, LOG_LEVELS, PodIdentity,
        Request, Selection, SidecarSettings, Skip, config_name, inject, is_injected,
        policy_required, sidecar_threads, skip_patch,
    },
    leader::{
        Decision, LeaseConfig, LeaseObserver, decide, next_spec, release, released_spec,
        run_election, try_lead,
    },
    live::{
        SCRAPE_BUDGET, SCRAPE_TIMEOUT, ScrapeError, admin_address, live_hashes, parse_config_hash,
        scrape,
    },
    manifests::{InjectReport, ManifestError, inject_manifests, render},
    mesh_ca::{
        IssuedLeaf, KeyError, LEAF_BACKDATE_SECS, MESH_ISSUER_RENEW_BEFORE_SECS,
        MESH_ISSUER_VALIDITY_SECS, MESH_ROOT_RENEW_BEFORE_SECS, MESH_ROOT_VALIDITY_SECS, MeshCa,
        MeshCaError, MeshCaHandle, MeshCaManager, MeshCaMaterial, MeshCaMode, MeshCaPlan,
        check_public_key, csr_public_key, generate_mesh_ca, material_from_secret,
        material_to_secret, pem_certificates, pem_not_after, plan_mesh_ca, reissue_issuer,
        serves_pod_certificates, spiffe_id, valid_trust_domain,
    },
    metrics::Metrics,
    names::*,
    quantity::{Quantity, QuantityError, parse as parse_quantity},
    reconcile::{
        Context, RESYNC, ROLLOUT_RECHECK, ReconcileError, backoff, error_policy, reconcile,
        run_controller,
    },
    serve::{DRAIN_TIMEOUT, Readiness, WebhookState, serve_health, serve_webhooks},
    signer::{
        PCR_DENIED, PCR_FAILED, PCR_ISSUED, PcrDecision, SignerContext, SignerError,
        SignerSettings, begin_refresh_at, decide_pcr, denied_status, is_terminal, issued_status,
        run_signer, sign_request, signer_error_policy,
    },
    skips::{OncePer, REMEMBER_FOR, SkipNotice, SkipReporter, publish as publish_skips},
    status::{
        CONDITION_READY, CONDITION_ROLLED_OUT, CONDITION_VALID, Outcome, next_status, rollout,
        with_rollout,
    },
    tls::{CertStore, TlsError},
};
