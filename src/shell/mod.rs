//! `enigmadb shell`: a cqlsh-like client. Reads statements interactively (line editing and
//! history), from `-e` text, from a file (`-f`) or from piped stdin, runs them on a server
//! through the blocking client library, and prints results as aligned tables. It owns only
//! presentation and the session settings; it never interprets a statement itself.
//!
//! When the server goes away, an interactive shell says so and reconnects at the next statement
//! (keeping its settings); `-e`, `-f` and piped input stop with an error instead.

mod command;
mod connection;
mod format;
mod input;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rustyline::error::ReadlineError;
use wire::client::{ClientError, ClientOptions};
use wire::protocol::{QueryParams, QueryResult, Rows};

pub use command::{parse_command, Paging, Settings, ShellCommand};
pub use connection::{Connection, RECONNECT_ATTEMPTS};
pub use format::{display_cell, display_error, display_timestamp, render_table, row_count_line};
pub use input::StatementBuffer;

/// Where the shell connects unless `--host` says otherwise (DESIGN.md's client port).
pub const DEFAULT_HOST: &str = "127.0.0.1:9470";

/// Lines kept in the history file.
const HISTORY_LINES: usize = 1000;

const PROMPT: &str = "enigmadb> ";
const CONTINUATION_PROMPT: &str = "      ... ";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server address, host:port.
    #[arg(long, default_value = DEFAULT_HOST)]
    host: String,
    /// Run these statements (separated by ';') and exit; the exit status is 1 if any failed.
    #[arg(short = 'e', long = "execute", conflicts_with = "file")]
    execute: Option<String>,
    /// Run the statements of this file and exit; the exit status is 1 if any failed.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[command(flatten)]
    credentials: crate::credentials::CredentialArgs,
    #[command(flatten)]
    tls: crate::credentials::TlsArgs,
}

pub fn run(args: Args) -> Result<()> {
    let options = ClientOptions {
        credentials: args.credentials.resolve()?,
        tls: args.tls.resolve()?.map(|tls| tls.for_host(&args.host)),
        ..ClientOptions::default()
    };
    let connection = Connection::open(&args.host, options).with_context(|| format!("connecting to {}", args.host))?;
    let stdin = std::io::stdin();
    let interactive = args.execute.is_none() && args.file.is_none() && stdin.is_terminal();
    let mut shell =
        Shell { connection, settings: Settings::default(), interactive, failures: 0, statements: 0, lost: false };
    if let Some(text) = &args.execute {
        shell.run_lines(text.lines().map(|l| Ok(l.to_owned())))?;
    } else if let Some(path) = &args.file {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        shell.run_lines(std::io::BufReader::new(file).lines())?;
    } else if interactive {
        println!("Connected to EnigmaDB at {}.\nUse HELP for help.", args.host);
        shell.run_interactive()?;
    } else {
        shell.run_lines(stdin.lock().lines())?;
    }
    if shell.lost {
        bail!("lost the connection to {}; statements after the failed one were not run", args.host);
    }
    if shell.failures > 0 && !interactive {
        bail!("{} of {} statements failed", shell.failures, shell.statements);
    }
    Ok(())
}

struct Shell {
    connection: Connection,
    settings: Settings,
    /// A person at a terminal: pause between pages, reconnect after the server went away.
    interactive: bool,
    failures: usize,
    statements: usize,
    /// A non-interactive run lost its connection and stopped.
    lost: bool,
}

/// Why a statement failed: the message to print, and whether the connection went with it.
struct Failure {
    message: String,
    connection_lost: bool,
}

impl Failure {
    fn answer(message: String) -> Failure {
        Failure { message, connection_lost: false }
    }
}

/// Whether the shell goes on after a statement.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

