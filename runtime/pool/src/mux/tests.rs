//! The multiplexed pool against scripted peers on in-memory pipes, with paused time.

use std::{
    io,
    sync::atomic::{AtomicUsize, Ordering},
};

use outrigger_codec::{bolt, dubbo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::mpsc,
};

use super::*;
use crate::{Bolt, Dubbo};

/// Opens in-memory pipes; the test gets the far end of each.
struct Pipes {
    tx: mpsc::UnboundedSender<DuplexStream>,
    opened: Arc<AtomicUsize>,
}

impl Open for Pipes {
    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        self.tx.send(far).map_err(|_| ConnectError::Io {
            target: "pipe".into(),
            source: io::Error::other("the test's peer is gone"),
        })?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(near))
    }

    fn target(&self) -> String {
        "pipe".into()
    }
}

/// The far end of one connection, speaking `W`.
struct Peer {
    io: DuplexStream,
    buf: BytesMut,
}

impl Peer {
    async fn next<W: Wire>(&mut self) -> Option<W::Frame> {
        loop {
            if let Some(f) = W::decode(&mut self.buf, &Limits::default()).expect("valid frame") {
                return Some(f);
            }
            if self.io.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn send<W: Wire>(&mut self, f: &W::Frame) {
        let bytes = W::encode(f).expect("encode");
        self.io.write_all(&bytes).await.expect("write");
    }
}

struct Harness<W: Wire> {
    pool: MuxPool<W, Pipes>,
    conns: mpsc::UnboundedReceiver<DuplexStream>,
    opened: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl<W: LocalWire> Harness<W> {
    fn new(size: usize, heartbeat: Option<Heartbeat>) -> Self {
        let (tx, conns) = mpsc::unbounded_channel();
        let opened = Arc::new(AtomicUsize::new(0));
        let metrics = Metrics::new();
        let pool = MuxPool::new(
            MuxSettings {
                name: "test".into(),
                size,
                idle_timeout: Duration::from_secs(60),
                heartbeat,
                limits: Limits::default(),
            },
            Pipes {
                tx,
                opened: opened.clone(),
            },
            &metrics,
        );
        Self {
            pool,
            conns,
            opened,
            metrics,
        }
    }

    async fn peer(&mut self) -> Peer {
        Peer {
            io: self.conns.recv().await.expect("a connection"),
            buf: BytesMut::new(),
        }
    }

    /// The value of the metric line starting with `prefix`.
    fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

fn bolt_request(content: &'static str) -> bolt::Frame {
    bolt::Frame::request(0, 1000, "C", bolt::HeaderMap::new(), content)
}

fn answer(req: &bolt::Frame, content: &[u8]) -> bolt::Frame {
    let mut a = req.response(bolt::status::SUCCESS);
    a.content = Bytes::copy_from_slice(content);
    a
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[tokio::test(start_paused = true)]
async fn answers_find_their_callers_in_any_order() {
    let mut h = Harness::<Bolt>::new(1, None);
    let calls: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|c| {
            let pool = h.pool.clone();
            tokio::spawn(async move { pool.call(bolt_request(c), soon(5000)).await })
        })
        .collect();
    let mut peer = h.peer().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(peer.next::<Bolt>().await.expect("request"));
    }
    let mut ids: Vec<u32> = got.iter().map(|f| f.request_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each call has its own id: {ids:?}");
    for req in got.iter().rev() {
        let mut echoed = b"re:".to_vec();
        echoed.extend_from_slice(&req.content);
        peer.send::<Bolt>(&answer(req, &echoed)).await;
    }
    for (call, c) in calls.into_iter().zip(["a", "b", "c"]) {
        let a = call.await.expect("task").expect("answer").expect("two-way");
        assert_eq!(a.content, format!("re:{c}").as_bytes());
    }
    assert_eq!(h.opened.load(Ordering::SeqCst), 1, "one shared connection");
    assert_eq!(h.pool.pending(), 0);
    assert_eq!(
        h.metric("outrigger_mux_calls_total{protocol=\"bolt\",name=\"test\",status=\"0\"}"),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn size_caps_the_connections() {
    let mut h = Harness::<Bolt>::new(2, None);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let pool = h.pool.clone();
            tokio::spawn(async move { pool.call(bolt_request("x"), soon(5000)).await })
        })
        .collect();
    let mut peers = Vec::new();
    while let Ok(Some(io)) = tokio::time::timeout(Duration::from_millis(100), h.conns.recv()).await
    {
        peers.push(Peer {
            io,
            buf: BytesMut::new(),
        });
    }
    assert!(
        (1..=2).contains(&peers.len()),
        "{} connections for size 2",
        peers.len()
    );
    let mut answered = 0;
    while answered < 20 {
        for p in &mut peers {
            if let Ok(Some(req)) =
                tokio::time::timeout(Duration::from_millis(10), p.next::<Bolt>()).await
            {
                p.send::<Bolt>(&answer(&req, b"ok")).await;
                answered += 1;
            }
        }
    }
    for c in calls {
        c.await.expect("task").expect("answer");
    }
    assert!(h.opened.load(Ordering::SeqCst) <= 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_fails_the_call_and_forgets_it() {
    let mut h = Harness::<Bolt>::new(1, None);
    let pool = h.pool.clone();
    let call = tokio::spawn(async move { pool.call(bolt_request("slow"), soon(200)).await });
    let mut peer = h.peer().await;
    let req = peer.next::<Bolt>().await.expect("request");
    let err = call.await.expect("task").expect_err("no answer");
    assert!(matches!(err, MuxError::Timeout { .. }), "{err}");
    assert_eq!(h.pool.pending(), 0, "removed from the pending map");
    assert_eq!(h.metric("outrigger_mux_pending{"), 0.0);
    // The late answer matches nothing and is dropped; the connection keeps serving.
    peer.send::<Bolt>(&answer(&req, b"late")).await;
    let pool = h.pool.clone();
    let next = tokio::spawn(async move { pool.call(bolt_request("next"), soon(1000)).await });
    let req = peer.next::<Bolt>().await.expect("second request");
    peer.send::<Bolt>(&answer(&req, b"fresh")).await;
    let a = next.await.expect("task").expect("answer").expect("two-way");
    assert_eq!(a.content, &b"fresh"[..]);
    assert_eq!(h.opened.load(Ordering::SeqCst), 1);
    assert_eq!(h.metric("outrigger_mux_unknown_responses_total{"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_with_an_unknown_id_is_ignored() {
    let mut h = Harness::<Bolt>::new(1, None);
    let pool = h.pool.clone();
    let call = tokio::spawn(async move { pool.call(bolt_request("q"), soon(1000)).await });
    let mut peer = h.peer().await;
    let req = peer.next::<Bolt>().await.expect("request");
    let mut stray = answer(&req, b"stray");
    stray.request_id = req.request_id.wrapping_add(1000);
    peer.send::<Bolt>(&stray).await;
    peer.send::<Bolt>(&answer(&req, b"mine")).await;
    let a = call.await.expect("task").expect("answer").expect("two-way");
    assert_eq!(a.content, &b"mine"[..]);
    assert_eq!(h.metric("outrigger_mux_unknown_responses_total{"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_dead_connection_fails_its_calls_and_is_replaced() {
    let mut h = Harness::<Bolt>::new(1, None);
    let pool = h.pool.clone();
    let call = tokio::spawn(async move { pool.call(bolt_request("q"), soon(5000)).await });
    let mut peer = h.peer().await;
    let req = peer.next::<Bolt>().await.expect("request");
    // Half an answer, then the peer goes away.
    let bytes = Bolt::encode(&answer(&req, b"cut short")).expect("encode");
    peer.io.write_all(&bytes[..10]).await.expect("write");
    drop(peer);
    let err = call.await.expect("task").expect_err("closed");
    match &err {
        MuxError::Closed { reason, .. } => assert!(reason.contains("mid-frame"), "{reason}"),
        other => panic!("expected a closed connection, got {other}"),
    }
    assert_eq!(h.pool.pending(), 0);
    let pool = h.pool.clone();
    let next = tokio::spawn(async move { pool.call(bolt_request("again"), soon(5000)).await });
    let mut peer = h.peer().await;
    let req = peer
        .next::<Bolt>()
        .await
        .expect("request on a new connection");
    peer.send::<Bolt>(&answer(&req, b"ok")).await;
    next.await.expect("task").expect("answer");
    assert_eq!(h.opened.load(Ordering::SeqCst), 2, "replaced");
}

#[tokio::test(start_paused = true)]
async fn garbage_from_the_peer_closes_the_connection() {
    let mut h = Harness::<Dubbo>::new(1, None);
    let pool = h.pool.clone();
    let call = tokio::spawn(async move {
        pool.call(
            dubbo::Frame::request(0, Bytes::from_static(b"N")),
            soon(5000),
        )
        .await
    });
    let mut peer = h.peer().await;
    peer.next::<Dubbo>().await.expect("request");
    peer.io
        .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .await
        .expect("write");
    let err = call.await.expect("task").expect_err("closed");
    assert!(err.to_string().contains("not a dubbo frame"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn one_way_requests_return_once_queued() {
    let mut h = Harness::<Bolt>::new(1, None);
    let mut req = bolt_request("fire");
    req.kind = bolt::Kind::OneWay { timeout_ms: 100 };
    assert!(h.pool.call(req, soon(100)).await.expect("queued").is_none());
    assert_eq!(h.pool.pending(), 0);
    let mut peer = h.peer().await;
    let got = peer.next::<Bolt>().await.expect("delivered");
    assert!(matches!(got.kind, bolt::Kind::OneWay { .. }));
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_an_answering_peer_and_drop_a_silent_one() {
    let hb = Heartbeat {
        interval: Duration::from_secs(1),
        misses: 2,
    };
    // A peer that acknowledges heartbeats keeps its connection.
    let mut h = Harness::<Dubbo>::new(1, Some(hb));
    let pool = h.pool.clone();
    let warmup = tokio::spawn(async move {
        pool.call(
            dubbo::Frame::request(0, Bytes::from_static(b"N")),
            soon(1000),
        )
        .await
    });
    let mut peer = h.peer().await;
    let req = peer.next::<Dubbo>().await.expect("request");
    peer.send::<Dubbo>(&req.response(dubbo::status::OK, Bytes::from_static(b"\x92")))
        .await;
    warmup.await.expect("task").expect("answer");
    let acker = tokio::spawn(async move {
        let mut acked = 0;
        while let Some(f) = peer.next::<Dubbo>().await {
            assert_eq!(Dubbo::kind(&f), FrameKind::Heartbeat);
            peer.send::<Dubbo>(&f.heartbeat_reply()).await;
            acked += 1;
            if acked == 5 {
                return peer;
            }
        }
        panic!("connection closed while the peer answered heartbeats");
    });
    let _peer = acker.await.expect("five heartbeats acknowledged");
    assert_eq!(h.pool.idle_connections(), 1, "still open");
    assert!(
        h.metric("outrigger_heartbeats_total{protocol=\"dubbo\",name=\"test\",event=\"acked\"}")
            >= 5.0
    );

    // A peer that never answers: after `misses` unanswered heartbeats the connection closes
    // and the call waiting on it fails at once, long before its deadline.
    let mut h = Harness::<Bolt>::new(1, Some(hb));
    let pool = h.pool.clone();
    let started = Instant::now();
    let call = tokio::spawn(async move { pool.call(bolt_request("q"), soon(60_000)).await });
    let mut silent = h.peer().await;
    let drain = tokio::spawn(async move {
        let mut heartbeats = 0;
        while let Some(f) = silent.next::<Bolt>().await {
            if Bolt::kind(&f) == FrameKind::Heartbeat {
                heartbeats += 1;
            }
        }
        heartbeats
    });
    let err = call.await.expect("task").expect_err("connection closed");
    assert!(
        err.to_string()
            .contains("2 heartbeats in a row went unanswered"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(drain.await.expect("task"), 2, "two heartbeats were sent");
    assert_eq!(
        h.metric("outrigger_heartbeats_total{protocol=\"bolt\",name=\"test\",event=\"missed\"}"),
        2.0
    );
    assert_eq!(h.pool.idle_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_peers_heartbeats_are_answered() {
    let mut h = Harness::<Bolt>::new(1, None);
    let pool = h.pool.clone();
    let call = tokio::spawn(async move { pool.call(bolt_request("q"), soon(1000)).await });
    let mut peer = h.peer().await;
    let req = peer.next::<Bolt>().await.expect("request");
    peer.send::<Bolt>(&bolt::Frame::heartbeat(77)).await;
    let ack = peer.next::<Bolt>().await.expect("ack");
    assert_eq!(Bolt::kind(&ack), FrameKind::HeartbeatAck);
    assert_eq!(ack.request_id, 77);
    peer.send::<Bolt>(&answer(&req, b"ok")).await;
    call.await.expect("task").expect("answer");
    assert_eq!(
        h.metric("outrigger_heartbeats_total{protocol=\"bolt\",name=\"test\",event=\"answered\"}"),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_pool_waits_until_the_deadline() {
    let mut h = Harness::<Bolt>::new(1, None);
    // Keep the only writer slot busy: the peer does not read, so the pipe and the write queue
    // fill up and the writer holding the slot waits.
    let big: &'static [u8] = Box::leak(vec![0u8; 60 * 1024].into_boxed_slice());
    let mut calls = Vec::new();
    for _ in 0..(WRITE_QUEUE + 8) {
        let pool = h.pool.clone();
        let req = bolt::Frame::request(
            0,
            1000,
            "C",
            bolt::HeaderMap::new(),
            Bytes::from_static(big),
        );
        calls.push(tokio::spawn(async move { pool.call(req, soon(300)).await }));
    }
    let _peer = h.peer().await;
    let mut exhausted = 0;
    for c in calls {
        match c.await.expect("task") {
            Err(MuxError::Pool(PoolError::Exhausted { .. })) => exhausted += 1,
            Err(MuxError::Timeout { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(exhausted > 0, "some callers never got the writer slot");
    assert_eq!(h.pool.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_frame_too_large_to_encode_fails_alone() {
    let mut h = Harness::<Bolt>::new(1, None);
    let pool = h.pool.clone();
    let first = tokio::spawn(async move { pool.call(bolt_request("a"), soon(1000)).await });
    let mut peer = h.peer().await;
    let req = peer.next::<Bolt>().await.expect("request");
    peer.send::<Bolt>(&answer(&req, b"ok")).await;
    first.await.expect("task").expect("answer");
    let class = Bytes::from(vec![b'C'; 70_000]);
    let huge = bolt::Frame::request(0, 1000, class, bolt::HeaderMap::new(), "x");
    let err = h
        .pool
        .call(huge, soon(1000))
        .await
        .expect_err("class too long");
    assert!(matches!(err, MuxError::Encode { .. }), "{err}");
    assert_eq!(h.pool.idle_connections(), 1, "the connection stays");
    assert_eq!(h.pool.pending(), 0);
    assert_eq!(h.opened.load(Ordering::SeqCst), 1);
}

/// Records each write it is given.
#[derive(Default)]
struct Writes(Vec<Vec<u8>>);

impl tokio::io::AsyncWrite for Writes {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.0.push(buf.to_vec());
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn queued_frames_go_out_in_few_writes_in_order() {
    let frame = |byte: u8, len: usize| Bytes::from(vec![byte; len]);
    let (tx, mut rx) = mpsc::channel(WRITE_QUEUE);
    let mut batch = Vec::new();

    // A lone frame is written as it is.
    let mut wr = Writes::default();
    write_batch(&mut wr, frame(1, 10), &mut rx, &mut batch)
        .await
        .expect("write");
    assert_eq!(wr.0, vec![vec![1; 10]]);

    // A burst of small frames is one write.
    for b in 2..=5 {
        tx.try_send(frame(b, 1000)).expect("queue");
    }
    let mut wr = Writes::default();
    write_batch(&mut wr, frame(1, 1000), &mut rx, &mut batch)
        .await
        .expect("write");
    assert_eq!(wr.0.len(), 1);
    let expected: Vec<u8> = (1..=5).flat_map(|b| vec![b; 1000]).collect();
    assert_eq!(wr.0.concat(), expected);

    // Writes stay within the bound; a big frame goes out on its own; the order holds.
    let sizes = [
        40_000,
        30_000,
        MAX_WRITE_BATCH + 1,
        10,
        20,
        MAX_WRITE_BATCH - 20,
    ];
    for (i, len) in sizes.iter().enumerate().skip(1) {
        tx.try_send(frame(u8::try_from(i).expect("small"), *len))
            .expect("queue");
    }
    let mut wr = Writes::default();
    write_batch(&mut wr, frame(0, sizes[0]), &mut rx, &mut batch)
        .await
        .expect("write");
    let lens: Vec<usize> = wr.0.iter().map(Vec::len).collect();
    assert_eq!(
        lens,
        vec![
            40_000,
            30_000,
            MAX_WRITE_BATCH + 1,
            30,
            MAX_WRITE_BATCH - 20
        ]
    );
    let expected: Vec<u8> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, len)| vec![u8::try_from(i).expect("small"); *len])
        .collect();
    assert_eq!(wr.0.concat(), expected);
    assert!(rx.try_recv().is_err());
}

/// Answers every request on every connection the harness opens.
fn answer_everything(mut conns: mpsc::UnboundedReceiver<DuplexStream>) {
    tokio::spawn(async move {
        while let Some(io) = conns.recv().await {
            tokio::spawn(async move {
                let mut peer = Peer {
                    io,
                    buf: BytesMut::new(),
                };
                while let Some(req) = peer.next::<Bolt>().await {
                    peer.send::<Bolt>(&answer(&req, b"ok")).await;
                }
            });
        }
    });
}

#[tokio::test]
async fn a_worker_writes_on_its_own_connection_while_the_pool_has_room() {
    let workers = outrigger_core::Workers::start(2).expect("workers");
    for (size, opened_after) in [(2, [1, 2, 2]), (1, [1, 1, 1])] {
        let h = Harness::<Bolt>::new(size, None);
        answer_everything(h.conns);
        let call_on = |w: usize| {
            let pool = h.pool.clone();
            workers.handles()[w].spawn(async move {
                pool.call(bolt_request("q"), soon(5000))
                    .await
                    .expect("answered")
            })
        };
        let mut opened = Vec::new();
        for w in [0, 1, 0] {
            call_on(w).await.expect("join");
            opened.push(h.opened.load(Ordering::SeqCst));
        }
        // With room for two, worker 1 opens its own connection and worker 0 comes back to
        // its first; with room for one, both share it.
        assert_eq!(opened, opened_after, "size {size}");
    }
    workers.stop().await;
}

/// A named listener of this process that never answers.
struct Silent;

impl LocalMux<Bolt> for Silent {
    fn call(
        &self,
        _request: bolt::Frame,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<bolt::Frame>, ProxyError>> {
        Box::pin(std::future::pending())
    }
}

/// The listeners of this process as the pool sees them: only a silent Bolt one.
struct SilentListeners;

impl crate::LocalListeners for SilentListeners {
    fn http(&self, name: &str) -> io::Result<Arc<dyn crate::LocalHttp>> {
        Err(io::Error::other(format!("no http listener {name}")))
    }
    fn bolt(&self, _: &str) -> io::Result<Arc<dyn LocalMux<Bolt>>> {
        Ok(Arc::new(Silent))
    }
    fn dubbo(&self, name: &str) -> io::Result<Arc<dyn LocalMux<Dubbo>>> {
        Err(io::Error::other(format!("no dubbo listener {name}")))
    }
}

/// Opens nothing: its target is the listener `silent` of this process.
struct ToSilent;

impl Open for ToSilent {
    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        unreachable!("a named listener is not dialled")
    }

    fn target(&self) -> String {
        "listener silent".into()
    }

    fn local<W: LocalWire>(&self) -> Option<io::Result<Arc<dyn LocalMux<W>>>> {
        Some(W::local(&SilentListeners, "silent"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_to_a_listener_of_this_process_leaves_the_pending_count_however_it_ends() {
    let metrics = Metrics::new();
    let settings = MuxSettings {
        name: "local".into(),
        size: 1,
        idle_timeout: Duration::from_secs(60),
        heartbeat: None,
        limits: Limits::default(),
    };
    let pool = MuxPool::<Bolt, _>::new(settings, ToSilent, &metrics);
    let pending = || {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("outrigger_mux_pending{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };

    let err = pool
        .call(bolt_request("slow"), soon(100))
        .await
        .expect_err("no answer");
    assert!(matches!(err, MuxError::Timeout { .. }), "{err}");
    assert_eq!(pending(), 0.0, "a timed-out call is no longer pending");

    // A caller that gives up first (its own deadline, a client gone) drops the call.
    let call = pool.call(bolt_request("abandoned"), soon(10_000));
    let gave_up = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(gave_up.is_err(), "the listener never answers");
    assert_eq!(pending(), 0.0, "an abandoned call is no longer pending");
}
