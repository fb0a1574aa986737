//! The threads connections are served on: one single-threaded tokio runtime per worker thread,
//! each accepting on its own `SO_REUSEPORT` socket of every server address, so the kernel spreads
//! new connections across workers and a call stays on the thread that accepted it — its tasks,
//! its pooled upstream connections and its wake-ups never cross threads. Not for the control
//! plane (config reload, admin, identity, exporters), which runs on the runtime that starts the
//! sidecar.

use std::{
    cell::Cell,
    io,
    net::{SocketAddr, TcpListener as StdListener},
    sync::Arc,
    thread::JoinHandle,
};

use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::TcpListener, runtime::Handle};
use tokio_util::sync::CancellationToken;

/// Pending connections a listening socket queues (tokio's and nginx's default).
const BACKLOG: i32 = 1024;

thread_local! {
    /// This thread's worker index; 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (`0..Workers::len()`), 0 outside worker threads.
/// Per-worker state (idle pooled connections) is chosen by it.
pub fn worker_index() -> usize {
    INDEX.with(Cell::get)
}

/// The worker runtimes of one sidecar. Clones share them.
#[derive(Clone)]
pub struct Workers(Arc<Inner>);

struct Inner {
    handles: Vec<Handle>,
    /// Whether the runtimes are threads of our own (else one: the caller's runtime).
    owned: bool,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// One worker: the runtime this is called on (tests and embedders that bring their own
    /// runtime). Sockets are bound without `SO_REUSEPORT`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Self {
        Self(Arc::new(Inner {
            handles: vec![Handle::current()],
            owned: false,
            stop: CancellationToken::new(),
            threads: Mutex::new(Vec::new()),
        }))
    }

    /// `threads` worker threads (at least one), named `outrigger-worker-<i>`, each running a
    /// `current_thread` runtime until [`Workers::stop`].
    pub fn start(threads: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut joins = Vec::new();
        for index in 0..threads.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            joins.push(
                std::thread::Builder::new()
                    .name(format!("outrigger-worker-{index}"))
                    .spawn(move || {
                        INDEX.with(|i| i.set(index));
                        rt.block_on(stop.cancelled());
                        // Dropping the runtime cancels what is left (the drain has ended).
                    })?,
            );
        }
        Ok(Self(Arc::new(Inner {
            handles,
            owned: true,
            stop,
            threads: Mutex::new(joins),
        })))
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.0.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The workers' runtimes, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.0.handles
    }

    /// Binds `address` (`host:port`) once per worker, every socket on the same port (the first
    /// one's, when the port is 0), each registered with its worker's runtime, by index. With
    /// more than one worker the sockets share the port through `SO_REUSEPORT`, and the kernel
    /// balances new connections across them. The first resolved address that binds wins.
    pub async fn bind(&self, address: &str) -> io::Result<Vec<TcpListener>> {
        let mut last = None;
        for addr in tokio::net::lookup_host(address).await? {
            match self.bind_addr(addr) {
                Ok(sockets) => return Ok(sockets),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolves to nothing",
            )
        }))
    }

    fn bind_addr(&self, addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
        let shared = self.len() > 1;
        let first = listen(addr, shared)?;
        let port_addr = first.local_addr()?;
        let mut std_sockets = vec![first];
        for _ in 1..self.len() {
            std_sockets.push(listen(port_addr, true)?);
        }
        std_sockets
            .into_iter()
            .zip(self.handles())
            .map(|(socket, handle)| {
                // Registered with the worker's own reactor, so its readiness wakes that thread.
                let _entered = handle.enter();
                TcpListener::from_std(socket)
            })
            .collect()
    }

    /// Ends the worker threads (call it once connections have drained: what is left is
    /// cancelled) and waits for them. Nothing for [`Workers::current`].
    pub async fn stop(&self) {
        if !self.0.owned {
            return;
        }
        self.0.stop.cancel();
        let threads = std::mem::take(&mut *self.0.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Threads nobody stops (a sidecar that failed to start) end with the last handle.
        self.stop.cancel();
    }
}

/// A non-blocking listening socket on `addr`, sharing its port with others when `shared`.
fn listen(addr: SocketAddr, shared: bool) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_worker_gets_a_socket_on_one_port_and_connections_reach_them() {
        let workers = Workers::start(3).unwrap();
        let sockets = workers.bind("127.0.0.1:0").await.unwrap();
        assert_eq!(sockets.len(), 3);
        let port = sockets[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(
            sockets
                .iter()
                .all(|s| s.local_addr().unwrap().port() == port)
        );
        // Each socket accepts on its own worker thread, which reports its index.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (socket, handle) in sockets.into_iter().zip(workers.handles()) {
            let tx = tx.clone();
            handle.spawn(async move {
                while let Ok((_stream, _)) = socket.accept().await {
                    let _ = tx.send(worker_index());
                }
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        // The kernel hashes each connection's addresses to a socket: 64 connections all landing
        // on one of three sockets has a chance of about 1e-30.
        for _ in 0..64 {
            let _c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            seen.insert(rx.recv().await.unwrap());
        }
        assert!(seen.iter().all(|i| *i < 3), "{seen:?}");
        assert!(
            seen.len() > 1,
            "every connection reached one worker: {seen:?}"
        );
        workers.stop().await;
    }

    #[tokio::test]
    async fn one_worker_binds_without_sharing_the_port() {
        let workers = Workers::current();
        let sockets = workers.bind("127.0.0.1:0").await.unwrap();
        let addr = sockets[0].local_addr().unwrap();
        // Without SO_REUSEPORT a second bind of the same port fails, as it always did.
        let err = Workers::current()
            .bind(&addr.to_string())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(worker_index(), 0);
    }

    #[tokio::test]
    async fn a_port_taken_by_another_socket_is_refused_to_shared_sockets_too() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let workers = Workers::start(2).unwrap();
        let err = workers
            .bind(&taken.local_addr().unwrap().to_string())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        workers.stop().await;
    }
}
