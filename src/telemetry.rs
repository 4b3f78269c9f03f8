//! Logging setup (tracing, quiet by default), the test failpoints, and small time helpers.

use tracing_subscriber::EnvFilter;

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings, with llama.cpp silent).
pub fn init(verbose: bool) {
    let default = if verbose {
        "info,llama-cpp-2=warn"
    } else {
        "warn,llama-cpp-2=off"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Crash-test hook: when `DOCENT_FAILPOINT` names this point, print a marker to stderr and
/// hang, so a test can `kill -9` the process at exactly this stage of an ingest.
pub fn failpoint(name: &str) {
    if std::env::var("DOCENT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
