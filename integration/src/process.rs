//! Child processes of a test cluster: spawned with their output in a log file, killed (SIGKILL)
//! on drop so a failing test leaves nothing behind.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A free loopback port (bound then released; the caller binds it again soon). Never the same
/// port twice in one test process: the kernel may hand a just-released port to the next
/// `bind(0)`, and two servers started together would then race for it (one fails with "address
/// already in use" and the cluster never becomes ready).
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().expect("poisoned");
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no unused loopback port after 100 tries",
    ))
}

/// One server process of the cluster.
pub struct ManagedProcess {
    /// Name, e.g. `node-1`; for coordinators also their `--id`.
    pub name: String,
    /// The address it serves on: 127.0.0.1, or its network namespace's address.
    pub host: String,
    /// The port it serves on.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl ManagedProcess {
    /// Starts `bin` with `args` on 127.0.0.1, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        bin: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        port: u16,
    ) -> anyhow::Result<Self> {
        Self::spawn_on(None, name, bin, args, log, port)
    }

    /// [`ManagedProcess::spawn`] inside `host`'s network namespace when one is given (through
    /// `ip netns exec`, which execs, so the child is the server itself).
    pub fn spawn_on(
        host: Option<&crate::netns::Host>,
        name: &str,
        bin: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        port: u16,
    ) -> anyhow::Result<Self> {
        let out = File::options().create(true).append(true).open(&log)?;
        let mut cmd = match host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.netns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
        Ok(Self {
            name: name.to_string(),
            host: host.map_or_else(|| "127.0.0.1".to_string(), |h| h.ip.to_string()),
            port,
            log,
            args,
            child: Some(child),
        })
    }

    /// The value that followed `flag` on its command line.
    pub fn arg_after(&self, flag: &str) -> Option<String> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .cloned()
    }

    /// `<host>:<port>`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit by itself (a graceful
    /// shutdown); SIGKILLs it when it does not. Returns the exit status, if it exited in time.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = self.signal("TERM");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with the system `kill`.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ManagedProcess {
    /// Whether the process exited by itself (crashed or stopped); a killed process counts as
    /// not running, not as exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}
