//! The docent binary: parse the command line, set up logging, dispatch, report errors.

use std::process::ExitCode;

use clap::Parser;
use docent::cli::{Cli, Command, ConfigCommand};
use docent::config::{self, Config};
use docent::{bench, commands, store};

/// candle allocates a fresh buffer per tensor op; with glibc's malloc every large one is an
/// mmap/munmap pair and a storm of page faults. mimalloc keeps and reuses that memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    docent::telemetry::init(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A database held by another process is an expected condition with its own code.
            let locked = e
                .downcast_ref::<store::Error>()
                .is_some_and(|e| matches!(e, store::Error::Locked(_)));
            ExitCode::from(if locked { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(ConfigCommand::Example) = cli.command {
        print!("{}", config::EXAMPLE);
        return Ok(());
    }
    let config = Config::load(&cli.global)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Ingest(args) => runtime.block_on(commands::ingest(&config, args)),
        Command::Ask(args) => commands::ask(&config, args),
        Command::Bots(command) => commands::bots(&config, command),
        Command::Bench(args) => runtime.block_on(bench::run(&config, args)),
        Command::Config(_) => unreachable!("handled above"),
    }
}
