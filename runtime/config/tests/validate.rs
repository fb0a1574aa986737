//! Table tests: good documents load, bad ones are rejected with every problem at its path.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use outrigger_config::{
    HeaderMatch, HeartbeatConfig, LoadError, Protocol, RetryOn, RuntimeConfigSpec, ValueMatch,
    config_hash, load_yaml, parse_yaml, to_yaml,
};

const GOOD: &str = r#"
grpc: {address: "127.0.0.1:34904"}
admin: {address: "127.0.0.1:34999"}
rpc:
  timeoutMs: 3000
  beforeInvoke: [{name: dubbo_json_rpc}]
  afterInvoke:
    - name: headers
      config: {response: {set: {x-served-by: outrigger}, remove: [server]}}
  channels:
    - {protocol: http, size: 16, listener: egress_runtime_http}
listeners:
  - name: egress_runtime_http
    protocol: http
    address: "127.0.0.1:12221"
    routeTable: egress
routeTables:
  - name: egress
    routes:
      - match:
          headers: [{name: id, exact: "org.apache.dubbo.samples.UserProvider"}]
          pathPrefix: "/"
        cluster: user-provider
        timeoutMs: 1000
        retry: {attempts: 2, perTryTimeoutMs: 300, on: [connect-failure, reset, "503"]}
      - match: {pathRegex: "^/v[0-9]+/.*$", method: GET}
        cluster: user-provider
clusters:
  - name: user-provider
    protocol: http
    lb: round_robin
    hosts: [{address: "127.0.0.1:20001", weight: 1}, {address: "users.default.svc:8080"}]
    connectTimeoutMs: 1000
    maxConnections: 64
    idleTimeoutMs: 60000
"#;

fn errors(yaml: &str) -> Vec<String> {
    match load_yaml(yaml) {
        Ok(_) => vec![],
        Err(LoadError::Invalid(e)) => e.lines(),
        Err(e) => vec![format!("parse: {e}")],
    }
}

#[test]
fn good_document_loads_with_defaults() {
    let spec = load_yaml(GOOD).expect("valid");
    assert_eq!(spec.rpc.channels[0].size, 16);
    assert_eq!(spec.clusters[0].hosts[1].weight, 1, "weight defaults to 1");
    assert_eq!(spec.clusters[0].dns_refresh_ms, 5000);
    assert_eq!(spec.grpc.max_message_bytes, 4 * 1024 * 1024);
}

#[test]
fn minimal_document_gets_design_defaults() {
    let spec = load_yaml("rpc: {channels: [{listener: \"127.0.0.1:12221\"}]}").expect("valid");
    assert_eq!(spec.grpc.address, "127.0.0.1:34904");
    assert_eq!(spec.admin.address, "127.0.0.1:34999");
    assert_eq!(spec.rpc.timeout_ms, 3000);
}

