//! The Outrigger operator: the `RuntimeConfig` CRD and its controller (spec → ConfigMap), the
//! sidecar-injecting and config-validating admission webhooks, self-managed webhook TLS, leader
//! election, and the offline `render` / `inject` / `crdgen` tools that share the same pure
//! functions. `main.rs` only parses the command line ([`Cli`]) and calls [`main`].

mod admission;
mod app;
mod certs;
mod cli;
mod cluster;
mod crd;
mod desired;
mod inject;
mod leader;
mod live;
mod logging;
mod manifests;
mod metrics;
mod names;
mod quantity;
mod reconcile;
mod serve;
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
        CertMode, Cli, Command, InjectArgs, LogFormat, RenderArgs, RunArgs, SidecarArgs,
        WebhookArgs,
    },
    cluster::{ClusterCache, lookup_live},
    crd::{CrdError, Rollout, RuntimeConfig, RuntimeConfigStatus},
    desired::{Desired, config_map_name, desired},
    inject::{
        Injection, LOG_LEVELS, Request, Selection, SidecarSettings, Skip, config_name, inject,
        is_injected, policy_required, skip_patch,
    },
    leader::{
        Decision, LeaseConfig, LeaseObserver, decide, next_spec, release, released_spec,
        run_election, try_lead,
    },
    live::{SCRAPE_TIMEOUT, ScrapeError, admin_address, live_hashes, parse_config_hash, scrape},
    manifests::{InjectReport, ManifestError, inject_manifests, render},
    metrics::Metrics,
    names::*,
    quantity::{Quantity, QuantityError, parse as parse_quantity},
    reconcile::{
        Context, RESYNC, ROLLOUT_RECHECK, ReconcileError, backoff, error_policy, reconcile,
        run_controller,
    },
    serve::{DRAIN_TIMEOUT, Readiness, WebhookState, serve_health, serve_webhooks},
    skips::{OncePer, REMEMBER_FOR, SkipNotice, SkipReporter, publish as publish_skips},
    status::{
        CONDITION_READY, CONDITION_ROLLED_OUT, CONDITION_VALID, Outcome, next_status, rollout,
        with_rollout,
    },
    tls::{CertStore, TlsError},
};
