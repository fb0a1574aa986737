//! Wiring: one running sidecar — proxy core, live config, gRPC API, Dapr's HTTP API, admin
//! endpoint and the config-file watcher — started together and shut down together (stop accepting, let
//! in-flight calls finish within a grace period). Used by `main` and by tests.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use outrigger_api::{ApiListener, ApiToken, GrpcSettings, Health, HttpApi, RuntimeApi};
use outrigger_config::{ACCESS_LOG_STDOUT, AccessLogConfig};
use outrigger_config::{ChannelTarget, RuntimeConfigSpec};
use outrigger_core::{
    AccessLog, AccessLogError, AccessLogFormat, AccessLogSink, Metrics, Observability, Shutdown,
    SpanSink, Workers,
};
use outrigger_identity::{Discovery, Identity, IdentityError};
use outrigger_proxy::ProxyCore;
use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    admin::{self, AdminState},
    config::{DEFAULT_WATCH_INTERVAL, Live, Overrides, Reloader, watch_file},
    otlp::{self, OtlpError},
};

/// How a sidecar runs, beyond its config document.
#[derive(Clone, Debug)]
pub struct Options {
    /// Addresses that win over the document's.
    pub overrides: Overrides,
    /// The file to watch for changes; no watching when `None`.
    pub config_path: Option<PathBuf>,
    /// How often the file is checked.
    pub watch_interval: Duration,
    /// How long in-flight calls may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// The API token of both APIs when the config sets none (`main` reads `DAPR_API_TOKEN`).
    pub api_token: Option<String>,
    /// Worker threads serving connections, each with its own single-threaded runtime and its
    /// own socket of every address; 0 serves them on the runtime `start` is called on.
    pub worker_threads: usize,
    /// A unix socket the gRPC API also accepts on, beside `grpc.address`.
    pub grpc_socket: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            overrides: Overrides::default(),
            config_path: None,
            watch_interval: DEFAULT_WATCH_INTERVAL,
            drain_timeout: Duration::from_secs(10),
            api_token: None,
            worker_threads: 0,
            grpc_socket: None,
        }
    }
}

