//! A multiplexed connection pool for Bolt and Dubbo: many callers share each connection, and
//! answers find their caller by a request id the pool assigns per connection. As in Layotto's
//! `xchannel`, `size` caps the callers writing at once (a writer holds a connection only while
//! its frame is queued, then returns it for the next one), so at most `size` connections are
//! open; the calls waiting for answers are bounded too. A call whose connection dies fails at
//! once, one past its deadline is dropped from the pending map, and idle connections are
//! probed with heartbeats and closed after too many go unanswered. A caller writes on a
//! connection its own worker thread opened while the pool has room for one, so a call's
//! wake-ups stay on its thread. A pool whose target is a
//! named listener of this process opens no connection: each call hands its frame to the
//! listener in the caller's task, within the same bound on calls waiting for answers. Used by the `bolt` and
//! `dubbo` channels and by the proxy core's Bolt and Dubbo upstreams. Not for HTTP (see
//! `pool::http1`) or for what a frame means (see `channel` and `proxy`).

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use outrigger_codec::{EncodeError, Limits};
use parking_lot::Mutex;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use outrigger_core::{
    Cause, Failure, HeartbeatLabels, LabelStr, Metrics, MuxCallLabels, NameLabels, PoolSeries,
    ProtocolLabels, ProxyError, StatusLabel,
};

use crate::{
    bounded::PoolError,
    dial::{ConnectError, Dial, Io, Open},
    local::{LocalMux, LocalWire},
    wait::WaitLimit,
    wire::{FrameKind, Wire},
};

/// Calls one connection may have waiting for answers; a pool allows `size` times this.
pub const MAX_PENDING_PER_CONNECTION: usize = 1024;
/// Frames queued for a connection's writer before callers wait.
const WRITE_QUEUE: usize = 256;
/// Initial read buffer of a connection; it grows up to the frame limit.
const READ_BUFFER: usize = 16 * 1024;
/// Queued frames are gathered into writes of at most this many bytes (a frame this big or
/// bigger is written on its own, without copying).
const MAX_WRITE_BATCH: usize = 64 * 1024;

/// Heartbeat settings of a pool's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Silence after which a heartbeat is sent.
    pub interval: Duration,
    /// Unanswered heartbeats in a row after which the connection is closed.
    pub misses: u32,
}

impl Heartbeat {
    /// From the config; `None` when heartbeats are off.
    pub fn from_config(cfg: &outrigger_config::HeartbeatConfig) -> Option<Self> {
        cfg.interval().map(|interval| Self {
            interval,
            misses: cfg.misses.max(1),
        })
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct MuxSettings {
    /// Shown in errors and metric labels, e.g. `channel/bolt`.
    pub name: String,
    /// Callers writing at once, and so connections open at most.
    pub size: usize,
    /// A connection without calls for this long is closed.
    pub idle_timeout: Duration,
    /// Heartbeats on idle connections, or none.
    pub heartbeat: Option<Heartbeat>,
    /// Caps on what a peer may make a connection buffer.
    pub limits: Limits,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// No connection: the writers stayed busy, or connecting failed.
    #[error(transparent)]
    Pool(#[from] PoolError<ConnectError>),
    /// Too many calls were already waiting for answers until the deadline.
    #[error(
        "{pending} calls on pool {pool} already wait for answers; none finished within {waited_ms} ms"
    )]
    Overflow {
        /// The pool's name.
        pool: String,
        /// The bound on waiting calls.
        pending: usize,
        /// How long the caller waited.
        waited_ms: u128,
    },
    /// The connection closed while the call was on it.
    #[error("connection to {target} closed before the answer: {reason}")]
    Closed {
        /// Where the connection went.
        target: String,
        /// Why it closed.
        reason: String,
    },
    /// The deadline passed.
    #[error("no answer from {target} before the deadline")]
    Timeout {
        /// Where the call went.
        target: String,
    },
    /// The named listener of this process answered with the proxy's own failure (no route, no
    /// healthy host, an upstream failure); its message is the proxy's.
    #[error(transparent)]
    Local(ProxyError),
    /// The frame does not fit the protocol's length fields.
    #[error("cannot encode the {protocol} frame: {source}")]
    Encode {
        /// `bolt` or `dubbo`.
        protocol: &'static str,
        /// The codec's error.
        #[source]
        source: EncodeError,
    },
}

impl Failure for MuxError {
    fn cause(&self) -> Cause {
        match self {
            MuxError::Pool(e) => e.cause(),
            MuxError::Overflow { .. } => Cause::Overflow,
            MuxError::Closed { .. } => Cause::Reset,
            MuxError::Timeout { .. } => Cause::Timeout,
            MuxError::Encode { .. } => Cause::BadRequest,
            MuxError::Local(e) => e.cause(),
        }
    }
}

impl MuxError {
    /// The outcome label of the `mux_calls` metric.
    fn label(&self) -> &'static str {
        match self {
            MuxError::Pool(PoolError::Exhausted { .. }) | MuxError::Overflow { .. } => "overflow",
            MuxError::Pool(PoolError::WaitersFull { .. }) => "circuit_open",
            MuxError::Pool(_) => "connect_failure",
            MuxError::Closed { .. } => "closed",
            MuxError::Timeout { .. } => "timeout",
            MuxError::Encode { .. } => "encode",
            MuxError::Local(e) => e.cause().as_str(),
        }
    }
}

