//! Authorization by workload identity, compiled once per config load like routes: a listener's
//! policy (deny rules, allow rules, a default, enforce or audit) and the decision for one call
//! from the caller's SPIFFE id and what routes see of the request ([`RequestView`]). Deciding
//! allocates nothing: the id is read in place (`spiffe://<td>/ns/<ns>/sa/<sa>`), the `to`
//! matchers are route matchers built at load, and the decision names its rule by a shared
//! string. Also the one place a decision is counted and turned into the proxy's own refusal.
//! Not for answering a refusal in a protocol (each edge maps [`Cause::Denied`]).

use std::sync::Arc;

use outrigger_config::{Authorization, AuthorizationAction, AuthorizationMode, CallerMatch};
use outrigger_core::{AccessRecord, AttrValue, AuthzLabels, Cause, LabelStr, Metrics, ProxyError};

use crate::route::{Matcher, RequestView};

/// The rule name of a decision no rule made.
const DEFAULT_RULE: &str = "default";

/// A listener's compiled policy.
#[derive(Debug)]
pub(crate) struct Policy {
    mode: AuthorizationMode,
    default: AuthorizationAction,
    default_name: Arc<str>,
    /// Checked first: any match denies.
    deny: Vec<Rule>,
    /// Then: any match allows.
    allow: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    from: Callers,
    to: Matcher,
}

/// A rule's `from`, compiled.
#[derive(Debug)]
struct Callers {
    identities: Vec<IdMatch>,
    namespaces: Vec<String>,
    apps: Vec<String>,
    unauthenticated: bool,
}

#[derive(Debug)]
enum IdMatch {
    Exact(String),
    Prefix(String),
}

impl IdMatch {
    fn matches(&self, id: &str) -> bool {
        match self {
            IdMatch::Exact(e) => id == e,
            IdMatch::Prefix(p) => id.starts_with(p.as_str()),
        }
    }
}

/// What a policy knows of a caller: its SPIFFE id and the namespace and service account in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller<'a> {
    id: &'a str,
    namespace: Option<&'a str>,
    service_account: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// Reads `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` in place; an id of
    /// another shape keeps only the id (its namespace and app match nothing).
    pub(crate) fn parse(id: &'a str) -> Self {
        let mut caller = Caller {
            id,
            namespace: None,
            service_account: None,
        };
        let Some(path) = id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path)
        else {
            return caller;
        };
        let mut segments = path.split('/');
        while let (Some(key), Some(value)) = (segments.next(), segments.next()) {
            match key {
                "ns" if caller.namespace.is_none() => caller.namespace = Some(value),
                "sa" if caller.service_account.is_none() => caller.service_account = Some(value),
                _ => {}
            }
        }
        caller
    }
}

impl Callers {
    fn compile(from: &CallerMatch) -> Self {
        Self {
            identities: from
                .identities
                .iter()
                .map(|id| match id.strip_suffix('*') {
                    Some(prefix) => IdMatch::Prefix(prefix.to_owned()),
                    None => IdMatch::Exact(id.clone()),
                })
                .collect(),
            namespaces: from.namespaces.clone(),
            apps: from.apps.clone(),
            unauthenticated: from.unauthenticated,
        }
    }

    fn names_identities(&self) -> bool {
        !(self.identities.is_empty() && self.namespaces.is_empty() && self.apps.is_empty())
    }

    /// Whether the caller (`None`: no identity) is one of these: every list given holds (each
    /// by any entry); a caller without identity only when `unauthenticated`.
    fn matches(&self, caller: Option<&Caller<'_>>) -> bool {
        let Some(c) = caller else {
            return self.unauthenticated;
        };
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        self.names_identities()
            && (self.identities.is_empty() || self.identities.iter().any(|m| m.matches(c.id)))
            && any(&self.namespaces, c.namespace)
            && any(&self.apps, c.service_account)
    }
}

/// What a policy decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Served.
    Allow,
    /// Refused.
    Deny,
    /// Denied by a policy in `audit` mode: served, logged and counted.
    AuditDeny,
}

impl Verdict {
    /// The metric label and access-log value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit_deny",
        }
    }
}

/// A decision and the rule (or `default`) that made it.
#[derive(Clone, Debug)]
pub(crate) struct Decision {
    pub(crate) verdict: Verdict,
    pub(crate) rule: Arc<str>,
}

impl Policy {
    /// Compiles a policy; fails only on input that validation rejects.
    pub(crate) fn compile(a: &Authorization) -> Result<Self, String> {
        let mut deny = Vec::new();
        let mut allow = Vec::new();
        for r in &a.rules {
            let rule = Rule {
                name: Arc::from(r.name.as_str()),
                from: Callers::compile(&r.from),
                to: Matcher::compile(&r.to).map_err(|e| format!("rule {}: {e}", r.name))?,
            };
            match r.action {
                AuthorizationAction::Deny => deny.push(rule),
                AuthorizationAction::Allow => allow.push(rule),
            }
        }
        Ok(Self {
            mode: a.mode,
            default: a.default,
            default_name: Arc::from(DEFAULT_RULE),
            deny,
            allow,
        })
    }

