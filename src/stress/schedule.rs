//! When each operation of a stress run is due: a plan of phases (a target rate, or `max` = as
//! fast as the store answers) and the per-connection pacer that turns it into intended send
//! times, as wrk2 does (latency is measured from the intended time, which corrects coordinated
//! omission). Pure logic: the caller passes the time; nothing here reads a clock or sleeps.

use std::fmt;
use std::time::Duration;

/// Most steps a surge may list (before it is mirrored back down).
pub const MAX_STEPS: usize = 64;

/// Highest target rate accepted, in operations per second (all connections together).
pub const MAX_RATE: u64 = 100_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("'{0}' is not a rate (operations per second, e.g. 50000 or 50k) or 'max'")]
    Rate(String),
    #[error("a rate must be between 1 and {MAX_RATE} operations per second, got {0}")]
    RateRange(u64),
    #[error("a surge lists 1 to {MAX_STEPS} steps, got {0}")]
    StepCount(usize),
    #[error("'{0}' is not a duration (e.g. 500ms, 10s, 2m)")]
    Duration(String),
}

/// A phase's pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many operations per second over all connections, sent on schedule.
    PerSecond(f64),
    /// As fast as answers come back (closed loop: a new request when one is answered).
    Max,
}

impl Rate {
    /// Parses `50000`, `50k`, `1.5m` or `max`.
    pub fn parse(text: &str) -> Result<Rate, ScheduleError> {
        let t = text.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Rate::Max);
        }
        let (digits, scale) = match t.strip_suffix('k') {
            Some(d) => (d, 1e3),
            None => match t.strip_suffix('m') {
                Some(d) => (d, 1e6),
                None => (t.as_str(), 1.0),
            },
        };
        let n: f64 = digits.parse().map_err(|_| ScheduleError::Rate(text.to_owned()))?;
        let rate = (n * scale).round();
        if !(1.0..=MAX_RATE as f64).contains(&rate) {
            return Err(ScheduleError::RateRange(rate.max(0.0) as u64));
        }
        Ok(Rate::PerSecond(rate))
    }

    /// The target in operations per second, `None` for `max`.
    pub fn target(self) -> Option<f64> {
        match self {
            Rate::PerSecond(r) => Some(r),
            Rate::Max => None,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r:.0}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, ScheduleError> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| ScheduleError::Duration(text.to_owned()))?;
    let seconds = match unit {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(ScheduleError::Duration(text.to_owned())),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| ScheduleError::Duration(text.to_owned()))
}

/// Parses a surge's steps (`10000,50000,max`) and mirrors them back down
/// (`10000,50000,max,50000,10000`): the way up, the peak once, the way down.
pub fn surge_steps(text: &str) -> Result<Vec<Rate>, ScheduleError> {
    let up = text.split(',').map(Rate::parse).collect::<Result<Vec<_>, _>>()?;
    if up.is_empty() || up.len() > MAX_STEPS {
        return Err(ScheduleError::StepCount(up.len()));
    }
    let down = up.iter().rev().skip(1).copied();
    Ok(up.iter().copied().chain(down).collect())
}

/// One phase of a plan: its pace from `start` until `end` (`None`: until the run stops for
/// another reason, an operation count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub start: Duration,
    pub end: Option<Duration>,
    pub rate: Rate,
}

/// The phases of a run, back to back from time zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    phases: Vec<Phase>,
}

impl Plan {
    /// One pace for the whole run, for `duration` or (`None`) until the operations run out.
    pub fn constant(rate: Rate, duration: Option<Duration>) -> Plan {
        Plan { phases: vec![Phase { start: Duration::ZERO, end: duration, rate }] }
    }

    /// Each rate for `step` in turn.
    pub fn steps(rates: &[Rate], step: Duration) -> Plan {
        let phases =
            (0u32..).zip(rates).map(|(i, &rate)| Phase { start: step * i, end: Some(step * (i + 1)), rate }).collect();
        Plan { phases }
    }

    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// When the plan ends, if it has an end.
    pub fn end(&self) -> Option<Duration> {
        self.phases.last().and_then(|p| p.end)
    }

    /// The phase in force at `t` since the start, if any.
    pub fn phase_at(&self, t: Duration) -> Option<(usize, &Phase)> {
        self.phases.iter().enumerate().find(|(_, p)| t >= p.start && p.end.is_none_or(|end| t < end))
    }
}

/// What a connection should do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Due {
    /// Send now; latency counts from the actual send (a `max` phase).
    Now,
    /// The next operation's intended send time (since the start); it may be in the past.
    At(Duration),
    /// The plan is over.
    Done,
}

/// One connection's share of a plan: with `connections` connections, each sends one operation
/// every `connections / rate` seconds of a paced phase.
#[derive(Debug, Clone)]
pub struct Pacer {
    plan: Plan,
    connections: f64,
    phase: usize,
    /// The next intended send time in a paced phase.
    next: Duration,
}

impl Pacer {
    pub fn new(plan: Plan, connections: usize) -> Pacer {
        Pacer { plan, connections: connections.max(1) as f64, phase: 0, next: Duration::ZERO }
    }

