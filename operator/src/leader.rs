//! Leader election for the controller on a `coordination.k8s.io/v1` Lease: one replica
//! reconciles, every replica serves the webhook. Whether to take, keep or leave the lease is a
//! pure function of the Lease and the clock; the glue writes the Lease with its resourceVersion,
//! so two replicas can never both win the same term. Not for running the controller (`run`).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

/// The lease this replica competes for.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews and others retry.
    pub retry_period: Duration,
}

/// What to do with the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides for `identity` at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return Decision::Acquire;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    if renewed
        .saturating_add(duration)
        .is_ok_and(|expiry| expiry < now)
    {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
        }
    }
}

/// The lease spec to write for `decision` (only `Acquire` and `Renew` write).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    duration: Duration,
    decision: &Decision,
) -> LeaseSpec {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    match (decision, current) {
        (Decision::Renew, Some(c)) => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..c.clone()
        },
        _ => LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(
                current.and_then(|c| c.lease_transitions).unwrap_or(0)
                    + i32::from(current.is_some()),
            ),
            ..LeaseSpec::default()
        },
    }
}

/// One round: reads the Lease and takes or renews it if allowed. Returns whether we lead.
pub async fn try_lead(client: &Client, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let current = api.get_opt(&config.name).await?;
    let now = Timestamp::now();
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        now,
    );
    if let Decision::Follow { .. } = decision {
        return Ok(false);
    }
    let spec = next_spec(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        now,
        config.duration,
        &decision,
    );
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version: current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    };
    let written = match current {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => {
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        // Someone else wrote the Lease between our read and our write: they won this round.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Competes for the lease forever, publishing whether this replica leads. A leader that cannot
/// renew for a whole lease duration steps down.
pub async fn run_election(client: Client, config: LeaseConfig, leading: watch::Sender<bool>) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        let was_leading = *leading.borrow();
        let now_leading = match try_lead(&client, &config).await {
            Ok(lead) => {
                if lead {
                    last_renewal = tokio::time::Instant::now();
                }
                lead
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %config.name, "lease round failed");
                was_leading && last_renewal.elapsed() < config.duration
            }
        };
        if now_leading != was_leading {
            tracing::info!(identity = %config.identity, leading = now_leading, "leadership changed");
            leading.send_replace(now_leading);
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let cases = [
            ("no lease", None, 100, Decision::Acquire),
            (
                "empty holder",
                Some(LeaseSpec::default()),
                100,
                Decision::Acquire,
            ),
            ("we hold it", Some(held("me", 90)), 100, Decision::Renew),
            (
                "we hold it even if stale",
                Some(held("me", 10)),
                100,
                Decision::Renew,
            ),
            (
                "live holder",
                Some(held("other", 90)),
                100,
                Decision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "exactly at expiry",
                Some(held("other", 85)),
                100,
                Decision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "expired holder",
                Some(held("other", 80)),
                100,
                Decision::Acquire,
            ),
        ];
        for (case, spec, now, expected) in cases {
            assert_eq!(decide(spec.as_ref(), "me", at(now)), expected, "{case}");
        }
    }

    #[test]
    fn written_specs() {
        let d = Duration::from_secs(15);
        let renewed = next_spec(Some(&held("me", 90)), "me", at(100), d, &Decision::Renew);
        assert_eq!(renewed.renew_time, Some(MicroTime(at(100))));
        assert_eq!(
            renewed.acquire_time,
            Some(MicroTime(at(90))),
            "renewal keeps the acquire time"
        );
        assert_eq!(renewed.lease_transitions, Some(2));
        let taken = next_spec(
            Some(&held("other", 10)),
            "me",
            at(100),
            d,
            &Decision::Acquire,
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(
            taken.lease_transitions,
            Some(3),
            "a takeover is a transition"
        );
        let first = next_spec(None, "me", at(100), d, &Decision::Acquire);
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
    }
}
