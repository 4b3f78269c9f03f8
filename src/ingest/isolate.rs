//! Runs a document reader where its failure cannot reach docent: in a child process of the
//! docent binary itself (`docent __read-document pdf`), under a memory limit and a time
//! limit, so a parser's panic, abort, stack overflow, runaway allocation or endless loop
//! costs that one file. Where no docent binary runs (docent used as a library, its
//! tests), the reader runs on a thread of its own with the same time limit and panics
//! caught.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::documents::Unread;
use super::pdf::PdfText;

/// The hidden argument that makes the docent binary a reader child.
pub const CHILD_ARG: &str = "__read-document";

/// How long one file may take to read, unless `DOCENT_DOCUMENT_TIMEOUT` (seconds) says.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

const TIMEOUT_VAR: &str = "DOCENT_DOCUMENT_TIMEOUT";
/// The docent process a child reads for (it stops if another process adopted it).
const PARENT_VAR: &str = "DOCENT_READER_PARENT";

/// The most memory (address space) a reader child may take.
const MEMORY_LIMIT: u64 = 2 << 30;

/// The most JSON a child may hand back: the text cap (`pdf_read::MAX_TEXT_BYTES`) with
/// room for JSON's escapes.
const MAX_OUTPUT: u64 = 96 * 1024 * 1024;

/// The reader's stack: deep nesting in a file recurses deep in a parser.
const READER_STACK: usize = 64 * 1024 * 1024;

static DOCENT_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Called by the docent binary at start: readers run as its children from then on (the
/// running binary itself, even if its file is replaced meanwhile).
pub fn enable_children() {
    let exe = Path::new("/proc/self/exe");
    let exe = if exe.exists() {
        Some(exe.to_path_buf())
    } else {
        std::env::current_exe().ok()
    };
    if let Some(exe) = exe {
        let _ = DOCENT_EXE.set(exe);
    }
}

fn time_limit() -> Duration {
    std::env::var(TIMEOUT_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map_or(TIME_LIMIT, Duration::from_secs)
}

/// In the docent binary's `main`, before anything else: when this process is a reader
/// child, reads the document from stdin, writes its text as JSON to stdout, and returns
/// the exit code; otherwise `None`.
pub fn child_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(CHILD_ARG)) {
        return None;
    }
    confine();
    faults();
    let kind = args.next();
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err()
        || kind.as_deref() != Some(OsStr::new("pdf"))
    {
        return Some(ExitCode::from(2));
    }
    let read = std::thread::Builder::new()
        .stack_size(READER_STACK)
        .spawn(move || super::pdf_read::read(&bytes));
    let Ok(read) = read else {
        return Some(ExitCode::from(2));
    };
    let read = read.join();
    let Ok(result) = read else {
        return Some(ExitCode::from(101));
    };
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

/// The child's limits: its address space and CPU time, no core dump (a crash would write
/// up to 2 GiB), and death with its parent (no reader outlives docent).
fn confine() {
    let cpu_seconds = time_limit().as_secs() + 5;
    let set = |resource, limit: u64| {
        let limit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct it is given and changes only this process.
        unsafe { libc::setrlimit(resource, &limit) };
    };
    set(libc::RLIMIT_AS, MEMORY_LIMIT);
    set(libc::RLIMIT_CPU, cpu_seconds);
    set(libc::RLIMIT_CORE, 0);
    // SAFETY: prctl with these options takes plain integers and affects only this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    // The parent may have died before the request took effect (then another process
    // adopted this one).
    let parent = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    // SAFETY: getppid cannot fail.
    if parent.is_some_and(|p| p != unsafe { libc::getppid() }) {
        std::process::exit(4);
    }
}

/// Crash-test hooks (`DOCENT_FAILPOINT`): a reader that hangs, aborts or runs out of
/// memory, each of which must cost only its file.
fn faults() {
    crate::telemetry::failpoint("read-document");
    match std::env::var("DOCENT_FAILPOINT").as_deref() {
        Ok("read-document-abort") => std::process::abort(),
        Ok("read-document-oom") => {
            // Address space, untouched: the limit refuses it without using the memory.
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(vec![0u8; 64 << 20]);
                std::hint::black_box(&held);
            }
        }
        _ => {}
    }
}