    /// Decides a call from `peer` (its SPIFFE id; `None` for a caller without one): any
    /// matching deny rule denies, else any matching allow rule allows, else the default. In
    /// `audit` mode a denial is [`Verdict::AuditDeny`].
    pub(crate) fn decide(&self, peer: Option<&str>, view: &dyn RequestView) -> Decision {
        let caller = peer.map(Caller::parse);
        let hit = |r: &&Rule| r.from.matches(caller.as_ref()) && r.to.matches_view(view);
        let (action, rule) = if let Some(r) = self.deny.iter().find(hit) {
            (AuthorizationAction::Deny, &r.name)
        } else if let Some(r) = self.allow.iter().find(hit) {
            (AuthorizationAction::Allow, &r.name)
        } else {
            (self.default, &self.default_name)
        };
        let verdict = match (action, self.mode) {
            (AuthorizationAction::Allow, _) => Verdict::Allow,
            (AuthorizationAction::Deny, AuthorizationMode::Enforce) => Verdict::Deny,
            (AuthorizationAction::Deny, AuthorizationMode::Audit) => Verdict::AuditDeny,
        };
        Decision {
            verdict,
            rule: rule.clone(),
        }
    }
}

/// Decides a call on `listener` when it has a policy: counts the decision, logs what is not an
/// allow, and returns it with the proxy's own refusal when the call must not be served.
pub(crate) fn check(
    policy: Option<&Policy>,
    metrics: &Metrics,
    listener: &str,
    peer: Option<&str>,
    view: &dyn RequestView,
) -> (Option<Decision>, Result<(), ProxyError>) {
    let Some(policy) = policy else {
        return (None, Ok(()));
    };
    let decision = policy.decide(peer, view);
    metrics
        .authz_decisions
        .get_or_create(&AuthzLabels {
            decision: decision.verdict.as_str(),
            rule: LabelStr::from(&decision.rule),
        })
        .inc();
    let result = match decision.verdict {
        Verdict::Allow => Ok(()),
        Verdict::AuditDeny => {
            tracing::info!(listener, rule = %decision.rule, caller = peer.unwrap_or("unauthenticated"), "authorization (audit): would deny");
            Ok(())
        }
        Verdict::Deny => {
            tracing::debug!(listener, rule = %decision.rule, caller = peer.unwrap_or("unauthenticated"), "authorization: denied");
            Err(denial(listener, &decision.rule, peer))
        }
    };
    (Some(decision), result)
}

