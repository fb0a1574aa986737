use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use super::*;

#[derive(Default)]
struct TestConnector {
    connects: AtomicUsize,
    fail: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Connector for Arc<TestConnector> {
    type Conn = Arc<AtomicBool>;
    type Error = Refused;
    async fn connect(&self) -> Result<Self::Conn, Refused> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(AtomicBool::new(true)))
    }
    fn is_open(conn: &Self::Conn) -> bool {
        conn.load(Ordering::SeqCst)
    }
}

fn pool(size: usize) -> (Pool<Arc<TestConnector>>, Arc<TestConnector>, Metrics) {
    let c = Arc::new(TestConnector::default());
    let metrics = Metrics::new();
    let p = Pool::new(
        PoolSettings {
            name: "test".into(),
            size,
            idle_timeout: Duration::from_secs(10),
        },
        c.clone(),
        &metrics,
    );
    (p, c, metrics)
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[tokio::test(start_paused = true)]
async fn size_caps_concurrent_holders_and_waiters_time_out_at_their_deadline() {
    let (p, c, _) = pool(2);
    let a = p.get(soon(100)).await.expect("first");
    let _b = p.get(soon(100)).await.expect("second");
    assert_eq!(p.in_use(), 2);
    let start = Instant::now();
    match p.get(soon(100)).await {
        Err(PoolError::Exhausted { size: 2, .. }) => {}
        other => panic!("expected exhausted, got {:?}", other.err()),
    }
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // A waiter gets the slot as soon as a holder lets go.
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get(soon(1000)).await.map(|c| c.reused()) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.reuse();
    assert!(waiter.await.expect("join").expect("got a connection"));
    assert_eq!(
        c.connects.load(Ordering::SeqCst),
        2,
        "the released connection was reused"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_reused_and_dead_ones_evicted() {
    let (p, c, _) = pool(4);
    let a = p.get(soon(100)).await.expect("a");
    assert!(!a.reused());
    let handle = Arc::clone(&a);
    a.reuse();
    assert_eq!(p.idle_count(), 1);
    let b = p.get(soon(100)).await.expect("b");
    assert!(b.reused());
    b.reuse();
    // The peer closes the idle connection: it must not be handed out.
    handle.store(false, Ordering::SeqCst);
    let d = p.get(soon(100)).await.expect("d");
    assert!(!d.reused());
    assert_eq!(c.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_connections() {
    let (p, c, metrics) = pool(4);
    p.get(soon(100)).await.expect("a").reuse();
    assert!(
        metrics
            .encode()
            .contains("outrigger_pool_connections{name=\"test\"} 1")
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(p.idle_count(), 0, "reaped");
    assert!(
        metrics
            .encode()
            .contains("outrigger_pool_connections{name=\"test\"} 0")
    );
    let again = p.get(soon(100)).await.expect("b");
    assert!(!again.reused());
    assert_eq!(c.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn dropped_connections_are_closed_and_connect_errors_name_the_pool() {
    let (p, c, _) = pool(1);
    drop(p.get(soon(100)).await.expect("a"));
    assert_eq!(p.idle_count(), 0);
    assert_eq!(p.in_use(), 0);
    c.fail.store(true, Ordering::SeqCst);
    let err = p.get(soon(100)).await.err().expect("refused");
    assert_eq!(err.to_string(), "cannot connect for pool test: refused");
    assert_eq!(p.in_use(), 0, "a failed connect gives its slot back");
}

#[tokio::test(start_paused = true)]
async fn waiters_over_a_shared_cap_are_turned_away_at_once() {
    let c = Arc::new(TestConnector::default());
    let metrics = Metrics::new();
    let rejected = prometheus_client::metrics::counter::Counter::default();
    let limit = Arc::new(WaitLimit::new(1, "cluster c".into(), rejected.clone()));
    let settings = |name: &str| PoolSettings {
        name: name.into(),
        size: 1,
        idle_timeout: Duration::from_secs(10),
    };
    let a = Pool::with_wait_limit(settings("a"), c.clone(), &metrics, Some(limit.clone()));
    let b = Pool::with_wait_limit(settings("b"), c.clone(), &metrics, Some(limit.clone()));
    let held_a = a.get(soon(1000)).await.expect("a's slot");
    let _held_b = b.get(soon(1000)).await.expect("b's slot");
    // One caller waits on pool a; the cap is shared, so a caller of pool b may not wait too.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.get(soon(1000)).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(limit.waiting(), 1);
    let start = Instant::now();
    match b.get(soon(1000)).await {
        Err(e @ PoolError::WaitersFull { max: 1, .. }) => {
            assert_eq!(e.cause(), Cause::CircuitOpen);
            assert_eq!(
                e.to_string(),
                "circuit breaker of cluster c: 1 requests already wait for a connection (maxPendingRequests)"
            );
        }
        other => panic!("expected WaitersFull, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "turned away without waiting"
    );
    assert_eq!(rejected.get(), 1);
    drop(held_a);
    waiter
        .await
        .expect("joined")
        .expect("the waiter got a's slot");
    assert_eq!(
        limit.waiting(),
        0,
        "a waiter that got its slot no longer counts"
    );
}

#[tokio::test]
async fn an_idle_connection_is_reused_only_on_the_worker_that_opened_it_within_size() {
    let (p, c, _) = pool(2);
    let workers = outrigger_core::Workers::start(2).expect("workers");
    let on = |w: usize| {
        let p = p.clone();
        workers.handles()[w].spawn(async move {
            let conn = p.get(soon(1000)).await.expect("a connection");
            let reused = conn.reused();
            conn.reuse();
            reused
        })
    };
    assert!(!on(0).await.expect("join"), "worker 0 opens one");
    assert!(on(0).await.expect("join"), "and reuses it");
    assert!(!on(1).await.expect("join"), "worker 1 opens its own");
    assert!(on(1).await.expect("join"));
    assert_eq!(c.connects.load(Ordering::SeqCst), 2);
    assert_eq!(p.idle_count(), 2);
    // The pool holds `size` connections: a caller on a worker without an idle one closes
    // another worker's oldest idle connection before opening one.
    let (p3, c3, _) = pool(1);
    let on3 = |w: usize| {
        let p = p3.clone();
        workers.handles()[w].spawn(async move {
            let conn = p.get(soon(1000)).await.expect("a connection");
            conn.reuse();
        })
    };
    on3(0).await.expect("join");
    let first = p3.inner.idle.lock()[0].conn.conn.clone();
    on3(1).await.expect("join");
    assert_eq!(c3.connects.load(Ordering::SeqCst), 2);
    assert_eq!(p3.idle_count(), 1, "within size");
    assert_eq!(
        Arc::strong_count(&first),
        1,
        "worker 0's connection was closed"
    );
    workers.stop().await;
}
