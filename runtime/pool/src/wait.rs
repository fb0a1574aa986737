//! A cap on callers waiting for a pool slot, shared by several pools: the pools of one
//! cluster's hosts share one, so that a circuit breaker's `maxPendingRequests` bounds the
//! requests queued for a connection across the cluster. A caller over the cap is turned away at
//! once instead of queued. Not for the slots themselves (see `bounded` and `mux`), and not a
//! queue: callers still wait on the pool's own semaphore, in its order.

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;

/// How many callers may wait for a slot at once, and how many do.
#[derive(Debug)]
pub struct WaitLimit {
    max: usize,
    waiting: AtomicUsize,
    owner: String,
    rejected: Counter,
}

impl WaitLimit {
    /// A cap of `max` waiters, named `owner` in errors (e.g. `cluster users`); `rejected`
    /// counts the callers turned away.
    pub fn new(max: usize, owner: String, rejected: Counter) -> Self {
        Self {
            max,
            waiting: AtomicUsize::new(0),
            owner,
            rejected,
        }
    }

    /// Counts the caller as waiting until the guard drops, or `None` (counted as a
    /// rejection) when `max` callers already wait.
    pub fn enter(&self) -> Option<Waiting<'_>> {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Waiting(self))
        } else {
            self.rejected.inc();
            None
        }
    }

    /// Callers waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Who the cap belongs to, for messages.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// One caller counted as waiting.
#[derive(Debug)]
pub struct Waiting<'a>(&'a WaitLimit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_counts_rejections() {
        let rejected = Counter::default();
        let limit = WaitLimit::new(2, "cluster c".into(), rejected.clone());
        let a = limit.enter().expect("first");
        let b = limit.enter().expect("second");
        assert!(limit.enter().is_none());
        assert_eq!((limit.waiting(), rejected.get()), (2, 1));
        drop(a);
        let _c = limit.enter().expect("a place came free");
        drop(b);
        assert_eq!(limit.waiting(), 1);
        let none = WaitLimit::new(0, "cluster c".into(), Counter::default());
        assert!(none.enter().is_none(), "0 means nobody waits");
    }
}
