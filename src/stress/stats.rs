//! What a stress run measured: per-connection recorders (HdrHistogram latencies, answers and
//! errors by kind) that the progress loop drains once a second into a series and run totals.
//! Pure logic: callers pass the latencies; nothing here reads a clock or does I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram tells apart; longer ones are counted as this (60 s).
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Significant decimal digits the histograms keep (values within 0.1%).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Most distinct error kinds counted by name; later new kinds are counted as "other errors"
/// (error kinds come from a fixed set of codes, so this only bounds a misbehaving server).
pub const MAX_ERROR_KINDS: usize = 64;

/// The error kind every kind past [`MAX_ERROR_KINDS`] is counted as.
const OTHER_ERRORS: &str = "other errors";

/// Latencies in microseconds, from 1 us to [`MAX_LATENCY_US`].
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, 0..=5
    // digits), so creation cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS).expect("constant, valid bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US)
}

/// Everything counted over some span of a run: one second of one connection, or a whole run.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Answers that were what was asked (writes acknowledged, reads that found their value).
    pub ok: u64,
    /// Reads of keys that were not there (not an error: the key may never have been written).
    pub missing: u64,
    /// Failed operations by kind (the server's error code names, client-side failures).
    pub errors: BTreeMap<String, u64>,
    /// From the intended send time to the answer, for every answered operation.
    pub latency: Histogram<u64>,
    /// From the intended send time to the actual send: how late the client itself was.
    pub send_lag: Histogram<u64>,
    /// Requests sent by connections that route (shard-aware EnigmaDB), and of them those sent
    /// on a connection of the shard owning their partition.
    pub routed: u64,
    pub routed_to_owner: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            ok: 0,
            missing: 0,
            errors: BTreeMap::new(),
            latency: latency_histogram(),
            send_lag: latency_histogram(),
            routed: 0,
            routed_to_owner: 0,
        }
    }
}

impl Tally {
    pub fn answered(&mut self, latency: Duration) {
        self.latency.saturating_record(micros(latency));
    }

    pub fn sent(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    /// A routed request, sent to its partition's shard or not.
    pub fn routed(&mut self, to_owner: bool) {
        self.routed += 1;
        self.routed_to_owner += u64::from(to_owner);
    }

    pub fn error(&mut self, kind: &str, n: u64) {
        let kind =
            if self.errors.len() >= MAX_ERROR_KINDS && !self.errors.contains_key(kind) { OTHER_ERRORS } else { kind };
        *self.errors.entry(kind.to_owned()).or_default() += n;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Operations finished one way or another.
    pub fn operations(&self) -> u64 {
        self.ok + self.missing + self.error_count()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.missing += other.missing;
        self.routed += other.routed;
        self.routed_to_owner += other.routed_to_owner;
        for (kind, n) in &other.errors {
            self.error(kind, *n);
        }
        // Both histograms come from `latency_histogram`, with the same bounds: add cannot fail.
        self.latency.add(&other.latency).expect("histograms with the same bounds");
        self.send_lag.add(&other.send_lag).expect("histograms with the same bounds");
    }

    /// Empties `self` (keeping its histograms' memory).
    pub fn clear(&mut self) {
        self.ok = 0;
        self.missing = 0;
        self.routed = 0;
        self.routed_to_owner = 0;
        self.errors.clear();
        self.latency.reset();
        self.send_lag.reset();
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// `n / seconds`, 0 for an empty span.
pub fn per_second(n: u64, seconds: f64) -> f64 {
    match seconds > 0.0 {
        true => n as f64 / seconds,
        false => 0.0,
    }
}

/// Microseconds as milliseconds for people: `1234` -> `"1.23"`.
pub fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    match ms {
        m if m < 10.0 => format!("{m:.2}"),
        m if m < 100.0 => format!("{m:.1}"),
        m => format!("{m:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut t = Tally::default();
        for us in 1..=1000u64 {
            t.answered(Duration::from_micros(us));
        }
        let p = Percentiles::of(&t.latency);
        assert_eq!(p.count, 1000);
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((989..=991).contains(&p.p99), "{p:?}");
        assert!((999..=1001).contains(&p.max), "{p:?}");
        assert_eq!(Percentiles::of(&Tally::default().latency), Percentiles::default());
    }

    #[test]
    fn latencies_beyond_the_range_are_counted_at_its_top() {
        let mut t = Tally::default();
        t.answered(Duration::from_secs(3600));
        t.answered(Duration::ZERO);
        let p = Percentiles::of(&t.latency);
        assert_eq!(p.count, 2);
        assert!(p.max >= MAX_LATENCY_US && p.max <= MAX_LATENCY_US + MAX_LATENCY_US / 1000, "{p:?}");
    }

    #[test]
    fn tallies_add_and_clear() {
        let mut a = Tally { ok: 3, ..Tally::default() };
        a.error("write timeout", 2);
        a.answered(Duration::from_millis(1));
        a.routed(true);
        let mut b = Tally { missing: 1, ..Tally::default() };
        b.routed(false);
        b.error("write timeout", 1);
        b.error("overloaded", 1);
        b.answered(Duration::from_millis(2));
        a.add(&b);
        assert_eq!((a.ok, a.missing, a.operations()), (3, 1, 8));
        assert_eq!(a.errors["write timeout"], 3);
        assert_eq!(a.latency.len(), 2);
        assert_eq!((a.routed, a.routed_to_owner), (2, 1));
        a.clear();
        assert_eq!((a.operations(), a.latency.len(), a.routed), (0, 0, 0));
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut t = Tally::default();
        for i in 0..MAX_ERROR_KINDS + 10 {
            t.error(&format!("kind {i}"), 1);
        }
        assert_eq!(t.errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(t.errors[OTHER_ERRORS], 10);
        assert_eq!(t.error_count(), (MAX_ERROR_KINDS + 10) as u64);
    }

    #[test]
    fn milliseconds_are_printed_with_sensible_digits() {
        assert_eq!(ms(412), "0.41");
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(123_456), "123");
    }
}
