//! The hybrid logical clock of one shard: it issues the write timestamps (i64 microseconds since
//! the Unix epoch, Cassandra's writetime unit) and absorbs timestamps seen from clients, peers and
//! the shard's own log. It must never issue a timestamp twice or go backwards, and never panic.
//!
//! The logical counter is folded into the microseconds: the clock issues `max(wall, last + 1)`,
//! so a burst of more than one write per microsecond simply runs a little ahead of the wall
//! clock and falls back onto it once the wall clock catches up.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, the unit of Cassandra's `writetime`.
pub type Timestamp = i64;

/// How far ahead of the local wall clock an observed timestamp may be before it is rejected.
///
/// An accepted remote timestamp drags every later local timestamp past it, and last-write-wins
/// then lets those writes beat writes that nodes with correct clocks issue in the meantime; this
/// bound caps that damage. NTP keeps servers within a few milliseconds of each other, but
/// `USING TIMESTAMP` values come from client machines, whose clocks are often looser, so the
/// default is twice CockroachDB's 500 ms maximum clock offset. Cassandra itself has no such check.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(1);

/// A source of wall-clock time. Implemented by [`SystemClock`] in production and by a settable
/// fake in tests.
pub trait WallClock {
    /// The current wall-clock time in microseconds since the Unix epoch.
    fn now_micros(&self) -> Timestamp;
}

/// Test-only fault injection (`enigmadb server --clock-offset-ms`, hidden): microseconds added
/// to every [`SystemClock`] reading in this process, to play a node whose wall clock is wrong.
/// 0 (no offset) unless [`set_wall_clock_offset`] is called, once, before any clock is read.
static WALL_CLOCK_OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's [`SystemClock`] by `offset_micros` (negative: behind). Test-only: a
/// real node never sets it.
pub fn set_wall_clock_offset(offset_micros: i64) {
    WALL_CLOCK_OFFSET_MICROS.store(offset_micros, Ordering::Relaxed);
}

/// The operating system's real-time clock (plus the test-only offset, normally 0).
///
/// A clock set before the Unix epoch reads as 0, and one beyond i64 microseconds (year 294247)
/// reads as `i64::MAX`; the [`Hlc`] still never goes backwards in either case.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_micros(&self) -> Timestamp {
        let real = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => duration_to_micros_saturating(since_epoch),
            Err(_before_epoch) => 0,
        };
        real.saturating_add(WALL_CLOCK_OFFSET_MICROS.load(Ordering::Relaxed)).max(0)
    }
}

/// Why the clock refused to issue or accept a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The last timestamp issued or observed is `i64::MAX`; no larger one exists.
    #[error("hybrid logical clock exhausted: the last timestamp is i64::MAX, no larger one exists")]
    Overflow,
    /// A remote timestamp lies more than the maximum drift ahead of the local wall clock.
    #[error(
        "timestamp {remote} us is more than {max_drift_micros} us ahead of the local wall clock \
         ({wall} us); refusing to advance the clock to it"
    )]
    FarFuture { remote: Timestamp, wall: Timestamp, max_drift_micros: i64 },
}

/// The hybrid logical clock of one shard. Owned outright by the shard (no locks): every
/// operation takes `&mut self` or `&self`.
#[derive(Debug)]
pub struct Hlc<C: WallClock = SystemClock> {
    clock: C,
    max_drift_micros: i64,
    /// The largest timestamp issued, observed or advanced past so far. Starts at `i64::MIN`, which
    /// no timestamp can be below, so "nothing seen yet" needs no special case.
    last: Timestamp,
    /// The largest timestamp found in trusted storage ([`Hlc::advance_past`]): the drift bound
    /// is measured from it when the wall clock is behind it (a clock stepped back across a
    /// restart), so writes stamped just above stored data are not refused as far-future.
    /// Only stored data moves it, so accepted remote timestamps cannot ratchet the bound.
    trusted: Timestamp,
}

impl Default for Hlc<SystemClock> {
    fn default() -> Self {
        Self::new(SystemClock, DEFAULT_MAX_DRIFT)
    }
}

impl<C: WallClock> Hlc<C> {
    /// A clock reading `clock` that rejects observed timestamps more than `max_drift` ahead of
    /// it. A `max_drift` beyond i64 microseconds (about 292,000 years) saturates.
    pub fn new(clock: C, max_drift: Duration) -> Self {
        Self {
            clock,
            max_drift_micros: duration_to_micros_saturating(max_drift),
            last: Timestamp::MIN,
            trusted: Timestamp::MIN,
        }
    }

