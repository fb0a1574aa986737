//! The `RuntimeConfig` status as a pure function of the previous status and what reconcile did:
//! `observedGeneration`, the `Valid` and `Ready` conditions (transition times kept while a
//! condition's status does not change), the live config hash and every validation error. Not for
//! writing it (see `reconcile`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use outrigger_config::ValidationErrors;

use crate::crd::RuntimeConfigStatus;

/// Condition type: the spec passes the sidecar's validation.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: the ConfigMap holds the current spec.
pub const CONDITION_READY: &str = "Ready";

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
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        let since = previous_conditions
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
    };
    RuntimeConfigStatus {
        observed_generation: generation,
        conditions: vec![
            condition(CONDITION_READY, ready),
            condition(CONDITION_VALID, valid),
        ],
        config_hash,
        errors,
    }
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
}
