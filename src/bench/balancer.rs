//! Debian's haproxy as a throwaway load balancer on loopback (round robin, health-checked on
//! `/readyz`), for the cluster bench and the cluster test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where Debian's haproxy package puts the binary (`make deps` installs it).
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// haproxy on a loopback port in front of some docent nodes, killed when dropped.
pub struct Haproxy {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Round robin over `backends` (`host:port`), each checked on `/readyz` every 300 ms
    /// and taken out after two failures; a request whose connection is refused is sent
    /// to another node.
    pub fn start(backends: &[String]) -> anyhow::Result<Haproxy> {
        anyhow::ensure!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: `make deps` installs Debian's haproxy"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config(port, backends))?;
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let child = Command::new(HAPROXY)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("failed to start haproxy")?;
        let mut haproxy = Haproxy {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        haproxy.wait_listening(port)?;
        Ok(haproxy)
    }

    /// `http://127.0.0.1:PORT`, where the balancer listens.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn wait_listening(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("haproxy.log"))
                    .unwrap_or_default();
                anyhow::bail!("haproxy exited ({status}): {log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "haproxy did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// The configuration: one frontend on `port`, one round-robin backend of `backends`.
fn config(port: u16, backends: &[String]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, address)| format!("    server node{i} {address} check\n"))
        .collect();
    format!(
        "global\n    maxconn 1024\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n\
         \x20   timeout server 60s\n    retries 3\n    option redispatch\n\
         frontend docent\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
         backend nodes\n    balance roundrobin\n    option httpchk GET /readyz\n\
         \x20   default-server inter 300ms fall 2 rise 1\n{servers}"
    )
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