#[test]
fn yaml_round_trip_keeps_meaning_and_hash() {
    let spec = load_yaml(GOOD).expect("valid");
    let again = load_yaml(&to_yaml(&spec)).expect("rendered yaml is valid");
    assert_eq!(spec, again);
    assert_eq!(config_hash(&spec), config_hash(&again));
    assert_eq!(config_hash(&spec).len(), 16);
    let mut changed = spec.clone();
    changed.rpc.timeout_ms = 10;
    assert_ne!(config_hash(&spec), config_hash(&changed));
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown cluster and unknown route table",
            r#"
rpc: {channels: [{listener: l}]}
listeners: [{name: l, routeTable: nope}]
routeTables: [{name: t, routes: [{cluster: users}]}]
"#,
            &[
                "listeners[0].routeTable: unknown route table \"nope\"",
                "routeTables[0].routes[0].cluster: unknown cluster \"users\"",
            ],
        ),
        (
            "unknown filter and bad filter config",
            r#"
rpc:
  beforeInvoke: [{name: dubbo_json_rpc}, {name: nosuch}]
  afterInvoke: [{name: headers, config: {request: {sett: {}}}}]
  channels: [{listener: "127.0.0.1:1"}]
"#,
            &[
                "rpc.beforeInvoke[1]: unknown filter \"nosuch\" (known: dubbo_generic, dubbo_json_rpc, headers)",
                "rpc.afterInvoke[0]: invalid config for filter \"headers\": unknown field `sett`, expected `set` or `remove`",
            ],
        ),
        (
            "filters in the wrong place or with bad headers",
            r#"
rpc:
  afterInvoke:
    - {name: dubbo_json_rpc}
    - {name: headers, config: {request: {set: {"bad name": x, ok: "caf\u00e9"}, remove: ["a b"]}}}
  channels: [{listener: "127.0.0.1:1"}]
"#,
            &[
                "rpc.afterInvoke[0]: filter \"dubbo_json_rpc\" rewrites requests: list it in rpc.beforeInvoke",
                "rpc.afterInvoke[1].config.request.set: \"bad name\" is not a valid header name",
                "rpc.afterInvoke[1].config.request.set.ok: header values must be visible ASCII",
                "rpc.afterInvoke[1].config.request.remove[0]: \"a b\" is not a valid header name",
            ],
        ),
        (
            "no channel",
            "rpc: {timeoutMs: 0}",
            &[
                "rpc.timeoutMs: must be greater than 0",
                "rpc.channels: at least one channel is required",
            ],
        ),
        (
            "bad channel listener and size",
            "rpc: {channels: [{listener: \"not a listener\", size: 0}]}",
            &[
                "rpc.channels[0].size: must be at least 1",
                "rpc.channels[0].listener: unknown listener \"not a listener\": not a listener name in this config, a host:port, or a unix socket path",
            ],
        ),
        (
            "duplicates",
            r#"
rpc: {channels: [{listener: a}]}
listeners:
  - {name: a, routeTable: t, address: "127.0.0.1:9000"}
  - {name: a, routeTable: t, address: "127.0.0.1:9000"}
  - {name: e1, routeTable: t, address: "127.0.0.1:0"}
  - {name: e2, routeTable: t, address: "127.0.0.1:0"}
routeTables: [{name: t}, {name: t}]
clusters:
  - {name: c, hosts: [{address: "127.0.0.1:1"}]}
  - {name: c, hosts: [{address: "127.0.0.1:1"}]}
"#,
            &[
                "listeners[1].name: duplicate name \"a\"",
                "listeners[1].address: address \"127.0.0.1:9000\" is used by another listener",
                "routeTables[1].name: duplicate name \"t\"",
                "clusters[1].name: duplicate name \"c\"",
            ],
        ),
        (
            "bad matchers and retry",
            r#"
rpc: {channels: [{listener: l}]}
listeners: [{name: l, routeTable: t}]
routeTables:
  - name: t
    routes:
      - match:
          path: "x"
          pathPrefix: "/"
          method: post
          headers: [{name: "bad name", exact: a}, {name: id, regex: "("}]
        cluster: c
        timeoutMs: 0
        retry: {attempts: 11, perTryTimeoutMs: 0, on: [reset]}
      - cluster: c
        retry: {attempts: 1}
clusters: [{name: c, hosts: [{address: "127.0.0.1:1"}]}]
"#,
            &[
                "routeTables[0].routes[0].timeoutMs: must be greater than 0",
                "routeTables[0].routes[0].match: at most one of path, pathPrefix, pathRegex",
                "routeTables[0].routes[0].match.path: must start with \"/\"",
                "routeTables[0].routes[0].match.method: \"post\" is not an HTTP method (use upper case, e.g. POST)",
                "routeTables[0].routes[0].match.headers[0].name: \"bad name\" is not a valid header name",
                "routeTables[0].routes[0].match.headers[1].regex: invalid regex: regex parse error:\n    (\n    ^\nerror: unclosed group",
                "routeTables[0].routes[0].retry.attempts: at most 10 retries",
                "routeTables[0].routes[0].retry.perTryTimeoutMs: must be greater than 0",
                "routeTables[0].routes[1].retry.on: list at least one condition (connect-failure, reset, or a status like \"503\")",
            ],
        ),
        (
            "bad clusters and addresses",
            r#"
grpc: {address: "localhost"}
admin: {address: "0.0.0.0:99999"}
rpc: {channels: [{listener: "127.0.0.1:1"}]}
clusters:
  - {name: c, hosts: [{address: "no-port"}, {address: "h:0", weight: 0}], connectTimeoutMs: 0, maxConnections: 0}
  - {name: d, hosts: []}
"#,
            &[
                "grpc.address: \"localhost\" is not an ip:port address",
                "admin.address: \"0.0.0.0:99999\" is not an ip:port address",
                "clusters[0].hosts[0].address: \"no-port\" is not a host:port address",
                "clusters[0].hosts[1].address: \"h:0\" is not a host:port address",
                "clusters[0].hosts[1].weight: must be at least 1",
                "clusters[0].connectTimeoutMs: must be greater than 0",
                "clusters[0].maxConnections: must be at least 1",
                "clusters[1].hosts: at least one host is required",
            ],
        ),
        (
            "auto outside listeners, bolt settings on the wrong channel, bad heartbeats",
            r#"
rpc:
  channels:
    - {protocol: auto, listener: "127.0.0.1:1"}
    - {protocol: dubbo, listener: "127.0.0.1:2", ext: {class: x}, heartbeat: {intervalMs: 10, misses: 0}}
    - {protocol: bolt, listener: "127.0.0.1:3", ext: {class: ""}}
clusters:
  - {name: c, protocol: auto, hosts: [{address: "127.0.0.1:1"}], heartbeat: {intervalMs: 99}}
"#,
            &[
                "rpc.channels[0].protocol: \"auto\" is only for listeners: a channel speaks http, bolt or dubbo",
                "rpc.channels[1].ext.class: only bolt channels take a class, not dubbo",
                "rpc.channels[1].heartbeat.intervalMs: must be 0 (no heartbeats) or at least 100",
                "rpc.channels[1].heartbeat.misses: must be at least 1",
                "rpc.channels[2].ext.class: must be a class name of 1 to 4096 bytes",
                "clusters[0].protocol: \"auto\" is only for listeners: a cluster speaks http, http2, bolt or dubbo",
                "clusters[0].heartbeat.intervalMs: must be 0 (no heartbeats) or at least 100",
            ],
        ),
        (
            "channel protocol against the listener's",
            r#"
rpc:
  channels:
    - {protocol: bolt, listener: b}
    - {protocol: dubbo, listener: a}
    - {protocol: http, listener: h}
listeners:
  - {name: a, protocol: auto, routeTable: t}
  - {name: b, protocol: dubbo, routeTable: t}
  - {name: h, protocol: bolt, routeTable: t}
routeTables: [{name: t}]
"#,
            &[
                "rpc.channels[0].listener: channel speaks \"bolt\" but listener \"b\" decodes \"dubbo\"",
                "rpc.channels[2].listener: channel speaks \"http\" but listener \"h\" decodes \"bolt\"",
            ],
        ),
        (
            "dubbo_generic needs a dubbo channel and the before list",
            r#"
rpc:
  beforeInvoke: [{name: dubbo_generic}, {name: dubbo_generic, config: {x: 1}}]
  afterInvoke: [{name: dubbo_generic}]
  channels: [{protocol: http, listener: "127.0.0.1:1"}]
"#,
            &[
                "rpc.beforeInvoke[0]: filter \"dubbo_generic\" sends calls on the dubbo channel: add a channel with protocol dubbo",
                "rpc.beforeInvoke[1]: filter \"dubbo_generic\" takes no config",
                "rpc.afterInvoke[0]: filter \"dubbo_generic\" rewrites requests: list it in rpc.beforeInvoke",
            ],
        ),
        (
            "rpc method names are tokens",
            r#"
rpc: {channels: [{listener: l}]}
listeners: [{name: l, routeTable: t}]
routeTables:
  - name: t
    routes:
      - {match: {method: sayHello}, cluster: c}
      - {match: {method: $invoke}, cluster: c}
      - {match: {method: "say hello"}, cluster: c}
      - {match: {method: ""}, cluster: c}
clusters: [{name: c, hosts: [{address: "127.0.0.1:1"}]}]
"#,
            &[
                "routeTables[0].routes[2].match.method: \"say hello\" is neither an HTTP method (e.g. POST) nor an RPC method name (e.g. sayHello)",
                "routeTables[0].routes[3].match.method: \"\" is neither an HTTP method (e.g. POST) nor an RPC method name (e.g. sayHello)",
            ],
        ),
    ];
    for (name, yaml, want) in cases {
        let got = errors(yaml);
        assert_eq!(got, *want, "case {name:?}");
    }
}

