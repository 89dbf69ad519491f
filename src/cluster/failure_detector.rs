//! The phi-accrual failure detector (Hayashibara et al., as in Cassandra's FailureDetector and
//! ArrivalWindow): it owns, per peer, a bounded window of heartbeat inter-arrival times and
//! decides locally whether the peer is up. Pure logic: time is a value the caller passes
//! (`Duration` since an origin of its choosing); it never reads a clock and never does I/O.
//!
//! Heartbeat inter-arrival times are modelled as exponentially distributed with the window's
//! mean, so phi(t) = -log10(P(no heartbeat for t)) = t / mean * log10(e). A peer whose phi
//! exceeds `phi_convict_threshold` is convicted (down) until its next heartbeat.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::gossip::MAX_ENDPOINTS;
use super::HostId;

/// Inter-arrival times kept per peer (Cassandra's SAMPLE_SIZE); older ones are forgotten.
pub const ARRIVAL_WINDOW: usize = 1000;

/// Hosts tracked at most: the gossip state's bound, since every tracked host is an endpoint
/// the gossip state knows.
pub const MAX_TRACKED_HOSTS: usize = MAX_ENDPOINTS;

/// log10(e): turns t / mean (a natural-log probability) into phi (a base-10 one).
const PHI_FACTOR: f64 = std::f64::consts::LOG10_E;

/// The detector's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureDetectorConfig {
    /// Phi above which a peer is convicted (Cassandra's `phi_convict_threshold`, default 8:
    /// with heartbeats every second, about 18.4 s of silence).
    pub phi_convict_threshold: f64,
    /// The interval assumed for a peer heard from only once, and the window's first sample
    /// (so a peer heard once is not convicted at once). Errs high: a late conviction is
    /// corrected by waiting, a false one makes the peer flap. Default 2 s (two gossip rounds).
    pub initial_interval: Duration,
    /// Intervals longer than this are not recorded (a peer that was away, or a paused
    /// process, must not teach the detector that long silences are normal). Default 2 s.
    pub max_interval: Duration,
}

impl Default for FailureDetectorConfig {
    fn default() -> Self {
        FailureDetectorConfig {
            phi_convict_threshold: 8.0,
            initial_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(2),
        }
    }
}

/// Why the detector refused a setting or a heartbeat.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FailureDetectorError {
    #[error("phi_convict_threshold must be a finite number above 0, got {0}")]
    BadThreshold(f64),
    #[error("the failure detector intervals must be above zero (initial {initial:?}, max {max:?})")]
    BadInterval { initial: Duration, max: Duration },
    #[error("the failure detector already tracks {MAX_TRACKED_HOSTS} hosts; host {0:032x} is not tracked")]
    TooManyHosts(HostId),
}

/// One peer's recent heartbeat inter-arrival times, and whether it is up.
#[derive(Debug, Clone)]
struct ArrivalWindow {
    /// At most [`ARRIVAL_WINDOW`] intervals, oldest first.
    intervals: VecDeque<Duration>,
    /// Sum of `intervals`, kept so the mean costs nothing.
    sum: Duration,
    last: Duration,
    alive: bool,
}

impl ArrivalWindow {
    fn new(now: Duration, initial_interval: Duration) -> ArrivalWindow {
        let mut window = ArrivalWindow { intervals: VecDeque::new(), sum: Duration::ZERO, last: now, alive: true };
        window.record(initial_interval);
        window
    }

    fn record(&mut self, interval: Duration) {
        if self.intervals.len() == ARRIVAL_WINDOW {
            // The window is full, so there is a front to drop.
            let oldest = self.intervals.pop_front().unwrap_or_default();
            self.sum -= oldest;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
    }

    fn mean(&self) -> Duration {
        // Never empty: created with the initial interval and only ever refilled after a pop.
        self.sum / self.intervals.len() as u32
    }

    fn phi(&self, now: Duration) -> f64 {
        let mean = self.mean().as_secs_f64();
        let silence = now.saturating_sub(self.last).as_secs_f64();
        match mean > 0.0 {
            true => PHI_FACTOR * silence / mean,
            // Only zero-length intervals seen (several heartbeats at one instant): any silence
            // at all is infinitely unlikely.
            false if silence > 0.0 => f64::INFINITY,
            false => 0.0,
        }
    }
}

/// The failure detector of one node: every peer it has heard a heartbeat from, and whether
/// each is up. The gossip service reports heartbeat arrivals and calls [`FailureDetector::convict`]
/// once per round; the coordinator asks [`FailureDetector::is_alive`].
#[derive(Debug, Clone)]
pub struct FailureDetector {
    config: FailureDetectorConfig,
    /// At most [`MAX_TRACKED_HOSTS`] entries.
    peers: HashMap<HostId, ArrivalWindow>,
}

impl FailureDetector {
    pub fn new(config: FailureDetectorConfig) -> Result<FailureDetector, FailureDetectorError> {
        if !config.phi_convict_threshold.is_finite() || config.phi_convict_threshold <= 0.0 {
            return Err(FailureDetectorError::BadThreshold(config.phi_convict_threshold));
        }
        if config.initial_interval.is_zero() || config.max_interval.is_zero() {
            return Err(FailureDetectorError::BadInterval {
                initial: config.initial_interval,
                max: config.max_interval,
            });
        }
        Ok(FailureDetector { config, peers: HashMap::new() })
    }