/// The decision and rule of a call, as its server span's attributes.
pub(crate) fn span_attributes(line: &AccessRecord, attrs: &mut Vec<(&'static str, AttrValue)>) {
    if let Some(decision) = line.authz_decision {
        attrs.push(("outrigger.authz.decision", decision.into()));
    }
    if let Some(rule) = &line.authz_rule {
        attrs.push(("outrigger.authz.rule", rule.to_string().into()));
    }
}

/// The proxy's refusal of a denied call, naming the rule and the caller.
fn denial(listener: &str, rule: &str, peer: Option<&str>) -> ProxyError {
    let caller = peer.map_or_else(
        || "an unauthenticated caller (no mutual TLS identity)".to_owned(),
        |id| format!("caller {id}"),
    );
    let by = if rule == DEFAULT_RULE {
        "the policy's default (no rule matched)".to_owned()
    } else {
        format!("rule \"{rule}\"")
    };
    ProxyError::new(
        Cause::Denied,
        format!("permission denied on listener {listener}: {caller} is denied by {by}"),
    )
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};
    use outrigger_core::Failure;

    use super::*;
    use crate::route::HttpView;

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const ADMIN: &str = "spiffe://cluster.local/ns/ops/sa/admin";

    /// Compiles the policy `yaml` as a listener's `authorization` in a document.
    fn policy(yaml: &str) -> Policy {
        let indented: String = yaml.lines().map(|l| format!("      {l}\n")).collect();
        let doc = format!(
            "rpc: {{channels: [{{listener: l}}]}}\nrouteTables: [{{name: t}}]\nlisteners:\n  - name: l\n    routeTable: t\n    authorization:\n{indented}"
        );
        let spec = outrigger_config::load_yaml(&doc).expect("a valid policy");
        let a = spec.listeners[0].authorization.as_ref().expect("policy");
        Policy::compile(a).expect("compiles")
    }

    fn decide(p: &Policy, peer: Option<&str>, method: &Method, path: &str) -> (Verdict, String) {
        let headers = HeaderMap::new();
        let d = p.decide(
            peer,
            &HttpView {
                method,
                path,
                headers: &headers,
            },
        );
        (d.verdict, d.rule.to_string())
    }

    #[test]
    fn callers_are_read_from_their_spiffe_id() {
        assert_eq!(
            Caller::parse(WEB),
            Caller {
                id: WEB,
                namespace: Some("shop"),
                service_account: Some("web")
            }
        );
        let odd = Caller::parse("spiffe://td/workload/x");
        assert_eq!((odd.namespace, odd.service_account), (None, None));
        assert_eq!(Caller::parse("not-an-id").namespace, None);
    }

    #[test]
    fn deny_first_then_allow_then_default() {
        let p = policy(
            r#"
default: deny
rules:
  - {name: shop-reads, action: allow, from: {namespaces: [shop]}, to: {method: GET}}
  - {name: no-admin, action: deny, from: {identities: ["spiffe://cluster.local/*"]}, to: {pathPrefix: /admin}}
  - {name: ops, action: allow, from: {apps: [admin]}}
  - {name: health, action: allow, from: {unauthenticated: true, identities: ["*"]}, to: {path: /healthz}}
"#,
        );
        let (get, post) = (Method::GET, Method::POST);
        let cases: &[(Option<&str>, &Method, &str, Verdict, &str)] = &[
            (Some(WEB), &get, "/orders", Verdict::Allow, "shop-reads"),
            (Some(WEB), &post, "/orders", Verdict::Deny, "default"),
            (Some(WEB), &get, "/admin/x", Verdict::Deny, "no-admin"),
            (Some(ADMIN), &get, "/admin/x", Verdict::Deny, "no-admin"),
            (Some(ADMIN), &post, "/orders", Verdict::Allow, "ops"),
            (None, &get, "/healthz", Verdict::Allow, "health"),
            (None, &get, "/orders", Verdict::Deny, "default"),
            (Some(WEB), &get, "/healthz", Verdict::Allow, "shop-reads"),
            (
                Some("spiffe://other.td/ns/shop/sa/web"),
                &get,
                "/admin",
                Verdict::Allow,
                "shop-reads",
            ),
        ];
        for (peer, method, path, verdict, rule) in cases {
            assert_eq!(
                decide(&p, *peer, method, path),
                (*verdict, (*rule).to_owned()),
                "{peer:?} {method} {path}"
            );
        }
    }

    #[test]
    fn a_plaintext_caller_matches_only_unauthenticated() {
        let p = policy(
            r#"
default: allow
rules:
  - {name: any-id, action: deny, from: {identities: ["*"]}}
"#,
        );
        assert_eq!(decide(&p, None, &Method::GET, "/").0, Verdict::Allow);
        assert_eq!(decide(&p, Some(WEB), &Method::GET, "/").0, Verdict::Deny);
        let p = policy(
            r#"
default: allow
rules:
  - {name: plain, action: deny, from: {unauthenticated: true}}
"#,
        );
        assert_eq!(decide(&p, None, &Method::GET, "/").0, Verdict::Deny);
        assert_eq!(decide(&p, Some(WEB), &Method::GET, "/").0, Verdict::Allow);
    }

    #[test]
    fn audit_denies_nothing_but_says_what_it_would() {
        let p = policy("{mode: audit, default: deny}");
        assert_eq!(
            decide(&p, Some(WEB), &Method::GET, "/"),
            (Verdict::AuditDeny, "default".to_owned())
        );
        let metrics = Metrics::new();
        let headers = HeaderMap::new();
        let view = HttpView {
            method: &Method::GET,
            path: "/",
            headers: &headers,
        };
        let (d, result) = check(Some(&p), &metrics, "inbound", Some(WEB), &view);
        assert!(result.is_ok());
        assert_eq!(d.map(|d| d.verdict), Some(Verdict::AuditDeny));
        assert!(metrics.encode().contains(
            "outrigger_authz_decisions_total{decision=\"audit_deny\",rule=\"default\"} 1"
        ));
    }

    #[test]
    fn a_denial_names_the_rule_and_the_caller() {
        let p = policy(
            "{default: allow, rules: [{name: nope, action: deny, from: {namespaces: [shop]}}]}",
        );
        let headers = HeaderMap::new();
        let view = HttpView {
            method: &Method::GET,
            path: "/",
            headers: &headers,
        };
        let (_, result) = check(Some(&p), &Metrics::new(), "inbound", Some(WEB), &view);
        let e = result.expect_err("denied");
        assert_eq!(e.cause(), Cause::Denied);
        assert_eq!(
            e.message(),
            format!(
                "permission denied on listener inbound: caller {WEB} is denied by rule \"nope\""
            )
        );
        let p = policy("{default: deny}");
        let (_, result) = check(Some(&p), &Metrics::new(), "inbound", None, &view);
        assert!(
            result
                .expect_err("denied")
                .message()
                .ends_with("an unauthenticated caller (no mutual TLS identity) is denied by the policy's default (no rule matched)")
        );
    }
}
