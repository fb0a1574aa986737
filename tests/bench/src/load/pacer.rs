//! The open-loop pacer: a plain thread (not a tokio timer, whose 1 ms ticks would bunch a
//! 10k rps schedule into bursts) that releases one permit per scheduled send time. Workers take
//! permits in order, so the n-th permit taken is the n-th slot of the schedule, and latency is
//! measured from that slot's time, never from when a worker got round to it (no coordinated
//! omission). How late the pacer itself released each slot is recorded too: it bounds how
//! precisely the schedule was kept.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::new_histogram;

/// A fixed-rate schedule starting at `start`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    pub(crate) start: Instant,
    pub(crate) interval: Duration,
    pub(crate) total: u64,
}

impl Schedule {
    /// When slot `i` is due.
    pub(crate) fn slot(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos(nanos(self.interval).saturating_mul(i))
    }

    /// How many slots are due at `now`.
    fn due(&self, now: Instant) -> u64 {
        let elapsed = nanos(now.saturating_duration_since(self.start));
        if now < self.start {
            0
        } else {
            (elapsed / nanos(self.interval).max(1) + 1).min(self.total)
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the pacer saw.
pub(crate) struct Paced {
    /// How late each slot was released, nanoseconds.
    pub(crate) lag: Histogram<u64>,
    /// Whether the pacer ran under SCHED_FIFO.
    pub(crate) realtime: bool,
}

/// Asks for SCHED_FIFO (priority 10) for the calling thread with chrt(1), so that the pacer
/// wakes on time even when every core is busy with the processes under test; it does almost
/// nothing when awake, so it cannot starve them. No libc call: the workspace forbids `unsafe`.
fn realtime() -> bool {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    let Some(tid) = me.file_name().and_then(|t| t.to_str()).map(str::to_owned) else {
        return false;
    };
    Command::new("chrt")
        .args(["-f", "-p", "10", &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Releases the schedule's permits on time, then `extra` more (so that idle workers wake up
/// and see the schedule is done).
pub(crate) fn pace(schedule: Schedule, permits: Arc<Semaphore>, extra: usize) -> Paced {
    let realtime = realtime();
    let mut lag = new_histogram();
    let mut released = 0u64;
    while released < schedule.total && !permits.is_closed() {
        let next = schedule.slot(released);
        let now = Instant::now();
        if now < next {
            thread::sleep(next - now);
            continue;
        }
        let due = schedule.due(now);
        for i in released..due {
            lag.saturating_record(nanos(now.saturating_duration_since(schedule.slot(i))));
        }
        permits.add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
        released = due;
    }
    permits.add_permits(extra);
    Paced { lag, realtime }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_spaced_and_bounded() {
        let start = Instant::now();
        let s = Schedule {
            start,
            interval: Duration::from_micros(100),
            total: 10,
        };
        assert_eq!(s.slot(3) - start, Duration::from_micros(300));
        assert_eq!(s.due(start), 1);
        assert_eq!(s.due(start + Duration::from_micros(250)), 3);
        assert_eq!(s.due(start + Duration::from_secs(1)), 10);
    }

    #[test]
    fn every_slot_gets_a_permit_and_workers_get_a_wake_up() {
        let permits = Arc::new(Semaphore::new(0));
        let s = Schedule {
            start: Instant::now(),
            interval: Duration::from_micros(50),
            total: 200,
        };
        let paced = pace(s, permits.clone(), 4);
        assert_eq!(permits.available_permits(), 204);
        assert_eq!(paced.lag.len(), 200);
    }
}