    /// Issues a timestamp strictly greater than every timestamp issued or observed before, and
    /// >= the wall clock.
    pub fn now(&mut self) -> Result<Timestamp, HlcError> {
        let wall = self.clock.now_micros();
        let next_after_last = self.last.checked_add(1).ok_or(HlcError::Overflow)?;
        let issued = wall.max(next_after_last);
        debug_assert!(issued > self.last, "HLC must rise: {issued} after {}", self.last);
        self.last = issued;
        Ok(issued)
    }

    /// Receiving a timestamp from elsewhere (a client's `USING TIMESTAMP`, another node):
    /// advances the clock so later [`now`](Self::now) results exceed it. Rejects, leaving the
    /// clock unchanged, a timestamp more than the maximum drift ahead of the wall clock.
    pub fn observe(&mut self, remote: Timestamp) -> Result<(), HlcError> {
        let wall = self.clock.now_micros();
        if self.is_beyond_drift(remote, wall) {
            return Err(HlcError::FarFuture { remote, wall, max_drift_micros: self.max_drift_micros });
        }
        self.last = self.last.max(remote);
        Ok(())
    }

    /// Advances past a timestamp found in the shard's own durable log at replay, without the
    /// drift check: the log is trusted, and if the wall clock went back across a restart the
    /// clock must still never issue a timestamp at or below one already written.
    ///
    /// Returns whether `seen` was more than the maximum drift ahead of the wall clock, so the
    /// caller can warn that the wall clock probably jumped backwards.
    pub fn advance_past(&mut self, seen: Timestamp) -> bool {
        let wall = self.clock.now_micros();
        let beyond = seen > wall.saturating_add(self.max_drift_micros);
        self.last = self.last.max(seen);
        self.trusted = self.trusted.max(seen);
        beyond
    }

    /// The largest timestamp issued, observed or advanced past so far; `i64::MIN` before any.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// The bound [`observe`](Self::observe) enforces, in microseconds.
    pub fn max_drift_micros(&self) -> i64 {
        self.max_drift_micros
    }

    fn is_beyond_drift(&self, timestamp: Timestamp, wall: Timestamp) -> bool {
        // Saturating: with the wall clock near i64::MAX every timestamp is within the drift.
        timestamp > wall.max(self.trusted).saturating_add(self.max_drift_micros)
    }
}

