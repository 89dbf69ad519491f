//! The shell's own commands (CONSISTENCY, PAGING, TRACING, EXIT/QUIT, HELP), recognised before a
//! statement goes to the server, and the session settings they change. Pure parsing: running a
//! command is the shell loop's job.

use wire::Consistency;

/// cqlsh's default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Rows fetched per request when paging is off. Each fetch is printed as one aligned table, so
/// this also bounds the rows the shell holds in memory at once.
pub const UNPAGED_FETCH_ROWS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// Pages of this many rows; an interactive shell pauses between them.
    On(u32),
    Off,
}

/// What a session remembers between statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub consistency: Consistency,
    pub paging: Paging,
    /// Ask the coordinator for a trace of each statement and print it after the result.
    pub tracing: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { consistency: Consistency::One, paging: Paging::On(DEFAULT_PAGE_SIZE), tracing: false }
    }
}

impl Settings {
    /// Rows to ask the server for per request.
    pub fn fetch_size(&self) -> u32 {
        match self.paging {
            Paging::On(n) => n,
            Paging::Off => UNPAGED_FETCH_ROWS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellCommand {
    /// `CONSISTENCY`: show the level; `CONSISTENCY QUORUM`: set it.
    Consistency(Option<Consistency>),
    /// `PAGING`: show; `PAGING ON|OFF|N`.
    Paging(Option<Paging>),
    /// `TRACING`: show; `TRACING ON|OFF`.
    Tracing(Option<bool>),
    Help,
    Exit,
}

/// A shell command the shell recognised but could not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Improper CONSISTENCY command: unknown level '{0}' (use ONE, TWO, THREE, QUORUM or ALL)")]
    UnknownConsistency(String),
    #[error("Improper PAGING command: '{0}' (use PAGING ON, PAGING OFF or PAGING <page size 1..={max}>)", max = wire::protocol::MAX_PAGE_SIZE)]
    BadPaging(String),
    #[error("Improper TRACING command: '{0}' (use TRACING ON or TRACING OFF)")]
    BadTracing(String),
    #[error("Improper {0} command: too many words")]
    TooManyWords(&'static str),
}

/// The shell command `text` is (one statement, without its `;`), or `None` when it is a
/// statement for the server. Keywords are case-insensitive, as in cqlsh.
pub fn parse_command(text: &str) -> Option<Result<ShellCommand, CommandError>> {
    let mut words = text.split_whitespace();
    let first = words.next()?.to_ascii_uppercase();
    let arg = words.next();
    let extra = words.next().is_some();
    let (name, result) = match first.as_str() {
        "CONSISTENCY" => (
            "CONSISTENCY",
            match arg {
                None => Ok(ShellCommand::Consistency(None)),
                Some(level) => Consistency::parse(level)
                    .map(|c| ShellCommand::Consistency(Some(c)))
                    .ok_or_else(|| CommandError::UnknownConsistency(level.to_owned())),
            },
        ),
        "PAGING" => (
            "PAGING",
            arg.map_or(Ok(ShellCommand::Paging(None)), |a| parse_paging(a).map(Some).map(ShellCommand::Paging)),
        ),
        "TRACING" => (
            "TRACING",
            match arg.map(str::to_ascii_uppercase).as_deref() {
                None => Ok(ShellCommand::Tracing(None)),
                Some("ON") => Ok(ShellCommand::Tracing(Some(true))),
                Some("OFF") => Ok(ShellCommand::Tracing(Some(false))),
                Some(_) => Err(CommandError::BadTracing(arg.unwrap_or_default().to_owned())),
            },
        ),
        "HELP" | "?" => ("HELP", Ok(ShellCommand::Help)),
        // `EXIT;` and `QUIT` only: anything after them is not ours.
        "EXIT" | "QUIT" if arg.is_none() => ("EXIT", Ok(ShellCommand::Exit)),
        _ => return None,
    };
    // HELP takes a topic in cqlsh; the shell has one help text and ignores it.
    if extra && name != "HELP" {
        return Some(Err(CommandError::TooManyWords(name)));
    }
    Some(result)
}

fn parse_paging(arg: &str) -> Result<Paging, CommandError> {
    match arg.to_ascii_uppercase().as_str() {
        "ON" => Ok(Paging::On(DEFAULT_PAGE_SIZE)),
        "OFF" => Ok(Paging::Off),
        n => match n.parse::<u32>() {
            Ok(size) if (1..=wire::protocol::MAX_PAGE_SIZE).contains(&size) => Ok(Paging::On(size)),
            _ => Err(CommandError::BadPaging(arg.to_owned())),
        },
    }
}

/// What the shell prints for `CONSISTENCY` and `PAGING`, before or after a change (cqlsh's
/// wording).
pub fn describe(command: &ShellCommand, settings: &Settings) -> Option<String> {
    Some(match command {
        ShellCommand::Consistency(None) => format!("Current consistency level is {}.", settings.consistency),
        ShellCommand::Consistency(Some(level)) => format!("Consistency level set to {level}."),
        ShellCommand::Paging(None) => match settings.paging {
            Paging::On(n) => format!("Query paging is currently enabled. Use PAGING OFF to disable\nPage size: {n}"),
            Paging::Off => "Query paging is currently disabled. Use PAGING ON to enable.".to_owned(),
        },
        ShellCommand::Paging(Some(Paging::On(n))) => format!("Now Query paging is enabled\nPage size: {n}"),
        ShellCommand::Paging(Some(Paging::Off)) => "Disabled Query paging.".to_owned(),
        ShellCommand::Tracing(None) => match settings.tracing {
            true => "Tracing is currently enabled. Use TRACING OFF to disable".to_owned(),
            false => "Tracing is currently disabled. Use TRACING ON to enable.".to_owned(),
        },
        ShellCommand::Tracing(Some(true)) => "Now Tracing is enabled".to_owned(),
        ShellCommand::Tracing(Some(false)) => "Disabled Tracing.".to_owned(),
        ShellCommand::Help => HELP.to_owned(),
        ShellCommand::Exit => return None,
    })
}

/// Applies a setting command to the session.
pub fn apply(command: &ShellCommand, settings: &mut Settings) {
    match command {
        ShellCommand::Consistency(Some(level)) => settings.consistency = *level,
        ShellCommand::Paging(Some(paging)) => settings.paging = *paging,
        ShellCommand::Tracing(Some(on)) => settings.tracing = *on,
        _ => {}
    }
}

const HELP: &str = "\
Statements (end each with ';'; a line without ';' continues on the next):
  CREATE TABLE [IF NOT EXISTS] t (k text PRIMARY KEY, v int, ...) [WITH ...]
  DROP TABLE [IF EXISTS] t      TRUNCATE t      DESCRIBE TABLES      DESCRIBE TABLE t
  INSERT INTO t (k, v) VALUES ('a', 1) [USING TTL n | TIMESTAMP n]
  UPDATE t SET v = 2 WHERE k = 'a'      DELETE FROM t WHERE k = 'a'
  SELECT * FROM t [WHERE ...] [LIMIT n]
  BEGIN [UNLOGGED] BATCH ... APPLY BATCH
Shell commands:
  CONSISTENCY [ONE|TWO|THREE|QUORUM|ALL]   show or set the consistency level
  PAGING [ON|OFF|<page size>]              show or set paging
  TRACING [ON|OFF]                         show or set tracing (each statement's steps on
                                           the coordinator, printed after its result)
  HELP                                     this text
  EXIT | QUIT                              leave the shell";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_are_recognised_in_any_case() {
        assert_eq!(parse_command("consistency"), Some(Ok(ShellCommand::Consistency(None))));
        assert_eq!(parse_command("CONSISTENCY quorum"), Some(Ok(ShellCommand::Consistency(Some(Consistency::Quorum)))));
        assert_eq!(parse_command("  Paging  off "), Some(Ok(ShellCommand::Paging(Some(Paging::Off)))));
        assert_eq!(parse_command("PAGING ON"), Some(Ok(ShellCommand::Paging(Some(Paging::On(DEFAULT_PAGE_SIZE))))));
        assert_eq!(parse_command("paging 1000"), Some(Ok(ShellCommand::Paging(Some(Paging::On(1000))))));
        assert_eq!(parse_command("PAGING"), Some(Ok(ShellCommand::Paging(None))));
        assert_eq!(parse_command("exit"), Some(Ok(ShellCommand::Exit)));
        assert_eq!(parse_command("QUIT"), Some(Ok(ShellCommand::Exit)));
        assert_eq!(parse_command("help select"), Some(Ok(ShellCommand::Help)));
        assert_eq!(parse_command("tracing on"), Some(Ok(ShellCommand::Tracing(Some(true)))));
        assert_eq!(parse_command("TRACING"), Some(Ok(ShellCommand::Tracing(None))));
    }

    #[test]
    fn statements_are_left_for_the_server() {
        assert_eq!(parse_command("SELECT * FROM consistency"), None);
        assert_eq!(parse_command("INSERT INTO paging (k) VALUES ('a')"), None);
        assert_eq!(parse_command("exit now"), None);
        assert_eq!(parse_command(""), None);
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let err = parse_command("CONSISTENCY LOCAL_QUORUM").unwrap().unwrap_err();
        assert!(err.to_string().contains("unknown level 'LOCAL_QUORUM'"), "{err}");
        for bad in ["PAGING 0", "PAGING -5", "PAGING sometimes", "PAGING 99999999999"] {
            let err = parse_command(bad).unwrap().unwrap_err();
            assert!(matches!(err, CommandError::BadPaging(_)), "{bad}: {err}");
        }
        assert_eq!(parse_command("CONSISTENCY ONE TWO"), Some(Err(CommandError::TooManyWords("CONSISTENCY"))));
        assert_eq!(parse_command("tracing maybe"), Some(Err(CommandError::BadTracing("maybe".into()))));
    }

    #[test]
    fn settings_change_and_describe_themselves() {
        let mut settings = Settings::default();
        assert_eq!(settings.fetch_size(), DEFAULT_PAGE_SIZE);
        let show = ShellCommand::Consistency(None);
        assert_eq!(describe(&show, &settings).unwrap(), "Current consistency level is ONE.");
        let set = ShellCommand::Consistency(Some(Consistency::Quorum));
        apply(&set, &mut settings);
        assert_eq!(describe(&set, &settings).unwrap(), "Consistency level set to QUORUM.");
        assert_eq!(describe(&show, &settings).unwrap(), "Current consistency level is QUORUM.");
        apply(&ShellCommand::Paging(Some(Paging::Off)), &mut settings);
        assert_eq!(settings.fetch_size(), UNPAGED_FETCH_ROWS);
        assert!(describe(&ShellCommand::Paging(None), &settings).unwrap().contains("disabled"));
        apply(&ShellCommand::Paging(Some(Paging::On(7))), &mut settings);
        assert_eq!(settings, Settings { consistency: Consistency::Quorum, paging: Paging::On(7), tracing: false });
        apply(&ShellCommand::Tracing(Some(true)), &mut settings);
        assert!(settings.tracing);
        assert!(describe(&ShellCommand::Tracing(None), &settings).unwrap().contains("enabled"));
        assert_eq!(describe(&ShellCommand::Exit, &settings), None);
    }
}
