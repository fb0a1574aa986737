//! What each subcommand does, wired from the library's parts: `run` (controller and Pod
//! Certificates signer under leader election, mesh CA, webhooks, self-managed TLS, metrics), `webhook` (standalone HTTPS webhooks), and the
//! offline `render`, `inject`, `crdgen`. Errors here are `anyhow`: this is the CLI edge.

use std::{
    io::{Read, Write},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use kube::Client;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    admission::NoCluster,
    certs::SelfManaged,
    cli::{CertMode, Cli, Command, InjectArgs, IssuanceMode, RenderArgs, RunArgs, WebhookArgs},
    cluster::ClusterCache,
    crd::RuntimeConfig,
    discovery::run_discovery,
    discovery_endpoint::{DiscoveryService, run_pod_index},
    endpoint::{ServingCert, serve_endpoint},
    identity_endpoint::IdentityService,
    inject::{Issuance, PodIdentity},
    leader::{LeaseConfig, run_election},
    logging,
    manifests::{inject_manifests, render},
    mesh_ca::{MeshCaHandle, MeshCaManager, serves_pod_certificates},
    metrics::Metrics,
    reconcile::{Context, run_controller},
    serve::{Readiness, WebhookState, serve_health, serve_webhooks},
    signer::{SignerSettings, run_signer},
    skips::SkipReporter,
    tls::CertStore,
};

