//! The operator's Prometheus metrics, built once in `run` and passed to the controller and the
//! webhook: reconciles and their failures by kind, admissions by webhook and result, injection
//! skips by reason, leadership, pod certificates, identity endpoint requests and discovery streams by result.
//! Not for serving them (`health`).

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: String,
    result: String,
}

/// The operator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_failures: Family<KindLabel, Counter>,
    reconcile_seconds: Histogram,
    admissions: Family<AdmissionLabels, Counter>,
    injection_skips: Family<ReasonLabel, Counter>,
    leader: Gauge,
    pod_certificates: Family<ResultLabel, Counter>,
    signer_failures: Family<KindLabel, Counter>,
    identity_requests: Family<ResultLabel, Counter>,
    discovery_watches: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `outrigger_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outrigger_operator");
        let reconciles = Counter::default();
        let reconcile_failures = Family::<KindLabel, Counter>::default();
        let reconcile_seconds = Histogram::new([0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        let admissions = Family::<AdmissionLabels, Counter>::default();
        let leader = Gauge::default();
        let injection_skips = Family::<ReasonLabel, Counter>::default();
        let pod_certificates = Family::<ResultLabel, Counter>::default();
        let signer_failures = Family::<KindLabel, Counter>::default();
        let identity_requests = Family::<ResultLabel, Counter>::default();
        let discovery_watches = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "RuntimeConfig reconciles", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed RuntimeConfig reconciles by error kind",
            reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_seconds.clone(),
        );
        registry.register(
            "admissions",
            "Admission reviews answered, by webhook and result",
            admissions.clone(),
        );
        registry.register(
            "injection_skips",
            "Pods the injector left without the sidecar, by reason (denied ones included)",
            injection_skips.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the controller lease",
            leader.clone(),
        );
        registry.register(
            "pod_certificates",
            "PodCertificateRequests answered by the signer, by result (issued, denied)",
            pod_certificates.clone(),
        );
        registry.register(
            "signer_failures",
            "PodCertificateRequests the signer could not answer yet (retried), by error kind",
            signer_failures.clone(),
        );
        registry.register(
            "identity_requests",
            "Certificate signing requests at the identity endpoint, by result (issued, unauthenticated, denied, invalid, unavailable, error)",
            identity_requests.clone(),
        );
        registry.register(
            "discovery_watches",
            "Discovery streams asked for, by result (opened, unauthenticated, denied, invalid, unavailable, error)",
            discovery_watches.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_seconds,
            admissions,
            injection_skips,
            leader,
            pod_certificates,
            signer_failures,
            identity_requests,
            discovery_watches,
        }
    }

    /// Counts one discovery stream asked for, by result.
    pub fn discovery_watch(&self, result: &str) {
        self.discovery_watches
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one request at the identity endpoint, by result.
    pub fn identity_request(&self, result: &str) {
        self.identity_requests
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one PodCertificateRequest answered (`issued` or `denied`).
    pub fn pod_certificate(&self, result: &str) {
        self.pod_certificates
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one PodCertificateRequest the signer failed to answer (it is retried).
    pub fn pod_certificate_failed(&self, kind: &str) {
        self.signer_failures
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, seconds: f64) {
        self.reconciles.inc();
        self.reconcile_seconds.observe(seconds);
    }

    /// Counts one failed reconcile.
    pub fn reconcile_failed(&self, kind: &str) {
        self.reconcile_failures
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one admission review answered.
    pub fn admission(&self, webhook: &str, result: &str) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                webhook: webhook.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one pod left without the sidecar, by the skip's label.
    pub fn injection_skipped(&self, reason: &str) {
        self.injection_skips
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
