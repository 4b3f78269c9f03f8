//! Runs a document reader where its failure cannot reach docent: in a child process of the
//! docent binary itself (`docent __read-document pdf`), under a memory limit and a time
//! limit, so a parser's panic, abort, stack overflow, runaway allocation or endless loop
//! costs that one file. Where no docent binary runs (docent used as a library, its
//! tests), the reader runs on a thread of its own with the same time limit and panics
//! caught.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::pdf::PdfText;

/// The hidden argument that makes the docent binary a reader child.
pub const CHILD_ARG: &str = "__read-document";

/// How long one file may take to read, unless `DOCENT_DOCUMENT_TIMEOUT` (seconds) says.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

fn time_limit() -> Duration {
    std::env::var("DOCENT_DOCUMENT_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map_or(TIME_LIMIT, Duration::from_secs)
}

/// The most memory (address space) a reader child may take.
const MEMORY_LIMIT: u64 = 2 << 30;

/// The most JSON a child may hand back (its text is bounded by the document's size).
const MAX_OUTPUT: u64 = 256 * 1024 * 1024;

static DOCENT_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Called by the docent binary at start: readers run as its children from then on.
pub fn enable_children() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = DOCENT_EXE.set(exe);
    }
}

/// In the docent binary's `main`, before anything else: when this process is a reader
/// child, reads the document from stdin, writes its text as JSON to stdout, and returns
/// the exit code; otherwise `None`.
pub fn child_main() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(CHILD_ARG) {
        return None;
    }
    limit_memory();
    faults();
    let kind = args.next().unwrap_or_default();
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() || kind != "pdf" {
        return Some(ExitCode::from(2));
    }
    let result = super::pdf_read::read(&bytes);
    let json = serde_json::to_vec(&result).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&json)
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return Some(ExitCode::from(3));
    }
    Some(ExitCode::SUCCESS)
}

/// Crash-test hooks (`DOCENT_FAILPOINT`): a reader that hangs, aborts or runs out of
/// memory, each of which must cost only its file.
fn faults() {
    crate::telemetry::failpoint("read-document");
    match std::env::var("DOCENT_FAILPOINT").as_deref() {
        Ok("read-document-abort") => std::process::abort(),
        Ok("read-document-oom") => {
            let mut held = Vec::new();
            loop {
                held.push(vec![1u8; 64 << 20]);
            }
        }
        _ => {}
    }
}

fn limit_memory() {
    let limit = libc::rlimit {
        rlim_cur: MEMORY_LIMIT,
        rlim_max: MEMORY_LIMIT,
    };
    // SAFETY: setrlimit reads the struct it is given and changes only this process's limit.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
}

/// A PDF's text, read in a child when the docent binary runs, else on a thread; a failure
/// of any kind is the per-file reason.
pub fn read_pdf(bytes: &[u8]) -> Result<PdfText, String> {
    match DOCENT_EXE.get() {
        Some(exe) => in_child(exe, bytes),
        None => on_thread(bytes.to_vec()),
    }
}

fn in_child(exe: &PathBuf, bytes: &[u8]) -> Result<PdfText, String> {
    let failed = |what: &str| format!("the document could not be read ({what})");
    let mut child = Command::new(exe)
        .args([CHILD_ARG, "pdf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // The parser needs nothing of docent's environment (which may hold the store's
        // URL with its password); the crash-test hook and the time limit's only.
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "DOCENT_FAILPOINT"))
        .env("RUST_BACKTRACE", "0")
        .spawn()
        .map_err(|e| failed(&format!("no reader process: {e}")))?;
    // Fed and drained on threads of their own, so a full pipe blocks nothing.
    let mut stdin = child.stdin.take().expect("piped");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = child.stdout.take().expect("piped");
    let drainer = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.take(MAX_OUTPUT).read_to_end(&mut out).map(|_| out)
    });
    let limit = time_limit();
    let status = wait_until(&mut child, Instant::now() + limit);
    let _ = feeder.join();
    let output = drainer.join().ok().and_then(Result::ok);
    match status {
        None => Err(failed(&format!(
            "reading took longer than {} s",
            limit.as_secs()
        ))),
        Some(status) if !status.success() => Err(failed(&describe(status))),
        Some(_) => {
            let output = output.ok_or_else(|| failed("no output"))?;
            serde_json::from_slice::<Result<PdfText, String>>(&output)
                .map_err(|_| failed("unreadable output"))?
        }
    }
}

/// The child's exit status, or None when it ran past `deadline` (then it is killed).
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) | Some(libc::SIGBUS) => {
            "the reader crashed or ran out of memory".into()
        }
        Some(libc::SIGKILL) => "the reader was killed, out of memory?".into(),
        Some(signal) => format!("the reader stopped on signal {signal}"),
        // What a Rust panic exits with.
        None if status.code() == Some(101) => "its parser failed".into(),
        None => format!(
            "the reader failed with status {}",
            status.code().unwrap_or(-1)
        ),
    }
}

/// The reader on a thread of its own: panics caught, and given up on (left to finish
/// alone) past the time limit.
fn on_thread(bytes: Vec<u8>) -> Result<PdfText, String> {
    let (send, receive) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pdf-reader".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(move || {
            let read = std::panic::catch_unwind(|| super::pdf_read::read(&bytes));
            let _ = send.send(read);
        });
    if spawned.is_err() {
        return Err("the document could not be read (no reader thread)".into());
    }
    let limit = time_limit();
    match receive.recv_timeout(limit) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the document could not be read (its parser failed)".into()),
        Err(_) => Err(format!(
            "the document could not be read (reading took longer than {} s)",
            limit.as_secs()
        )),
    }
}
