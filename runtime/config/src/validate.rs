//! Validation of a parsed `runtime.yaml`: every reference resolves, names are unique, addresses,
//! regexes and filter settings are well-formed. It reports every problem with its path, and it is
//! the one check the sidecar, the operator and the validating webhook all run. Not for defaults or
//! for what the types already guarantee once parsed (one of exact/prefix/regex per header match,
//! known retry conditions: see `spec`).

use std::{collections::HashSet, fmt, path::PathBuf};

use crate::spec::{
    ACCESS_LOG_STDOUT, Authorization, CallerMatch, ChannelConfig, ClusterConfig, FilterConfig,
    FilterKind, HeaderMatch, HeartbeatConfig, ListenerConfig, OperatorEndpoint, Protocol,
    RateLimit, RouteConfig, RouteMatch, RuntimeConfigSpec, ValueMatch,
};

/// One problem, at a path in the document such as `routeTables[0].routes[1].cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// Where the problem is, in the document's own (camelCase) key names.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one document, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the config:", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// The problems as `path: message` lines.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Where a channel sends its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelTarget {
    /// An in-process listener of this name (no socket).
    Named(String),
    /// A TCP `host:port`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl ChannelConfig {
    /// Resolves `listener` against the listener names in the same document.
    pub fn target(&self, spec: &RuntimeConfigSpec) -> Result<ChannelTarget, String> {
        let l = self.listener.as_str();
        if spec.listeners.iter().any(|x| x.name == l) {
            return Ok(ChannelTarget::Named(l.to_owned()));
        }
        if let Some(path) = l.strip_prefix("unix://") {
            return Ok(ChannelTarget::Unix(PathBuf::from(path)));
        }
        if l.starts_with('/') {
            return Ok(ChannelTarget::Unix(PathBuf::from(l)));
        }
        if check_host_port(l).is_ok() {
            return Ok(ChannelTarget::Tcp(l.to_owned()));
        }
        Err(format!(
            "unknown listener \"{l}\": not a listener name in this config, a host:port, or a unix socket path"
        ))
    }
}