/// Runs the parsed command line; the exit code says whether it succeeded.
pub fn main(cli: Cli) -> ExitCode {
    logging::init(cli.log_format, &cli.log_level);
    let result = match cli.command {
        Command::Render(args) => render_cmd(&args),
        Command::Inject(args) => inject_cmd(&args),
        Command::Crdgen => crdgen(),
        Command::Webhook(args) => runtime().and_then(|rt| rt.block_on(webhook(args))),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(out.flush()?)
}

fn render_cmd(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(&args.file)?;
    match render(&input, args.file_only) {
        Ok(text) => {
            print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn inject_cmd(args: &InjectArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(&args.file)?;
    let (text, reports) = inject_manifests(&input, &args.sidecar.settings())?;
    for r in &reports {
        eprintln!("{}: {}", r.workload, r.outcome);
        for w in &r.warnings {
            eprintln!("  warning: {w}");
        }
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn crdgen() -> anyhow::Result<ExitCode> {
    print(&RuntimeConfig::crd_yaml()?)?;
    Ok(ExitCode::SUCCESS)
}

async fn webhook(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let store = CertStore::new(&args.cert_dir);
    store
        .reload()
        .context("cannot load the serving certificate")?;
    tokio::spawn(store.clone().watch(Duration::from_secs(10)));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "webhook serving (standalone)");
    let state = Arc::new(WebhookState {
        settings: args.sidecar.settings(),
        cluster: Arc::new(NoCluster),
        metrics: Arc::new(Metrics::new()),
        lookup: None,
        skips: None,
    });
    serve_webhooks(listener, store.server_config()?, state, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::default());
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("outrigger-operator-{}", std::process::id()));

    // Webhook TLS: the store re-reads the cert directory, whoever writes it.
    let store = CertStore::new(&args.cert_dir);
    if let Err(e) = store.reload() {
        tracing::info!(error = %e, "no serving certificate yet");
    }
    tokio::spawn(store.clone().watch(Duration::from_secs(10)));
    if args.cert_mode == CertMode::SelfManaged {
        let manager = SelfManaged {
            client: client.clone(),
            namespace: args.namespace.clone(),
            service_name: args.service_name.clone(),
            secret_name: args.secret_name.clone(),
            mutating_webhook_name: args.mutating_webhook_name.clone(),
            validating_webhook_name: args.validating_webhook_name.clone(),
            cert_dir: args.cert_dir.clone(),
        };
        let store = store.clone();
        tokio::spawn(manager.run(Duration::from_secs(3600), move || {
            if let Err(e) = store.reload() {
                tracing::warn!(error = %e, "cannot load the serving certificate");
            }
        }));
    }
    // SIGTERM/SIGINT: one signal, seen by every part that stops.
    let stop = Arc::new(watch::channel(false).0);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.send_replace(true);
        });
    }
    let stopping = {
        let stop = stop.clone();
        move || {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    {
        let (store, ready, stop) = (store.clone(), ready.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                // Not ready once shutdown begins, so the Service stops sending new reviews.
                ready.set(store.is_loaded() && !*stop.borrow());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    let signer = match serves_pod_certificates(&client).await {
        Ok(true) => Some(args.identity.signer_settings()),
        Ok(false) => {
            tracing::info!(
                "the API server does not serve certificates.k8s.io/v1beta1 podcertificaterequests: the Pod Certificates signer is off"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot discover podcertificaterequests: the Pod Certificates signer is off");
            None
        }
    };
    // Every injected sidecar gets an identity (from Pod Certificates when this operator signs
    // them and is asked to, else from the identity endpoint) and the discovery endpoint.
    let mut settings = args.sidecar.settings();
    settings.identity = Some(pod_identity(&args, signer.as_ref()));
    let cluster = ClusterCache::start(client.clone());
    let state = Arc::new(WebhookState {
        settings,
        cluster: cluster.clone(),
        lookup: Some(cluster),
        skips: Some(SkipReporter::start(client.clone(), identity.clone())),
        metrics: metrics.clone(),
    });
    let webhook_listener = TcpListener::bind(args.webhook_address)
        .await
        .with_context(|| format!("cannot listen on {}", args.webhook_address))?;
    let health_listener = TcpListener::bind(args.metrics_address)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_address))?;
    tracing::info!(webhook = %args.webhook_address, metrics = %args.metrics_address, %identity, "operator starting");
    // The webhook drains in-flight reviews on shutdown; `run` waits for it before exiting.
    let webhooks = tokio::spawn(serve_webhooks(
        webhook_listener,
        store.server_config()?,
        state,
        stopping(),
    ));
    tokio::spawn(serve_health(
        health_listener,
        metrics.clone(),
        ready,
        std::future::pending(),
    ));

    // The mesh CA: every replica loads it (the leader signs and publishes the trust bundle).
    let (ca_tx, mesh_ca) = MeshCaHandle::new();
    tokio::spawn(
        MeshCaManager {
            client: client.clone(),
            namespace: args.namespace.clone(),
            secret_name: args.identity.mesh_ca_secret.clone(),
            mode: args.identity.mesh_ca_mode,
        }
        .run(MESH_CA_PERIOD, ca_tx),
    );
    if !mesh_ca.wait_loaded(MESH_CA_START_WAIT).await {
        tracing::warn!(secret = %args.identity.mesh_ca_secret, "mesh CA not loaded yet: ConfigMaps get trust-bundle.pem and the signer issues once it loads");
    }
    // The identity and discovery endpoints: every replica serves them, with a certificate from
    // the mesh CA, and keeps the pods of meshed apps from their EndpointSlices.
    let serving = ServingCert::new(&args.service_name, &args.namespace);
    tokio::spawn(serving.clone().run(mesh_ca.clone()));
    let identity_listener = TcpListener::bind(args.identity.identity_address)
        .await
        .with_context(|| format!("cannot listen on {}", args.identity.identity_address))?;
    tracing::info!(address = %args.identity.identity_address, "identity endpoint serving");
    let (index_tx, pod_index) = watch::channel(None);
    tokio::spawn(run_pod_index(client.clone(), index_tx));
    tokio::spawn(serve_endpoint(
        identity_listener,
        serving
            .server_config()
            .map_err(anyhow::Error::msg)
            .context("cannot build the identity endpoint's TLS settings")?,
        IdentityService::new(
            client.clone(),
            mesh_ca.clone(),
            args.identity.signer_settings(),
            metrics.clone(),
        ),
        DiscoveryService::new(client.clone(), pod_index, metrics.clone()),
        stopping(),
    ));
    let work = LeaderWork {
        ctx: Arc::new(
            Context::new(client.clone(), metrics.clone(), Some(identity.clone()))
                .with_mesh_ca(mesh_ca.clone()),
        ),
        client: client.clone(),
        inbound_port: args.sidecar.sidecar_inbound_port,
        signer: signer.map(|settings| SignerParts {
            client: client.clone(),
            ca: mesh_ca,
            settings,
            metrics: metrics.clone(),
        }),
    };
    if !args.leader_election {
        metrics.set_leader(true);
        work.run(stopping()).await;
        let _ = webhooks.await;
        return Ok(ExitCode::SUCCESS);
    }

    let (tx, leading) = watch::channel(false);
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let election = tokio::spawn(run_election(
        client,
        LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.namespace.clone(),
            identity,
            duration: LEASE_DURATION,
            retry_period: LEASE_RETRY,
        },
        tx,
        async move {
            let _ = release_rx.await;
        },
    ));
    let led = lead_until_stopped(work, &metrics, leading, stopping()).await;
    // The controller has stopped: give the Lease up so a standby takes over at its next retry
    // (within LEASE_RETRY) instead of after the Lease expires.
    let _ = release_tx.send(());
    let _ = election.await;
    if led.is_err() {
        // A lost lease ends the process (it restarts as a follower); drain the webhook first.
        stop.send_replace(true);
    }
    let _ = webhooks.await;
    led.map(|()| ExitCode::SUCCESS)
}

/// What injected sidecars are told of their identity: the operator's endpoint (for discovery,
/// and for certificates where Pod Certificates are not asked for (`auto` or `pod-certificate`)
/// or not signed here).
fn pod_identity(args: &RunArgs, signer: Option<&SignerSettings>) -> PodIdentity {
    let identity = &args.identity;
    let issuance = match (identity.identity_issuance, signer) {
        (IssuanceMode::Auto | IssuanceMode::PodCertificate, Some(s)) => Issuance::PodCertificate {
            signer_name: s.signer_name.clone(),
            max_expiration_seconds: u32::try_from(s.lifetime.as_secs()).unwrap_or(u32::MAX),
        },
        (mode, _) => {
            if mode == IssuanceMode::PodCertificate {
                tracing::warn!(
                    "--identity-issuance=pod-certificate, but the API server does not serve PodCertificateRequests: sidecars use the identity endpoint instead"
                );
            }
            Issuance::Csr
        }
    };
    let server_name = format!("{}.{}.svc", args.service_name, args.namespace);
    PodIdentity {
        trust_domain: identity.trust_domain.clone(),
        endpoint: identity
            .identity_endpoint
            .clone()
            .unwrap_or_else(|| format!("{server_name}:{}", identity.identity_address.port())),
        server_name,
        issuance,
    }
}

/// How often the mesh CA Secret is re-read (and, self-managed, renewed when due).
const MESH_CA_PERIOD: Duration = Duration::from_secs(60);
/// How long `run` waits for the mesh CA before starting the controllers anyway.
const MESH_CA_START_WAIT: Duration = Duration::from_secs(30);

/// What the leader runs: the RuntimeConfig controller, the discovery Services and, where the API
/// server serves PodCertificateRequests, the signer.
#[derive(Clone)]
struct LeaderWork {
    ctx: Arc<Context>,
    signer: Option<SignerParts>,
    /// For the discovery Services.
    client: Client,
    inbound_port: u16,
}

#[derive(Clone)]
struct SignerParts {
    client: Client,
    ca: MeshCaHandle,
    settings: SignerSettings,
    metrics: Arc<Metrics>,
}

impl LeaderWork {
    /// Runs everything until `shutdown` resolves.
    async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let controller = run_controller(self.ctx, stopped());
        let discovery = run_discovery(self.client, self.inbound_port, stopped());
        let signer = {
            let stop = stopped();
            async move {
                if let Some(s) = self.signer {
                    run_signer(s.client, s.ca, s.settings, s.metrics, stop).await;
                }
            }
        };
        let trigger = async move {
            shutdown.await;
            tx.send_replace(true);
        };
        tokio::join!(controller, signer, discovery, trigger);
    }
}

/// How long the Lease is valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews and standbys retry: a released Lease is taken within this.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// Followers wait; the leader runs the controller until shutdown or until it loses the Lease (an
/// error: the process exits so it restarts as a follower). Returns once the controller stopped.
async fn lead_until_stopped(
    work: LeaderWork,
    metrics: &Metrics,
    mut leading: watch::Receiver<bool>,
    stopping: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stopping);
    tokio::select! {
        () = &mut stopping => return Ok(()),
        changed = leading.wait_for(|l| *l) => { changed.context("leader election stopped")?; }
    }
    metrics.set_leader(true);
    tracing::info!("leading: starting the controller and the signer");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(work.run(async move {
        let _ = stop_rx.await;
    }));
    let lost = tokio::select! {
        () = &mut stopping => false,
        _ = leading.wait_for(|l| !*l) => true,
    };
    let _ = stop_tx.send(());
    let _ = controller.await;
    metrics.set_leader(false);
    if lost {
        anyhow::bail!("lost the leader lease; exiting so a new leader takes over cleanly");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
