//! Leader election for the controller on a `coordination.k8s.io/v1` Lease: one replica
//! reconciles, every replica serves the webhook. Whether to take, keep or leave the lease is a
//! pure function of the Lease and of how long this replica has seen it unchanged, by its own
//! clock (the holder's `renewTime` comes from another machine's clock, so it is only compared for
//! change, never against our time). The glue writes the Lease with its resourceVersion, so two
//! replicas can never both win the same term, and a leader that shuts down releases the Lease so
//! a standby takes over at its next retry instead of waiting for expiry. Not for running the
//! controller (`app`).

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::watch, time::Instant};

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

/// The Lease as this replica last saw it, and when (by the local clock) it last changed. A
/// holder that renews changes `renewTime`; one that stopped leaves the record as it was, and
/// after `leaseDurationSeconds` of local time without change the lease is free.
#[derive(Clone, Debug)]
pub struct LeaseObserver {
    last: Option<LeaseSpec>,
    changed_at: Instant,
}

impl LeaseObserver {
    /// An observer that has seen nothing yet (`now` starts the clock).
    pub fn new(now: Instant) -> Self {
        Self {
            last: None,
            changed_at: now,
        }
    }

    /// Records what was read at `now`; returns how long the record has been unchanged.
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Duration {
        if self.last.as_ref() != spec {
            self.last = spec.cloned();
            self.changed_at = now;
        }
        now.saturating_duration_since(self.changed_at)
    }
}

/// Decides for `identity`, given the Lease and how long this replica has seen it unchanged.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> Decision {
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
    let seconds = spec.lease_duration_seconds.unwrap_or(15).max(0);
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    if unchanged_for > duration {
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

/// The spec a leader writes when it steps down: no holder (others acquire at once), a one-second
/// duration, the transition count kept (as client-go's `ReleaseOnCancel` does).
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(1),
        lease_transitions: current.lease_transitions,
        ..LeaseSpec::default()
    }
}

fn lease_object(config: &LeaseConfig, current: Option<&Lease>, spec: LeaseSpec) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    }
}

/// One round: reads the Lease and takes or renews it if allowed. Returns whether we lead.
pub async fn try_lead(
    client: &Client,
    config: &LeaseConfig,
    observer: &mut LeaseObserver,
) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let current = api.get_opt(&config.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged_for = observer.observe(spec, Instant::now());
    let decision = decide(spec, &config.identity, unchanged_for);
    if let Decision::Follow { .. } = decision {
        return Ok(false);
    }
    let next = next_spec(
        spec,
        &config.identity,
        Timestamp::now(),
        config.duration,
        &decision,
    );
    let lease = lease_object(config, current.as_ref(), next);
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

/// Gives the Lease up if this replica holds it. Returns whether it was released (false: someone
/// else held it, or took it between our read and our write).
pub async fn release(client: &Client, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let Some(current) = api.get_opt(&config.name).await? else {
        return Ok(false);
    };
    let Some(spec) = current
        .spec
        .as_ref()
        .filter(|s| s.holder_identity.as_deref() == Some(config.identity.as_str()))
    else {
        return Ok(false);
    };
    let lease = lease_object(
        config,
        Some(&current),
        released_spec(spec, Timestamp::now()),
    );
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Competes for the lease until `shutdown` resolves, publishing whether this replica leads; then
/// releases the lease if it holds it. A leader that cannot renew for a whole lease duration steps
/// down. The caller stops the controller before resolving `shutdown`, so the next leader never
/// overlaps with this one.
pub async fn run_election(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut observer = LeaseObserver::new(Instant::now());
    let mut last_renewal = Instant::now();
    loop {
        let was_leading = *leading.borrow();
        let now_leading = match try_lead(&client, &config, &mut observer).await {
            Ok(lead) => {
                if lead {
                    last_renewal = Instant::now();
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
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.retry_period) => {}
        }
    }
    match release(&client, &config).await {
        Ok(true) => tracing::info!(lease = %config.name, "lease released"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, lease = %config.name, "cannot release the lease; it expires on its own");
        }
    }
    leading.send_replace(false);
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
        let s = Duration::from_secs;
        let cases = [
            ("no lease", None, s(0), Decision::Acquire),
            (
                "empty holder (released)",
                Some(LeaseSpec::default()),
                s(0),
                Decision::Acquire,
            ),
            ("we hold it", Some(held("me", 90)), s(0), Decision::Renew),
            (
                "we hold it even if unchanged for long",
                Some(held("me", 10)),
                s(100),
                Decision::Renew,
            ),
            (
                "live holder",
                Some(held("other", 90)),
                s(3),
                Decision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "exactly at expiry",
                Some(held("other", 85)),
                s(15),
                Decision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "expired holder",
                Some(held("other", 80)),
                s(16),
                Decision::Acquire,
            ),
        ];
        for (case, spec, unchanged_for, expected) in cases {
            assert_eq!(
                decide(spec.as_ref(), "me", unchanged_for),
                expected,
                "{case}"
            );
        }
    }

    /// Expiry is measured on our clock from when we saw the record change, whatever the holder's
    /// clock wrote into renewTime.
    #[test]
    fn expiry_uses_the_local_clock_not_the_holders_renew_time() {
        let t0 = Instant::now();
        let mut observer = LeaseObserver::new(t0);
        let secs = Duration::from_secs;
        // The holder's clock is an hour behind ours: renewTime looks ancient, but it renews.
        let behind = held("other", 1_000);
        let d = observer.observe(Some(&behind), t0);
        assert_eq!(
            decide(Some(&behind), "me", d),
            Decision::Follow {
                holder: "other".into()
            }
        );
        let renewed = held("other", 1_002);
        let d = observer.observe(Some(&renewed), t0 + secs(14));
        assert_eq!(d, secs(0), "a renewal restarts the local clock");
        assert!(matches!(
            decide(Some(&renewed), "me", d),
            Decision::Follow { .. }
        ));
        // Unchanged for 15 s of our time: still live; for 16 s: expired.
        let d = observer.observe(Some(&renewed), t0 + secs(29));
        assert!(matches!(
            decide(Some(&renewed), "me", d),
            Decision::Follow { .. }
        ));
        let d = observer.observe(Some(&renewed), t0 + secs(30));
        assert_eq!(decide(Some(&renewed), "me", d), Decision::Acquire);
        // The holder's clock an hour ahead: renewTime in our future, and still it expires.
        let mut observer = LeaseObserver::new(t0);
        let ahead = held("other", 9_999_999);
        observer.observe(Some(&ahead), t0);
        let d = observer.observe(Some(&ahead), t0 + secs(16));
        assert_eq!(decide(Some(&ahead), "me", d), Decision::Acquire);
    }

    #[test]
    fn released_lease_is_free_at_once_and_keeps_the_transition_count() {
        let released = released_spec(&held("me", 90), at(100));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(2));
        assert_eq!(
            decide(Some(&released), "other", Duration::ZERO),
            Decision::Acquire
        );
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