/// The pool's metric handles, shared by its connections.
#[derive(Clone)]
struct MuxMetrics {
    connections: Gauge,
    pending: Gauge,
    unknown: Counter,
    hb_sent: Counter,
    hb_acked: Counter,
    hb_missed: Counter,
    hb_answered: Counter,
    waits: Counter,
    wait_seconds: Histogram,
    calls: prometheus_client::metrics::family::Family<MuxCallLabels, Counter>,
    /// The pool's name, shared by every call's labels.
    name: Arc<str>,
    protocol: &'static str,
}

impl MuxMetrics {
    fn new(metrics: &Metrics, protocol: &'static str, name: &str) -> Self {
        let proto = ProtocolLabels {
            protocol: protocol.to_owned(),
            name: name.to_owned(),
        };
        let hb = |event: &str| {
            metrics
                .heartbeats
                .get_or_create(&HeartbeatLabels {
                    protocol: protocol.to_owned(),
                    name: name.to_owned(),
                    event: event.to_owned(),
                })
                .clone()
        };
        let named = NameLabels {
            name: name.to_owned(),
        };
        Self {
            connections: metrics.pool_connections.get_or_create(&named).clone(),
            pending: metrics.mux_pending.get_or_create(&proto).clone(),
            unknown: metrics.mux_unknown_responses.get_or_create(&proto).clone(),
            hb_sent: hb("sent"),
            hb_acked: hb("acked"),
            hb_missed: hb("missed"),
            hb_answered: hb("answered"),
            waits: metrics.pool_waits.get_or_create(&named).clone(),
            wait_seconds: metrics.pool_wait_seconds.get_or_create(&named).clone(),
            calls: metrics.mux_calls.clone(),
            name: Arc::from(name),
            protocol,
        }
    }

    /// Counts one call by outcome; builds no string (the labels borrow the pool's name).
    fn call(&self, status: StatusLabel) {
        self.calls
            .get_or_create(&MuxCallLabels {
                protocol: self.protocol,
                name: LabelStr::from(&self.name),
                status,
            })
            .inc();
    }
}

/// A multiplexed pool of connections made by `O`, speaking `W`.
pub struct MuxPool<W: Wire, O: Open = Dial> {
    inner: Arc<PoolInner<W, O>>,
}