const BOLT_AND_DUBBO: &str = r#"
rpc:
  beforeInvoke: [{name: dubbo_generic}]
  channels:
    - {protocol: bolt, size: 4, listener: egress, ext: {class: com.alipay.sofa.rpc.core.request.SofaRequest}}
    - {protocol: dubbo, listener: egress, heartbeat: {intervalMs: 0}}
listeners:
  - {name: egress, protocol: auto, address: "127.0.0.1:12220", routeTable: rpc}
routeTables:
  - name: rpc
    routes:
      - match: {headers: [{name: service, prefix: "com.outrigger."}], method: hello}
        cluster: sofa
      - match: {headers: [{name: service, exact: org.apache.dubbo.samples.api.GreetingsService}]}
        cluster: dubbo
clusters:
  - {name: sofa, protocol: bolt, hosts: [{address: "127.0.0.1:12200"}], heartbeat: {intervalMs: 5000, misses: 2}}
  - {name: dubbo, protocol: dubbo, hosts: [{address: "127.0.0.1:20880"}]}
"#;

#[test]
fn bolt_and_dubbo_document_loads_with_heartbeat_defaults() {
    let spec = load_yaml(BOLT_AND_DUBBO).expect("valid");
    let bolt = &spec.rpc.channels[0];
    assert_eq!(bolt.protocol, Protocol::Bolt);
    assert_eq!(
        bolt.ext.class.as_deref(),
        Some("com.alipay.sofa.rpc.core.request.SofaRequest")
    );
    assert_eq!(bolt.heartbeat, HeartbeatConfig::default());
    assert_eq!(bolt.heartbeat.interval(), Some(Duration::from_secs(15)));
    assert_eq!(bolt.heartbeat.misses, 3);
    assert_eq!(spec.rpc.channels[1].heartbeat.interval(), None, "0 is off");
    assert_eq!(spec.listeners[0].protocol, Protocol::Auto);
    assert_eq!(spec.clusters[0].heartbeat.misses, 2);
    assert_eq!(spec.clusters[1].heartbeat, HeartbeatConfig::default());
    let again = load_yaml(&to_yaml(&spec)).expect("round trip");
    assert_eq!(spec, again);
}

#[test]
fn default_new_settings_do_not_change_existing_documents() {
    // Documents written before Bolt and Dubbo render (and hash) exactly as before.
    let spec = load_yaml(GOOD).expect("valid");
    let yaml = to_yaml(&spec);
    assert!(!yaml.contains("heartbeat"), "{yaml}");
    assert!(!yaml.contains("ext"), "{yaml}");
}

