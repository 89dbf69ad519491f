//! `enigmadb`: one binary, one subcommand per tool. Today: `embedded`, the storage engine of a
//! node run in-process against a data directory (the server, shell, admin, sstable and stress
//! subcommands follow as their issues land).

mod embedded;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "enigmadb", version, about = "EnigmaDB: a thread-per-core, LSM-tree column-family store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node's storage engine in this process against a data directory.
    Embedded(embedded::Args),
    /// Inspect an SSTable file: dump its rows, print its metadata, or check it.
    Sstable(enigmadb::sstable_tool::Args),
}

fn main() {
    // Die quietly on a closed stdout (`enigmadb ... | head`), as command-line tools do, instead
    // of panicking in println!.
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENIGMADB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embedded(args) => embedded::run(args),
        Command::Sstable(args) => enigmadb::sstable_tool::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
