//! Telling users about opted-in pods the injector did not inject: one Warning Event
//! (`InjectionSkipped`) on the pod's owner — the ReplicaSet, Job, StatefulSet… that created it — or
//! on its namespace when it has none, once per owner and reason. The admission path only hands a
//! [`SkipNotice`] over (it never waits on the API server); a background task deduplicates and
//! publishes. Not for deciding skips (`inject`) or the pod annotation (`admission`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    inject::Skip,
    names::{CONTROLLER_NAME, EVENT_REASON_INJECTION_SKIPPED},
};

/// How long an (owner, reason) pair is remembered: within it, repeats publish nothing.
pub const REMEMBER_FOR: Duration = Duration::from_secs(3600);
/// Most (owner, reason) pairs remembered; beyond it the oldest are forgotten.
const MAX_REMEMBERED: usize = 10_000;
/// Notices waiting for the publisher; beyond it new ones are dropped (admission never waits).
const QUEUE: usize = 256;

/// A skip to report: who is told, about which pod, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SkipNotice {
    /// The pod's controlling owner, or its namespace.
    pub regarding: ObjectReference,
    /// The pod's name, or its `generateName` followed by `*`.
    pub pod: String,
    /// Why it was not injected.
    pub skip: Skip,
}

impl SkipNotice {
    /// The notice for `pod` in `namespace`: about its controller owner (else its first owner),
    /// else about the namespace.
    pub fn new(pod: &Pod, namespace: &str, namespace_uid: Option<String>, skip: &Skip) -> Self {
        let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| owners.first());
        let regarding = match owner {
            Some(o) => ObjectReference {
                api_version: Some(o.api_version.clone()),
                kind: Some(o.kind.clone()),
                name: Some(o.name.clone()),
                namespace: Some(namespace.to_owned()),
                uid: Some(o.uid.clone()),
                ..ObjectReference::default()
            },
            // A Namespace is cluster-scoped: its Events live in `default`, as the API requires.
            None => ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Namespace".to_owned()),
                name: Some(namespace.to_owned()),
                uid: namespace_uid,
                ..ObjectReference::default()
            },
        };
        let pod_name = match (&pod.metadata.name, &pod.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => "(unnamed)".to_owned(),
        };
        Self {
            regarding,
            pod: pod_name,
            skip: skip.clone(),
        }
    }

    /// The dedup key: the owner (by UID when known) and the reason text.
    fn key(&self) -> (String, String) {
        let r = &self.regarding;
        let who = r.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                r.kind.as_deref().unwrap_or_default(),
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            )
        });
        (who, self.skip.to_string())
    }

    /// The Event published for it.
    pub fn event(&self) -> Event {
        Event {
            type_: EventType::Warning,
            reason: EVENT_REASON_INJECTION_SKIPPED.to_owned(),
            note: Some(truncate(
                &format!(
                    "pod {} was created without the outrigger sidecar: {}",
                    self.pod, self.skip
                ),
                1000,
            )),
            action: "Inject".to_owned(),
            secondary: None,
        }
    }
}

/// Remembers which (owner, reason) pairs were reported, for [`REMEMBER_FOR`].
#[derive(Debug, Default)]
pub struct OncePer {
    seen: HashMap<(String, String), Instant>,
}

impl OncePer {
    /// Whether `notice` is news at `now` (and remembers it if so).
    pub fn first(&mut self, notice: &SkipNotice, now: Instant) -> bool {
        let key = notice.key();
        if let Some(at) = self.seen.get(&key)
            && now.saturating_duration_since(*at) < REMEMBER_FOR
        {
            return false;
        }
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < REMEMBER_FOR);
            if self.seen.len() >= MAX_REMEMBERED {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
        true
    }
}

/// Hands skip notices to a background publisher.
#[derive(Clone, Debug)]
pub struct SkipReporter {
    tx: mpsc::Sender<SkipNotice>,
}