impl<W: Wire, O: Open> Clone for MuxPool<W, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct PoolInner<W: Wire, O> {
    opener: O,
    settings: MuxSettings,
    writers: Arc<Semaphore>,
    waiters: Option<Arc<WaitLimit>>,
    pending_slots: Arc<Semaphore>,
    max_pending: usize,
    free: Mutex<Vec<Arc<Conn<W>>>>,
    metrics: MuxMetrics,
    conn_seq: AtomicU64,
    /// The hand-off when the opener's target is a named listener of this process.
    local: OnceLock<Arc<dyn LocalMux<W>>>,
    _series: PoolSeries,
}

impl<W: LocalWire, O: Open> MuxPool<W, O> {
    /// An empty pool; connections are opened on demand. Inside a tokio runtime, a task closes
    /// idle connections and ends with the pool.
    pub fn new(settings: MuxSettings, opener: O, metrics: &Metrics) -> Self {
        Self::with_wait_limit(settings, opener, metrics, None)
    }

    /// A pool whose callers waiting for a writer count against `waiters` (shared with other
    /// pools); a caller finding it full is turned away at once.
    pub fn with_wait_limit(
        settings: MuxSettings,
        opener: O,
        metrics: &Metrics,
        waiters: Option<Arc<WaitLimit>>,
    ) -> Self {
        let size = settings.size.max(1);
        let max_pending = size.saturating_mul(MAX_PENDING_PER_CONNECTION);
        let inner = Arc::new(PoolInner {
            metrics: MuxMetrics::new(metrics, W::NAME, &settings.name),
            _series: metrics.pool_series(&settings.name, Some(W::NAME)),
            writers: Arc::new(Semaphore::new(size)),
            waiters,
            pending_slots: Arc::new(Semaphore::new(max_pending)),
            max_pending,
            free: Mutex::new(Vec::with_capacity(size)),
            conn_seq: AtomicU64::new(0),
            local: OnceLock::new(),
            opener,
            settings,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reap(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Connections open and not handed out.
    #[cfg(test)]
    pub fn idle_connections(&self) -> usize {
        self.inner
            .free
            .lock()
            .iter()
            .filter(|c| c.is_open())
            .count()
    }

    /// Calls waiting for answers on the connections not handed out.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        let free = self.inner.free.lock();
        free.iter()
            .map(|c| {
                let map = c.shared.pending.lock();
                map.calls
                    .values()
                    .filter(|w| matches!(w, Waiter::Call(_)))
                    .count()
            })
            .sum()
    }

    /// Sends `frame` (a request) on a pooled connection under a fresh request id and waits
    /// for the answer until `deadline`. One-way requests return `None` once queued for
    /// writing. A reused connection found dead before the frame was queued is replaced.
    pub async fn call(
        &self,
        frame: W::Frame,
        deadline: Instant,
    ) -> Result<Option<W::Frame>, MuxError> {
        let result = self.call_inner(frame, deadline).await;
        let metrics = &self.inner.metrics;
        match &result {
            Ok(Some(answer)) => metrics.call(StatusLabel::Code(W::status(answer))),
            Ok(None) => metrics.call(StatusLabel::Word("oneway")),
            Err(e) => metrics.call(StatusLabel::Word(e.label())),
        }
        result
    }

    /// The hand-off to a named listener of this process, when that is the target (looked up
    /// once: the listeners are the ones of the config this pool was built for).
    fn local(&self) -> Result<Option<&Arc<dyn LocalMux<W>>>, MuxError> {
        let inner = &self.inner;
        if let Some(local) = inner.local.get() {
            return Ok(Some(local));
        }
        match inner.opener.local::<W>() {
            None => Ok(None),
            Some(Ok(local)) => Ok(Some(inner.local.get_or_init(|| local))),
            Some(Err(source)) => Err(MuxError::Pool(PoolError::Connect {
                pool: inner.settings.name.clone(),
                source: ConnectError::Io {
                    target: inner.opener.target(),
                    source,
                },
            })),
        }
    }

    /// A call to a named listener of this process: the frame handed over in the caller's task,
    /// bounded like calls on connections (pending answers, the deadline).
    async fn call_local(
        &self,
        local: &Arc<dyn LocalMux<W>>,
        frame: W::Frame,
        deadline: Instant,
    ) -> Result<Option<W::Frame>, MuxError> {
        let inner = &self.inner;
        let one_way = W::kind(&frame) == FrameKind::Request { one_way: true };
        let _slot = self.pending_slot(one_way, deadline).await?;
        // Counted while the listener works on it, however the wait ends (the caller may drop
        // this future).
        let _pending = (!one_way).then(|| LocalPending::new(&inner.metrics.pending));
        let answer = tokio::time::timeout_at(deadline, local.call(frame)).await;
        match answer {
            Err(_) => Err(MuxError::Timeout {
                target: inner.opener.target(),
            }),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(MuxError::Local(e)),
        }
    }

    async fn call_inner(
        &self,
        mut frame: W::Frame,
        deadline: Instant,
    ) -> Result<Option<W::Frame>, MuxError> {
        if let Some(local) = self.local()? {
            return self.call_local(local, frame, deadline).await;
        }
        let inner = &self.inner;
        let one_way = W::kind(&frame) == FrameKind::Request { one_way: true };
        let _slot = self.pending_slot(one_way, deadline).await?;
        // A caller finding every writer busy waits, within the shared cap on waiters if any.
        let waiting = match (&inner.waiters, inner.writers.available_permits()) {
            (Some(w), 0) => Some(w.enter().ok_or_else(|| {
                MuxError::Pool(PoolError::WaitersFull {
                    owner: w.owner().to_owned(),
                    max: w.max(),
                })
            })?),
            _ => None,
        };
        let writer = self
            .acquire(&inner.writers, deadline)
            .await
            .map_err(|waited| {
                MuxError::Pool(PoolError::Exhausted {
                    pool: inner.settings.name.clone(),
                    size: inner.settings.size,
                    waited_ms: waited.as_millis(),
                })
            })?;
        drop(waiting);
        let (conn, waiting) = loop {
            let (conn, reused) = self.checkout(deadline).await?;
            let (id, waiting) = if one_way {
                match conn.shared.fresh_id() {
                    Some(id) => (id, None),
                    None if reused => continue,
                    None => return Err(conn.closed_error()),
                }
            } else {
                match conn.shared.register() {
                    Some((id, rx)) => (id, Some((rx, PendingGuard::new(conn.clone(), id)))),
                    None if reused => continue,
                    None => return Err(conn.closed_error()),
                }
            };
            W::set_id(&mut frame, id);
            let bytes = match W::encode(&frame) {
                Ok(b) => b,
                Err(source) => {
                    // The frame, not the connection, is at fault: keep the connection.
                    self.checkin(conn);
                    return Err(MuxError::Encode {
                        protocol: W::NAME,
                        source,
                    });
                }
            };
            match tokio::time::timeout_at(deadline, conn.tx.send(bytes)).await {
                Err(_) => {
                    let target = conn.shared.target.clone();
                    // Backed up, not broken: other callers may still use it.
                    self.checkin(conn);
                    return Err(MuxError::Timeout { target });
                }
                Ok(Err(_)) if reused => continue,
                Ok(Err(_)) => return Err(conn.closed_error()),
                Ok(Ok(())) => break (conn, waiting),
            }
        };
        self.checkin(conn.clone());
        drop(writer);
        let Some((rx, _guard)) = waiting else {
            return Ok(None);
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(MuxError::Timeout {
                target: conn.shared.target.clone(),
            }),
            Ok(Err(_)) => Err(conn.closed_error()),
            Ok(Ok(answer)) => Ok(Some(answer)),
        }
    }

    /// A slot among the pool's pending answers for a call awaiting one (none for a one-way
    /// request), by `deadline`.
    async fn pending_slot(
        &self,
        one_way: bool,
        deadline: Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, MuxError> {
        if one_way {
            return Ok(None);
        }
        let inner = &self.inner;
        self.acquire(&inner.pending_slots, deadline)
            .await
            .map(Some)
            .map_err(|waited| MuxError::Overflow {
                pool: inner.settings.name.clone(),
                pending: inner.max_pending,
                waited_ms: waited.as_millis(),
            })
    }

    /// A permit of `sem` by `deadline`, or how long the caller waited in vain.
    async fn acquire(
        &self,
        sem: &Arc<Semaphore>,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, Duration> {
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        let metrics = &self.inner.metrics;
        metrics.waits.inc();
        let start = Instant::now();
        let acquired = tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await;
        let waited = start.elapsed();
        metrics.wait_seconds.observe(waited.as_secs_f64());
        match acquired {
            Ok(Ok(p)) => Ok(p),
            // The semaphores are never closed; treat that like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(waited),
        }
    }

    /// A live connection not held by another writer, or a new one.
    /// A connection to write on: the most recent free one the caller's worker opened (its
    /// runtime drives it, so the call's wake-ups stay on this thread); else a new one while
    /// fewer than `size` are open; else the most recent free one of another worker.
    async fn checkout(&self, deadline: Instant) -> Result<(Arc<Conn<W>>, bool), MuxError> {
        let inner = &self.inner;
        let worker = outrigger_core::worker_index();
        {
            let mut free = inner.free.lock();
            free.retain(|c| c.is_open());
            if let Some(i) = free.iter().rposition(|c| c.worker == worker) {
                return Ok((free.remove(i), true));
            }
            let open = usize::try_from(inner.metrics.connections.get()).unwrap_or(0);
            if open >= inner.settings.size.max(1)
                && let Some(conn) = free.pop()
            {
                return Ok((conn, true));
            }
        }
        let pool = || inner.settings.name.clone();
        match tokio::time::timeout_at(deadline, self.connect()).await {
            Err(_) => Err(PoolError::ConnectTimeout { pool: pool() }.into()),
            Ok(Err(source)) => Err(PoolError::Connect {
                pool: pool(),
                source,
            }
            .into()),
            Ok(Ok(conn)) => Ok((conn, false)),
        }
    }

    fn checkin(&self, conn: Arc<Conn<W>>) {
        if conn.is_open() {
            *conn.shared.last_used.lock() = Instant::now();
            self.inner.free.lock().push(conn);
        }
    }

    /// Opens a connection and starts its reader and writer.
    async fn connect(&self) -> Result<Arc<Conn<W>>, ConnectError> {
        let inner = &self.inner;
        let io = inner.opener.open().await?;
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let seq = inner.conn_seq.fetch_add(1, Ordering::Relaxed);
        let target = inner.opener.target();
        let shared = Arc::new(ConnShared::<W> {
            target: target.clone(),
            pending: Mutex::new(PendingMap {
                calls: HashMap::new(),
                closed: false,
                reason: None,
            }),
            next_id: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            last_used: Mutex::new(Instant::now()),
            metrics: inner.metrics.clone(),
        });
        inner.metrics.connections.inc();
        let span = tracing::debug_span!(
            "mux_conn",
            protocol = W::NAME,
            pool = %inner.settings.name,
            target = %target,
            conn = seq
        );
        tracing::debug!(parent: &span, "connected");
        tokio::spawn(
            drive(
                shared.clone(),
                rd,
                tx.clone(),
                inner.settings.heartbeat,
                inner.settings.limits.clone(),
            )
            .instrument(span.clone()),
        );
        tokio::spawn(write_loop(shared.clone(), wr, rx).instrument(span));
        Ok(Arc::new(Conn {
            shared,
            tx,
            worker: outrigger_core::worker_index(),
        }))
    }
}

/// Closes connections idle past the idle timeout (and drops dead ones), until the pool is gone.
async fn reap<W: Wire, O: Open>(pool: Weak<PoolInner<W, O>>) {
    let period = match pool.upgrade() {
        Some(p) => (p.settings.idle_timeout / 2).max(Duration::from_millis(50)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Arc<Conn<W>>> = {
            let mut free = inner.free.lock();
            let (keep, expired): (Vec<_>, Vec<_>) = free.drain(..).partition(|c| {
                c.is_open()
                    && (c.shared.has_calls()
                        || now.duration_since(*c.shared.last_used.lock())
                            < inner.settings.idle_timeout)
            });
            *free = keep;
            expired
        };
        drop(expired);
    }
}

/// A caller's handle on a connection. When the last one goes, the connection closes.
struct Conn<W: Wire> {
    shared: Arc<ConnShared<W>>,
    tx: mpsc::Sender<Bytes>,
    /// The worker whose runtime runs the connection's reader and writer.
    worker: usize,
}

impl<W: Wire> Conn<W> {
    fn is_open(&self) -> bool {
        !self.shared.cancel.is_cancelled() && !self.tx.is_closed()
    }

    fn closed_error(&self) -> MuxError {
        MuxError::Closed {
            target: self.shared.target.clone(),
            reason: self.shared.reason(),
        }
    }
}

impl<W: Wire> Drop for Conn<W> {
    fn drop(&mut self) {
        self.shared.close("released by the pool".to_owned());
    }
}

/// State shared by a connection's handles, reader and writer.
struct ConnShared<W: Wire> {
    target: String,
    pending: Mutex<PendingMap<W>>,
    next_id: AtomicU64,
    cancel: CancellationToken,
    last_used: Mutex<Instant>,
    metrics: MuxMetrics,
}

struct PendingMap<W: Wire> {
    calls: HashMap<u64, Waiter<W>>,
    closed: bool,
    reason: Option<String>,
}

enum Waiter<W: Wire> {
    Call(oneshot::Sender<W::Frame>),
    Heartbeat,
}

impl<W: Wire> ConnShared<W> {
    /// The next id not in use, counting 1..=MAX_ID and wrapping.
    fn next_id(&self, map: &PendingMap<W>) -> u64 {
        loop {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            let id = n % W::MAX_ID + 1;
            if !map.calls.contains_key(&id) {
                return id;
            }
        }
    }

    /// An id for a one-way request, or `None` when the connection is closed.
    fn fresh_id(&self) -> Option<u64> {
        let map = self.pending.lock();
        (!map.closed).then(|| self.next_id(&map))
    }

    /// Registers a call waiting for its answer; `None` when the connection is closed.
    fn register(&self) -> Option<(u64, oneshot::Receiver<W::Frame>)> {
        let mut map = self.pending.lock();
        if map.closed {
            return None;
        }
        let id = self.next_id(&map);
        let (tx, rx) = oneshot::channel();
        map.calls.insert(id, Waiter::Call(tx));
        self.metrics.pending.inc();
        Some((id, rx))
    }

    fn register_heartbeat(&self) -> Option<u64> {
        let mut map = self.pending.lock();
        if map.closed {
            return None;
        }
        let id = self.next_id(&map);
        map.calls.insert(id, Waiter::Heartbeat);
        Some(id)
    }

    /// Forgets a waiter (an abandoned or timed-out call, an unanswered heartbeat); returns
    /// whether it was still waiting.
    fn forget(&self, id: u64) -> bool {
        let removed = self.pending.lock().calls.remove(&id);
        if let Some(Waiter::Call(_)) = removed {
            self.metrics.pending.dec();
        }
        removed.is_some()
    }

    fn has_calls(&self) -> bool {
        self.pending
            .lock()
            .calls
            .values()
            .any(|w| matches!(w, Waiter::Call(_)))
    }

    /// Hands an answer to its caller.
    fn complete(&self, frame: W::Frame) {
        let id = W::id(&frame);
        let removed = self.pending.lock().calls.remove(&id);
        match removed {
            Some(Waiter::Call(tx)) => {
                self.metrics.pending.dec();
                // The caller may have given up just now; then the answer is dropped.
                let _ = tx.send(frame);
            }
            Some(Waiter::Heartbeat) => {
                self.metrics.hb_acked.inc();
            }
            None => {
                self.metrics.unknown.inc();
                tracing::debug!(
                    id,
                    "dropping an answer whose request id matches no pending call"
                );
            }
        }
    }

    /// Closes the connection once: pending calls fail with `reason`, reader and writer stop.
    fn close(&self, reason: String) {
        let drained = {
            let mut map = self.pending.lock();
            if map.closed {
                return;
            }
            map.closed = true;
            tracing::debug!(%reason, "connection closing");
            map.reason = Some(reason);
            std::mem::take(&mut map.calls)
        };
        let calls = drained
            .values()
            .filter(|w| matches!(w, Waiter::Call(_)))
            .count();
        if calls > 0 {
            self.metrics
                .pending
                .dec_by(i64::try_from(calls).unwrap_or(i64::MAX));
            tracing::debug!(
                failed_calls = calls,
                "pending calls failed with the connection"
            );
        }
        // Dropping the senders fails the waiting calls.
        drop(drained);
        self.cancel.cancel();
    }

    fn reason(&self) -> String {
        self.pending
            .lock()
            .reason
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }
}

/// A call handed to a listener of this process that awaits an answer, counted in the pending
/// gauge until dropped.
struct LocalPending<'a>(&'a Gauge);

impl<'a> LocalPending<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for LocalPending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Removes a call from the pending map when the caller stops waiting, however it stops.
struct PendingGuard<W: Wire> {
    conn: Arc<Conn<W>>,
    id: u64,
}

impl<W: Wire> PendingGuard<W> {
    fn new(conn: Arc<Conn<W>>, id: u64) -> Self {
        Self { conn, id }
    }
}

impl<W: Wire> Drop for PendingGuard<W> {
    fn drop(&mut self) {
        let _ = self.conn.shared.forget(self.id);
    }
}

/// Reads frames and hands answers to their callers; answers heartbeats; sends heartbeats when
/// the connection is silent and closes it after too many go unanswered.
async fn drive<W: Wire>(
    shared: Arc<ConnShared<W>>,
    mut rd: ReadHalf<Box<dyn Io>>,
    tx: mpsc::Sender<Bytes>,
    heartbeat: Option<Heartbeat>,
    limits: Limits,
) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut ticker = heartbeat.map(|h| {
        let mut t = tokio::time::interval_at(Instant::now() + h.interval, h.interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut last_read = Instant::now();
    let mut missed = 0u32;
    let mut outstanding: Option<u64> = None;
    let reason = loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break None,
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) if buf.is_empty() => break Some("the peer closed the connection".to_owned()),
                Ok(0) => break Some(format!(
                    "the peer closed the connection mid-frame ({} bytes of a frame received)",
                    buf.len()
                )),
                Err(e) => break Some(format!("read failed: {e}")),
                Ok(_) => {
                    last_read = Instant::now();
                    missed = 0;
                    if let Err(e) = on_read(&shared, &mut buf, &tx, &limits) {
                        break Some(e);
                    }
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(READ_BUFFER);
                    }
                }
            },
            _ = tick(&mut ticker) => {
                let Some(h) = heartbeat else { continue };
                if last_read.elapsed() < h.interval {
                    continue;
                }
                // Still waiting for the last heartbeat's ack after a silent interval: a miss.
                if let Some(id) = outstanding.take()
                    && shared.forget(id)
                {
                    missed += 1;
                    shared.metrics.hb_missed.inc();
                    if missed >= h.misses {
                        break Some(format!(
                            "{missed} heartbeats in a row went unanswered ({} ms apart)",
                            h.interval.as_millis()
                        ));
                    }
                }
                let Some(id) = shared.register_heartbeat() else { break None };
                let sent = W::encode(&W::heartbeat(id)).is_ok_and(|b| tx.try_send(b).is_ok());
                if sent {
                    shared.metrics.hb_sent.inc();
                    outstanding = Some(id);
                } else {
                    // The writer is backed up (so the connection is not idle) or gone.
                    let _ = shared.forget(id);
                }
            }
        }
    };
    if let Some(reason) = reason {
        shared.close(reason);
    }
    shared.metrics.connections.dec();
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Handles every whole frame in `buf`; an error closes the connection.
fn on_read<W: Wire>(
    shared: &ConnShared<W>,
    buf: &mut BytesMut,
    tx: &mpsc::Sender<Bytes>,
    limits: &Limits,
) -> Result<(), String> {
    loop {
        let frame = match W::decode(buf, limits) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "the peer sent bytes that are not a {} frame: {e}",
                    W::NAME
                ));
            }
        };
        match W::kind(&frame) {
            FrameKind::Response | FrameKind::HeartbeatAck => shared.complete(frame),
            FrameKind::Heartbeat => {
                if let Ok(bytes) = W::encode(&W::heartbeat_ack(&frame))
                    && tx.try_send(bytes).is_ok()
                {
                    shared.metrics.hb_answered.inc();
                }
            }
            FrameKind::Request { .. } | FrameKind::Other => {
                tracing::debug!(
                    kind = ?W::kind(&frame),
                    "ignoring a frame the peer sent unasked"
                );
            }
        }
    }
}

