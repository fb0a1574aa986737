//! The `RuntimeConfig` status as a pure function of the previous status and what reconcile did:
//! `observedGeneration`, the `Valid`, `Ready` and `RolledOut` conditions (transition times kept
//! while a condition's status does not change), the live config hash, every validation error, and
//! the rollout counts from the injected pods. Not for writing it (see `reconcile`).

use std::collections::HashMap;

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use outrigger_config::ValidationErrors;

use crate::{
    crd::{Rollout, RuntimeConfigStatus},
    inject::config_name,
    names::ANNOTATION_CONFIG_HASH,
};

/// Condition type: the spec passes the sidecar's validation.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: the ConfigMap holds the current spec.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: every injected pod using the RuntimeConfig runs its current config.
pub const CONDITION_ROLLED_OUT: &str = "RolledOut";

/// What reconcile did with the spec.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The spec was valid and the ConfigMap now holds it.
    Applied {
        /// Name of the ConfigMap written.
        config_map: &'a str,
        /// Hash of the config written.
        hash: &'a str,
    },
    /// The spec was invalid; the ConfigMap was left as it was.
    Invalid {
        /// Every problem.
        errors: &'a ValidationErrors,
    },
}

/// The status after `outcome`, given the previous status and the object's generation.
pub fn next_status(
    previous: Option<&RuntimeConfigStatus>,
    generation: Option<i64>,
    outcome: Outcome<'_>,
    now: &Time,
) -> RuntimeConfigStatus {
    let previous_hash = previous.and_then(|s| s.config_hash.clone());
    let (valid, ready, config_hash, errors) = match outcome {
        Outcome::Applied { config_map, hash } => (
            (
                "True",
                "Valid",
                "the spec passes the sidecar's validation".to_owned(),
            ),
            (
                "True",
                "ConfigMapApplied",
                format!("ConfigMap {config_map} holds config {hash}"),
            ),
            Some(hash.to_owned()),
            Vec::new(),
        ),
        Outcome::Invalid { errors } => {
            let kept = match &previous_hash {
                Some(h) => format!("the ConfigMap keeps the last valid config ({h})"),
                None => "no ConfigMap has been written".to_owned(),
            };
            (
                (
                    "False",
                    "InvalidSpec",
                    format!(
                        "{} problem(s): {}",
                        errors.0.len(),
                        errors.lines().join("; ")
                    ),
                ),
                (
                    "False",
                    "InvalidSpec",
                    format!("the spec is invalid; {kept}"),
                ),
                previous_hash,
                errors.lines(),
            )
        }
    };
    RuntimeConfigStatus {
        observed_generation: generation,
        conditions: vec![
            condition(previous, generation, CONDITION_READY, ready, now),
            condition(previous, generation, CONDITION_VALID, valid, now),
        ],
        config_hash,
        errors,
        rollout: None,
    }
}

/// A condition; its transition time is kept from `previous` while its status is unchanged.
fn condition(
    previous: Option<&RuntimeConfigStatus>,
    generation: Option<i64>,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    now: &Time,
) -> Condition {
    let since = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Counts the injected pods of namespace `pods` that use RuntimeConfig `name`, by whether they
/// run `hash`: the live hash their sidecar reports (`live`, by pod name) when it could be read,
/// else the hash they were admitted with (their `outrigger.dev/config-hash` annotation). A
/// sidecar that reloaded a changed ConfigMap by itself is updated without a restart. Pods that
/// finished (`Succeeded`, `Failed`) or are terminating are not counted.
pub fn rollout(
    pods: &[Pod],
    name: &str,
    hash: Option<&str>,
    live: &HashMap<String, String>,
) -> Rollout {
    let mut r = Rollout::default();
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if finished || pod.metadata.deletion_timestamp.is_some() || config_name(pod) != name {
            continue;
        }
        r.pods += 1;
        let reported = pod
            .metadata
            .name
            .as_ref()
            .and_then(|n| live.get(n))
            .map(String::as_str);
        let runs = reported.or_else(|| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_CONFIG_HASH))
                .map(String::as_str)
        });
        if hash.is_some() && runs == hash {
            r.updated += 1;
        } else {
            r.stale += 1;
        }
    }
    r
}