    pub fn config(&self) -> &FailureDetectorConfig {
        &self.config
    }

    /// Records a heartbeat from `host` arriving at `now` (call it when gossip shows the host's
    /// heartbeat advanced, or the host is new or restarted). Returns true when this marks the
    /// host up: the first heartbeat heard, or the first since it was convicted.
    pub fn report(&mut self, host: HostId, now: Duration) -> Result<bool, FailureDetectorError> {
        let full = self.peers.len() >= MAX_TRACKED_HOSTS;
        match self.peers.get_mut(&host) {
            Some(window) => {
                let interval = now.saturating_sub(window.last);
                // A pause longer than the cap says nothing about the peer's heartbeat rate.
                if interval <= self.config.max_interval {
                    window.record(interval);
                }
                window.last = window.last.max(now);
                let came_back = !window.alive;
                window.alive = true;
                Ok(came_back)
            }
            None if full => Err(FailureDetectorError::TooManyHosts(host)),
            None => {
                self.peers.insert(host, ArrivalWindow::new(now, self.config.initial_interval));
                Ok(true)
            }
        }
    }

    /// phi of `host` at `now`: how unlikely its silence since the last heartbeat is (None for
    /// a host never heard from).
    pub fn phi(&self, host: HostId, now: Duration) -> Option<f64> {
        self.peers.get(&host).map(|w| w.phi(now))
    }

    /// Convicts every up host whose phi at `now` exceeds the threshold and returns them (the
    /// hosts just marked down), in host order.
    pub fn convict(&mut self, now: Duration) -> Vec<HostId> {
        let threshold = self.config.phi_convict_threshold;
        let mut convicted: Vec<HostId> = self
            .peers
            .iter_mut()
            .filter(|(_, w)| w.alive && w.phi(now) > threshold)
            .map(|(host, w)| {
                w.alive = false;
                *host
            })
            .collect();
        convicted.sort_unstable();
        convicted
    }

    /// Whether `host` is up: heard from, and not convicted since its last heartbeat.
    pub fn is_alive(&self, host: HostId) -> bool {
        self.peers.get(&host).is_some_and(|w| w.alive)
    }

    /// Forgets `host` (it left the cluster, or restarted: its old rate says nothing about the
    /// new process). Its next heartbeat starts a fresh window.
    pub fn remove(&mut self, host: HostId) {
        self.peers.remove(&host);
    }

    /// Hosts tracked, with whether each is up, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = (HostId, bool)> + '_ {
        self.peers.iter().map(|(h, w)| (*h, w.alive))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PEER: HostId = 7;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn detector() -> FailureDetector {
        FailureDetector::new(FailureDetectorConfig::default()).expect("the defaults are valid")
    }

    /// Heartbeats every `every` seconds from 0 to `until`; returns the last arrival time.
    fn beat_regularly(fd: &mut FailureDetector, every: f64, until: f64) -> f64 {
        let mut t = 0.0;
        while t <= until {
            fd.report(PEER, secs(t)).expect("one host");
            t += every;
        }
        t - every
    }

    #[test]
    fn regular_heartbeats_keep_phi_low() {
        let mut fd = detector();
        let last = beat_regularly(&mut fd, 1.0, 60.0);
        let phi = fd.phi(PEER, secs(last + 1.0)).expect("tracked");
        assert!(phi < 0.5, "one interval of silence: phi {phi}");
        assert!(fd.convict(secs(last + 1.0)).is_empty());
        assert!(fd.is_alive(PEER));
    }

