//! The docent binary: parse the command line, set up logging, dispatch, report errors.

use std::process::ExitCode;

use clap::Parser;
use docent::cli::{Cli, Command, ConfigCommand, EvalCommand};
use docent::config::{self, Config};
use docent::{bench, commands, eval, ports};

/// candle allocates a fresh buffer per tensor op; with glibc's malloc every large one is an
/// mmap/munmap pair and a storm of page faults. mimalloc keeps and reuses that memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A child reading one untrusted document (`ingest::isolate`) does only that.
    if let Some(code) = docent::ingest::isolate::child_main() {
        return code;
    }
    docent::ingest::isolate::enable_children();
    // Everything docent writes (the database, keys, eval scratch data) is its owner's
    // alone: files 0600, folders 0700.
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    docent::telemetry::init(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A database held by another process is an expected condition with its own code.
            if let Some(ports::Error::Locked(dir)) = e.downcast_ref::<ports::Error>() {
                if dir.join(docent::server::SERVE_MARKER).exists() {
                    eprintln!(
                        "error: docent serve is running on {}; use the API",
                        dir.display()
                    );
                } else {
                    eprintln!("error: {e:#}");
                }
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(ConfigCommand::Example) = cli.command {
        print!("{}", config::EXAMPLE);
        return Ok(());
    }
    let config = Config::load(&cli.global.overrides())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Ingest(args) => runtime.block_on(commands::ingest(&config, args)),
        Command::Ask(args) => commands::ask(&config, args),
        Command::Reindex(args) => runtime.block_on(commands::reindex(&config, args)),
        Command::Migrate(_) => commands::migrate(&config),
        Command::MigrateStore(args) => commands::migrate_store(&config, args),
        Command::Bots(command) => commands::bots(&config, command),
        Command::Keys(command) => commands::keys(&config, command),
        Command::Users(command) => commands::users(&config, command),
        Command::Serve(args) => {
            drop(runtime);
            commands::serve(&config, args)
        }
        Command::Bench(args) => runtime.block_on(bench::run(&config, args)),
        Command::Eval(EvalCommand::Retrieval(args)) => {
            runtime.block_on(eval::retrieval(&config, args))
        }
        Command::Eval(EvalCommand::Qa(args)) => runtime.block_on(eval::qa(&config, args)),
        Command::Eval(EvalCommand::Conflicts(args)) => {
            runtime.block_on(eval::conflicts(&config, args))
        }
        Command::Eval(EvalCommand::Questions(args)) => {
            if eval::questions(&config, args)? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the score is below --min-score"))
            }
        }
        Command::Analytics(args) => commands::analytics(&config, args),
        Command::Config(_) => unreachable!("handled above"),
    }
}
