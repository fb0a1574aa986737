//! A bounded connection pool: `size` caps how many callers hold a connection at once, a caller
//! waits for a turn no longer than its deadline, idle connections are reused (most recent
//! first, and only on the worker thread that opened them, whose runtime drives them) and dead or
//! expired ones are evicted instead of handed out. Used for the invoker's
//! channels and for each upstream host of the proxy core. Not for multiplexed protocols, where
//! many callers share one connection: those (Bolt, Dubbo) use the `mux` pool.

use std::{
    future::Future,
    ops::{Deref, DerefMut},
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use outrigger_core::{Cause, Failure, Metrics, NameLabels, PoolSeries};

use crate::wait::WaitLimit;

/// Opens connections for a pool.
pub trait Connector: Send + Sync + 'static {
    /// The connection handle.
    type Conn: Send + 'static;
    /// Why a connection could not be opened.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Opens one connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Whether an idle connection can still carry a request.
    fn is_open(conn: &Self::Conn) -> bool;
}

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E: std::error::Error + 'static> {
    /// Every connection stayed in use until the deadline.
    #[error("all {size} connections of pool {pool} stayed busy for {waited_ms} ms")]
    Exhausted {
        /// The pool's name.
        pool: String,
        /// The pool's size.
        size: usize,
        /// How long the caller waited.
        waited_ms: u128,
    },
    /// The deadline passed while connecting.
    #[error("connecting for pool {pool} did not finish before the deadline")]
    ConnectTimeout {
        /// The pool's name.
        pool: String,
    },
    /// Every connection was busy and as many callers as allowed already waited for one.
    #[error(
        "circuit breaker of {owner}: {max} requests already wait for a connection (maxPendingRequests)"
    )]
    WaitersFull {
        /// Whose cap it is, e.g. `cluster users`.
        owner: String,
        /// The cap.
        max: usize,
    },
    /// The connector failed.
    #[error("cannot connect for pool {pool}: {source}")]
    Connect {
        /// The pool's name.
        pool: String,
        /// The connector's error.
        #[source]
        source: E,
    },
}

impl<E: std::error::Error + Send + Sync + 'static> Failure for PoolError<E> {
    fn cause(&self) -> Cause {
        match self {
            PoolError::Exhausted { .. } => Cause::Overflow,
            PoolError::WaitersFull { .. } => Cause::CircuitOpen,
            PoolError::ConnectTimeout { .. } | PoolError::Connect { .. } => Cause::ConnectFailure,
        }
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Shown in errors and metric labels, e.g. `channel/http`.
    pub name: String,
    /// Maximum concurrent holders (and so open connections).
    pub size: usize,
    /// An idle connection older than this is closed.
    pub idle_timeout: Duration,
}

/// A bounded pool of connections made by `C`.
pub struct Pool<C: Connector> {
    inner: Arc<Inner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C: Connector> {
    connector: C,
    settings: PoolSettings,
    permits: Arc<Semaphore>,
    waiters: Option<Arc<WaitLimit>>,
    idle: Mutex<Vec<Idle<C::Conn>>>,
    waits: Counter,
    wait_seconds: Histogram,
    connections: Gauge,
    _series: PoolSeries,
}

struct Idle<T> {
    conn: Tracked<T>,
    since: Instant,
    /// The worker whose runtime drives the connection (see `outrigger_core::worker_index`).
    worker: usize,
}

/// A connection counted in the pool's gauge for as long as it lives.
struct Tracked<T> {
    conn: T,
    gauge: Gauge,
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<C: Connector> Pool<C> {
    /// Creates an empty pool; connections are opened on demand. When called inside a tokio
    /// runtime, a task closes connections idle past `idle_timeout` and ends with the pool.
    pub fn new(settings: PoolSettings, connector: C, metrics: &Metrics) -> Self {
        Self::with_wait_limit(settings, connector, metrics, None)
    }

    /// A pool whose callers waiting for a slot count against `waiters` (shared with other
    /// pools); a caller finding it full is turned away at once with
    /// [`PoolError::WaitersFull`].
    pub fn with_wait_limit(
        settings: PoolSettings,
        connector: C,
        metrics: &Metrics,
        waiters: Option<Arc<WaitLimit>>,
    ) -> Self {
        let labels = NameLabels {
            name: settings.name.clone(),
        };
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.size.max(1))),
            waiters,
            idle: Mutex::new(Vec::with_capacity(settings.size)),
            waits: metrics.pool_waits.get_or_create(&labels).clone(),
            wait_seconds: metrics.pool_wait_seconds.get_or_create(&labels).clone(),
            connections: metrics.pool_connections.get_or_create(&labels).clone(),
            _series: metrics.pool_series(&settings.name, None),
            connector,
            settings,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reap(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Connections currently idle.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().len()
    }

