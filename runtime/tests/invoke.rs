//! The whole sidecar in-process — real gRPC clients (tonic) for both APIs, real HTTP upstreams
//! on 127.0.0.1:0 — checking what a user would notice: answers, request shapes, metadata,
//! errors and their codes, deadlines, the pool bound, retries and balancing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Method, StatusCode};
use support::*;
use tokio::time::Instant;
use tonic::{Code, Request};

#[tokio::test]
async fn layotto_and_dapr_service_names_reach_the_upstream() {
    let up = Upstream::fixed(r#"{"ok":true}"#).await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    let r = rt
        .layotto
        .invoke_service(layotto_req("svc-a", "/hello", "{}", 0, ""))
        .await
        .expect("layotto call")
        .into_inner();
    assert_eq!(text(r.data), r#"{"ok":true}"#);
    assert_eq!(r.content_type, "application/json");
    let d = rt
        .dapr
        .invoke_service(dapr_req("svc-b", "hello", "{}"))
        .await
        .expect("dapr call")
        .into_inner();
    assert_eq!(text(d.data), r#"{"ok":true}"#);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/hello");
    assert_eq!(seen[0].headers["id"], "svc-a");
    assert_eq!(
        seen[1].path, "/hello",
        "a method without a slash becomes the path"
    );
    assert_eq!(seen[1].headers["id"], "svc-b");
    assert_eq!(seen[1].headers["content-type"], "application/json");
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn dubbo_json_rpc_filter_shapes_the_request_like_layotto() {
    let up = Upstream::fixed(r#"{"jsonrpc":"2.0","id":9527,"result":{}}"#).await;
    let extra = "  beforeInvoke: [{name: dubbo_json_rpc}]";
    let mut rt = start(&config(&[up.addr], extra, "")).await;
    let body = outrigger_runtime::DEMO_REQUEST;
    rt.layotto
        .invoke_service(layotto_req(
            "svc.samples.UserProvider",
            "GetUser",
            body,
            3,
            "",
        ))
        .await
        .expect("call");
    let seen = &up.requests()[0];
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/svc.samples.UserProvider", "method := id");
    assert_eq!(seen.headers["x-services"], "svc.samples.UserProvider");
    assert_eq!(seen.headers["x-method"], "GetUser");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["accept"], "application/json");
    assert_eq!(seen.headers["id"], "svc.samples.UserProvider");
    assert_eq!(seen.body, body.as_bytes());
}

#[tokio::test]
async fn demo_config_answers_the_seed_request_through_the_sample_upstream() {
    let up = outrigger_runtime::SampleUpstream::start("127.0.0.1:0")
        .await
        .expect("upstream");
    let yaml = outrigger_runtime::Demo::config(up.address())
        .replace("127.0.0.1:34904", "127.0.0.1:0")
        .replace("127.0.0.1:34999", "127.0.0.1:0")
        .replace("127.0.0.1:3500", "127.0.0.1:0");
    let mut rt = start(&yaml).await;
    let r = rt
        .layotto
        .invoke_service(layotto_req(
            outrigger_runtime::DEMO_ID,
            outrigger_runtime::DEMO_METHOD,
            outrigger_runtime::DEMO_REQUEST,
            3,
            "",
        ))
        .await
        .expect("demo call")
        .into_inner();
    let answer: serde_json::Value = serde_json::from_slice(&r.data.unwrap().value).expect("json");
    assert_eq!(answer["id"], 9527);
    assert_eq!(answer["result"]["id"], "A003");
    assert_eq!(answer["result"]["name"], "Dara Okafor");
}

#[tokio::test]
async fn get_is_the_default_verb_and_the_query_string_is_forwarded() {
    let up = Upstream::fixed("ok").await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    rt.layotto
        .invoke_service(layotto_req("svc", "users", "", 0, ""))
        .await
        .expect("call");
    rt.layotto
        .invoke_service(layotto_req("svc", "users/7", "{}", 4, "a=1&b=two%20words"))
        .await
        .expect("call");
    let seen = up.requests();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].query, None);
    assert_eq!(seen[1].method, Method::PUT);
    assert_eq!(seen[1].path, "/users/7");
    assert_eq!(seen[1].query.as_deref(), Some("a=1&b=two%20words"));
}

#[tokio::test]
async fn metadata_is_forwarded_both_ways_without_transport_headers() {
    let up = Upstream::start(|_| {
        let mut r = Reply::ok("{}");
        r.headers.push(("x-upstream", "yes".to_owned()));
        r.headers.push(("set-cookie", "a=b".to_owned()));
        r
    })
    .await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    let mut req = Request::new(layotto_req("svc", "m", "{}", 3, ""));
    req.metadata_mut()
        .insert("x-tenant", "blue".parse().unwrap());
    req.metadata_mut()
        .insert("rpc_request_timeout", "2000".parse().unwrap());
    let resp = rt.layotto.invoke_service(req).await.expect("call");
    let md = resp.metadata();
    assert_eq!(md.get("x-upstream").unwrap(), "yes");
    assert_eq!(md.get("set-cookie").unwrap(), "a=b");
    assert!(
        md.get("content-length").is_none(),
        "never content-length: {md:?}"
    );
    let seen = &up.requests()[0];
    assert_eq!(seen.headers["x-tenant"], "blue");
    assert!(seen.headers.get("rpc_request_timeout").is_none());
    assert!(seen.headers.get("te").is_none());
    assert!(
        !seen.headers.keys().any(|k| k.as_str().starts_with("grpc-")),
        "{:?}",
        seen.headers
    );
    assert!(
        !seen
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("x-outrigger")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn say_hello_answers_and_other_layotto_rpcs_are_unimplemented_by_name() {
    let up = Upstream::fixed("{}").await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    let hello = rt
        .layotto
        .say_hello(outrigger_proto::spec::proto::runtime::v1::SayHelloRequest {
            service_name: "helloworld".into(),
            name: "layotto".into(),
            data: None,
        })
        .await
        .expect("hello")
        .into_inner();
    assert_eq!(hello.hello, "greetings from outrigger, layotto");
    let err = rt
        .layotto
        .get_state(outrigger_proto::spec::proto::runtime::v1::GetStateRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message()
            .contains("spec.proto.runtime.v1.Runtime/GetState"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn errors_map_to_codes_and_name_id_method_and_cause() {
    let dead = dead_address().await;
    let failing = Upstream::start(|_| Reply {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers: vec![],
        body: "boom".into(),
        delay: Duration::ZERO,
    })
    .await;
    let mut down = start(&config(&[dead], "", "")).await;
    let err = down
        .layotto
        .invoke_service(layotto_req("svc-down", "Get", "{}", 0, ""))
        .await
        .expect_err("down");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("\"svc-down\"") && err.message().contains("\"Get\""),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains(&dead.to_string()),
        "names the host: {}",
        err.message()
    );

    let mut rt = start(&config(&[failing.addr], "", "")).await;
    let err = rt
        .layotto
        .invoke_service(layotto_req("svc", "Get", "{}", 0, ""))
        .await
        .expect_err("500");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("500") && err.message().contains("boom"),
        "{}",
        err.message()
    );

    let err = rt
        .layotto
        .invoke_service(layotto_req("nobody", "Get", "{}", 0, ""))
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("nobody") && err.message().contains("no route"),
        "{}",
        err.message()
    );

    let err = rt
        .dapr
        .invoke_service(dapr_req("", "Get", "{}"))
        .await
        .expect_err("no id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .layotto
        .invoke_service(layotto_req("svc", "", "{}", 0, ""))
        .await
        .expect_err("no method");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .layotto
        .invoke_service(layotto_req("svc", "has space", "{}", 0, ""))
        .await
        .expect_err("bad path");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A malformed request fails alone: the next one is fine.
    let ok = Upstream::fixed("{}").await;
    let mut fine = start(&config(&[ok.addr], "", "")).await;
    fine.layotto
        .invoke_service(layotto_req("svc", "has space", "{}", 0, ""))
        .await
        .expect_err("bad path");
    fine.layotto
        .invoke_service(layotto_req("svc", "ok", "{}", 0, ""))
        .await
        .expect("the next call works");
    let metrics = fine.metrics.encode();
    assert!(
        metrics.contains("outrigger_invoke_errors_total{kind=\"invalid_argument\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rpc_request_timeout_metadata_bounds_a_slow_upstream() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok("{}")
    })
    .await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    let mut req = Request::new(layotto_req("svc", "slow", "{}", 0, ""));
    req.metadata_mut()
        .insert("rpc_request_timeout", "100".parse().unwrap());
    let start = Instant::now();
    let err = rt.layotto.invoke_service(req).await.expect_err("times out");
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        err.message().contains("\"svc\"") && err.message().contains("\"slow\""),
        "{}",
        err.message()
    );
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // The caller's own gRPC deadline bounds the call too. The sidecar answers DEADLINE_EXCEEDED
    // naming the target just before the deadline; tonic's client also enforces grpc-timeout
    // itself and, when it gives up first on a loaded machine, reports its own local CANCELLED.
    let mut req = Request::new(layotto_req("svc", "slow", "{}", 0, ""));
    req.set_timeout(Duration::from_millis(150));
    let start = Instant::now();
    let err = rt.layotto.invoke_service(req).await.expect_err("times out");
    let client_gave_up = err.code() == Code::Cancelled && err.message() == "Timeout expired";
    if !client_gave_up {
        assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
        assert!(err.message().contains("\"slow\""), "{}", err.message());
    }
    assert!(start.elapsed() < Duration::from_millis(1500));
    let mut recorded = false;
    for _ in 0..50 {
        let metrics = rt.metrics.encode();
        if metrics.contains("outrigger_invoke_errors_total{kind=\"deadline_exceeded\"} 2") {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        recorded,
        "the sidecar ended both calls as deadline_exceeded"
    );
}

#[tokio::test]
async fn route_timeout_applies_inside_the_proxy() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok("{}")
    })
    .await;
    let mut rt = start(&config(&[up.addr], "", "        timeoutMs: 120")).await;
    let start = Instant::now();
    let err = rt
        .layotto
        .invoke_service(layotto_req("svc", "slow", "{}", 0, ""))
        .await
        .expect_err("route timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        err.message().contains("backend"),
        "names the cluster: {}",
        err.message()
    );
    assert!(start.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn channel_pool_of_two_serves_ten_concurrent_calls_two_at_a_time() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_millis(150),
        ..Reply::ok("{}")
    })
    .await;
    let yaml = config(&[up.addr], "", "").replace("size: 16", "size: 2");
    let rt = start(&yaml).await;
    let calls = (0..10).map(|i| {
        let mut client = rt.layotto.clone();
        tokio::spawn(async move {
            client
                .invoke_service(layotto_req("svc", &format!("call/{i}"), "{}", 0, ""))
                .await
        })
    });
    let start = Instant::now();
    for c in futures_util::future::join_all(calls).await {
        c.expect("join").expect("every call is answered");
    }
    assert_eq!(up.count(), 10);
    assert_eq!(
        up.max_in_flight.load(Ordering::SeqCst),
        2,
        "never more than the pool size"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(5 * 150),
        "five rounds of two"
    );
    let metrics = rt.metrics.encode();
    assert!(
        metrics.contains("outrigger_pool_waits_total{name=\"channel/http\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn full_channel_pool_past_the_deadline_is_resource_exhausted() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_millis(800),
        ..Reply::ok("{}")
    })
    .await;
    let yaml = config(&[up.addr], "", "").replace("size: 16", "size: 1");
    let rt = start(&yaml).await;
    let mut holder = rt.layotto.clone();
    let first = tokio::spawn(async move {
        holder
            .invoke_service(layotto_req("svc", "hold", "{}", 0, ""))
            .await
    });
    // The first call holds the only connection once the upstream has it.
    up.received(1).await;
    let mut req = Request::new(layotto_req("svc", "wait", "{}", 0, ""));
    req.metadata_mut()
        .insert("rpc_request_timeout", "200".parse().unwrap());
    let err = rt
        .layotto
        .clone()
        .invoke_service(req)
        .await
        .expect_err("pool full");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("channel/http"), "{}", err.message());
    first.await.expect("join").expect("the holder finishes");
}

