//! Process-wide logging: one `tracing` subscriber writing to stderr, human-readable text or one
//! JSON object per line, filtered by a level (`EnvFilter` directives such as `info` or
//! `warn,shards=debug`). Installed once at start; never logs per request at `info`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The environment variable that sets the level where the server's settings do not
/// (`ENIGMADB_LOG=debug enigmadb shell`).
pub const LOG_ENV: &str = "ENIGMADB_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields), for log pipelines.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log level '{level}': {reason}")]
    Level { level: String, reason: String },
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// Level names a directive may use.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Reads a level: comma-separated directives, each a level (`info`) or a target and a level
/// (`shards=debug`). A bare word that is not a level is refused (EnvFilter alone would read it
/// as a target name and silently log nothing else).
pub fn parse_level(level: &str) -> Result<EnvFilter, LogError> {
    let refuse = |reason: String| LogError::Level { level: level.to_owned(), reason };
    for directive in level.split(',').map(str::trim) {
        let name = directive.rsplit('=').next().unwrap_or_default();
        if !LEVELS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(refuse(format!("'{directive}' is not LEVEL or TARGET=LEVEL (levels: {})", LEVELS.join(", "))));
        }
    }
    EnvFilter::try_new(level).map_err(|e| refuse(e.to_string()))
}

/// The level `ENIGMADB_LOG` asks for, if set, else `default`.
pub fn level_from_env(default: &str) -> String {
    std::env::var(LOG_ENV).ok().filter(|l| !l.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Installs the process's logger. The `log` crate's records (glommio reports some failures
/// only there) go through it too.
pub fn init(format: LogFormat, level: &str) -> Result<(), LogError> {
    let filter = parse_level(level)?;
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|_| LogError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("warn,shards=debug").is_ok());
        let err = parse_level("loud").unwrap_err().to_string();
        assert!(err.contains("'loud'"), "{err}");
        assert!(parse_level("info,shards=noisy").is_err());
        assert!(parse_level("").is_err());
    }
}