/// `status` with the rollout counts and the `RolledOut` condition (against its live hash).
pub fn with_rollout(
    mut status: RuntimeConfigStatus,
    previous: Option<&RuntimeConfigStatus>,
    rollout: Rollout,
    now: &Time,
) -> RuntimeConfigStatus {
    let rolled_out = match (&status.config_hash, rollout) {
        (None, _) => (
            "Unknown",
            "NoConfig",
            "no valid config has been written yet".to_owned(),
        ),
        (Some(_), Rollout { pods: 0, .. }) => (
            "True",
            "NoPods",
            "no injected pod uses this RuntimeConfig".to_owned(),
        ),
        (Some(h), Rollout { pods, stale: 0, .. }) => (
            "True",
            "PodsUpdated",
            format!("all {pods} injected pod(s) run config {h}"),
        ),
        (Some(h), Rollout { pods, stale, .. }) => (
            "False",
            "PodsStale",
            format!(
                "{stale} of {pods} injected pod(s) do not run config {h} yet: a sidecar reloads \
                 the new config by itself once the kubelet updates its mounted ConfigMap (up to \
                 about a minute and a half); one that stays stale rejected it or cannot be read \
                 (its pod's outrigger container logs say why)"
            ),
        ),
    };
    let generation = status.observed_generation;
    status
        .conditions
        .retain(|c| c.type_ != CONDITION_ROLLED_OUT);
    status.conditions.push(condition(
        previous,
        generation,
        CONDITION_ROLLED_OUT,
        rolled_out,
        now,
    ));
    status.rollout = Some(rollout);
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use k8s_openapi::jiff::Timestamp;
    use outrigger_config::ValidationError;

    use super::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn errors() -> ValidationErrors {
        ValidationErrors(vec![
            ValidationError {
                path: "rpc.channels".into(),
                message: "at least one channel is required".into(),
            },
            ValidationError {
                path: "clusters[0].hosts".into(),
                message: "at least one host is required".into(),
            },
        ])
    }

    fn get<'a>(s: &'a RuntimeConfigStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn statuses() {
        let errs = errors();
        let applied = next_status(
            None,
            Some(1),
            Outcome::Applied {
                config_map: "outrigger-a",
                hash: "h1",
            },
            &t(100),
        );
        let applied_again = next_status(
            Some(&applied),
            Some(2),
            Outcome::Applied {
                config_map: "outrigger-a",
                hash: "h2",
            },
            &t(200),
        );
        let invalid_after_good = next_status(
            Some(&applied_again),
            Some(3),
            Outcome::Invalid { errors: &errs },
            &t(300),
        );
        let invalid_first = next_status(None, Some(1), Outcome::Invalid { errors: &errs }, &t(400));
        let fixed = next_status(
            Some(&invalid_after_good),
            Some(4),
            Outcome::Applied {
                config_map: "outrigger-a",
                hash: "h3",
            },
            &t(500),
        );

        // (case, status, generation, ready, valid, hash, error count, Ready transition second)
        let cases = [
            (
                "first apply",
                &applied,
                1,
                "True",
                "True",
                Some("h1"),
                0,
                100,
            ),
            (
                "update keeps transition time",
                &applied_again,
                2,
                "True",
                "True",
                Some("h2"),
                0,
                100,
            ),
            (
                "invalid keeps the live hash",
                &invalid_after_good,
                3,
                "False",
                "False",
                Some("h2"),
                2,
                300,
            ),
            (
                "invalid before any apply",
                &invalid_first,
                1,
                "False",
                "False",
                None,
                2,
                400,
            ),
            ("fixed again", &fixed, 4, "True", "True", Some("h3"), 0, 500),
        ];
        for (case, s, generation, ready, valid, hash, n_errors, since) in cases {
            assert_eq!(s.observed_generation, Some(generation), "{case}");
            assert_eq!(get(s, CONDITION_READY).status, ready, "{case}");
            assert_eq!(get(s, CONDITION_VALID).status, valid, "{case}");
            assert_eq!(
                get(s, CONDITION_READY).observed_generation,
                Some(generation),
                "{case}"
            );
            assert_eq!(s.config_hash.as_deref(), hash, "{case}");
            assert_eq!(s.errors.len(), n_errors, "{case}");
            assert_eq!(
                get(s, CONDITION_READY).last_transition_time,
                t(since),
                "{case}"
            );
        }
        assert_eq!(
            invalid_after_good.errors,
            [
                "rpc.channels: at least one channel is required",
                "clusters[0].hosts: at least one host is required"
            ]
        );
        let valid = get(&invalid_after_good, CONDITION_VALID);
        assert_eq!(valid.reason, "InvalidSpec");
        assert!(
            valid
                .message
                .starts_with("2 problem(s): rpc.channels: at least one channel"),
            "{}",
            valid.message
        );
        assert!(
            get(&invalid_after_good, CONDITION_READY)
                .message
                .contains("keeps the last valid config (h2)")
        );
        assert_eq!(
            get(&fixed, CONDITION_READY).message,
            "ConfigMap outrigger-a holds config h3"
        );
    }

    fn pod(config: Option<&str>, hash: Option<&str>, phase: &str, terminating: bool) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(c) = config {
            annotations.insert("outrigger.dev/config".into(), c.into());
        }
        if let Some(h) = hash {
            annotations.insert("outrigger.dev/config-hash".into(), h.into());
        }
        let mut v = serde_json::json!({
            "metadata": { "name": "p", "labels": { "outrigger.dev/injected": "true" }, "annotations": annotations },
            "status": { "phase": phase },
        });
        if terminating {
            v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rollout_counts_pods_of_this_config_by_admitted_hash() {
        let pods = [
            pod(Some("web"), Some("h2"), "Running", false),
            pod(Some("web"), Some("h2"), "Pending", false),
            pod(Some("web"), Some("h1"), "Running", false),
            pod(Some("web"), None, "Running", false),
            pod(Some("web"), Some("h1"), "Succeeded", false),
            pod(Some("web"), Some("h1"), "Failed", false),
            pod(Some("web"), Some("h1"), "Running", true),
            pod(Some("other"), Some("h1"), "Running", false),
            pod(None, Some("h1"), "Running", false),
        ];
        assert_eq!(
            rollout(&pods, "web", Some("h2"), &HashMap::new()),
            Rollout {
                pods: 4,
                updated: 2,
                stale: 2
            }
        );
        assert_eq!(
            rollout(&pods, "default", Some("h1"), &HashMap::new()),
            Rollout {
                pods: 1,
                updated: 1,
                stale: 0
            },
            "no annotation means the RuntimeConfig named default"
        );
        assert_eq!(
            rollout(&pods, "web", None, &HashMap::new()),
            Rollout {
                pods: 4,
                updated: 0,
                stale: 4
            },
            "without a live hash nothing is up to date"
        );
        assert_eq!(
            rollout(&[], "web", Some("h2"), &HashMap::new()),
            Rollout::default()
        );
    }

    #[test]
    fn rollout_counts_the_live_hash_over_the_admission_stamp() {
        let named = |name: &str, stamp: Option<&str>| {
            let mut p = pod(Some("web"), stamp, "Running", false);
            p.metadata.name = Some(name.into());
            p
        };
        let pods = [
            named("reloaded", Some("h1")),
            named("unreadable", Some("h1")),
            named("rejected", Some("h2")),
            named("admitted-late", None),
        ];
        let live: HashMap<String, String> = [
            ("reloaded", "h2"),
            ("rejected", "h1"),
            ("admitted-late", "h2"),
        ]
        .into_iter()
        .map(|(p, h)| (p.to_owned(), h.to_owned()))
        .collect();
        assert_eq!(
            rollout(&pods, "web", Some("h2"), &live),
            Rollout {
                pods: 4,
                updated: 2,
                stale: 2
            },
            "a sidecar that reloaded counts; one that cannot be read counts by its stamp; \
             one that runs another config than its stamp is stale"
        );
    }

    #[test]
    fn rolled_out_condition() {
        let applied = next_status(
            None,
            Some(1),
            Outcome::Applied {
                config_map: "outrigger-a",
                hash: "h2",
            },
            &t(100),
        );
        let errs = errors();
        let never_valid = next_status(None, Some(1), Outcome::Invalid { errors: &errs }, &t(100));
        let r = |pods, updated, stale| Rollout {
            pods,
            updated,
            stale,
        };
        // (case, status, rollout, condition status, reason, message fragment)
        let cases = [
            (
                "all updated",
                &applied,
                r(3, 3, 0),
                "True",
                "PodsUpdated",
                "all 3 injected pod(s) run config h2",
            ),
            (
                "no pods",
                &applied,
                r(0, 0, 0),
                "True",
                "NoPods",
                "no injected pod",
            ),
            (
                "stale pods",
                &applied,
                r(3, 1, 2),
                "False",
                "PodsStale",
                "2 of 3 injected pod(s) do not run config h2 yet",
            ),
            (
                "no config yet",
                &never_valid,
                r(2, 0, 2),
                "Unknown",
                "NoConfig",
                "no valid config",
            ),
        ];
        for (case, status, rollout, want, reason, fragment) in cases {
            let s = with_rollout(status.clone(), None, rollout, &t(200));
            let c = get(&s, CONDITION_ROLLED_OUT);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (want, reason),
                "{case}"
            );
            assert!(c.message.contains(fragment), "{case}: {}", c.message);
            assert_eq!(s.rollout, Some(rollout), "{case}");
            assert_eq!(s.conditions.len(), status.conditions.len() + 1, "{case}");
        }
        // The transition time is kept while the status stays, and moves when it changes.
        let first = with_rollout(applied.clone(), None, r(2, 1, 1), &t(200));
        let still = with_rollout(applied.clone(), Some(&first), r(2, 0, 2), &t(300));
        assert_eq!(
            get(&still, CONDITION_ROLLED_OUT).last_transition_time,
            t(200)
        );
        let done = with_rollout(applied, Some(&still), r(2, 2, 0), &t(400));
        assert_eq!(
            get(&done, CONDITION_ROLLED_OUT).last_transition_time,
            t(400)
        );
        assert_eq!(
            done.conditions
                .iter()
                .filter(|c| c.type_ == CONDITION_ROLLED_OUT)
                .count(),
            1
        );
    }
}