    /// Callers currently holding a connection.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.inner.settings.size.max(1) - self.inner.permits.available_permits()
    }

    /// Takes a connection: an idle one if any is still usable, else a new one. Waits for a
    /// free slot no longer than `deadline`.
    pub async fn get(&self, deadline: Instant) -> Result<Pooled<C>, PoolError<C::Error>> {
        let inner = &self.inner;
        let permit = match inner.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = match &inner.waiters {
                    None => None,
                    Some(w) => Some(w.enter().ok_or_else(|| PoolError::WaitersFull {
                        owner: w.owner().to_owned(),
                        max: w.max(),
                    })?),
                };
                inner.waits.inc();
                let start = Instant::now();
                let acquired =
                    tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned()).await;
                let waited = start.elapsed();
                inner.wait_seconds.observe(waited.as_secs_f64());
                match acquired {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; treat it like a timeout all the same.
                    Ok(Err(_)) | Err(_) => {
                        return Err(PoolError::Exhausted {
                            pool: inner.settings.name.clone(),
                            size: inner.settings.size,
                            waited_ms: waited.as_millis(),
                        });
                    }
                }
            }
        };
        if let Some(conn) = self.take_idle() {
            return Ok(Pooled {
                conn: Some(conn),
                pool: Arc::downgrade(inner),
                reused: true,
                _permit: permit,
            });
        }
        let conn = match tokio::time::timeout_at(deadline, inner.connector.connect()).await {
            Err(_) => {
                return Err(PoolError::ConnectTimeout {
                    pool: inner.settings.name.clone(),
                });
            }
            Ok(Err(source)) => {
                return Err(PoolError::Connect {
                    pool: inner.settings.name.clone(),
                    source,
                });
            }
            Ok(Ok(c)) => c,
        };
        inner.connections.inc();
        Ok(Pooled {
            conn: Some(Tracked {
                conn,
                gauge: inner.connections.clone(),
            }),
            pool: Arc::downgrade(inner),
            reused: false,
            _permit: permit,
        })
    }

    /// The most recent usable idle connection of the caller's worker. When the worker has none
    /// and the pool already holds `size` connections, the oldest idle one of another worker is
    /// closed, so the new connection the caller opens keeps the pool within `size`.
    fn take_idle(&self) -> Option<Tracked<C::Conn>> {
        let now = Instant::now();
        let timeout = self.inner.settings.idle_timeout;
        let worker = outrigger_core::worker_index();
        let mut idle = self.inner.idle.lock();
        while let Some(i) = idle.iter().rposition(|e| e.worker == worker) {
            let entry = idle.remove(i);
            if now.duration_since(entry.since) < timeout && C::is_open(&entry.conn.conn) {
                return Some(entry.conn);
            }
            // Dropped here: expired or closed by the peer.
        }
        let open = usize::try_from(self.inner.connections.get()).unwrap_or(0);
        if open >= self.inner.settings.size.max(1) && !idle.is_empty() {
            drop(idle.remove(0));
        }
        None
    }
}

/// Closes idle connections past the idle timeout, until the pool is gone.
async fn reap<C: Connector>(pool: Weak<Inner<C>>) {
    let period = match pool.upgrade() {
        Some(p) => (p.settings.idle_timeout / 2).max(Duration::from_millis(50)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Idle<C::Conn>> = {
            let mut idle = inner.idle.lock();
            let (keep, expired): (Vec<_>, Vec<_>) = idle.drain(..).partition(|e| {
                now.duration_since(e.since) < inner.settings.idle_timeout
                    && C::is_open(&e.conn.conn)
            });
            *idle = keep;
            expired
        };
        drop(expired);
    }
}

/// A connection held by one caller. Dropped, it is closed; `reuse` returns it to the pool.
pub struct Pooled<C: Connector> {
    conn: Option<Tracked<C::Conn>>,
    pool: Weak<Inner<C>>,
    reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl<C: Connector> Pooled<C> {
    /// Whether the connection carried an earlier request (so a failure may mean the peer
    /// closed it while idle, and one retry on a fresh connection is safe).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Returns a healthy connection to the pool for the next caller.
    pub fn reuse(mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade())
            && C::is_open(&conn.conn)
        {
            pool.idle.lock().push(Idle {
                conn,
                since: Instant::now(),
                worker: outrigger_core::worker_index(),
            });
        }
    }
}

impl<C: Connector> Deref for Pooled<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        match &self.conn {
            Some(c) => &c.conn,
            None => unreachable!("a Pooled holds its connection until reuse or drop"),
        }
    }
}

impl<C: Connector> DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        match &mut self.conn {
            Some(c) => &mut c.conn,
            None => unreachable!("a Pooled holds its connection until reuse or drop"),
        }
    }
}

#[cfg(test)]
mod tests;
