//! The proxy core for multiplexed protocols (Bolt, Dubbo): serving one downstream connection —
//! frames decoded as they arrive, heartbeats answered locally and never forwarded, each request
//! routed and forwarded concurrently on its own task, answers written back in any order under
//! the downstream's request id — and the exchange of one request with the route's cluster:
//! host choice, the upstream pool (which gives the request its own id on the upstream
//! connection), retries, and errors answered in the protocol's own status codes. Bytes that are
//! not the protocol close that connection only. Not for the protocols' details (see `bolt` and
//! `dubbo`) or HTTP (see `forward`).

use std::{
    borrow::Cow,
    marker::PhantomData,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use outrigger_codec::Limits;
use outrigger_config::RetryOn;
use outrigger_core::{
    AccessRecord, AttrValue, Cause, FOREIGN_TRACE_ID_KEYS, Failure, HeartbeatLabels, LabelStr,
    ProtocolLabels, ProxyError, Span, SpanKind, StatusLabel, TRACEPARENT, TraceContext,
    XprotocolLabels,
};
use outrigger_pool::{FrameKind, Io, LocalWire, MuxError, MuxPool, write_batch};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};
use tracing::Instrument;

use crate::{
    authz,
    cluster::Host,
    forward::{Trail, Upstream, forward},
    http::Origin,
    limits::{SocketLimits, until},
    outlier::Health,
    route::{RequestView, Retry},
    snapshot::Shared,
};

/// Requests of one downstream connection in the proxy at once; reading pauses beyond that.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Answers queued for a downstream connection's writer.
const WRITE_QUEUE: usize = 256;
/// Initial read buffer of a connection; it grows up to the frame limit.
const READ_BUFFER: usize = 16 * 1024;

/// What the proxy core needs of a multiplexed protocol beyond its framing.
pub(crate) trait ServerProtocol: LocalWire<Frame: Health> {
    /// What routes see of a request.
    type View<'a>: RequestView;

    /// The routing view of a request; an error means the request is malformed.
    fn view<'a>(request: &'a Self::Frame, limits: &'a Limits) -> Result<Self::View<'a>, String>;
    /// The request's fields that routes match, for messages.
    fn describe(view: &Self::View<'_>) -> String;
    /// How long the caller said it will wait, if the request says.
    fn caller_timeout(request: &Self::Frame, limits: &Limits) -> Option<Duration>;
    /// The proxy's own answer to `request`, in the protocol's status codes, marked as the
    /// proxy's.
    fn error_answer(request: &Self::Frame, error: &ProxyError) -> Self::Frame;
    /// The host's pool, when the host speaks this protocol.
    fn pool(host: &Host) -> Option<&MuxPool<Self>>;
    /// The frame's payload size in bytes, for access logs.
    fn payload_len(frame: &Self::Frame) -> usize;
}

/// Serves one downstream connection whose first bytes (maybe none yet) are in `buf`, until
/// the peer closes, it sends bytes that are not `P`, or the sidecar shuts down (then requests
/// in flight are answered first).
pub(crate) async fn serve<P: ServerProtocol, I: Io>(
    io: I,
    buf: BytesMut,
    listener: Arc<str>,
    shared: Arc<Shared>,
    limits: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    let span = tracing::debug_span!("proxy_conn", listener = %listener, protocol = P::NAME);
    serve_inner::<P, I>(io, buf, listener, shared, limits, peer)
        .instrument(span)
        .await;
}

async fn serve_inner<P: ServerProtocol, I: Io>(
    io: I,
    mut buf: BytesMut,
    listener: Arc<str>,
    shared: Arc<Shared>,
    socket: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    // A socket client must send its first frame within the header read timeout, and may then
    // stay silent (no frame, no request in flight) for at most the idle timeout.
    let mut first_frame = true;
    let mut quiet_since = Instant::now();
    let limits = Limits::default();
    let (mut rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(wr, rx).in_current_span());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    let mut tasks = JoinSet::new();
    buf.reserve(READ_BUFFER);
    let garbage = 'conn: loop {
        loop {
            let frame = match P::decode(&mut buf, &limits) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn Some(e.to_string()),
            };
            first_frame = false;
            match P::kind(&frame) {
                FrameKind::Heartbeat => {
                    if let Ok(ack) = P::encode(&P::heartbeat_ack(&frame))
                        && tx.send(ack).await.is_ok()
                    {
                        shared
                            .metrics
                            .heartbeats
                            .get_or_create(&HeartbeatLabels {
                                protocol: P::NAME.to_owned(),
                                name: format!("listener/{listener}"),
                                event: "answered".to_owned(),
                            })
                            .inc();
                    }
                }
                FrameKind::Request { .. } => {
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break 'conn None;
                    };
                    let (shared, listener, tx, limits, peer) = (
                        shared.clone(),
                        listener.clone(),
                        tx.clone(),
                        limits.clone(),
                        peer.clone(),
                    );
                    let origin = if socket.is_some() {
                        Origin::Socket
                    } else {
                        Origin::InProcess
                    };
                    tasks.spawn(
                        async move {
                            if let Some(answer) =
                                handle::<P>(&shared, &listener, frame, &limits, origin, peer).await
                            {
                                match P::encode(&answer) {
                                    Ok(bytes) => {
                                        let _ = tx.send(bytes).await;
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "cannot encode an answer");
                                    }
                                }
                            }
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
                FrameKind::Response | FrameKind::HeartbeatAck | FrameKind::Other => {
                    tracing::debug!(kind = ?P::kind(&frame), "ignoring a frame the client sent unasked");
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        let quiet_deadline = socket.as_ref().and_then(|l| {
            if first_frame {
                quiet_since.checked_add(l.server.header_read_timeout)
            } else if tasks.is_empty() {
                quiet_since.checked_add(l.idle_timeout)
            } else {
                None
            }
        });
        tokio::select! {
            () = until(quiet_deadline) => {
                if let Some(l) = &socket {
                    l.server.fired(if first_frame { "first_frame_timeout" } else { "idle_timeout" });
                }
                tracing::debug!(first_frame, "closing a silent connection");
                break None;
            }
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(buffered = buf.len(), "client closed the connection mid-frame");
                    }
                    break None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "read failed");
                    break None;
                }
                Ok(_) => quiet_since = Instant::now(),
            },
            () = shared.shutdown.signalled() => break None,
            Some(_) = tasks.join_next() => quiet_since = Instant::now(),
        }
    };
    match garbage {
        Some(e) => {
            // The stream is out of sync: nothing more on it can be trusted or answered.
            shared
                .metrics
                .xprotocol_decode_errors
                .get_or_create(&ProtocolLabels {
                    protocol: P::NAME.to_owned(),
                    name: format!("listener/{listener}"),
                })
                .inc();
            tracing::debug!(error = %e, "closing a connection that sent bytes that are not {}", P::NAME);
            tasks.abort_all();
            writer.abort();
        }
        None => {
            while tasks.join_next().await.is_some() {}
            drop(tx);
            let _ = writer.await;
        }
    }
}

