//! llama.cpp's own `llama-bench` as the reference for in-process generation: the same GGUF,
//! threads and prompt length as `docent bench --only generate`, its prompt and generation
//! speeds read from its JSON output.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::round1;

/// Where `make bench` builds it (from the same pinned llama.cpp source as llama-server).
const DEFAULT: &str = "target/llama-server/bin/llama-bench";

/// `--llama-bench`, else the one `make bench` builds, found from the working directory or
/// the repository of the binary (`target/release/docent` or `target/portable/release/docent`);
/// `None` when there is none.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(given) = given {
        return Some(given.to_path_buf());
    }
    let relative = Path::new(DEFAULT);
    if relative.is_file() {
        return Some(relative.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(4)
        .map(|dir| dir.join(relative))
        .find(|path| path.is_file())
}

/// What docent's generation bench measures, measured by llama-bench: reading a prompt of
/// `prompt_tokens` into an empty context, and generating `gen_tokens` after a context of
/// that length; the best of `reps` runs of each, as docent's bench keeps its best run.
pub fn measure(
    bin: &Path,
    model: &Path,
    threads: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    reps: usize,
) -> anyhow::Result<Value> {
    let (prompt, generated) = (prompt_tokens.to_string(), gen_tokens.max(1).to_string());
    let reading = best_rate(bin, model, threads, reps, &["-p", &prompt, "-n", "0"])?;
    let generating = best_rate(
        bin,
        model,
        threads,
        reps,
        &["-p", "0", "-n", &generated, "-d", &prompt],
    )?;
    Ok(json!({
        "binary": bin.display().to_string(),
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "generation_tokens": gen_tokens,
        "prompt_tok_s": round1(reading),
        "generation_tok_s": round1(generating),
    }))
}

/// Runs one llama-bench test and returns its fastest repetition's tokens per second.
fn best_rate(
    bin: &Path,
    model: &Path,
    threads: usize,
    reps: usize,
    test: &[&str],
) -> anyhow::Result<f64> {
    let out = std::process::Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-r", &reps.max(1).to_string()])
        .args(["-o", "json"])
        .args(test)
        .output()
        .with_context(|| format!("failed to run {}", bin.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!("{} failed: {}", bin.display(), tail.join(" / "));
    }
    fastest(&out.stdout)
}

/// The fastest sample (`samples_ts`) of llama-bench's first result, else its average.
fn fastest(json: &[u8]) -> anyhow::Result<f64> {
    let rows: Vec<Value> = serde_json::from_slice(json).context("llama-bench's JSON output")?;
    let row = rows.first().context("llama-bench reported no test")?;
    let samples = row["samples_ts"].as_array().into_iter().flatten();
    samples
        .filter_map(Value::as_f64)
        .reduce(f64::max)
        .or_else(|| row["avg_ts"].as_f64())
        .filter(|rate| *rate > 0.0)
        .context("llama-bench reported no tokens per second")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_sample_is_taken_and_bad_output_is_an_error() {
        let out = br#"[{"n_prompt": 771, "n_gen": 0, "avg_ts": 100.5, "samples_ts": [98.0, 103.0, 100.5]}]"#;
        assert_eq!(fastest(out).unwrap(), 103.0);
        let average_only = br#"[{"avg_ts": 35.7}]"#;
        assert_eq!(fastest(average_only).unwrap(), 35.7);
        assert!(fastest(b"[]").is_err());
        assert!(fastest(b"not json").is_err());
        assert!(fastest(br#"[{"avg_ts": 0}]"#).is_err());
    }
}
