//! A throughput limit for compaction (Cassandra's `compaction_throughput`): after moving some
//! bytes, the caller asks how long to pause so that the average rate stays under the limit.
//! Pure: the caller passes the clock and does the sleeping. Idle time is not banked, so a
//! compaction that starts after a quiet period does not get a burst.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Throttle {
    /// 0 = unlimited.
    bytes_per_sec: u64,
    /// The time at which everything admitted so far has been paid for.
    paid_until: Option<Instant>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle { bytes_per_sec, paid_until: None }
    }

    /// Records `bytes` moved at `now` and returns how long to pause before moving more.
    pub fn admit(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let start = self.paid_until.map_or(now, |t| t.max(now));
        let paid_until = start + cost;
        self.paid_until = Some(paid_until);
        paid_until.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let mut t = Throttle::new(0);
        assert_eq!(t.admit(u64::MAX, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn a_steady_producer_is_held_to_the_rate() {
        // 1 MiB/s; 64 KiB chunks produced instantly: each waits for the ones before it.
        let mut t = Throttle::new(1 << 20);
        let start = Instant::now();
        let mut now = start;
        for _ in 0..32 {
            now += t.admit(64 << 10, now);
        }
        let took = now - start;
        assert!((took.as_secs_f64() - 2.0).abs() < 0.01, "2 MiB at 1 MiB/s took {took:?}");
    }

    #[test]
    fn idle_time_is_not_banked() {
        let mut t = Throttle::new(1 << 20);
        let start = Instant::now();
        t.admit(1 << 20, start);
        // Ten idle seconds later, the next MiB still costs a second.
        let later = start + Duration::from_secs(11);
        let wait = t.admit(1 << 20, later);
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
    }
}