/// Checks the whole document and returns every problem found.
pub fn validate(spec: &RuntimeConfigSpec) -> Result<(), ValidationErrors> {
    let mut v = Validator::default();
    v.spec(spec);
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(v.errors))
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ValidationError>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn spec(&mut self, spec: &RuntimeConfigSpec) {
        let grpc = &spec.grpc.address;
        if let Some(path) = grpc.strip_prefix("unix://") {
            if path.is_empty() {
                self.err("grpc.address", "empty unix socket path");
            }
        } else if let Err(e) = check_socket_addr(grpc) {
            self.err("grpc.address", e);
        }
        if spec.grpc.max_message_bytes < 1024 {
            self.err("grpc.maxMessageBytes", "must be at least 1024");
        }
        if spec.grpc.max_concurrent_requests == 0 {
            self.err("grpc.maxConcurrentRequests", "must be at least 1");
        }
        if let Err(e) = check_socket_addr(&spec.admin.address) {
            self.err("admin.address", e);
        }
        if let Some(a) = &spec.http_api.address {
            if let Err(e) = check_socket_addr(a) {
                self.err("httpApi.address", e);
            } else if !a.ends_with(":0") && (*a == spec.admin.address || *a == *grpc) {
                self.err(
                    "httpApi.address",
                    format!(
                        "address \"{a}\" is already used by the gRPC API or the admin endpoint"
                    ),
                );
            }
        }
        self.api_token("grpc.apiToken", spec.grpc.api_token.as_deref());
        self.api_token("httpApi.apiToken", spec.http_api.api_token.as_deref());
        if let Some(log) = &spec.access_log
            && log.path != ACCESS_LOG_STDOUT
            && !log.path.starts_with('/')
        {
            self.err(
                "accessLog.path",
                format!(
                    "\"{}\" is neither \"stdout\" nor an absolute file path",
                    log.path
                ),
            );
        }
        if let Some(ratio) = spec.tracing.as_ref().and_then(|t| t.sampling_ratio)
            && !(0.0..=1.0).contains(&ratio)
        {
            self.err(
                "tracing.samplingRatio",
                format!("{ratio} is not between 0 and 1"),
            );
        }
        if let Some(otlp) = spec.tracing.as_ref().and_then(|t| t.otlp.as_ref()) {
            if let Err(e) = check_otlp_endpoint(&otlp.endpoint) {
                self.err("tracing.otlp.endpoint", e);
            }
            if otlp.timeout_ms == 0 {
                self.err("tracing.otlp.timeoutMs", "must be greater than 0");
            }
        }

        if spec.rpc.timeout_ms == 0 {
            self.err("rpc.timeoutMs", "must be greater than 0");
        }
        self.filters("rpc.beforeInvoke", &spec.rpc.before_invoke, true, spec);
        self.filters("rpc.afterInvoke", &spec.rpc.after_invoke, false, spec);
        if spec.rpc.channels.is_empty() {
            self.err("rpc.channels", "at least one channel is required");
        }
        let mut protocols = HashSet::new();
        for (i, c) in spec.rpc.channels.iter().enumerate() {
            self.channel(&format!("rpc.channels[{i}]"), c, spec);
            if !protocols.insert(c.protocol) {
                self.err(
                    format!("rpc.channels[{i}].protocol"),
                    format!("duplicate channel for protocol \"{}\"", c.protocol),
                );
            }
        }

        let tables: HashSet<&str> = spec.route_tables.iter().map(|t| t.name.as_str()).collect();
        let clusters: HashSet<&str> = spec.clusters.iter().map(|c| c.name.as_str()).collect();

        self.unique_names("listeners", spec.listeners.iter().map(|l| l.name.as_str()));
        let mut addresses = HashSet::new();
        for (i, l) in spec.listeners.iter().enumerate() {
            self.listener(&format!("listeners[{i}]"), l, &tables);
            // Port 0 asks for an ephemeral port: any number of listeners may ask.
            if let Some(a) = &l.address
                && !a.ends_with(":0")
                && !addresses.insert(a.as_str())
            {
                self.err(
                    format!("listeners[{i}].address"),
                    format!("address \"{a}\" is used by another listener"),
                );
            }
        }

        self.unique_names(
            "routeTables",
            spec.route_tables.iter().map(|t| t.name.as_str()),
        );
        for (i, t) in spec.route_tables.iter().enumerate() {
            let path = format!("routeTables[{i}]");
            if t.name.is_empty() {
                self.err(format!("{path}.name"), "must not be empty");
            }
            for (j, r) in t.routes.iter().enumerate() {
                self.route(&format!("{path}.routes[{j}]"), r, &clusters);
            }
        }

        self.unique_names("clusters", spec.clusters.iter().map(|c| c.name.as_str()));
        for (i, c) in spec.clusters.iter().enumerate() {
            self.cluster(&format!("clusters[{i}]"), c);
        }
        if let Some(a) = spec.inbound.as_ref().and_then(|i| i.authorization.as_ref()) {
            // The inbound listener's protocol comes from the pod's annotation, not this file.
            self.authorization("inbound.authorization", a, None);
        }
        self.identity(spec);
    }

    /// The operator's endpoint at `at` (`identity.csr`, `discoveryService`).
    fn operator_endpoint(&mut self, at: &str, e: &OperatorEndpoint) {
        if let Err(msg) = check_host_port(&e.endpoint) {
            self.err(format!("{at}.endpoint"), msg);
        }
        if e.server_name.as_deref().is_some_and(str::is_empty) {
            self.err(format!("{at}.serverName"), "must not be empty when set");
        }
        if !e.token_path.starts_with('/') {
            self.err(
                format!("{at}.tokenPath"),
                format!("must be an absolute file path, not \"{}\"", e.token_path),
            );
        }
    }

    /// The identity section, and the mutual TLS settings of listeners and clusters.
    fn identity(&mut self, spec: &RuntimeConfigSpec) {
        if let Some(d) = &spec.discovery_service {
            self.operator_endpoint("discoveryService", d);
        }
        let trust_domain = spec.identity.as_ref().map(|id| id.trust_domain.as_str());
        if let Some(id) = &spec.identity {
            if let Err(e) = check_trust_domain(&id.trust_domain) {
                self.err("identity.trustDomain", e);
            }
            match (&id.credential_bundle_path, &id.csr) {
                (Some(_), Some(_)) => self.err(
                    "identity",
                    "set one of `credentialBundlePath` (a file the kubelet writes) and `csr` (the operator's identity endpoint), not both",
                ),
                (None, None) => self.err(
                    "identity",
                    "where does the certificate come from? Set `credentialBundlePath` (a file) or `csr` (the operator's identity endpoint)",
                ),
                _ => {}
            }
            if let Some(csr) = &id.csr {
                self.operator_endpoint("identity.csr", csr);
            }
            let paths = [
                ("credentialBundlePath", id.credential_bundle_path.as_ref()),
                ("trustBundlePath", Some(&id.trust_bundle_path)),
            ];
            for (key, value) in paths
                .into_iter()
                .filter_map(|(key, value)| value.map(|v| (key, v)))
            {
                if !value.starts_with('/') {
                    self.err(
                        format!("identity.{key}"),
                        format!("must be an absolute file path, not \"{value}\""),
                    );
                }
            }
        }
        // Mutual TLS without `identity` in the document is valid: in injected pods the identity
        // comes from the command line. A sidecar left without one refuses such a listener or
        // cluster when it loads, naming it.
        for (i, l) in spec.listeners.iter().enumerate() {
            if l.tls.is_none() {
                continue;
            }
            if l.address.is_none() {
                self.err(
                    format!("listeners[{i}].tls"),
                    "mutual TLS is for a listener's socket: set `address`",
                );
            }
        }
        for (i, c) in spec.clusters.iter().enumerate() {
            let Some(tls) = &c.tls else { continue };
            for (j, id) in tls.identities.iter().enumerate() {
                if let Err(e) = check_spiffe_id(id, trust_domain) {
                    self.err(format!("clusters[{i}].tls.identities[{j}]"), e);
                }
            }
        }
    }

    fn api_token(&mut self, path: &str, token: Option<&str>) {
        if let Some(t) = token
            && let Err(e) = check_api_token(t)
        {
            self.err(path, e);
        }
    }

    fn unique_names<'a>(&mut self, path: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            if !n.is_empty() && !seen.insert(n) {
                self.err(
                    format!("{path}[{i}].name"),
                    format!("duplicate name \"{n}\""),
                );
            }
        }
    }

    fn filters(
        &mut self,
        path: &str,
        filters: &[FilterConfig],
        before: bool,
        spec: &RuntimeConfigSpec,
    ) {
        for (i, f) in filters.iter().enumerate() {
            match f.kind() {
                Err(e) => self.err(format!("{path}[{i}]"), e),
                Ok(FilterKind::DubboJsonRpc) if !before => self.err(
                    format!("{path}[{i}]"),
                    "filter \"dubbo_json_rpc\" rewrites requests: list it in rpc.beforeInvoke",
                ),
                Ok(FilterKind::DubboGeneric) if !before => self.err(
                    format!("{path}[{i}]"),
                    "filter \"dubbo_generic\" rewrites requests: list it in rpc.beforeInvoke",
                ),
                Ok(FilterKind::DubboGeneric)
                    if !spec
                        .rpc
                        .channels
                        .iter()
                        .any(|c| c.protocol == Protocol::Dubbo) =>
                {
                    self.err(
                        format!("{path}[{i}]"),
                        "filter \"dubbo_generic\" sends calls on the dubbo channel: add a channel with protocol dubbo",
                    );
                }
                Ok(FilterKind::Headers(h)) => {
                    for (side, edits) in [("request", &h.request), ("response", &h.response)] {
                        for (name, value) in &edits.set {
                            if http_header_name(name).is_err() {
                                self.err(
                                    format!("{path}[{i}].config.{side}.set"),
                                    format!("\"{name}\" is not a valid header name"),
                                );
                            }
                            if !value
                                .bytes()
                                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                            {
                                self.err(
                                    format!("{path}[{i}].config.{side}.set.{name}"),
                                    "header values must be visible ASCII",
                                );
                            }
                        }
                        for (j, name) in edits.remove.iter().enumerate() {
                            if http_header_name(name).is_err() {
                                self.err(
                                    format!("{path}[{i}].config.{side}.remove[{j}]"),
                                    format!("\"{name}\" is not a valid header name"),
                                );
                            }
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    }

    fn channel(&mut self, path: &str, c: &ChannelConfig, spec: &RuntimeConfigSpec) {
        match c.protocol {
            Protocol::Auto => self.err(
                format!("{path}.protocol"),
                "\"auto\" is only for listeners: a channel speaks http, bolt or dubbo",
            ),
            Protocol::Http2 => self.err(
                format!("{path}.protocol"),
                "\"http2\" is only for clusters and listeners: a channel speaks http, bolt or dubbo",
            ),
            _ => {}
        }
        if c.size == 0 {
            self.err(format!("{path}.size"), "must be at least 1");
        }
        if let Some(class) = &c.ext.class {
            if c.protocol != Protocol::Bolt {
                self.err(
                    format!("{path}.ext.class"),
                    format!("only bolt channels take a class, not {}", c.protocol),
                );
            } else if class.is_empty() || class.len() > 4096 {
                self.err(
                    format!("{path}.ext.class"),
                    "must be a class name of 1 to 4096 bytes",
                );
            }
        }
        self.heartbeat(&format!("{path}.heartbeat"), &c.heartbeat);
        match c.target(spec) {
            Err(e) => self.err(format!("{path}.listener"), e),
            Ok(ChannelTarget::Named(name)) => {
                if let Some(l) = spec.listeners.iter().find(|l| l.name == name)
                    && l.protocol != c.protocol
                    && l.protocol != Protocol::Auto
                {
                    self.err(
                        format!("{path}.listener"),
                        format!(
                            "channel speaks \"{}\" but listener \"{name}\" decodes \"{}\"",
                            c.protocol, l.protocol
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
    }

    fn listener(&mut self, path: &str, l: &ListenerConfig, tables: &HashSet<&str>) {
        if l.name.is_empty() {
            self.err(format!("{path}.name"), "must not be empty");
        }
        if let Some(a) = &l.address
            && let Err(e) = check_socket_addr(a)
        {
            self.err(format!("{path}.address"), e);
        }
        if !tables.contains(l.route_table.as_str()) {
            self.err(
                format!("{path}.routeTable"),
                format!("unknown route table \"{}\"", l.route_table),
            );
        }
        if let Some(r) = &l.rate_limit {
            self.rate_limit(&format!("{path}.rateLimit"), r);
        }
        if let Some(a) = &l.authorization {
            self.authorization(&format!("{path}.authorization"), a, Some(l.protocol));
        }
    }

    /// A listener's policy. `protocol` is the listener's, when known (the injected inbound
    /// listener's comes from the pod): a `to` that can never match a call of it is a problem.
    fn authorization(&mut self, path: &str, a: &Authorization, protocol: Option<Protocol>) {
        self.unique_names(
            &format!("{path}.rules"),
            a.rules.iter().map(|r| r.name.as_str()),
        );
        for (i, r) in a.rules.iter().enumerate() {
            let path = format!("{path}.rules[{i}]");
            if r.name.is_empty() {
                self.err(format!("{path}.name"), "must not be empty");
            }
            self.caller_match(&format!("{path}.from"), &r.from);
            self.route_match(&format!("{path}.to"), &r.to);
            let has_path =
                r.to.path.is_some() || r.to.path_prefix.is_some() || r.to.path_regex.is_some();
            if has_path && matches!(protocol, Some(Protocol::Bolt | Protocol::Dubbo)) {
                self.err(
                    format!("{path}.to"),
                    format!(
                        "a {} call has no path, so this rule never matches: name the service with `headers: [{{name: service, ...}}]` and the method with `method`",
                        protocol.map_or("", Protocol::as_str)
                    ),
                );
            }
            // An earlier rule about the same callers and calls: the two never both decide
            // (the same action twice, or a deny that always wins over the allow).
            if let Some(j) = a.rules[..i]
                .iter()
                .position(|e| e.from == r.from && e.to == r.to)
            {
                let e = &a.rules[j];
                let why = if e.action == r.action {
                    format!(
                        "shadowed by rules[{j}] ({:?}), an identical earlier rule",
                        e.name
                    )
                } else {
                    format!(
                        "same from and to as rules[{j}] ({:?}): the deny always wins, so the allow never applies",
                        e.name
                    )
                };
                self.err(path, why);
            }
        }
    }

    fn caller_match(&mut self, path: &str, from: &CallerMatch) {
        if from.is_empty() {
            self.err(
                path,
                "names no caller: give identities, namespaces, apps or `unauthenticated: true` (use `identities: [\"*\"]` for any authenticated caller)",
            );
        }
        for (j, id) in from.identities.iter().enumerate() {
            let at = format!("{path}.identities[{j}]");
            match id.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => {
                    self.err(at, format!("\"{id}\": `*` may only end an identity"));
                }
                Some(prefix) if !prefix.is_empty() && !prefix.starts_with("spiffe://") => {
                    self.err(
                        at,
                        format!("\"{id}\" is not a SPIFFE id prefix (spiffe://...)"),
                    );
                }
                Some(_) => {}
                None if id.contains('*') => {
                    self.err(at, format!("\"{id}\": `*` may only end an identity"));
                }
                None => {
                    if let Err(e) = check_spiffe_id(id, None) {
                        self.err(at, e);
                    }
                }
            }
        }
        for (key, names) in [("namespaces", &from.namespaces), ("apps", &from.apps)] {
            for (j, n) in names.iter().enumerate() {
                if let Err(e) = check_dns_label(n, 253) {
                    self.err(format!("{path}.{key}[{j}]"), e);
                }
            }
        }
    }

    fn rate_limit(&mut self, path: &str, r: &RateLimit) {
        if r.requests_per_second == 0 {
            self.err(format!("{path}.requestsPerSecond"), "must be at least 1");
        }
        if r.burst == Some(0) {
            self.err(format!("{path}.burst"), "must be at least 1");
        }
    }

    fn route(&mut self, path: &str, r: &RouteConfig, clusters: &HashSet<&str>) {
        if !clusters.contains(r.cluster.as_str()) {
            self.err(
                format!("{path}.cluster"),
                format!("unknown cluster \"{}\"", r.cluster),
            );
        }
        if r.timeout_ms == Some(0) {
            self.err(format!("{path}.timeoutMs"), "must be greater than 0");
        }
        self.route_match(&format!("{path}.match"), &r.matcher);
        if let Some(retry) = &r.retry {
            if retry.attempts > 10 {
                self.err(format!("{path}.retry.attempts"), "at most 10 retries");
            }
            if retry.per_try_timeout_ms == Some(0) {
                self.err(
                    format!("{path}.retry.perTryTimeoutMs"),
                    "must be greater than 0",
                );
            }
            if let Some(methods) = &retry.methods {
                for (j, m) in methods.iter().enumerate() {
                    if m.is_empty() || is_lowercase_http_method(m) || http_header_name(m).is_err() {
                        self.err(
                            format!("{path}.retry.methods[{j}]"),
                            format!("{m:?} is not an HTTP method (upper case, e.g. POST)"),
                        );
                    }
                }
            }
            if let Some(b) = &retry.backoff {
                if b.base_ms == 0 {
                    self.err(format!("{path}.retry.backoff.baseMs"), "must be at least 1");
                }
                if b.max_ms < b.base_ms {
                    self.err(
                        format!("{path}.retry.backoff.maxMs"),
                        "must be at least baseMs",
                    );
                }
            }
            if retry.attempts > 0 && retry.retry_on.is_empty() {
                self.err(
                    format!("{path}.retry.on"),
                    "list at least one condition (connect-failure, reset, or a status like \"503\")",
                );
            }
            if let Some(b) = &retry.budget
                && !(0.0..=10.0).contains(&b.ratio)
            {
                self.err(
                    format!("{path}.retry.budget.ratio"),
                    format!("must be between 0 and 10, not {}", b.ratio),
                );
            }
        }
        if let Some(rl) = &r.rate_limit {
            self.rate_limit(&format!("{path}.rateLimit"), rl);
        }
    }

    /// A route's `match`, or a rule's `to`.
    fn route_match(&mut self, path: &str, m: &RouteMatch) {
        let path_kinds = [&m.path, &m.path_prefix, &m.path_regex]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if path_kinds > 1 {
            self.err(path, "at most one of path, pathPrefix, pathRegex");
        }
        if let Some(p) = &m.path
            && !p.starts_with('/')
        {
            self.err(format!("{path}.path"), "must start with \"/\"");
        }
        if let Some(p) = &m.path_prefix
            && !p.starts_with('/')
        {
            self.err(format!("{path}.pathPrefix"), "must start with \"/\"");
        }
        if let Some(re) = &m.path_regex
            && let Err(e) = regex::Regex::new(re)
        {
            self.err(format!("{path}.pathRegex"), format!("invalid regex: {e}"));
        }
        if let Some(method) = &m.method {
            if is_lowercase_http_method(method) {
                self.err(
                    format!("{path}.method"),
                    format!("\"{method}\" is not an HTTP method (use upper case, e.g. POST)"),
                );
            } else if http_header_name(method).is_err() {
                self.err(
                    format!("{path}.method"),
                    format!(
                        "\"{method}\" is neither an HTTP method (e.g. POST) nor an RPC method name (e.g. sayHello)"
                    ),
                );
            }
        }
        for (i, h) in m.headers.iter().enumerate() {
            self.header_match(&format!("{path}.headers[{i}]"), h);
        }
    }

    fn heartbeat(&mut self, path: &str, h: &HeartbeatConfig) {
        if h.interval_ms > 0 && h.interval_ms < 100 {
            self.err(
                format!("{path}.intervalMs"),
                "must be 0 (no heartbeats) or at least 100",
            );
        }
        if h.misses == 0 {
            self.err(format!("{path}.misses"), "must be at least 1");
        }
    }

    fn header_match(&mut self, path: &str, h: &HeaderMatch) {
        if http_header_name(&h.name).is_err() {
            self.err(
                format!("{path}.name"),
                format!("\"{}\" is not a valid header name", h.name),
            );
        }
        if let ValueMatch::Regex(re) = &h.value
            && let Err(e) = regex::Regex::new(re)
        {
            self.err(format!("{path}.regex"), format!("invalid regex: {e}"));
        }
    }

    fn cluster(&mut self, path: &str, c: &ClusterConfig) {
        if c.name.is_empty() {
            self.err(format!("{path}.name"), "must not be empty");
        }
        if c.protocol == Protocol::Auto {
            self.err(
                format!("{path}.protocol"),
                "\"auto\" is only for listeners: a cluster speaks http, http2, bolt or dubbo",
            );
        }
        self.heartbeat(&format!("{path}.heartbeat"), &c.heartbeat);
        match &c.discovery {
            None if c.hosts.is_empty() => {
                self.err(format!("{path}.hosts"), "at least one host is required");
            }
            None => {}
            Some(d) => {
                if !c.hosts.is_empty() {
                    self.err(
                        format!("{path}.hosts"),
                        "a cluster with discovery finds its hosts: leave hosts out",
                    );
                }
                // The Service `<app>-outrigger` must be a DNS label: 63 characters at most.
                if let Err(e) =
                    check_dns_label(&d.app, 63 - crate::spec::DISCOVERY_SERVICE_SUFFIX.len())
                {
                    self.err(format!("{path}.discovery.app"), e);
                }
                if let Err(e) = check_dns_label(&d.namespace, 63) {
                    self.err(format!("{path}.discovery.namespace"), e);
                }
                if d.port == Some(0) {
                    self.err(format!("{path}.discovery.port"), "must be 1 to 65535");
                }
            }
        }
        for (i, h) in c.hosts.iter().enumerate() {
            if let Err(e) = check_host_port(&h.address) {
                self.err(format!("{path}.hosts[{i}].address"), e);
            }
            if h.weight == 0 {
                self.err(format!("{path}.hosts[{i}].weight"), "must be at least 1");
            }
        }
        if c.connect_timeout_ms == 0 {
            self.err(format!("{path}.connectTimeoutMs"), "must be greater than 0");
        }
        if c.max_connections == 0 {
            self.err(format!("{path}.maxConnections"), "must be at least 1");
        }
        if c.idle_timeout_ms == 0 {
            self.err(format!("{path}.idleTimeoutMs"), "must be greater than 0");
        }
        if c.dns_refresh_ms < 100 {
            self.err(format!("{path}.dnsRefreshMs"), "must be at least 100");
        }
        if let Some(o) = &c.outlier_detection {
            let path = format!("{path}.outlierDetection");
            if o.consecutive_failures == 0 {
                self.err(format!("{path}.consecutiveFailures"), "must be at least 1");
            }
            if o.base_ejection_ms == 0 {
                self.err(format!("{path}.baseEjectionMs"), "must be greater than 0");
            }
            if o.max_ejection_ms < o.base_ejection_ms {
                self.err(
                    format!("{path}.maxEjectionMs"),
                    format!(
                        "must be at least baseEjectionMs ({} ms), not {} ms",
                        o.base_ejection_ms, o.max_ejection_ms
                    ),
                );
            }
            if o.max_ejection_percent > 100 {
                self.err(
                    format!("{path}.maxEjectionPercent"),
                    format!("must be at most 100, not {}", o.max_ejection_percent),
                );
            }
        }
        if let Some(b) = &c.circuit_breaker
            && b.max_requests == 0
        {
            self.err(
                format!("{path}.circuitBreaker.maxRequests"),
                "must be at least 1",
            );
        }
    }
}

/// A Kubernetes name usable as a DNS label: lowercase letters, digits and `-`, starting and
/// ending with a letter or digit, at most `max` characters.
fn check_dns_label(s: &str, max: usize) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if s.is_empty() || s.len() > max || !s.chars().all(ok) || s.starts_with('-') || s.ends_with('-')
    {
        return Err(format!(
            "\"{s}\" is not a DNS label of at most {max} characters (lowercase letters, digits, '-')"
        ));
    }
    Ok(())
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`, at most 255 bytes.
fn check_trust_domain(td: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
    if td.is_empty() || td.len() > 255 || !td.chars().all(ok) {
        return Err(format!(
            "\"{td}\" is not a trust domain (lowercase letters, digits, '.', '-' and '_')"
        ));
    }
    Ok(())
}

/// A SPIFFE id `spiffe://<trust domain>/<path>` of the configured trust domain.
fn check_spiffe_id(id: &str, trust_domain: Option<&str>) -> Result<(), String> {
    let Some((td, path)) = id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Err(format!(
            "\"{id}\" is not a SPIFFE id (spiffe://<trust domain>/<path>)"
        ));
    };
    check_trust_domain(td)?;
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    };
    if !path.split('/').all(segment_ok) {
        return Err(format!(
            "\"{id}\": path segments are letters, digits, '.', '-' and '_'"
        ));
    }
    if let Some(want) = trust_domain
        && td != want
    {
        return Err(format!(
            "\"{id}\" is not in the trust domain \"{want}\" of `identity`"
        ));
    }
    Ok(())
}

/// An IP socket address such as `127.0.0.1:34904` or `[::1]:80`.
/// An API token: 1 to 4096 bytes of visible ASCII, so that it fits a header value as is.
fn check_api_token(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 4096 {
        return Err("must be 1 to 4096 characters".to_owned());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be visible ASCII without spaces (it is sent as a header value)".to_owned(),
        );
    }
    Ok(())
}

/// `http://host:port[/path]`: the collector, reached without TLS (a Collector agent on the node
/// or in the pod, the usual deployment, forwards with TLS if it must).
fn check_otlp_endpoint(s: &str) -> Result<(), String> {
    if s.starts_with("https://") {
        return Err(format!(
            "\"{s}\": TLS to the collector is not supported; export to a Collector over http:// (a node or pod agent) and let it forward with TLS"
        ));
    }
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("\"{s}\" is not an http://host:port URL"))?;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    check_host_port(authority).map_err(|_| {
        format!("\"{s}\" does not name a host:port after http:// (for example http://otel-collector:4317)")
    })
}

fn check_socket_addr(s: &str) -> Result<(), String> {
    s.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("\"{s}\" is not an ip:port address"))
}

/// `host:port` where host is an IP address or a DNS name and port is 1-65535.
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("\"{s}\" is not a host:port address");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad()),
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        });
    if valid_host { Ok(()) } else { Err(bad()) }
}

/// A well-known HTTP method written in lower case (`post`): a typo, not an RPC method.
fn is_lowercase_http_method(s: &str) -> bool {
    const METHODS: [&str; 9] = [
        "get", "head", "post", "put", "delete", "connect", "options", "trace", "patch",
    ];
    METHODS.contains(&s)
}

/// An HTTP token (RFC 9110), which is what header names and methods are made of.
fn http_header_name(s: &str) -> Result<(), ()> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b))
    {
        Ok(())
    } else {
        Err(())
    }
}