/// A PDF's text, read in a child when the docent binary runs, else on a thread; a failure
/// of any kind is the per-file reason.
pub fn read_pdf(bytes: &[u8]) -> Result<PdfText, Unread> {
    match DOCENT_EXE.get() {
        Some(exe) => in_child(exe, bytes),
        None => on_thread(bytes.to_vec()),
    }
}

fn failed(what: &str, transient: bool) -> Unread {
    Unread {
        reason: format!("the document could not be read ({what})"),
        transient,
    }
}

fn in_child(exe: &Path, bytes: &[u8]) -> Result<PdfText, Unread> {
    let mut command = Command::new(exe);
    command
        .args([CHILD_ARG, "pdf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // The parser needs nothing of docent's environment (which may hold the store's
        // URL with its password): only its time limit and the crash-test hook.
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .env(PARENT_VAR, std::process::id().to_string());
    for name in [TIMEOUT_VAR, "DOCENT_FAILPOINT"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(&format!("no reader process: {e}"), true))?;
    let limit = time_limit();
    let (status, output) = std::thread::scope(|scope| {
        // Fed and drained on threads of their own, so a full pipe blocks nothing.
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let feeder = std::thread::Builder::new().spawn_scoped(scope, move || {
            let _ = stdin.map(|mut pipe| pipe.write_all(bytes));
        });
        let drainer = std::thread::Builder::new().spawn_scoped(scope, move || {
            let mut pipe = stdout?;
            let mut out = Vec::new();
            (&mut pipe)
                .take(MAX_OUTPUT + 1)
                .read_to_end(&mut out)
                .ok()?;
            // Past the cap the rest is drained unread, so the child ends (rather than
            // failing on a closed pipe or blocking on a full one).
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            Some(out)
        });
        if feeder.is_err() || drainer.is_err() {
            let _ = wait_until(&mut child, Instant::now());
            return (Err(failed("no reader thread", true)), None);
        }
        let status = wait_until(&mut child, Instant::now() + limit);
        let output = drainer.ok().and_then(|d| d.join().ok()).flatten();
        (Ok(status), output)
    });
    let status = status?;
    if output.as_ref().is_some_and(|o| o.len() as u64 > MAX_OUTPUT) {
        return Err(failed("too much text", false));
    }
    match status {
        None => Err(failed(
            &format!("reading took longer than {} s", limit.as_secs()),
            true,
        )),
        Some(status) if !status.success() => Err(describe(status)),
        Some(_) => {
            let output = output.ok_or_else(|| failed("no output", true))?;
            serde_json::from_slice::<Result<PdfText, String>>(&output)
                .map_err(|_| failed("unreadable output", false))?
                .map_err(|reason| Unread {
                    reason,
                    transient: false,
                })
        }
    }
}

/// The child's exit status, or None when it ran past `deadline` (then it is killed).
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
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

/// Why a child failed; killed from outside (the system's OOM killer, a CPU limit) may
/// pass on another try, a crash on this file will not.
fn describe(status: ExitStatus) -> Unread {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) | Some(libc::SIGBUS) => {
            failed("the reader crashed or ran out of memory", false)
        }
        Some(libc::SIGKILL) | Some(libc::SIGXCPU) => {
            failed("the reader was stopped, out of memory or time", true)
        }
        Some(signal) => failed(&format!("the reader stopped on signal {signal}"), false),
        // What a Rust panic exits with.
        None if status.code() == Some(101) => failed("its parser failed", false),
        None => failed(
            &format!(
                "the reader failed with status {}",
                status.code().unwrap_or(-1)
            ),
            true,
        ),
    }
}

/// The reader on a thread of its own: panics caught, and given up on (left to finish
/// alone) past the time limit.
fn on_thread(bytes: Vec<u8>) -> Result<PdfText, Unread> {
    let (send, receive) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pdf-reader".into())
        .stack_size(READER_STACK)
        .spawn(move || {
            let read = std::panic::catch_unwind(|| super::pdf_read::read(&bytes));
            let _ = send.send(read);
        });
    if spawned.is_err() {
        return Err(failed("no reader thread", true));
    }
    let limit = time_limit();
    match receive.recv_timeout(limit) {
        Ok(Ok(result)) => result.map_err(|reason| Unread {
            reason,
            transient: false,
        }),
        Ok(Err(_)) => Err(failed("its parser failed", false)),
        Err(_) => Err(failed(
            &format!("reading took longer than {} s", limit.as_secs()),
            true,
        )),
    }
}