#[test]
fn unknown_keys_and_protocols_are_parse_errors_naming_the_key() {
    for (yaml, needle) in [
        ("rpc: {timeoutMS: 5}", "timeoutMS"),
        ("rpc: {channels: [{protocol: grpc, listener: a}]}", "grpc"),
        ("clusters: [{name: c, lb: fastest, hosts: []}]", "fastest"),
    ] {
        match parse_yaml(yaml) {
            Err(LoadError::Parse(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected a parse error for {yaml}, got {other:?}"),
        }
    }
}

#[test]
fn header_matches_and_retry_conditions_are_typed() {
    let spec = load_yaml(BOLT_AND_DUBBO).expect("valid");
    let headers = |route: usize| &spec.route_tables[0].routes[route].matcher.headers;
    assert_eq!(
        headers(0)[0],
        HeaderMatch {
            name: "service".to_owned(),
            value: ValueMatch::Prefix("com.outrigger.".to_owned()),
        }
    );
    assert_eq!(
        headers(1)[0].value,
        ValueMatch::Exact("org.apache.dubbo.samples.api.GreetingsService".to_owned())
    );
    assert_eq!(headers(1)[0].value.kind(), "exact");

    let spec = load_yaml(GOOD).expect("valid");
    let retry = spec.route_tables[0].routes[0]
        .retry
        .as_ref()
        .expect("retry");
    assert_eq!(
        retry.retry_on,
        [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503)
        ]
    );
}

#[test]
fn typed_matches_keep_the_document_form() {
    let yaml = r#"
rpc: {channels: [{listener: l}]}
listeners: [{name: l, routeTable: t}]
routeTables:
  - name: t
    routes:
      - match: {headers: [{name: a, exact: x}, {name: b, prefix: y}, {name: c, regex: "z+"}]}
        cluster: c
        retry: {attempts: 3, on: [connect-failure, reset, 503, "429"]}
clusters: [{name: c, hosts: [{address: "127.0.0.1:1"}]}]
"#;
    let spec = load_yaml(yaml).expect("valid");
    let route = &spec.route_tables[0].routes[0];
    let values: Vec<(&str, &str)> = route
        .matcher
        .headers
        .iter()
        .map(|h| (h.value.kind(), h.value.as_str()))
        .collect();
    assert_eq!(values, [("exact", "x"), ("prefix", "y"), ("regex", "z+")]);
    let on = &route.retry.as_ref().expect("retry").retry_on;
    assert_eq!(
        on[2],
        RetryOn::Status(503),
        "an unquoted YAML integer reads as a status"
    );

    // Rendered (and hashed) exactly as the document says it: one key per match, strings in `on`.
    let json = serde_json::to_value(&spec).expect("json");
    let route = &json["routeTables"][0]["routes"][0];
    assert_eq!(
        route["match"]["headers"],
        serde_json::json!([
            {"name": "a", "exact": "x"},
            {"name": "b", "prefix": "y"},
            {"name": "c", "regex": "z+"},
        ])
    );
    assert_eq!(
        route["retry"]["on"],
        serde_json::json!(["connect-failure", "reset", "503", "429"])
    );
    let back: RuntimeConfigSpec = serde_json::from_value(json).expect("json round trip");
    assert_eq!(back, spec);
    assert_eq!(load_yaml(&to_yaml(&spec)).expect("yaml round trip"), spec);
}

#[test]
fn bad_header_matches_and_retry_conditions_do_not_parse() {
    let doc = |headers: &str, on: &str| {
        format!(
            r#"
rpc: {{channels: [{{listener: l}}]}}
listeners: [{{name: l, routeTable: t}}]
routeTables:
  - name: t
    routes:
      - match: {{headers: [{headers}]}}
        cluster: c
        retry: {{attempts: 1, on: [{on}]}}
clusters: [{{name: c, hosts: [{{address: "127.0.0.1:1"}}]}}]
"#
        )
    };
    let cases: &[(&str, String, &[&str])] = &[
        (
            "two of exact, prefix, regex",
            doc("{name: x-user, exact: a, prefix: b}", "reset"),
            &[
                "header match \"x-user\": give exactly one of exact, prefix, regex (got exact, prefix)",
            ],
        ),
        (
            "all three",
            doc("{name: id, exact: a, prefix: b, regex: c}", "reset"),
            &[
                "header match \"id\": give exactly one of exact, prefix, regex (got exact, prefix, regex)",
            ],
        ),
        (
            "none",
            doc("{name: id}", "reset"),
            &["header match \"id\": give exactly one of exact, prefix, regex (none given)"],
        ),
        (
            "unknown key in a header match",
            doc("{name: id, exactly: a}", "reset"),
            &["exactly"],
        ),
        (
            "unknown retry condition",
            doc("{name: id, exact: a}", "teapot"),
            &[
                "unknown retry condition \"teapot\" (expected connect-failure, reset or an HTTP status 100-599)",
            ],
        ),
        (
            "status out of range",
            doc("{name: id, exact: a}", "reset, \"600\""),
            &[
                "unknown retry condition \"600\" (expected connect-failure, reset or an HTTP status 100-599)",
            ],
        ),
        (
            "unquoted status out of range",
            doc("{name: id, exact: a}", "99"),
            &["unknown retry condition \"99\""],
        ),
    ];
    for (name, yaml, needles) in cases {
        for result in [parse_yaml(yaml), load_yaml(yaml)] {
            match result {
                Err(LoadError::Parse(msg)) => {
                    for needle in *needles {
                        assert!(msg.contains(needle), "case {name:?}: {msg}");
                    }
                }
                other => panic!("case {name:?}: expected a parse error, got {other:?}"),
            }
        }
    }
    // The same document with a good match and condition loads.
    load_yaml(&doc("{name: id, exact: a}", "reset, \"503\"")).expect("valid");

    // JSON (what the operator reads from the API server) is checked the same way.
    let err = serde_json::from_value::<HeaderMatch>(
        serde_json::json!({"name": "id", "exact": "a", "regex": "b"}),
    )
    .expect_err("two kinds");
    assert!(
        err.to_string()
            .contains("header match \"id\": give exactly one of exact, prefix, regex"),
        "{err}"
    );
    let err = serde_json::from_value::<RetryOn>(serde_json::json!("teapot")).expect_err("unknown");
    assert!(
        err.to_string()
            .contains("unknown retry condition \"teapot\""),
        "{err}"
    );
}

const RESILIENT: &str = r#"
rpc:
  channels: [{protocol: http, listener: egress}]
listeners:
  - name: egress
    routeTable: main
    rateLimit: {requestsPerSecond: 500, burst: 1000}
routeTables:
  - name: main
    routes:
      - cluster: users
        rateLimit: {requestsPerSecond: 50}
        retry:
          attempts: 2
          on: [connect-failure, "503"]
          budget: {ratio: 0.2, minPerSecond: 5}
clusters:
  - name: users
    hosts: [{address: "127.0.0.1:20001"}]
    outlierDetection: {consecutiveFailures: 3, baseEjectionMs: 10000, maxEjectionMs: 60000, maxEjectionPercent: 67}
    circuitBreaker: {maxRequests: 100, maxPendingRequests: 10, maxRetries: 5}
"#;

#[test]
fn resilience_settings_load_with_defaults() {
    let spec = load_yaml(RESILIENT).expect("valid");
    let l = &spec.listeners[0]
        .rate_limit
        .as_ref()
        .expect("listener limit");
    assert_eq!((l.requests_per_second, l.burst()), (500, 1000));
    let route = &spec.route_tables[0].routes[0];
    let rl = route.rate_limit.as_ref().expect("route limit");
    assert_eq!(
        (rl.requests_per_second, rl.burst()),
        (50, 50),
        "burst defaults to the rate"
    );
    let budget = route
        .retry
        .as_ref()
        .and_then(|r| r.budget.as_ref())
        .expect("budget");
    assert_eq!((budget.ratio, budget.min_per_second), (0.2, 5));
    let c = &spec.clusters[0];
    let o = c.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(
        (
            o.consecutive_failures,
            o.base_ejection(),
            o.max_ejection(),
            o.max_ejection_percent
        ),
        (3, Duration::from_secs(10), Duration::from_secs(60), 67)
    );
    let b = c.circuit_breaker.as_ref().expect("breaker");
    assert_eq!(
        (b.max_requests, b.max_pending_requests, b.max_retries),
        (100, 10, 5)
    );
    // Empty blocks take the defaults.
    let defaults = load_yaml(
        &RESILIENT
            .replace(
                "{consecutiveFailures: 3, baseEjectionMs: 10000, maxEjectionMs: 60000, maxEjectionPercent: 67}",
                "{}",
            )
            .replace("{maxRequests: 100, maxPendingRequests: 10, maxRetries: 5}", "{}")
            .replace("{ratio: 0.2, minPerSecond: 5}", "{ratio: 0.5}"),
    )
    .expect("valid");
    let c = &defaults.clusters[0];
    assert_eq!(
        c.outlier_detection,
        Some(outrigger_config::OutlierDetection::default())
    );
    let o = c.outlier_detection.as_ref().expect("set");
    assert_eq!(
        (
            o.consecutive_failures,
            o.base_ejection_ms,
            o.max_ejection_ms,
            o.max_ejection_percent
        ),
        (5, 30_000, 300_000, 50)
    );
    let b = c.circuit_breaker.as_ref().expect("set");
    assert_eq!(
        (b.max_requests, b.max_pending_requests, b.max_retries),
        (1024, 1024, 3)
    );
    let budget = defaults.route_tables[0].routes[0]
        .retry
        .as_ref()
        .and_then(|r| r.budget.as_ref())
        .expect("budget");
    assert_eq!(budget.min_per_second, 10);
    // And they survive a round trip.
    assert_eq!(load_yaml(&to_yaml(&spec)).expect("round trip"), spec);
}

#[test]
fn bad_resilience_settings_are_listed_with_their_paths() {
    let bad = RESILIENT
        .replace("{requestsPerSecond: 500, burst: 1000}", "{requestsPerSecond: 0, burst: 0}")
        .replace("{requestsPerSecond: 50}", "{requestsPerSecond: 0}")
        .replace("{ratio: 0.2, minPerSecond: 5}", "{ratio: 11}")
        .replace(
            "{consecutiveFailures: 3, baseEjectionMs: 10000, maxEjectionMs: 60000, maxEjectionPercent: 67}",
            "{consecutiveFailures: 0, baseEjectionMs: 10000, maxEjectionMs: 5000, maxEjectionPercent: 101}",
        )
        .replace("{maxRequests: 100, maxPendingRequests: 10, maxRetries: 5}", "{maxRequests: 0}");
    assert_eq!(
        errors(&bad),
        [
            "listeners[0].rateLimit.requestsPerSecond: must be at least 1",
            "listeners[0].rateLimit.burst: must be at least 1",
            "routeTables[0].routes[0].retry.budget.ratio: must be between 0 and 10, not 11",
            "routeTables[0].routes[0].rateLimit.requestsPerSecond: must be at least 1",
            "clusters[0].outlierDetection.consecutiveFailures: must be at least 1",
            "clusters[0].outlierDetection.maxEjectionMs: must be at least baseEjectionMs (10000 ms), not 5000 ms",
            "clusters[0].outlierDetection.maxEjectionPercent: must be at most 100, not 101",
            "clusters[0].circuitBreaker.maxRequests: must be at least 1",
        ]
    );
    let zero_base = RESILIENT.replace("baseEjectionMs: 10000", "baseEjectionMs: 0");
    assert_eq!(
        errors(&zero_base),
        ["clusters[0].outlierDetection.baseEjectionMs: must be greater than 0"]
    );
    let unknown = RESILIENT.replace("maxRetries: 5", "maxRetry: 5");
    assert!(
        errors(&unknown)[0].contains("maxRetry"),
        "{:?}",
        errors(&unknown)
    );
}

#[test]
fn http_api_defaults_to_daprs_port_and_null_turns_it_off() {
    let spec = load_yaml("rpc: {channels: [{listener: \"127.0.0.1:12221\"}]}").expect("valid");
    assert_eq!(spec.http_api.address.as_deref(), Some("127.0.0.1:3500"));
    assert_eq!(spec.http_api.api_token, None);
    assert_eq!(spec.grpc.api_token, None);
    let off = load_yaml(
        "httpApi: {address: null}\ngrpc: {apiToken: s3cret}\nrpc: {channels: [{listener: \"127.0.0.1:12221\"}]}",
    )
    .expect("valid");
    assert_eq!(off.http_api.address, None);
    assert_eq!(off.grpc.api_token.as_deref(), Some("s3cret"));
    let again = load_yaml(&to_yaml(&off)).expect("round trip");
    assert_eq!(again, off, "an API turned off stays off when rendered");
}

#[test]
fn http_api_tokens_and_http2_are_checked() {
    let yaml = r#"
grpc: {apiToken: ""}
httpApi: {address: "127.0.0.1:34999", apiToken: "has space"}
rpc:
  channels:
    - {protocol: http2, listener: l}
listeners: [{name: l, protocol: http2, routeTable: t}]
routeTables: [{name: t, routes: [{cluster: g}]}]
clusters: [{name: g, protocol: http2, hosts: [{address: "127.0.0.1:50051"}]}]
"#;
    assert_eq!(
        errors(yaml),
        [
            "httpApi.address: address \"127.0.0.1:34999\" is already used by the gRPC API or the admin endpoint",
            "grpc.apiToken: must be 1 to 4096 characters",
            "httpApi.apiToken: must be visible ASCII without spaces (it is sent as a header value)",
            "rpc.channels[0].protocol: \"http2\" is only for clusters and listeners: a channel speaks http, bolt or dubbo",
        ]
    );
    let good = r#"
httpApi: {address: "127.0.0.1:0", apiToken: "t0k3n"}
rpc: {channels: [{listener: l}]}
listeners: [{name: l, routeTable: t}]
routeTables: [{name: t, routes: [{match: {headers: [{name: id, exact: orders}]}, cluster: g}]}]
clusters: [{name: g, protocol: http2, hosts: [{address: "127.0.0.1:50051"}]}]
"#;
    let spec = load_yaml(good).expect("http2 clusters are valid");
    assert_eq!(spec.clusters[0].protocol, Protocol::Http2);
}

#[test]
fn access_log_and_tracing_are_off_by_default_and_checked() {
    let spec = load_yaml(GOOD).expect("valid");
    assert_eq!(spec.access_log, None);
    assert_eq!(spec.tracing, None);

    let on = format!("{GOOD}accessLog: {{}}\ntracing: {{samplingRatio: 0.25}}\n");
    let spec = load_yaml(&on).expect("valid");
    let log = spec.access_log.expect("on");
    assert_eq!(log.format, outrigger_config::AccessLogFormat::Json);
    assert_eq!(log.path, "stdout");
    assert_eq!(spec.tracing.and_then(|t| t.sampling_ratio), Some(0.25));
    let text = format!("{GOOD}accessLog: {{format: text, path: /var/log/outrigger/access.log}}\n");
    assert!(errors(&text).is_empty(), "{:?}", errors(&text));

    let bad = format!("{GOOD}accessLog: {{path: access.log}}\ntracing: {{samplingRatio: 1.5}}\n");
    assert_eq!(
        errors(&bad),
        vec![
            "accessLog.path: \"access.log\" is neither \"stdout\" nor an absolute file path",
            "tracing.samplingRatio: 1.5 is not between 0 and 1",
        ]
    );
    let unknown = errors(&format!("{GOOD}accessLog: {{format: xml}}\n"));
    assert!(unknown[0].starts_with("parse: "), "{unknown:?}");
}

#[test]
fn otlp_export_is_checked() {
    let on = format!(
        "{GOOD}tracing: {{otlp: {{endpoint: \"http://otel-collector.observability:4317\"}}}}\n"
    );
    let spec = load_yaml(&on).expect("valid");
    let otlp = spec.tracing.and_then(|t| t.otlp).expect("otlp");
    assert_eq!(otlp.protocol, outrigger_config::OtlpProtocol::Grpc);
    assert_eq!(otlp.timeout_ms, 10_000);
    let http = format!(
        "{GOOD}tracing: {{otlp: {{endpoint: \"http://10.0.0.7:4318/v1/traces\", protocol: http/protobuf}}}}\n"
    );
    let spec = load_yaml(&http).expect("valid");
    assert_eq!(
        spec.tracing.and_then(|t| t.otlp).map(|o| o.protocol),
        Some(outrigger_config::OtlpProtocol::HttpProtobuf)
    );

    let bad = format!(
        "{GOOD}tracing: {{otlp: {{endpoint: \"https://collector:4317\", timeoutMs: 0}}}}\n"
    );
    assert_eq!(
        errors(&bad),
        vec![
            "tracing.otlp.endpoint: \"https://collector:4317\": TLS to the collector is not supported; export to a Collector over http:// (a node or pod agent) and let it forward with TLS",
            "tracing.otlp.timeoutMs: must be greater than 0",
        ]
    );
    for endpoint in [
        "collector:4317",
        "http://",
        "http://collector",
        "http://:4317/x",
    ] {
        let e = errors(&format!(
            "{GOOD}tracing: {{otlp: {{endpoint: \"{endpoint}\"}}}}\n"
        ));
        assert_eq!(e.len(), 1, "{endpoint}: {e:?}");
        assert!(e[0].starts_with("tracing.otlp.endpoint: "), "{e:?}");
    }
    let unknown = errors(&format!(
        "{GOOD}tracing: {{otlp: {{endpoint: \"http://c:4317\", protocol: zipkin}}}}\n"
    ));
    assert!(unknown[0].starts_with("parse: "), "{unknown:?}");
}

const MESH: &str = r#"
rpc: {channels: [{listener: egress}]}
identity:
  credentialBundlePath: /var/run/outrigger/identity/credentialbundle.pem
  trustBundlePath: /etc/outrigger/trust-bundle.pem
listeners:
  - {name: egress, routeTable: out}
  - {name: inbound, address: "0.0.0.0:34906", routeTable: in, tls: {mode: permissive}}
routeTables:
  - {name: out, routes: [{cluster: users}]}
  - {name: in, routes: [{cluster: app}]}
clusters:
  - name: users
    hosts: [{address: "10.0.0.7:34906"}]
    tls: {mode: mesh, identities: ["spiffe://cluster.local/ns/shop/sa/users"]}
  - {name: app, hosts: [{address: "127.0.0.1:8080"}], tls: {mode: disabled}}
"#;

#[test]
fn mutual_tls_settings_load_and_need_an_identity() {
    let spec = load_yaml(MESH).expect("valid");
    let id = spec.identity.as_ref().expect("identity");
    assert_eq!(id.trust_domain, "cluster.local", "the default trust domain");
    assert_eq!(
        spec.listeners[1].tls.as_ref().map(|t| t.mode),
        Some(outrigger_config::ListenerTlsMode::Permissive)
    );
    assert!(spec.clusters[0].mesh_tls());
    assert!(!spec.clusters[1].mesh_tls());

    let without_identity = MESH.replace(
        "identity:\n  credentialBundlePath: /var/run/outrigger/identity/credentialbundle.pem\n  trustBundlePath: /etc/outrigger/trust-bundle.pem\n",
        "",
    );
    // Valid as a document: in injected pods the identity comes from the command line (the
    // sidecar refuses the listener and cluster when it has none; see runtime/tests/mtls.rs).
    load_yaml(&without_identity).expect("valid without identity");
    let bad = MESH
        .replace(
            "credentialBundlePath: /var/run/outrigger/identity/credentialbundle.pem",
            "credentialBundlePath: bundle.pem\n  trustDomain: Example.COM",
        )
        .replace(
            r#"address: "0.0.0.0:34906", routeTable: in"#,
            "routeTable: in",
        )
        .replace(
            "spiffe://cluster.local/ns/shop/sa/users",
            "spiffe://other.domain/ns/shop/sa/users\", \"https://users\", \"spiffe://cluster.local/ns//sa",
        );
    assert_eq!(
        errors(&bad),
        vec![
            "identity.trustDomain: \"Example.COM\" is not a trust domain (lowercase letters, digits, '.', '-' and '_')",
            "identity.credentialBundlePath: must be an absolute file path, not \"bundle.pem\"",
            "listeners[1].tls: mutual TLS is for a listener's socket: set `address`",
            "clusters[0].tls.identities[0]: \"spiffe://other.domain/ns/shop/sa/users\" is not in the trust domain \"Example.COM\" of `identity`",
            "clusters[0].tls.identities[1]: \"https://users\" is not a SPIFFE id (spiffe://<trust domain>/<path>)",
            "clusters[0].tls.identities[2]: \"spiffe://cluster.local/ns//sa\": path segments are letters, digits, '.', '-' and '_'",
        ]
    );
    let unknown = errors(&MESH.replace("mode: permissive", "mode: optional"));
    assert!(unknown[0].starts_with("parse: "), "{unknown:?}");
}

#[test]
fn an_identity_comes_from_a_file_or_from_the_identity_endpoint() {
    let file =
        "identity:\n  credentialBundlePath: /var/run/outrigger/identity/credentialbundle.pem\n";
    let csr = "identity:\n  csr: {endpoint: \"outrigger-webhook.outrigger-system.svc:9444\", tokenPath: /var/run/outrigger/identity/token}\n";
    let spec = load_yaml(&MESH.replace(file, csr)).expect("valid");
    let id = spec.identity.expect("identity");
    assert_eq!(id.credential_bundle_path, None);
    let c = id.csr.expect("csr");
    assert_eq!(c.endpoint, "outrigger-webhook.outrigger-system.svc:9444");
    assert_eq!(c.server_name, None, "the endpoint's host by default");

    let both = MESH.replace(
        file,
        &format!("{file}  csr: {{endpoint: \"op:9444\", tokenPath: /t}}\n"),
    );
    assert_eq!(
        errors(&both),
        vec![
            "identity: set one of `credentialBundlePath` (a file the kubelet writes) and `csr` (the operator's identity endpoint), not both"
        ]
    );
    let neither = MESH.replace(file, "identity:\n");
    assert_eq!(
        errors(&neither),
        vec![
            "identity: where does the certificate come from? Set `credentialBundlePath` (a file) or `csr` (the operator's identity endpoint)"
        ]
    );
    let bad = MESH.replace(
        file,
        "identity:\n  csr: {endpoint: \"no port\", serverName: \"\", tokenPath: token}\n",
    );
    assert_eq!(
        errors(&bad),
        vec![
            "identity.csr.endpoint: \"no port\" is not a host:port address",
            "identity.csr.serverName: must not be empty when set",
            "identity.csr.tokenPath: must be an absolute file path, not \"token\"",
        ]
    );
}

#[test]
fn discovery_clusters_reach_an_apps_sidecars_with_mutual_tls_by_default() {
    let doc = r#"
rpc: {channels: [{listener: egress}]}
listeners: [{name: egress, routeTable: out}]
routeTables: [{name: out, routes: [{cluster: users}]}]
clusters:
  - {name: users, protocol: dubbo, discovery: {app: users, namespace: shop}}
  - {name: plain, discovery: {app: legacy, namespace: shop, port: 35906}, tls: {mode: disabled}}
"#;
    let spec = load_yaml(doc).expect("valid");
    let users = &spec.clusters[0];
    assert!(users.mesh_tls(), "mutual TLS unless tls says otherwise");
    assert_eq!(
        users.host_entries()[0].address,
        "users-outrigger.shop.svc:34906"
    );
    assert!(!spec.clusters[1].mesh_tls());
    assert_eq!(
        spec.clusters[1].host_entries()[0].address,
        "legacy-outrigger.shop.svc:35906"
    );
    let bad = doc
        .replace("{app: users, namespace: shop}", "{app: Users_1, namespace: \"\"}")
        .replace(
            "discovery: {app: legacy, namespace: shop, port: 35906}",
            "hosts: [{address: \"10.0.0.1:80\"}], discovery: {app: a-very-long-application-name-that-does-not-fit-a-label, namespace: shop, port: 0}",
        );
    assert_eq!(
        errors(&bad),
        vec![
            "clusters[0].discovery.app: \"Users_1\" is not a DNS label of at most 53 characters (lowercase letters, digits, '-')",
            "clusters[0].discovery.namespace: \"\" is not a DNS label of at most 63 characters (lowercase letters, digits, '-')",
            "clusters[1].hosts: a cluster with discovery finds its hosts: leave hosts out",
            "clusters[1].discovery.app: \"a-very-long-application-name-that-does-not-fit-a-label\" is not a DNS label of at most 53 characters (lowercase letters, digits, '-')",
            "clusters[1].discovery.port: must be 1 to 65535",
        ]
    );
    let none = errors(&doc.replace("discovery: {app: users, namespace: shop}", "lb: random"));
    assert_eq!(
        none,
        vec!["clusters[0].hosts: at least one host is required"]
    );
}

#[test]
fn authorization_policies_are_checked_with_every_problem_listed() {
    let yaml = r#"
rpc: {channels: [{protocol: bolt, listener: l}]}
inbound:
  authorization:
    default: deny
    rules:
      - {name: "", action: allow, from: {}}
listeners:
  - name: l
    protocol: bolt
    routeTable: t
    authorization:
      mode: audit
      default: allow
      rules:
        - {name: web, action: allow, from: {identities: ["spiffe://cluster.local/ns/shop/sa/web"]}, to: {method: hello}}
        - {name: web, action: allow, from: {identities: ["spiffe://cluster.local/ns/shop/sa/web"]}, to: {method: hello}}
        - {name: admin, action: deny, from: {namespaces: [Shop], apps: ["*"]}, to: {pathPrefix: admin}}
        - {name: ids, action: deny, from: {identities: ["web", "spiffe://a/*/b", "http://x*"], unauthenticated: true}, to: {pathRegex: "(", headers: [{name: "bad name", exact: x}]}}
        - {name: same, action: deny, from: {identities: ["spiffe://cluster.local/ns/shop/sa/web"]}, to: {method: hello}}
routeTables: [{name: t, routes: [{cluster: c}]}]
clusters: [{name: c, protocol: bolt, hosts: [{address: "127.0.0.1:12200"}]}]
"#;
    assert_eq!(
        errors(yaml),
        [
            "listeners[0].authorization.rules[1].name: duplicate name \"web\"",
            "listeners[0].authorization.rules[1]: shadowed by rules[0] (\"web\"), an identical earlier rule",
            "listeners[0].authorization.rules[2].from.namespaces[0]: \"Shop\" is not a DNS label of at most 253 characters (lowercase letters, digits, '-')",
            "listeners[0].authorization.rules[2].from.apps[0]: \"*\" is not a DNS label of at most 253 characters (lowercase letters, digits, '-')",
            "listeners[0].authorization.rules[2].to.pathPrefix: must start with \"/\"",
            "listeners[0].authorization.rules[2].to: a bolt call has no path, so this rule never matches: name the service with `headers: [{name: service, ...}]` and the method with `method`",
            "listeners[0].authorization.rules[3].from.identities[0]: \"web\" is not a SPIFFE id (spiffe://<trust domain>/<path>)",
            "listeners[0].authorization.rules[3].from.identities[1]: \"spiffe://a/*/b\": `*` may only end an identity",
            "listeners[0].authorization.rules[3].from.identities[2]: \"http://x*\" is not a SPIFFE id prefix (spiffe://...)",
            "listeners[0].authorization.rules[3].to.pathRegex: invalid regex: regex parse error:\n    (\n    ^\nerror: unclosed group",
            "listeners[0].authorization.rules[3].to.headers[0].name: \"bad name\" is not a valid header name",
            "listeners[0].authorization.rules[3].to: a bolt call has no path, so this rule never matches: name the service with `headers: [{name: service, ...}]` and the method with `method`",
            "listeners[0].authorization.rules[4]: same from and to as rules[0] (\"web\"): the deny always wins, so the allow never applies",
            "inbound.authorization.rules[0].name: must not be empty",
            "inbound.authorization.rules[0].from: names no caller: give identities, namespaces, apps or `unauthenticated: true` (use `identities: [\"*\"]` for any authenticated caller)",
        ]
    );
    // An unknown matcher is refused when the document is read, naming the known ones.
    let unknown = r#"
rpc: {channels: [{listener: l}]}
listeners:
  - {name: l, routeTable: t, authorization: {default: allow, rules: [{name: a, action: deny, from: {namespaces: [x]}, to: {grpcMethod: /a.B/C}}]}}
routeTables: [{name: t, routes: []}]
"#;
    let err = load_yaml(unknown).expect_err("unknown matcher").to_string();
    assert!(err.contains("unknown field `grpcMethod`"), "{err}");
    let good = r#"
rpc: {channels: [{listener: e}]}
inbound: {authorization: {default: deny, rules: [{name: shop, action: allow, from: {namespaces: [shop]}}]}}
listeners:
  - {name: e, routeTable: t}
  - name: l
    protocol: http2
    routeTable: t
    authorization:
      default: deny
      rules:
        - {name: web, action: allow, from: {identities: ["spiffe://cluster.local/ns/shop/*"], apps: [web]}, to: {pathPrefix: /shop.Orders/}}
        - {name: any, action: allow, from: {identities: ["*"], unauthenticated: true}, to: {path: /grpc.health.v1.Health/Check}}
routeTables: [{name: t, routes: []}]
"#;
    let spec = load_yaml(good).expect("a valid policy");
    let policy = spec.listeners[1].authorization.as_ref().unwrap();
    assert_eq!(policy.mode, outrigger_config::AuthorizationMode::Enforce);
    assert_eq!(policy.rules.len(), 2);
}
