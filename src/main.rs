//! `enigmadb`: one binary, one subcommand per tool: `server` (a node), `embedded` (the storage
//! engine of a node run in-process against a data directory), `sstable` (the inspector), `shell`
//! (the query shell), `admin` (operating a running node); the stress subcommand follows as its
//! issue lands.

mod embedded;

use clap::{Parser, Subcommand};

/// mimalloc for every subcommand: the server allocates per request (frames, tasks, rows) on
/// every shard, and glibc's malloc took 15-20% of its CPU under a write surge.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "enigmadb", version, about = "EnigmaDB: a thread-per-core, LSM-tree column-family store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the client protocol on --listen (default 127.0.0.1:9470), one shard per core.
    Server(Box<enigmadb::server::Args>),
    /// Run a node's storage engine in this process against a data directory.
    Embedded(embedded::Args),
    /// Inspect an SSTable file: dump its rows, print its metadata, or check it.
    Sstable(enigmadb::sstable_tool::Args),
    /// An interactive query shell (cqlsh-like); -e or -f run statements and exit.
    Shell(enigmadb::shell::Args),
    /// Load generator (cassandra-stress style): write, read, mixed and surge runs against EnigmaDB
    /// or Redis, with live progress and a JSON report; `compare` puts reports side by side.
    Stress(enigmadb::stress::Args),
    /// Operate a running node (nodetool-like): status, info, tablestats, flush, compact, drain.
    Admin(enigmadb::admin::Args),
}

fn main() {
    let cli = Cli::parse();
    // The command-line tools die quietly on a closed stdout (`enigmadb ... | head`), as such
    // tools do, instead of panicking in println!. Never the server: a peer or client that
    // goes away mid-write would then kill the whole node with SIGPIPE instead of failing
    // that one socket write with EPIPE.
    if !matches!(cli.command, Command::Server(_)) {
        // SAFETY: no thread has been started yet (clap parsing is single-threaded).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The server installs its logger from its settings (--log-format, --log-level); the other
    // tools log warnings and errors as text unless ENIGMADB_LOG says otherwise.
    if !matches!(cli.command, Command::Server(_)) {
        let level = enigmadb::logging::level_from_env("warn");
        if let Err(e) = enigmadb::logging::init(enigmadb::logging::LogFormat::Text, &level) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
    let result = match cli.command {
        Command::Server(args) => enigmadb::server::run(*args),
        Command::Embedded(args) => embedded::run(args),
        Command::Sstable(args) => enigmadb::sstable_tool::run(args),
        Command::Shell(args) => enigmadb::shell::run(args),
        Command::Stress(args) => enigmadb::stress::run(args),
        Command::Admin(args) => enigmadb::admin::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