    /// What is due at `now` (since the start). A paced phase keeps its schedule even when the
    /// connection falls behind (its backlog is sent at once, with its intended times); a phase
    /// ends when its next intended time, or in a `max` phase `now`, reaches its end.
    pub fn due(&mut self, now: Duration) -> Due {
        while let Some(phase) = self.plan.phases.get(self.phase) {
            match phase.rate {
                Rate::Max => match phase.end {
                    Some(end) if now >= end => {
                        self.phase += 1;
                        self.next = end;
                    }
                    _ => return Due::Now,
                },
                Rate::PerSecond(_) => {
                    let at = self.next.max(phase.start);
                    match phase.end {
                        Some(end) if at >= end => self.phase += 1,
                        _ => {
                            self.next = at;
                            return Due::At(at);
                        }
                    }
                }
            }
        }
        Due::Done
    }

    /// The operation [`Pacer::due`] gave was sent: the next one is one interval later.
    pub fn sent(&mut self) {
        if let Some(Phase { rate: Rate::PerSecond(rate), .. }) = self.plan.phases.get(self.phase) {
            self.next += Duration::from_secs_f64(self.connections / rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rates_parse_with_suffixes_and_max() {
        assert_eq!(Rate::parse("50000"), Ok(Rate::PerSecond(50_000.0)));
        assert_eq!(Rate::parse("50k"), Ok(Rate::PerSecond(50_000.0)));
        assert_eq!(Rate::parse("1.5M"), Ok(Rate::PerSecond(1_500_000.0)));
        assert_eq!(Rate::parse("MAX"), Ok(Rate::Max));
        assert_eq!(Rate::parse("fast"), Err(ScheduleError::Rate("fast".into())));
        assert_eq!(Rate::parse("0"), Err(ScheduleError::RateRange(0)));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(10 * S));
        assert_eq!(parse_duration("7"), Ok(7 * S));
        assert_eq!(parse_duration("2m"), Ok(120 * S));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10 parsecs"), Err(ScheduleError::Duration("10 parsecs".into())));
        assert_eq!(parse_duration("s"), Err(ScheduleError::Duration("s".into())));
    }

    #[test]
    fn surge_steps_go_up_then_back_down() {
        let steps = surge_steps("10k,50k,max").unwrap();
        let p = Rate::PerSecond;
        assert_eq!(steps, vec![p(10e3), p(50e3), Rate::Max, p(50e3), p(10e3)]);
        assert_eq!(surge_steps("max").unwrap(), vec![Rate::Max]);
        assert_eq!(surge_steps(""), Err(ScheduleError::Rate(String::new())));
        let many = vec!["1"; MAX_STEPS + 1].join(",");
        assert_eq!(surge_steps(&many), Err(ScheduleError::StepCount(MAX_STEPS + 1)));
    }

    #[test]
    fn a_paced_connection_sends_its_share_on_schedule() {
        // 1000/s over 4 connections: each connection sends every 4 ms.
        let mut pacer = Pacer::new(Plan::constant(Rate::PerSecond(1000.0), Some(S)), 4);
        let mut times = Vec::new();
        while let Due::At(t) = pacer.due(Duration::ZERO) {
            times.push(t);
            pacer.sent();
        }
        assert_eq!(times.len(), 250);
        assert_eq!(times[1] - times[0], Duration::from_millis(4));
        assert_eq!(pacer.due(2 * S), Due::Done);
    }

    #[test]
    fn a_late_connection_keeps_the_intended_times_of_its_backlog() {
        let mut pacer = Pacer::new(Plan::constant(Rate::PerSecond(100.0), None), 1);
        // Nothing was sent for 50 ms: the five overdue operations keep their own times.
        let late = Duration::from_millis(50);
        for i in 0..5u64 {
            assert_eq!(pacer.due(late), Due::At(Duration::from_millis(10 * i)));
            pacer.sent();
        }
        assert_eq!(pacer.due(late), Due::At(late));
    }

    #[test]
    fn steps_change_pace_and_a_max_step_is_closed_loop() {
        let plan = Plan::steps(&surge_steps("10,max").unwrap(), S);
        assert_eq!(plan.end(), Some(3 * S));
        let mut pacer = Pacer::new(plan.clone(), 1);
        let mut sent = 0;
        while let Due::At(_) = pacer.due(Duration::ZERO) {
            sent += 1;
            pacer.sent();
        }
        assert_eq!(sent, 10, "10/s for one second");
        assert_eq!(pacer.due(Duration::from_millis(1500)), Due::Now);
        // After the max step, pacing resumes at the step's start, not at the backlog.
        assert_eq!(pacer.due(Duration::from_millis(2100)), Due::At(2 * S));
        assert_eq!(plan.phase_at(Duration::from_millis(2500)).map(|(i, _)| i), Some(2));
        assert_eq!(plan.phase_at(3 * S), None);
    }

    proptest! {
        #[test]
        fn a_paced_plan_sends_rate_times_duration(rate in 1u32..5000, connections in 1usize..16, secs in 1u32..4) {
            let plan = Plan::constant(Rate::PerSecond(f64::from(rate)), Some(S * secs));
            let mut total = 0u64;
            for _ in 0..connections {
                let mut pacer = Pacer::new(plan.clone(), connections);
                while let Due::At(_) = pacer.due(Duration::ZERO) {
                    total += 1;
                    pacer.sent();
                }
            }
            let expected = f64::from(rate) * f64::from(secs);
            prop_assert!((total as f64 - expected).abs() <= connections as f64 + 1.0, "{} vs {}", total, expected);
        }
    }
}