/// Writes answers as they come, the ones queued together gathered into one write.
async fn write_loop<W: tokio::io::AsyncWrite>(
    mut wr: tokio::io::WriteHalf<W>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        if let Err(e) = write_batch(&mut wr, first, &mut rx, &mut batch).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Routes and forwards one request; returns the answer to write back (none for one-way
/// requests), under the downstream's request id.
async fn handle<P: ServerProtocol>(
    shared: &Shared,
    listener: &Arc<str>,
    request: P::Frame,
    limits: &Limits,
    origin: Origin,
    peer: Option<Arc<str>>,
) -> Option<P::Frame> {
    exchange::<P>(shared, listener, request, limits, origin, peer)
        .await
        .0
}

/// Routes and forwards one request a channel of this process handed over decoded: the answer
/// (none for one-way requests), or the proxy's own failure, typed.
pub(crate) async fn dispatch<P: ServerProtocol>(
    shared: &Shared,
    listener: &Arc<str>,
    request: P::Frame,
) -> Result<Option<P::Frame>, ProxyError> {
    let limits = Limits::default();
    match exchange::<P>(shared, listener, request, &limits, Origin::InProcess, None).await {
        (_, Some(failure)) => Err(failure),
        (answer, None) => Ok(answer),
    }
}

/// Routes and forwards one request: the answer to write back (the proxy's own error answer when
/// it failed; none for one-way requests), under the downstream's request id, and the failure.
async fn exchange<P: ServerProtocol>(
    shared: &Shared,
    listener: &Arc<str>,
    request: P::Frame,
    limits: &Limits,
    origin: Origin,
    peer: Option<Arc<str>>,
) -> (Option<P::Frame>, Option<ProxyError>) {
    let one_way = P::kind(&request) == FrameKind::Request { one_way: true };
    let obs = &shared.obs;
    // The record feeds the access line and, for a socket request (only those get the proxy's
    // own server span), the span's attributes: an in-process call with export on needs none.
    let needs_record =
        obs.access_log.is_some() || (origin == Origin::Socket && obs.spans.is_some());
    let mut line = needs_record.then(|| {
        let mut line = AccessRecord::new(P::NAME, SystemTime::now());
        line.bytes_in = P::payload_len(&request) as u64;
        line.peer_identity = peer.clone();
        (line, Instant::now())
    });
    let mut span = None;
    let (outcome, cluster) = forward_request::<P>(
        shared,
        listener,
        &request,
        limits,
        line.as_mut().map(|(l, _)| l),
        Source {
            origin,
            peer: peer.as_deref(),
        },
        &mut span,
    )
    .await;
    let mut failure = None;
    let answer = match outcome {
        Ok(Some(mut answer)) => {
            P::set_id(&mut answer, P::id(&request));
            Some(answer)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(cause = %e.cause(), message = %e, "answering with the proxy's own error");
            let answer = (!one_way).then(|| P::error_answer(&request, &e));
            failure = Some(e);
            answer
        }
    };
    let status = answer.as_ref().map_or(StatusLabel::Word("oneway"), |a| {
        StatusLabel::Code(P::status(a))
    });
    shared
        .metrics
        .xprotocol_requests
        .get_or_create(&XprotocolLabels {
            protocol: P::NAME,
            listener: LabelStr::from(listener),
            cluster,
            status,
        })
        .inc();
    if let Some((mut line, arrival)) = line {
        if let Some(a) = &answer {
            line.status = Some(P::status(a));
            line.bytes_out = P::payload_len(a) as u64;
        }
        line.duration = arrival.elapsed();
        // Only a socket request's span is the proxy's own, recorded when it ends.
        if origin == Origin::Socket
            && let (Some(sink), Some(span)) = (obs.recorder(span.as_ref()), &span)
        {
            let mut attrs = vec![
                ("rpc.system", AttrValue::from(P::NAME)),
                ("outrigger.listener", listener.to_string().into()),
                ("rpc.service", line.target.clone().into()),
                ("rpc.method", line.method.clone().into()),
                ("outrigger.attempts", i64::from(line.attempts).into()),
            ];
            if let Some(status) = line.status {
                attrs.push(("outrigger.status", i64::from(status).into()));
            }
            if let Some(route) = &line.route {
                attrs.push(("outrigger.route", route.to_string().into()));
            }
            if let Some(cluster) = &line.cluster {
                attrs.push(("outrigger.cluster", cluster.to_string().into()));
            }
            if let Some(peer) = &line.peer_identity {
                attrs.push(("outrigger.peer_identity", peer.to_string().into()));
            }
            authz::span_attributes(&line, &mut attrs);
            let error = failure.as_ref().map(|e| {
                attrs.push(("error.type", e.cause().as_str().into()));
                e.to_string()
            });
            sink.record(span.finish(
                SpanKind::Server,
                format!("{}/{}", line.target, line.method),
                attrs,
                error,
            ));
        }
        if let Some(log) = &obs.access_log {
            log.log(line);
        }
    }
    (answer, failure)
}

/// The first value of the header (Bolt) or attachment (Dubbo) `name`, as routes see it.
fn first_value(view: &dyn RequestView, name: &str) -> Option<String> {
    let mut found = None;
    view.any_header(name, &mut |v| {
        found = Some(v.to_owned());
        true
    });
    found
}

type Outcome<F> = Result<Option<F>, ProxyError>;

/// Where a request came from: in process or a socket, and over mutual TLS the caller's SPIFFE
/// id (what its listener's policy decides on).
#[derive(Clone, Copy)]
struct Source<'a> {
    origin: Origin,
    peer: Option<&'a str>,
}

/// Finds the route and forwards the request to its cluster through the one pipeline. Returns
/// the outcome and the cluster's name (empty when no route matched).
async fn forward_request<P: ServerProtocol>(
    shared: &Shared,
    listener: &str,
    request: &P::Frame,
    limits: &Limits,
    mut line: Option<&mut AccessRecord>,
    Source { origin, peer }: Source<'_>,
    span: &mut Option<Span>,
) -> (Outcome<P::Frame>, LabelStr) {
    let snapshot = shared.live.load_full();
    let Some(table) = snapshot.listeners.get(listener) else {
        let msg = format!("listener {listener} is not in the live config");
        return (
            Err(ProxyError::new(Cause::NoRoute, msg)),
            LabelStr::Static(""),
        );
    };
    if let Err(e) = snapshot.admit_listener(listener) {
        return (Err(e), LabelStr::Static(""));
    }
    let route = {
        let view = match P::view(request, limits) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Err(ProxyError::new(Cause::BadRequest, e)),
                    LabelStr::Static(""),
                );
            }
        };
        let obs = &shared.obs;
        if obs.traces() {
            // The frame goes upstream as it came, its trace context too. A socket request
            // gets the proxy's own server span; an in-process one's context is the sidecar's
            // server span of the call already.
            let incoming = first_value(&view, TRACEPARENT);
            let traceparent = || incoming.as_deref().map(str::as_bytes);
            *span = match origin {
                // Another tracer's trace id (SOFATracer, B3) keeps the call in its trace.
                Origin::Socket if incoming.is_none() => FOREIGN_TRACE_ID_KEYS
                    .iter()
                    .find_map(|k| first_value(&view, k))
                    .and_then(|id| TraceContext::from_foreign(&id, obs.sampling_ratio))
                    .map(|context| obs.adopt(context, None))
                    .or_else(|| obs.span(|| None)),
                Origin::Socket => obs.span(traceparent),
                Origin::InProcess => traceparent()
                    .and_then(|t| TraceContext::parse(t).ok())
                    .map(|context| obs.adopt(context, None)),
            };
        }
        if let Some(line) = line.as_deref_mut() {
            line.trace_id = span.as_ref().map(|s| s.context.trace_id);
            line.target = first_value(&view, "service").unwrap_or_default();
            line.method = view.method().unwrap_or_default().to_owned();
        }
        let (decision, allowed) = authz::check(
            snapshot.policy(listener),
            &shared.metrics,
            listener,
            peer,
            &view,
        );
        if let (Some(line), Some(d)) = (line.as_deref_mut(), decision) {
            line.authz_decision = Some(d.verdict.as_str());
            line.authz_rule = Some(d.rule);
        }
        if let Err(e) = allowed {
            return (Err(e), LabelStr::Static(""));
        }
        match table.find_view(&view) {
            Some(route) => route,
            None => {
                let msg = format!(
                    "no route in table {} matches {}",
                    table.name,
                    P::describe(&view)
                );
                return (
                    Err(ProxyError::new(Cause::NoRoute, msg)),
                    LabelStr::Static(""),
                );
            }
        }
    };
    let deadline = route.deadline(P::caller_timeout(request, limits));
    let mut trail = Trail::default();
    let outcome = forward::<Mux<P>>(
        shared,
        route,
        request.clone(),
        deadline,
        &mut trail,
        span.as_ref(),
    )
    .await;
    if let Some(line) = line {
        line.route = Some(route.name.clone());
        line.cluster = Some(route.cluster.name.clone());
        line.upstream_host = trail.host;
        line.attempts = trail.attempts;
    }
    (outcome, LabelStr::from(&route.cluster.name))
}

