//! Logging setup (tracing, quiet by default), the test failpoints, and small time helpers.

use std::time::Duration;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings, with llama.cpp silent;
/// the PostgreSQL client's statement logs never).
pub fn init(verbose: bool) {
    let default = if verbose {
        "info,llama-cpp-2=warn"
    } else {
        "warn,llama-cpp-2=off"
    };
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // The PostgreSQL client logs each statement with its parameters (visitors' messages,
    // key hashes) at debug level: never, whatever RUST_LOG asks.
    let no_statements = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter)
        .with_filter(no_statements);
    let _ = tracing_subscriber::registry().with(layer).try_init();
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

/// Runs `work` on a named thread of its own with a two-thread tokio runtime (the
/// background workers: crawls, webhook deliveries). Logs and returns if the runtime
/// cannot start.
pub fn spawn_worker<F>(
    name: &str,
    work: impl FnOnce(&tokio::runtime::Runtime) -> F + Send + 'static,
) where
    F: Send,
{
    let label = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    work(&runtime);
                }
                Err(e) => tracing::error!("{label} cannot start: {e}"),
            }
        })
        .expect("spawn a worker thread");
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `text` with email addresses and phone numbers replaced by `[email]` and `[phone]`, for
/// the few log lines that may carry what a visitor typed (debug level only).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_matches(|c: char| !c.is_alphanumeric());
        let is_email = core.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
        if is_email {
            out.push_str(&word.replace(core, "[email]"));
        } else {
            out.push_str(word);
        }
    }
    redact_phones(&out)
}

/// Runs of digits, spaces, dashes, dots, parentheses and a leading `+` holding 7 to 15
/// digits are phone numbers.
fn redact_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
            || (chars[i] == '(' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()));
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        let mut digits = 0;
        while end < chars.len() && (chars[end].is_ascii_digit() || " -.()+".contains(chars[end])) {
            digits += chars[end].is_ascii_digit() as usize;
            end += 1;
        }
        // Do not swallow the separator after the number.
        while end > i && !chars[end - 1].is_ascii_digit() && chars[end - 1] != ')' {
            end -= 1;
        }
        if (7..=15).contains(&digits) {
            out.push_str("[phone]");
        } else {
            out.extend(&chars[i..end]);
        }
        i = end.max(i + 1);
    }
    out
}

/// `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}: use e.g. 90s, 30m, 24h, 7d"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("invalid duration {text:?}: use e.g. 90s, 30m, 24h, 7d"),
    };
    let seconds = n
        .checked_mul(unit)
        .with_context(|| format!("duration {text:?} is too long"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn emails_and_phone_numbers_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact("Mail me at jane.doe@example.com, or call +1 (555) 123-4567 today."),
            "Mail me at [email], or call [phone] today."
        );
        assert_eq!(
            redact("Order 12345 shipped in 3 days"),
            "Order 12345 shipped in 3 days"
        );
        assert_eq!(redact("ring 020 7946 0958"), "ring [phone]");
        assert_eq!(redact("no @ here and a@b"), "no @ here and a@b");
    }
}