#[tokio::test]
async fn retries_skip_a_dead_host_and_a_503() {
    let dead = dead_address().await;
    let live = Upstream::fixed("{}").await;
    let no_retry = config(&[dead, live.addr], "", "");
    let mut rt = start(&no_retry).await;
    let mut failures = 0;
    for _ in 0..4 {
        if rt
            .layotto
            .invoke_service(layotto_req("svc", "m", "{}", 0, ""))
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "round robin sends every other call to the dead host"
    );

    let with_retry = config(
        &[dead, live.addr],
        "",
        "        retry: {attempts: 1, on: [connect-failure]}",
    );
    let mut rt = start(&with_retry).await;
    for _ in 0..4 {
        rt.layotto
            .invoke_service(layotto_req("svc", "m", "{}", 0, ""))
            .await
            .expect("retried on the live host");
    }
    // Round robin puts the first try of every call on the dead host, the retry on the live one.
    let metrics = rt.metrics.encode();
    assert!(
        metrics.contains(
            "outrigger_proxy_retries_total{cluster=\"backend\",reason=\"connect_failure\"} 4"
        ),
        "{metrics}"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let flaky = {
        let calls = calls.clone();
        Upstream::start(move |_| {
            if calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                Reply {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    ..Reply::ok("busy")
                }
            } else {
                Reply::ok("{}")
            }
        })
        .await
    };
    let yaml = config(
        &[flaky.addr],
        "",
        "        retry: {attempts: 2, perTryTimeoutMs: 500, on: [\"503\"]}",
    );
    let mut rt = start(&yaml).await;
    rt.layotto
        .invoke_service(layotto_req("svc", "m", "{}", 0, ""))
        .await
        .expect("the second try answers");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_upstream_is_sent_its_own_host_and_an_upstream_marker_is_not_trusted() {
    let up = Upstream::start(|_| Reply {
        status: StatusCode::NOT_FOUND,
        // An upstream pretending to be the proxy: its 404 must stay the upstream's 404.
        headers: vec![("x-outrigger-error", "no_route".to_owned())],
        ..Reply::ok("nope")
    })
    .await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    let err = rt
        .layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect_err("404");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("upstream answered 404"),
        "{}",
        err.message()
    );
    let seen = up.requests();
    assert_eq!(seen[0].headers["host"], up.addr.to_string().as_str());
}

