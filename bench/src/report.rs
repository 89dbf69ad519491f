//! Writing a benchmark's JSON report, and the number formats the programs print with.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

/// Creates the run's own data directory `PARENT/NAME-SECONDS-PID` and returns its absolute path.
pub fn fresh_run_dir(parent: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dir = parent.join(format!("{name}-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

/// Writes `report` as pretty JSON to `path`, creating its directory. The file is written to a
/// temporary name and renamed, so a reader never sees half a report.
pub fn write_json(path: &Path, report: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `n / seconds`, 0 when the window is empty.
pub fn per_second(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n / seconds
    } else {
        0.0
    }
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b != 0.0 {
        a / b
    } else {
        0.0
    }
}

/// `1234567.8` -> `"1,234,568"`.
pub fn thousands(v: f64) -> String {
    let rounded = v.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if rounded < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal megabytes (10^6), as disk vendors and `dd` count them.
pub fn megabytes(bytes: f64) -> f64 {
    bytes / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn reports_are_written_whole_into_new_directories() {
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        let path = dir.join("nested/r.json");
        write_json(&path, &serde_json::json!({ "rows": 3 })).unwrap();
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["rows"], 3);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
