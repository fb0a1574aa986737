//! Load balancers: given the hosts of a cluster, pick one. Pure index arithmetic over the host
//! list (round robin, random, least request by power of two choices, smooth weighted round
//! robin), so each policy is unit-testable without sockets. Not for health or DNS (see `cluster`).

use std::sync::atomic::{AtomicUsize, Ordering};

use outrigger_config::LbPolicy;

/// A load-balancing policy with its state.
#[derive(Debug)]
pub(crate) struct Balancer {
    policy: LbPolicy,
    next: AtomicUsize,
}

impl Balancer {
    pub(crate) fn new(policy: LbPolicy) -> Self {
        Self {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a host index in `0..n`. `load(i)` is host i's requests in flight; `schedule` is
    /// the weighted order from [`weighted_schedule`].
    pub(crate) fn pick(
        &self,
        n: usize,
        load: impl Fn(usize) -> usize,
        schedule: &[usize],
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let i = match self.policy {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::Random => fastrand::usize(..n),
            LbPolicy::LeastRequest => {
                if n == 1 {
                    0
                } else {
                    let a = fastrand::usize(..n);
                    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    if load(b) < load(a) { b } else { a }
                }
            }
            LbPolicy::Weighted => {
                if schedule.is_empty() {
                    self.next.fetch_add(1, Ordering::Relaxed) % n
                } else {
                    schedule[self.next.fetch_add(1, Ordering::Relaxed) % schedule.len()]
                }
            }
        };
        Some(i)
    }
}

/// The longest weighted schedule kept; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 1024;

/// Smooth weighted round robin (as nginx does it): an order of host indices in which each host
/// appears in proportion to its weight, spread out rather than in bursts.
pub(crate) fn weighted_schedule(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scaled: Vec<i64> = weights
        .iter()
        .map(|&w| {
            let w = u64::from(w.max(1));
            let w = if total > MAX_SCHEDULE {
                (w * MAX_SCHEDULE / total).max(1)
            } else {
                w
            };
            i64::try_from(w).unwrap_or(1)
        })
        .collect();
    let sum: i64 = scaled.iter().sum();
    let mut current = vec![0i64; scaled.len()];
    let mut out = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for _ in 0..sum {
        let mut best = 0;
        for (i, w) in scaled.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        b: &Balancer,
        n: usize,
        load: &[usize],
        schedule: &[usize],
        rounds: usize,
    ) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..rounds {
            c[b.pick(n, |i| load[i], schedule).expect("a host")] += 1;
        }
        c
    }

    #[test]
    fn no_hosts_no_pick() {
        for p in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
            LbPolicy::Weighted,
        ] {
            assert_eq!(Balancer::new(p).pick(0, |_| 0, &[]), None);
        }
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let b = Balancer::new(LbPolicy::RoundRobin);
        let picks: Vec<usize> = (0..6)
            .map(|_| b.pick(3, |_| 0, &[]).expect("host"))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_reaches_every_host() {
        let c = counts(&Balancer::new(LbPolicy::Random), 4, &[0; 4], &[], 4000);
        assert!(c.iter().all(|&x| x > 700), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_host() {
        // Host 0 is busy: with two choices it is only picked when both draws are host 0,
        // which the distinct second draw rules out.
        let c = counts(
            &Balancer::new(LbPolicy::LeastRequest),
            3,
            &[50, 0, 0],
            &[],
            3000,
        );
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
        let single = counts(&Balancer::new(LbPolicy::LeastRequest), 1, &[9], &[], 10);
        assert_eq!(single, [10]);
    }

    #[test]
    fn weighted_schedule_is_proportional_and_smooth() {
        assert_eq!(weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(weighted_schedule(&[1, 1]), [0, 1]);
        let big = weighted_schedule(&[1_000_000, 1]);
        assert!(
            big.len() <= 1025 && big.contains(&1),
            "scaled down, every host kept"
        );
        let b = Balancer::new(LbPolicy::Weighted);
        let schedule = weighted_schedule(&[3, 1]);
        assert_eq!(counts(&b, 2, &[0, 0], &schedule, 400), [300, 100]);
    }
}