impl Shell {
    /// Runs every statement of `lines` (a file, `-e` text or piped stdin) in order; a failed
    /// statement is reported and the next one runs, as cqlsh does.
    fn run_lines(&mut self, lines: impl Iterator<Item = std::io::Result<String>>) -> Result<()> {
        let mut buffer = StatementBuffer::default();
        for line in lines {
            let line = line.context("reading input")?;
            if self.run_line(&mut buffer, &line) == Flow::Exit {
                return Ok(());
            }
        }
        for statement in buffer.finish() {
            if self.run_statement(&statement) == Flow::Exit {
                break;
            }
        }
        Ok(())
    }

    fn run_interactive(&mut self) -> Result<()> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY_LINES)
            .context("history size")?
            .auto_add_history(false)
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config).context("starting the line editor")?;
        let history = history_path();
        if let Some(path) = &history {
            // A missing history file is the first run, not an error.
            let _ = editor.load_history(path);
        }
        let mut buffer = StatementBuffer::default();
        // The lines of the input being typed: once it is complete, one history entry, so that
        // the up arrow recalls a whole multi-line statement.
        let mut entry = String::new();
        loop {
            let prompt = if buffer.is_empty() { PROMPT } else { CONTINUATION_PROMPT };
            match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        if !entry.is_empty() {
                            entry.push('\n');
                        }
                        entry.push_str(&line);
                    }
                    let flow = self.run_line(&mut buffer, &line);
                    if buffer.is_empty() && !entry.is_empty() {
                        let _ = editor.add_history_entry(std::mem::take(&mut entry));
                    }
                    if flow == Flow::Exit {
                        break;
                    }
                }
                // Ctrl-C drops the statement being typed, as in cqlsh.
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                    entry.clear();
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e).context("reading a line"),
            }
        }
        if let Some(path) = &history {
            if let Err(e) = editor.save_history(path) {
                eprintln!("warning: could not save the history to {}: {e}", path.display());
            }
        }
        Ok(())
    }

    fn run_line(&mut self, buffer: &mut StatementBuffer, line: &str) -> Flow {
        let statements = match buffer.push_line(line) {
            Ok(statements) => statements,
            Err(e) => {
                self.fail(&e.to_string());
                return Flow::Continue;
            }
        };
        for statement in statements {
            if self.run_statement(&statement) == Flow::Exit {
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    /// Runs one statement: a shell command here, anything else on the server.
    fn run_statement(&mut self, text: &str) -> Flow {
        self.statements += 1;
        match parse_command(text) {
            Some(Ok(ShellCommand::Exit)) => return Flow::Exit,
            Some(Ok(command)) => {
                command::apply(&command, &mut self.settings);
                if let Some(message) = command::describe(&command, &self.settings) {
                    println!("{message}");
                }
            }
            Some(Err(e)) => self.fail(&e.to_string()),
            None => {
                if let Err(failure) = self.query(text) {
                    self.fail(&failure.message);
                    if failure.connection_lost && !self.interactive {
                        self.lost = true;
                        return Flow::Exit;
                    }
                }
            }
        }
        Flow::Continue
    }

    /// The client for the next statement. Interactive: a connection the server has closed is
    /// replaced, with a word to the user; otherwise its loss is the statement's failure.
    fn client(&mut self) -> Result<&mut wire::client::Client, Failure> {
        let host = self.connection.host().to_owned();
        if !self.connection.is_open() {
            if !self.interactive {
                return Err(lost_before(&host));
            }
            eprintln!("Connection to {host} lost; reconnecting (up to {RECONNECT_ATTEMPTS} attempts)...");
            if let Err(e) = self.connection.reconnect() {
                return Err(Failure {
                    message: format!("ConnectionError: {e}; the statement was not run (the next one tries again)"),
                    connection_lost: true,
                });
            }
            eprintln!("Reconnected to {host}.");
        }
        self.connection.client().ok_or_else(|| lost_before(&host))
    }

    fn fail(&mut self, message: &str) {
        self.failures += 1;
        eprintln!("{message}");
    }

    /// Sends `text` and prints its result, fetching page after page of a SELECT.
    fn query(&mut self, text: &str) -> Result<(), Failure> {
        // With TRACING ON the first request (the statement, or a SELECT's first page) is traced.
        let mut params = QueryParams {
            consistency: self.settings.consistency,
            page_size: Some(self.settings.fetch_size()),
            trace: self.settings.tracing,
            ..QueryParams::default()
        };
        let mut trace = None;
        let mut total = 0u64;
        let mut printed_table = false;
        let mut out = std::io::stdout().lock();
        loop {
            let answer = match self.client()?.query_with(text, params.clone()) {
                Ok(QueryResult::Traced(traced)) => {
                    trace = Some(traced.events);
                    Ok(traced.result)
                }
                other => other,
            };
            params.trace = false;
            let rows = match answer {
                Ok(QueryResult::Rows(rows)) => rows,
                // Writes and schema changes print nothing but their trace, as in cqlsh.
                Ok(
                    QueryResult::Void
                    | QueryResult::SchemaChange { .. }
                    | QueryResult::Prepared(_)
                    | QueryResult::Topology(_),
                ) => {
                    print_trace(&mut out, trace.as_deref());
                    return Ok(());
                }
                Ok(QueryResult::Traced(_)) => {
                    return Err(Failure::answer("ProtocolError: the server traced a trace".to_owned()))
                }
                Err(ClientError::Server(e)) => return Err(Failure::answer(display_error(&e))),
                Err(e) if connection::breaks_connection(&e) => {
                    self.connection.lost();
                    return Err(Failure {
                        message: format!(
                            "ConnectionError: lost the connection to {} ({e}); the statement may or may not have been applied",
                            self.connection.host()
                        ),
                        connection_lost: true,
                    });
                }
                Err(e) => return Err(Failure::answer(format!("ConnectionError: {e}"))),
            };
            let Rows { columns, rows, paging_state } = rows;
            if let Some(text) = format::describe_output(&columns, &rows) {
                // DESCRIBE prints its CQL as is, as cqlsh does.
                let _ = write!(out, "\n{text}\n");
                return Ok(());
            }
            if !rows.is_empty() || (paging_state.is_none() && !printed_table) {
                if printed_table && self.interactive && matches!(self.settings.paging, Paging::On(_)) {
                    drop(out);
                    if !wait_for_more() {
                        return Ok(());
                    }
                    out = std::io::stdout().lock();
                }
                // A closed stdout ends the output, not the shell's work: ignore write errors.
                let _ = write!(out, "\n{}", render_table(&columns, &rows));
                printed_table = true;
                total += rows.len() as u64;
            }
            match paging_state {
                Some(state) => params.paging_state = Some(state),
                None => break,
            }
        }
        let _ = writeln!(out, "\n{}\n", row_count_line(total));
        print_trace(&mut out, trace.as_deref());
        Ok(())
    }
}

/// cqlsh's tracing table after a traced statement's result.
fn print_trace(out: &mut impl Write, events: Option<&[wire::protocol::TraceEvent]>) {
    if let Some(events) = events {
        let _ = write!(
            out,
            "\nTracing (source_elapsed: microseconds since the coordinator received the request):\n\n{}\n",
            format::render_trace(events)
        );
    }
}

/// The failure of a statement not sent because the server had closed the connection.
fn lost_before(host: &str) -> Failure {
    Failure {
        message: format!("ConnectionError: the server at {host} closed the connection; the statement was not run"),
        connection_lost: true,
    }
}

/// cqlsh's pause between pages: `---MORE---`, then Enter for the next page. False when the
/// input has ended (stop fetching).
fn wait_for_more() -> bool {
    print!("---MORE---");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0)
}

/// `$HOME/.enigmadb_history`, or no history when HOME is unset.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|home| PathBuf::from(home).join(".enigmadb_history"))
}