    #[test]
    fn silence_past_the_threshold_convicts_and_one_heartbeat_revives() {
        let mut fd = detector();
        let last = beat_regularly(&mut fd, 1.0, 60.0);
        // Mean ~1 s, threshold 8: convicted once silence exceeds 8 / log10(e) = 18.4 s.
        assert!(fd.convict(secs(last + 18.0)).is_empty(), "18 s of silence is still below phi 8");
        assert_eq!(fd.convict(secs(last + 19.0)), [PEER]);
        assert!(!fd.is_alive(PEER));
        assert!(fd.convict(secs(last + 30.0)).is_empty(), "a down host is convicted once");
        assert_eq!(fd.report(PEER, secs(last + 40.0)), Ok(true), "the next heartbeat marks it up");
        assert!(fd.is_alive(PEER));
        let phi = fd.phi(PEER, secs(last + 41.0)).expect("tracked");
        assert!(phi < 0.5, "the 40 s gap was above max_interval and not learnt: phi {phi}");
    }

    #[test]
    fn a_lower_threshold_convicts_after_a_few_intervals() {
        let config = FailureDetectorConfig { phi_convict_threshold: 2.0, ..Default::default() };
        let mut fd = FailureDetector::new(config).expect("valid");
        let last = beat_regularly(&mut fd, 0.5, 30.0);
        // phi 2 at 2 / log10(e) = 4.6 mean intervals.
        assert!(fd.convict(secs(last + 2.0)).is_empty());
        assert_eq!(fd.convict(secs(last + 2.5)), [PEER]);
    }

    #[test]
    fn a_host_heard_once_gets_the_initial_interval() {
        let mut fd = detector();
        assert_eq!(fd.report(PEER, secs(100.0)), Ok(true), "the first heartbeat marks a host up");
        // Mean = initial 2 s: conviction after 2 * 18.4 = 36.8 s, not after a few seconds.
        assert!(fd.convict(secs(130.0)).is_empty());
        assert_eq!(fd.convict(secs(137.0)), [PEER]);
        assert_eq!(fd.phi(PEER + 1, secs(1.0)), None);
        assert!(!fd.is_alive(PEER + 1), "a host never heard from is not alive");
    }

    #[test]
    fn restart_forgets_the_window() {
        let mut fd = detector();
        beat_regularly(&mut fd, 0.1, 10.0);
        fd.remove(PEER);
        assert!(!fd.is_alive(PEER));
        assert_eq!(fd.report(PEER, secs(20.0)), Ok(true));
        assert!(fd.convict(secs(30.0)).is_empty(), "fresh window: the 2 s initial interval again");
    }

    #[test]
    fn state_is_bounded_per_peer_and_in_peers() {
        let mut fd = detector();
        beat_regularly(&mut fd, 0.01, 3.0 * ARRIVAL_WINDOW as f64 * 0.01);
        assert_eq!(fd.peers[&PEER].intervals.len(), ARRIVAL_WINDOW);
        for host in 1..MAX_TRACKED_HOSTS as HostId {
            fd.report(1000 + host, secs(1.0)).expect("below the bound");
        }
        let extra = 1000 + MAX_TRACKED_HOSTS as HostId;
        assert_eq!(fd.report(extra, secs(1.0)), Err(FailureDetectorError::TooManyHosts(extra)));
        assert!(fd.peers.len() <= MAX_TRACKED_HOSTS);
    }

    #[test]
    fn bad_settings_are_refused() {
        for threshold in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = FailureDetectorConfig { phi_convict_threshold: threshold, ..Default::default() };
            assert!(matches!(FailureDetector::new(config), Err(FailureDetectorError::BadThreshold(_))));
        }
        let config = FailureDetectorConfig { max_interval: Duration::ZERO, ..Default::default() };
        assert!(matches!(FailureDetector::new(config), Err(FailureDetectorError::BadInterval { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Heartbeats every second with up to +-500 ms of jitter are never convicted, checked
        /// just before each heartbeat arrives (the moment phi is highest).
        #[test]
        fn jittery_but_regular_heartbeats_are_never_convicted(
            jitter in proptest::collection::vec(-500i64..=500, 10..300),
        ) {
            let mut fd = detector();
            let mut t = Duration::from_secs(1000);
            for j in jitter {
                let next = t + Duration::from_millis((1000 + j) as u64);
                prop_assert!(fd.convict(next - Duration::from_millis(1)).is_empty(), "convicted at {next:?}");
                fd.report(PEER, next).expect("one host");
                t = next;
            }
            prop_assert!(fd.is_alive(PEER));
        }

        /// Whatever the arrival times (even out of order), phi is never negative or NaN.
        #[test]
        fn phi_is_a_number_for_any_arrivals(arrivals in proptest::collection::vec(0u64..100_000, 1..50), at in 0u64..200_000) {
            let mut fd = detector();
            for a in arrivals {
                fd.report(PEER, Duration::from_millis(a)).expect("one host");
            }
            let phi = fd.phi(PEER, Duration::from_millis(at)).expect("tracked");
            prop_assert!(phi >= 0.0 && !phi.is_nan(), "phi {phi}");
        }
    }
}