#[tokio::test]
async fn a_sent_post_is_not_replayed_unless_the_route_opts_in() {
    // Every other request answers 503; the route retries 503s.
    fn flaky() -> impl Fn(&support::Seen) -> Reply + Send + Sync + 'static {
        let calls = Arc::new(AtomicUsize::new(0));
        move |_| {
            if calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                Reply {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    ..Reply::ok("busy")
                }
            } else {
                Reply::ok("{}")
            }
        }
    }
    const POST: i32 = 3;
    const PUT: i32 = 4;
    for (methods, verb, want_seen, ok) in [
        ("", POST, 1, false),
        ("", PUT, 2, true),
        ("", 0, 2, true),
        (", methods: [POST]", POST, 2, true),
    ] {
        let up = Upstream::start(flaky()).await;
        let yaml = config(
            &[up.addr],
            "",
            &format!("        retry: {{attempts: 3, on: [\"503\"]{methods}}}"),
        );
        let mut rt = start(&yaml).await;
        let out = rt
            .layotto
            .invoke_service(layotto_req("svc", "m", "{}", verb, ""))
            .await;
        assert_eq!(out.is_ok(), ok, "verb {verb} {methods}: {out:?}");
        assert_eq!(
            up.count(),
            want_seen,
            "verb {verb} {methods}: requests at the upstream"
        );
        rt.sidecar.shutdown().await;
    }
}