/// Why a sidecar did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid or its listeners cannot be bound.
    #[error("the config cannot be loaded:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// The access log file cannot be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The OTLP exporter cannot start.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The identity files cannot be used.
    #[error("the sidecar's identity cannot be loaded: {0}")]
    Identity(#[from] IdentityError),
    /// The worker threads cannot be started.
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] io::Error),
    /// A server address cannot be bound.
    #[error("cannot bind the {what} address {address}: {source}")]
    Bind {
        /// `grpc`, `grpcSocket`, `httpApi` or `admin`.
        what: &'static str,
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What Dapr's health endpoints report: serving (and not shutting down); for outbound calls,
/// also every channel of the live config reaching its listener.
struct SidecarHealth {
    ready: Arc<AtomicBool>,
    live: Arc<Live>,
    proxy: Arc<ProxyCore>,
}

impl Health for SidecarHealth {
    fn healthy(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn outbound_ready(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        let spec = self.live.current().spec.clone();
        !spec.rpc.channels.is_empty()
            && spec.rpc.channels.iter().all(|c| match c.target(&spec) {
                Ok(ChannelTarget::Named(name)) => self.proxy.has_listener(&name),
                Ok(_) => true,
                Err(_) => false,
            })
    }
}

/// A running sidecar.
pub struct Sidecar {
    grpc_address: String,
    http_api_address: Option<SocketAddr>,
    admin_address: SocketAddr,
    reloader: Arc<Reloader>,
    proxy: Arc<ProxyCore>,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
    drain_timeout: Duration,
    access_log: Option<AccessLog>,
    spans: Option<SpanSink>,
    workers: Workers,
}

impl Sidecar {
    /// Loads `spec`, binds every address and starts serving.
    pub async fn start(
        spec: RuntimeConfigSpec,
        options: Options,
        metrics: Metrics,
    ) -> Result<Self, StartError> {
        let workers = match options.worker_threads {
            0 => Workers::current(),
            n => Workers::start(n).map_err(StartError::Workers)?,
        };
        let started = Self::start_on(spec, options, metrics, workers.clone()).await;
        if started.is_err() {
            // Tasks already on the workers (listeners bound before a later failure) end with
            // their runtimes.
            workers.stop().await;
        }
        started
    }

    async fn start_on(
        spec: RuntimeConfigSpec,
        options: Options,
        metrics: Metrics,
        workers: Workers,
    ) -> Result<Self, StartError> {
        let shutdown = Shutdown::new();
        // Checked before the access log file is opened; the reloader checks it again.
        let mut checked = spec.clone();
        options.overrides.apply(&mut checked);
        outrigger_config::validate(&checked).map_err(|e| StartError::Config(e.lines()))?;
        let obs = observability(&spec, &metrics)?;
        // The identity's paths are read at start; its files are watched from then on.
        let identity = match &checked.identity {
            Some(cfg) => Some(Identity::load(cfg, metrics.clone()).await?),
            None => None,
        };
        let discovery = match (&checked.discovery_service, &identity) {
            (Some(cfg), Some(identity)) => Some(
                Discovery::new(cfg, identity.clone(), shutdown.clone())
                    .map_err(|e| StartError::Config(vec![format!("discoveryService: {e}")]))?,
            ),
            (Some(_), None) => {
                return Err(StartError::Config(vec![
                    "discoveryService: needs the sidecar's identity, whose trust bundle verifies the endpoint (set `identity`)".to_owned(),
                ]));
            }
            (None, _) => None,
        };
        let proxy = Arc::new(ProxyCore::meshed(
            metrics.clone(),
            shutdown.clone(),
            obs.clone(),
            identity.clone(),
            discovery,
            workers.clone(),
        ));
        let reloader = Arc::new(
            Reloader::start(
                spec,
                options.overrides.clone(),
                proxy.clone(),
                metrics.clone(),
            )
            .await
            .map_err(StartError::Config)?,
        );
        let live = reloader.live();
        let spec = live.current().spec.clone();

        let mut api_listeners = ApiListener::bind(&spec.grpc.address, &workers)
            .await
            .map_err(|source| StartError::Bind {
                what: "grpc",
                address: spec.grpc.address.clone(),
                source,
            })?;
        let grpc_address = api_listeners
            .first()
            .map(|(l, _)| l.describe())
            .unwrap_or_default();
        if let Some(path) = &options.grpc_socket {
            let address = format!("unix://{}", path.display());
            let bind_error = |source| StartError::Bind {
                what: "grpcSocket",
                address: address.clone(),
                source,
            };
            let socket = ApiListener::bind(&address, &workers)
                .await
                .map_err(bind_error)?;
            // The socket is shared with the app's containers, which run as any user: its
            // directory (a pod's own volume) is what keeps others out.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .map_err(bind_error)?;
            api_listeners.extend(socket);
        }
        let admin_listener = TcpListener::bind(&spec.admin.address)
            .await
            .map_err(|source| StartError::Bind {
                what: "admin",
                address: spec.admin.address.clone(),
                source,
            })?;
        let admin_address = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin",
                address: spec.admin.address.clone(),
                source,
            })?;

        let http_api_listener = match &spec.http_api.address {
            None => None,
            Some(address) => {
                let bind_error = |source| StartError::Bind {
                    what: "httpApi",
                    address: address.clone(),
                    source,
                };
                let sockets = workers.bind(address).await.map_err(bind_error)?;
                let a = sockets[0].local_addr().map_err(bind_error)?;
                let on_workers: Vec<_> = sockets
                    .into_iter()
                    .zip(workers.handles().iter().cloned())
                    .collect();
                Some((on_workers, a))
            }
        };
        let http_api_address = http_api_listener.as_ref().map(|(_, a)| *a);

        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let access_log = obs.access_log.clone();
        let spans = obs.spans.clone();
        let api = RuntimeApi::new(live.clone(), metrics.clone()).observed(obs);
        let token = |configured: &Option<String>| {
            configured
                .as_deref()
                .or(options.api_token.as_deref())
                .and_then(ApiToken::new)
        };
        let max_message_bytes = usize::try_from(spec.grpc.max_message_bytes).unwrap_or(usize::MAX);
        let grpc = GrpcSettings {
            max_message_bytes,
            max_concurrent_requests: usize::try_from(spec.grpc.max_concurrent_requests)
                .unwrap_or(usize::MAX),
            max_connections: spec.grpc.connection_limit(),
            max_concurrent_streams: spec.grpc.stream_limit(),
            api_token: token(&spec.grpc.api_token),
            passthrough: Some(Arc::new(proxy.streams())),
        };
        if let Some((listeners, _)) = http_api_listener {
            let http_api = HttpApi::new(
                api.clone(),
                Arc::new(SidecarHealth {
                    ready: ready.clone(),
                    live: live.clone(),
                    proxy: proxy.clone(),
                }),
                token(&spec.http_api.api_token),
                max_message_bytes,
            );
            tasks.spawn(outrigger_api::serve_http_api(
                listeners,
                http_api,
                shutdown.clone(),
            ));
        }
        let api_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = outrigger_api::serve(api_listeners, api, grpc, api_shutdown).await {
                tracing::error!(error = %e, "grpc server failed");
            }
        });
        tasks.spawn(admin::serve(
            admin_listener,
            AdminState {
                live,
                metrics,
                proxy: proxy.clone(),
                ready: ready.clone(),
            },
            shutdown.clone(),
        ));
        if let Some(identity) = identity {
            identity.watch(options.watch_interval, shutdown.clone());
        }
        if let Some(path) = options.config_path.clone() {
            tasks.spawn(watch_file(
                reloader.clone(),
                path,
                options.watch_interval,
                shutdown.clone(),
            ));
        }
        ready.store(true, Ordering::Release);
        tracing::info!(
            grpc = %grpc_address,
            grpc_socket = %options.grpc_socket.as_ref().map_or_else(|| "off".to_owned(), |p| p.display().to_string()),
            http_api = %http_api_address.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            admin = %admin_address,
            workers = workers.len(),
            "outrigger is serving"
        );
        Ok(Self {
            grpc_address,
            http_api_address,
            admin_address,
            reloader,
            proxy,
            ready,
            shutdown,
            tasks,
            drain_timeout: options.drain_timeout,
            access_log,
            spans,
            workers,
        })
    }

    /// Waits until every access log line of the calls answered so far is written (nothing
    /// to wait for when access logs are off).
    pub async fn flush_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.flush().await;
        }
    }

    /// Waits until every span of the calls answered so far is exported or given up on
    /// (nothing to wait for when spans are not exported).
    pub async fn flush_spans(&self) {
        if let Some(spans) = &self.spans {
            spans.flush().await;
        }
    }

    /// The bound gRPC address (`ip:port` or `unix:///path`).
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// The bound address of Dapr's HTTP API; `None` when it is off.
    pub fn http_api_address(&self) -> Option<SocketAddr> {
        self.http_api_address
    }

    /// The bound admin address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The reloader, to apply a new config programmatically.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// The proxy core.
    pub fn proxy(&self) -> &Arc<ProxyCore> {
        &self.proxy
    }

    /// Stops accepting, waits up to the drain timeout for in-flight calls, and stops.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Release);
        self.shutdown.signal();
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while self.tasks.join_next().await.is_some() {}
            // Proxy and API connections answer what is in flight, then close.
            self.shutdown.drained().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout_ms = self.drain_timeout.as_millis(),
                "in-flight calls did not finish within the drain timeout; stopping anyway"
            );
            self.tasks.abort_all();
        }
        // What a timed-out drain left on the workers ends with their runtimes.
        self.workers.stop().await;
        self.flush_access_log().await;
        self.flush_spans().await;
        tracing::info!("outrigger stopped");
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> io::Result<()> {
        wait_for_signal().await?;
        tracing::info!("signal received; draining");
        self.shutdown().await;
        Ok(())
    }
}

