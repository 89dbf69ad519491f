//! The Prometheus text exposition format, version 0.0.4: a writer that groups each family's
//! samples under its `# HELP`/`# TYPE` lines and escapes label values, and a strict reader of
//! the same format (for tests and tools). Pure: no I/O, no clocks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `Content-Type` of a scrape answer in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family is (its `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Quantiles computed by the server (`quantile` label), with `_sum` and `_count`.
    Summary,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        [Kind::Counter, Kind::Gauge, Kind::Histogram, Kind::Summary].into_iter().find(|k| k.name() == text)
    }
}

/// A scrape answer being written. Declare a family with [`Exposition::family`], then write its
/// samples before declaring the next: the format wants a family's samples together.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: `name` follows the Prometheus conventions (`enigmadb_..._total` for
    /// counters, a unit suffix such as `_bytes` or `_seconds`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
    }

    /// One sample of the family declared last (`name` carries the suffix of a histogram's
    /// `_bucket`, `_sum` and `_count` samples).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<f64>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(label), "label name {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value.into());
        self.out.push('\n');
    }

    /// The samples of one histogram series: cumulative `_bucket`s (the last one `le="+Inf"`),
    /// `_sum` and `_count`. `buckets` pairs each upper bound with the count of observations
    /// in it alone (not cumulative); `overflow` counts those above every bound.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], buckets: &[(f64, u64)], overflow: u64, sum: f64) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let mut bucket = |le: &str, cumulative: u64| {
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            self.sample(&bucket_name, &with_le, cumulative as f64);
        };
        for &(upper, count) in buckets {
            cumulative += count;
            let mut le = String::new();
            push_value(&mut le, upper);
            bucket(&le, cumulative);
        }
        cumulative += overflow;
        bucket("+Inf", cumulative);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    /// The samples of one summary series: one per `(quantile, value)` pair (NaN while nothing
    /// was observed, as Prometheus clients write it), `_sum` and `_count`.
    pub fn summary(&mut self, name: &str, labels: &[(&str, &str)], quantiles: &[(f64, f64)], sum: f64, count: u64) {
        for &(q, value) in quantiles {
            let mut quantile = String::new();
            push_value(&mut quantile, q);
            let mut with_q = labels.to_vec();
            with_q.push(("quantile", &quantile));
            self.sample(name, &with_q, value);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Go's `strconv.FormatFloat(v, 'g')` spelling is not required: Prometheus reads any float,
/// plus `+Inf`, `-Inf` and `NaN`. Integers print without a fraction.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (label names may not use ':', which no caller does).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// One sample read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A scrape answer read back: every family's type and every sample, in order.
#[derive(Debug, Default)]
pub struct Scrape {
    pub types: BTreeMap<String, Kind>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn select<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }

    /// The sum of the values of [`Scrape::select`].
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.select(name, labels).map(|s| s.value).sum()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Reads a text-format answer strictly: every sample belongs to the family declared by the
/// `# TYPE` line before it (histogram samples by their suffix), and a family's samples are
/// not interleaved with another's.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| ParseError { line: i + 1, message };
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| err("TYPE without a type".into()))?;
            let kind = Kind::parse(kind).ok_or_else(|| err(format!("unknown type '{kind}'")))?;
            if !valid_name(name) || scrape.types.insert(name.to_owned(), kind).is_some() {
                return Err(err(format!("family '{name}' declared twice or badly named")));
            }
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        let family = current.as_deref().ok_or_else(|| err("a sample before any TYPE".into()))?;
        let kind = scrape.types[family];
        let belongs = match kind {
            Kind::Histogram => {
                ["_bucket", "_sum", "_count"].iter().any(|suffix| sample.name.strip_suffix(suffix) == Some(family))
            }
            Kind::Summary => {
                (sample.name == family && sample.label("quantile").is_some())
                    || ["_sum", "_count"].iter().any(|suffix| sample.name.strip_suffix(suffix) == Some(family))
            }
            Kind::Counter | Kind::Gauge => sample.name == family,
        };
        if !belongs {
            return Err(err(format!("sample '{}' outside its family (current '{family}')", sample.name)));
        }
        scrape.samples.push(sample);
    }
    Ok(scrape)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name '{name}'"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find("=\"").ok_or("a label without =\"")?;
            let label = &rest[..eq];
            if !valid_name(label) {
                return Err(format!("bad label name '{label}'"));
            }
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((j, '"')) => break eq + 2 + j + 1,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label '{label}' twice"));
            }
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value_text = rest.strip_prefix(' ').ok_or("no space before the value")?;
    // An optional timestamp may follow the value; this writer never sends one.
    let value_text = value_text.split(' ').next().unwrap_or_default();
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value '{v}'"))?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn families_samples_and_histograms_read_back() {
        let mut e = Exposition::new();
        e.family("enigmadb_requests_total", Kind::Counter, "Requests served.\nSecond line \\ end.");
        e.sample("enigmadb_requests_total", &[("op", "query"), ("consistency", "ONE")], 3u32);
        e.sample("enigmadb_requests_total", &[("op", "startup")], 1u32);
        e.family("enigmadb_shards", Kind::Gauge, "Shards.");
        e.sample("enigmadb_shards", &[], 2u32);
        e.family("enigmadb_request_duration_seconds", Kind::Histogram, "Latency.");
        e.histogram("enigmadb_request_duration_seconds", &[("op", "query")], &[(0.001, 2), (0.01, 0)], 1, 0.5);
        let text = e.finish();
        let scrape = parse(&text).unwrap();
        assert_eq!(scrape.types["enigmadb_request_duration_seconds"], Kind::Histogram);
        assert_eq!(scrape.sum("enigmadb_requests_total", &[]), 4.0);
        assert_eq!(scrape.sum("enigmadb_requests_total", &[("consistency", "ONE")]), 3.0);
        let buckets: Vec<(String, f64)> = scrape
            .select("enigmadb_request_duration_seconds_bucket", &[("op", "query")])
            .map(|s| (s.label("le").unwrap().to_owned(), s.value))
            .collect();
        assert_eq!(buckets, [("0.001".to_owned(), 2.0), ("0.01".to_owned(), 2.0), ("+Inf".to_owned(), 3.0)]);
        assert_eq!(scrape.sum("enigmadb_request_duration_seconds_count", &[]), 3.0);
        assert_eq!(scrape.sum("enigmadb_request_duration_seconds_sum", &[]), 0.5);
        assert!(text.contains("# HELP enigmadb_requests_total Requests served.\\nSecond line \\\\ end.\n"));
    }

    #[test]
    fn summaries_read_back_with_their_quantiles() {
        let mut e = Exposition::new();
        e.family("enigmadb_table_read_latency_seconds", Kind::Summary, "Read latency.");
        let labels = [("table", "kv")];
        e.summary("enigmadb_table_read_latency_seconds", &labels, &[(0.5, 0.001), (0.99, 0.02)], 1.5, 30);
        e.summary("enigmadb_table_read_latency_seconds", &[("table", "t")], &[(0.5, f64::NAN)], 0.0, 0);
        let scrape = parse(&e.finish()).unwrap();
        assert_eq!(scrape.types["enigmadb_table_read_latency_seconds"], Kind::Summary);
        let p99 = [("table", "kv"), ("quantile", "0.99")];
        assert_eq!(scrape.sum("enigmadb_table_read_latency_seconds", &p99), 0.02);
        assert_eq!(scrape.sum("enigmadb_table_read_latency_seconds_count", &labels), 30.0);
        assert_eq!(scrape.sum("enigmadb_table_read_latency_seconds_sum", &labels), 1.5);
        let empty = scrape.select("enigmadb_table_read_latency_seconds", &[("table", "t")]).next().unwrap();
        assert!(empty.value.is_nan());
        // A summary's bare name needs its quantile label.
        assert!(parse("# TYPE s summary\ns 1\n").is_err());
    }

    #[test]
    fn reader_refuses_samples_outside_their_family() {
        let e = parse("# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na 3\n").unwrap_err();
        assert_eq!(e.line, 5);
        assert!(parse("a 1\n").unwrap_err().message.contains("before any TYPE"));
        assert!(parse("# TYPE a counter\na{x=\"1} 2\n").is_err());
        assert!(parse("# TYPE a counter\n# TYPE a gauge\n").is_err());
        assert!(parse("# TYPE a counter\na{x=\"1\",x=\"2\"} 2\n").is_err());
    }

    proptest! {
        #[test]
        fn any_label_value_round_trips(value in "\\PC*|[\\\\\"\n]{0,8}", v in any::<u32>()) {
            let mut e = Exposition::new();
            e.family("m", Kind::Gauge, "help");
            e.sample("m", &[("table", &value), ("shard", "0")], v);
            let scrape = parse(&e.finish()).unwrap();
            prop_assert_eq!(scrape.samples.len(), 1);
            prop_assert_eq!(scrape.samples[0].label("table"), Some(value.as_str()));
            prop_assert_eq!(scrape.samples[0].value, v as f64);
        }

        #[test]
        fn reader_never_panics_on_garbage(text in "[a-z_{}=\",# \n\\\\0-9.+-]{0,200}") {
            let _ = parse(&text);
        }
    }
}