/// Writes queued frames, several per flush, until the connection closes.
async fn write_loop<W: Wire>(
    shared: Arc<ConnShared<W>>,
    mut wr: WriteHalf<Box<dyn Io>>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut batch = Vec::new();
    let reason = loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => break None,
            next = rx.recv() => match next {
                Some(b) => b,
                None => break None,
            },
        };
        let written = tokio::select! {
            _ = shared.cancel.cancelled() => break None,
            r = write_batch(&mut wr, first, &mut rx, &mut batch) => r,
        };
        if let Err(e) = written {
            break Some(format!("write failed: {e}"));
        }
    };
    if let Some(reason) = reason {
        shared.close(reason);
    }
    let _ = wr.shutdown().await;
}

/// Writes `first` and every frame queued behind it right now, gathered into as few writes as
/// the batch bound allows (one for a burst of small frames), then flushes. `batch` is the
/// caller's scratch buffer, kept between calls so a busy connection does not allocate.
pub async fn write_batch<T: tokio::io::AsyncWrite + Unpin>(
    wr: &mut T,
    first: Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
    batch: &mut Vec<u8>,
) -> std::io::Result<()> {
    let Ok(second) = rx.try_recv() else {
        // A lone frame: write it as it is.
        wr.write_all(&first).await?;
        return wr.flush().await;
    };
    // `batch` never holds more than the bound, so its capacity stays bounded too.
    batch.clear();
    let mut frame = first;
    let mut queued = Some(second);
    loop {
        if !batch.is_empty() && batch.len() + frame.len() > MAX_WRITE_BATCH {
            wr.write_all(batch).await?;
            batch.clear();
        }
        if frame.len() >= MAX_WRITE_BATCH {
            wr.write_all(&frame).await?;
        } else {
            batch.extend_from_slice(&frame);
        }
        match queued.take().or_else(|| rx.try_recv().ok()) {
            Some(f) => frame = f,
            None => break,
        }
    }
    if !batch.is_empty() {
        wr.write_all(batch).await?;
        batch.clear();
    }
    wr.flush().await
}

#[cfg(test)]
mod tests;