fn duration_to_micros_saturating(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use proptest::prelude::*;

    use super::*;

    /// A wall clock the test sets by hand; clones share the same time.
    #[derive(Debug, Clone, Default)]
    struct FakeClock(Rc<Cell<i64>>);

    impl FakeClock {
        fn at(micros: i64) -> Self {
            Self(Rc::new(Cell::new(micros)))
        }
        fn set(&self, micros: i64) {
            self.0.set(micros);
        }
    }

    impl WallClock for FakeClock {
        fn now_micros(&self) -> i64 {
            self.0.get()
        }
    }

    const DRIFT: Duration = Duration::from_millis(500);
    const DRIFT_MICROS: i64 = 500_000;
    const T0: i64 = 1_700_000_000_000_000;

    fn hlc_at(micros: i64) -> (Hlc<FakeClock>, FakeClock) {
        let wall = FakeClock::at(micros);
        (Hlc::new(wall.clone(), DRIFT), wall)
    }

    /// Stored data 60 s ahead of a clock stepped back: the next timestamp is above it, and a
    /// peer's timestamp just above it is accepted (the drift counts from the stored data), but
    /// a remote one far beyond is still refused, and accepting one does not move the bound.
    #[test]
    fn a_clock_stepped_back_issues_above_stored_data_and_measures_drift_from_it() {
        let (mut hlc, _wall) = hlc_at(T0);
        let stored = T0 + 60_000_000;
        assert!(hlc.advance_past(stored), "beyond the drift: the caller warns");
        let next = hlc.now().unwrap();
        assert!(next > stored);
        assert_eq!(hlc.observe(next + 10), Ok(()));
        let far = stored + DRIFT_MICROS + 1;
        assert!(matches!(hlc.observe(far), Err(HlcError::FarFuture { .. })));
        assert_eq!(hlc.observe(stored + DRIFT_MICROS), Ok(()));
        assert!(matches!(hlc.observe(stored + DRIFT_MICROS + 2), Err(HlcError::FarFuture { .. })));
    }

    #[test]
    fn first_timestamp_is_the_wall_clock() {
        let (mut hlc, _wall) = hlc_at(T0);
        assert_eq!(hlc.last(), i64::MIN);
        assert_eq!(hlc.now(), Ok(T0));
        assert_eq!(hlc.last(), T0);
    }

    #[test]
    fn timestamps_strictly_increase_while_wall_clock_stands_still() {
        let (mut hlc, _wall) = hlc_at(T0);
        let issued: Vec<_> = (0..1000).map(|_| hlc.now().unwrap()).collect();
        assert_eq!(issued, (T0..T0 + 1000).collect::<Vec<_>>());
    }

    #[test]
    fn timestamps_strictly_increase_when_wall_clock_goes_backwards() {
        let (mut hlc, wall) = hlc_at(T0);
        assert_eq!(hlc.now(), Ok(T0));
        wall.set(T0 - 60_000_000);
        assert_eq!(hlc.now(), Ok(T0 + 1));
        assert_eq!(hlc.now(), Ok(T0 + 2));
    }

    #[test]
    fn now_follows_wall_clock_once_it_moves_past_last() {
        let (mut hlc, wall) = hlc_at(T0);
        for _ in 0..10 {
            hlc.now().unwrap();
        }
        wall.set(T0 + 5); // still behind last = T0 + 9
        assert_eq!(hlc.now(), Ok(T0 + 10));
        wall.set(T0 + 1_000);
        assert_eq!(hlc.now(), Ok(T0 + 1_000));
        wall.set(T0 + 2_000);
        assert_eq!(hlc.now(), Ok(T0 + 2_000));
    }

    #[test]
    fn observing_a_remote_timestamp_within_drift_makes_next_now_exceed_it() {
        let (mut hlc, _wall) = hlc_at(T0);
        let remote = T0 + DRIFT_MICROS; // exactly at the bound is accepted
        assert_eq!(hlc.observe(remote), Ok(()));
        assert_eq!(hlc.last(), remote);
        assert_eq!(hlc.now(), Ok(remote + 1));
    }

    #[test]
    fn observing_beyond_max_drift_is_rejected_and_leaves_clock_unchanged() {
        let (mut hlc, _wall) = hlc_at(T0);
        assert_eq!(hlc.now(), Ok(T0));
        let remote = T0 + DRIFT_MICROS + 1;
        assert_eq!(hlc.observe(remote), Err(HlcError::FarFuture { remote, wall: T0, max_drift_micros: DRIFT_MICROS }));
        assert_eq!(hlc.last(), T0);
        assert_eq!(hlc.now(), Ok(T0 + 1));
    }

    #[test]
    fn observing_a_past_timestamp_changes_nothing() {
        let (mut hlc, _wall) = hlc_at(T0);
        assert_eq!(hlc.now(), Ok(T0));
        assert_eq!(hlc.observe(T0 - 1_000_000), Ok(()));
        assert_eq!(hlc.observe(i64::MIN), Ok(()));
        assert_eq!(hlc.observe(T0), Ok(()));
        assert_eq!(hlc.last(), T0);
        assert_eq!(hlc.now(), Ok(T0 + 1));
    }

    #[test]
    fn advancing_to_i64_max_makes_now_overflow_without_panic() {
        let (mut hlc, _wall) = hlc_at(T0);
        assert!(hlc.advance_past(i64::MAX));
        assert_eq!(hlc.now(), Err(HlcError::Overflow));
        assert_eq!(hlc.now(), Err(HlcError::Overflow));
        assert_eq!(hlc.last(), i64::MAX);
    }

    #[test]
    fn observing_i64_max_makes_now_overflow_without_panic() {
        let (mut hlc, _wall) = hlc_at(i64::MAX - 10);
        assert_eq!(hlc.observe(i64::MAX), Ok(()));
        assert_eq!(hlc.now(), Err(HlcError::Overflow));
        assert_eq!(hlc.last(), i64::MAX);
    }

    #[test]
    fn wall_clock_at_i64_max_issues_it_once_then_overflows() {
        let (mut hlc, _wall) = hlc_at(i64::MAX);
        assert_eq!(hlc.now(), Ok(i64::MAX));
        assert_eq!(hlc.now(), Err(HlcError::Overflow));
        assert_eq!(hlc.observe(i64::MAX), Ok(()));
        assert_eq!(hlc.last(), i64::MAX);
    }

    #[test]
    fn advance_past_beyond_drift_is_accepted_and_reported() {
        let (mut hlc, _wall) = hlc_at(T0);
        let from_log = T0 + 3_600_000_000; // wall clock went back an hour across a restart
        assert!(hlc.advance_past(from_log));
        assert_eq!(hlc.last(), from_log);
        assert_eq!(hlc.now(), Ok(from_log + 1));
    }

    #[test]
    fn advance_past_within_drift_or_in_the_past_is_not_reported() {
        let (mut hlc, _wall) = hlc_at(T0);
        assert!(!hlc.advance_past(T0 + DRIFT_MICROS));
        assert!(!hlc.advance_past(T0 - 1));
        assert_eq!(hlc.last(), T0 + DRIFT_MICROS);
    }

    #[test]
    fn huge_max_drift_saturates_instead_of_overflowing() {
        let wall = FakeClock::at(T0);
        let mut hlc = Hlc::new(wall, Duration::MAX);
        assert_eq!(hlc.max_drift_micros(), i64::MAX);
        assert_eq!(hlc.observe(i64::MAX), Ok(()));
        assert_eq!(hlc.now(), Err(HlcError::Overflow));
    }

    #[test]
    fn system_clock_reads_after_2020() {
        const JAN_1_2020_MICROS: i64 = 1_577_836_800_000_000;
        assert!(SystemClock.now_micros() > JAN_1_2020_MICROS);
        let mut hlc = Hlc::default();
        let first = hlc.now().unwrap();
        assert!(hlc.now().unwrap() > first);
    }

    #[derive(Debug, Clone)]
    enum Op {
        MoveWall(i64),
        Now,
        /// Observe `wall + offset`.
        Observe(i64),
        /// Advance past `wall + offset`.
        AdvancePast(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let wide = 4 * DRIFT_MICROS;
        prop_oneof![
            (-wide..=wide).prop_map(Op::MoveWall),
            // Occasionally a huge jump, to reach the ends of the i64 range.
            any::<i64>().prop_map(Op::MoveWall),
            Just(Op::Now),
            Just(Op::Now),
            (-wide..=wide).prop_map(Op::Observe),
            (-wide..=wide).prop_map(Op::AdvancePast),
        ]
    }

    fn start() -> impl Strategy<Value = i64> {
        prop_oneof![Just(T0), Just(0), Just(i64::MAX - 100), Just(i64::MIN), any::<i64>(),]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn issued_timestamps_rise_and_exceed_everything_observed(
            start in start(),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let (mut hlc, wall) = hlc_at(start);
            // The largest timestamp issued or successfully observed/advanced past so far.
            let mut floor: Option<i64> = None;
            for op in ops {
                let wall_now = wall.now_micros();
                match op {
                    Op::MoveWall(delta) => wall.set(wall_now.saturating_add(delta)),
                    Op::Now => match hlc.now() {
                        Ok(issued) => {
                            if let Some(floor) = floor {
                                prop_assert!(issued > floor, "issued {} not above {}", issued, floor);
                            }
                            prop_assert!(issued >= wall_now);
                            floor = Some(issued);
                        }
                        Err(error) => {
                            prop_assert_eq!(error, HlcError::Overflow);
                            prop_assert_eq!(floor, Some(i64::MAX));
                            prop_assert_eq!(hlc.last(), i64::MAX);
                        }
                    },
                    Op::Observe(offset) => {
                        let remote = wall_now.saturating_add(offset);
                        let before = hlc.last();
                        match hlc.observe(remote) {
                            Ok(()) => floor = floor.max(Some(remote)),
                            Err(error) => {
                                prop_assert_eq!(error, HlcError::FarFuture {
                                    remote,
                                    wall: wall_now,
                                    max_drift_micros: DRIFT_MICROS,
                                });
                                prop_assert!(remote - wall_now > DRIFT_MICROS);
                                prop_assert_eq!(hlc.last(), before);
                            }
                        }
                    }
                    Op::AdvancePast(offset) => {
                        let seen = wall_now.saturating_add(offset);
                        let beyond_drift = hlc.advance_past(seen);
                        prop_assert_eq!(beyond_drift, seen - wall_now > DRIFT_MICROS);
                        floor = floor.max(Some(seen));
                    }
                }
                prop_assert_eq!(hlc.last(), floor.unwrap_or(i64::MIN));
            }
        }
    }
}