#[tokio::test]
async fn round_robin_and_weighted_balance_across_hosts() {
    let a = Upstream::fixed("a").await;
    let b = Upstream::fixed("b").await;
    let mut rt = start(&config(&[a.addr, b.addr], "", "")).await;
    for _ in 0..4 {
        rt.layotto
            .invoke_service(layotto_req("svc", "m", "", 0, ""))
            .await
            .expect("call");
    }
    assert_eq!((a.count(), b.count()), (2, 2));

    let a = Upstream::fixed("a").await;
    let b = Upstream::fixed("b").await;
    let yaml = config(&[a.addr, b.addr], "", "")
        .replace(
            &format!("{{address: \"{}\"}}", a.addr),
            &format!("{{address: \"{}\", weight: 3}}", a.addr),
        )
        .replace(
            "connectTimeoutMs: 200",
            "connectTimeoutMs: 200\n    lb: weighted",
        );
    let mut rt = start(&yaml).await;
    for _ in 0..8 {
        rt.layotto
            .invoke_service(layotto_req("svc", "m", "", 0, ""))
            .await
            .expect("call");
    }
    assert_eq!((a.count(), b.count()), (6, 2));
}

#[tokio::test]
async fn dns_names_are_resolved_for_clusters() {
    let up = Upstream::fixed("{}").await;
    let yaml = config(
        &[up.addr],
        "",
        "        retry: {attempts: 1, on: [connect-failure]}",
    )
    .replace(
        &up.addr.to_string(),
        &format!("localhost:{}", up.addr.port()),
    );
    let mut rt = start(&yaml).await;
    let addrs = rt
        .sidecar
        .proxy()
        .cluster_addresses("backend")
        .expect("cluster");
    assert!(addrs.contains(&up.addr), "localhost resolved to {addrs:?}");
    rt.layotto
        .invoke_service(layotto_req("svc", "m", "{}", 0, ""))
        .await
        .expect("call through a DNS-named host");
}