/// The access log (its writer started) and trace context settings of `spec`, which every edge
/// and the proxy core share. Read once at start.
fn observability(spec: &RuntimeConfigSpec, metrics: &Metrics) -> Result<Observability, StartError> {
    let access_log = match &spec.access_log {
        None => None,
        Some(AccessLogConfig { format, path }) => {
            let format = match format {
                outrigger_config::AccessLogFormat::Json => AccessLogFormat::Json,
                outrigger_config::AccessLogFormat::Text => AccessLogFormat::Text,
            };
            let sink = if path == ACCESS_LOG_STDOUT {
                AccessLogSink::Stdout
            } else {
                AccessLogSink::File(PathBuf::from(path))
            };
            // The writer ends by itself once the last handle is dropped.
            let (log, _writer) = AccessLog::start(format, &sink, metrics)?;
            Some(log)
        }
    };
    let spans = match spec.tracing.as_ref().and_then(|t| t.otlp.as_ref()) {
        None => None,
        Some(otlp) => {
            // The exporter ends by itself once the last sink is dropped.
            let (sink, _exporter) = otlp::start(otlp, metrics)?;
            Some(sink)
        }
    };
    Ok(Observability {
        access_log,
        spans,
        propagate: spec.tracing.is_some(),
        sampling_ratio: spec
            .tracing
            .as_ref()
            .and_then(|t| t.sampling_ratio)
            .unwrap_or(1.0),
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