/// A multiplexed protocol's upstreams, for the forwarding pipeline.
struct Mux<P>(PhantomData<P>);

impl<P: ServerProtocol> Upstream for Mux<P> {
    const NAME: &'static str = P::NAME;
    type Pool = MuxPool<P>;
    type Request = P::Frame;
    type Response = Option<P::Frame>;
    type Error = MuxError;

    fn pool(host: &Host) -> Option<&MuxPool<P>> {
        P::pool(host)
    }

    fn exchange<'a>(
        pool: &'a MuxPool<P>,
        _: &'a Host,
        req: P::Frame,
        deadline: Instant,
        _: Option<&'a mut Duration>,
    ) -> impl std::future::Future<Output = Result<Option<P::Frame>, MuxError>> + Send + 'a {
        // Calls share connections: nothing waits for one of its own.
        pool.call(req, deadline)
    }

    fn trace(_: &mut P::Frame, _: &TraceContext) {
        // The frame goes upstream byte for byte: its context names the sidecar's server span
        // (in process) or the caller's span (a socket listener), not the try's.
    }

    fn operation(_: &P::Frame) -> Cow<'static, str> {
        Cow::Borrowed(P::NAME)
    }

    fn status(resp: &Option<P::Frame>) -> Option<i64> {
        resp.as_ref().map(|f| i64::from(P::status(f)))
    }

    fn answered(_: &Option<P::Frame>) -> Option<RetryOn> {
        // Bolt and Dubbo statuses are not retry conditions (yet).
        None
    }

    fn intact(_: &P::Frame) -> bool {
        true
    }

    fn replayable(_: &P::Frame, _: &Retry) -> bool {
        // An RPC is retried as the route says: routes opt in with `retry.on`.
        true
    }
}