#[tokio::test]
async fn channel_over_a_real_socket_and_api_on_a_unix_socket() {
    let up = Upstream::fixed("via-tcp").await;
    let port = dead_address().await.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("outrigger.sock");
    let yaml = config(&[up.addr], "", "")
        .replace(
            "{name: egress, protocol: http, routeTable: main}",
            &format!(
                "{{name: egress, protocol: http, routeTable: main, address: \"127.0.0.1:{port}\"}}"
            ),
        )
        .replace(
            "listener: egress}",
            &format!("listener: \"127.0.0.1:{port}\"}}"),
        )
        .replace(
            "grpc: {address: \"127.0.0.1:0\"}",
            &format!("grpc: {{address: \"unix://{}\"}}", sock.display()),
        );
    let spec = outrigger_config::load_yaml(&yaml).expect("valid");
    let sidecar = outrigger_runtime::Sidecar::start(
        spec,
        Default::default(),
        outrigger_runtime::Metrics::new(),
    )
    .await
    .expect("starts");
    assert_eq!(sidecar.grpc_address(), format!("unix://{}", sock.display()));
    let channel = unix_channel(&sock).await;
    let mut client =
        outrigger_proto::spec::proto::runtime::v1::runtime_client::RuntimeClient::new(channel);
    let r = client
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("call over unix socket and tcp channel")
        .into_inner();
    assert_eq!(text(r.data), "via-tcp");
    let bound = sidecar.proxy().bound_addresses();
    assert_eq!(bound[0].1.port(), port);
    sidecar.shutdown().await;
    assert!(!sock.exists(), "the socket file is removed on shutdown");
}