impl SkipReporter {
    /// Starts the publisher on the runtime, publishing Events as `instance` (the pod name).
    pub fn start(client: Client, instance: String) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER_NAME.to_owned(),
                instance: Some(instance),
            },
        );
        tokio::spawn(publish(recorder, rx));
        Arc::new(Self { tx })
    }

    /// Queues a notice; never waits (a full queue drops it, with a log line).
    pub fn report(&self, notice: SkipNotice) {
        if let Err(e) = self.tx.try_send(notice) {
            tracing::warn!(error = %e, "skip Event not recorded: the queue is full");
        }
    }
}

/// Publishes each notice that is news; returns when every reporter is gone.
pub async fn publish(recorder: Recorder, mut rx: mpsc::Receiver<SkipNotice>) {
    let mut once = OncePer::default();
    while let Some(notice) = rx.recv().await {
        if !once.first(&notice, Instant::now()) {
            continue;
        }
        if let Err(e) = recorder.publish(&notice.event(), &notice.regarding).await {
            tracing::warn!(error = %e, regarding = ?notice.regarding.name, "cannot record the skip Event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn missing() -> Skip {
        Skip::ConfigNotFound {
            namespace: "shop".into(),
            name: "no-such-config".into(),
        }
    }

    #[test]
    fn notices_name_the_controller_owner_or_the_namespace() {
        let owned = pod(
            json!({ "metadata": { "generateName": "web-6d4cf56db6-", "ownerReferences": [
            { "apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u0" },
            { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4cf56db6", "uid": "u1", "controller": true },
        ] } }),
        );
        let n = SkipNotice::new(&owned, "shop", Some("ns-uid".into()), &missing());
        assert_eq!(n.regarding.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(n.regarding.name.as_deref(), Some("web-6d4cf56db6"));
        assert_eq!(n.regarding.namespace.as_deref(), Some("shop"));
        assert_eq!(n.regarding.uid.as_deref(), Some("u1"));
        assert_eq!(n.pod, "web-6d4cf56db6-*");
        let e = n.event();
        assert_eq!(e.reason, "InjectionSkipped");
        assert!(matches!(e.type_, EventType::Warning));
        assert_eq!(
            e.note.as_deref(),
            Some(
                "pod web-6d4cf56db6-* was created without the outrigger sidecar: RuntimeConfig shop/no-such-config (annotation outrigger.dev/config) does not exist; sidecar not injected"
            )
        );

        let bare = pod(json!({ "metadata": { "name": "probe" } }));
        let n = SkipNotice::new(&bare, "shop", Some("ns-uid".into()), &missing());
        assert_eq!(n.regarding.kind.as_deref(), Some("Namespace"));
        assert_eq!(n.regarding.name.as_deref(), Some("shop"));
        assert_eq!(n.regarding.namespace, None, "cluster-scoped");
        assert_eq!(n.regarding.uid.as_deref(), Some("ns-uid"));
        assert_eq!(n.pod, "probe");
    }

    #[test]
    fn once_per_owner_and_reason() {
        let t0 = Instant::now();
        let rs = |name: &str, uid: &str| {
            pod(
                json!({ "metadata": { "generateName": format!("{name}-"), "ownerReferences": [
                { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true }] } }),
            )
        };
        let a = SkipNotice::new(&rs("a", "ua"), "shop", None, &missing());
        let a_other_reason = SkipNotice::new(
            &rs("a", "ua"),
            "shop",
            None,
            &Skip::VolumeConflict("outrigger-config".into()),
        );
        let b = SkipNotice::new(&rs("b", "ub"), "shop", None, &missing());
        let mut once = OncePer::default();
        assert!(once.first(&a, t0));
        assert!(
            !once.first(&a, t0 + Duration::from_secs(1)),
            "same owner, same reason"
        );
        assert!(once.first(&a_other_reason, t0), "another reason");
        assert!(once.first(&b, t0), "another owner");
        assert!(
            !once.first(&a, t0 + REMEMBER_FOR - Duration::from_secs(1)),
            "still remembered"
        );
        assert!(
            once.first(&a, t0 + REMEMBER_FOR),
            "reminded after REMEMBER_FOR"
        );
    }
}
