//! A real, single-member etcd for tests: [`EtcdProcess`] starts Debian's `etcd` (package
//! `etcd-server`) on free local ports with its data in `/dev/shm`, and can kill, pause, resume
//! and restart it. Used by this crate's conformance tests and the integration harness.
//!
//! etcd runs under a small `sh` supervisor that reads commands on its stdin. When the test
//! process goes away for any reason (panic, abort, a `static` never dropped) that pipe closes and
//! the supervisor kills etcd and removes its data directory, so no etcd outlives its test.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// How long etcd gets to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts with fresh ports before giving up (another process may grab a port we picked).
const START_ATTEMPTS: usize = 3;

/// `$1` is the etcd binary, the rest its flags, `SLUICE_ETCD_DIR` its data directory. Commands on
/// stdin: `stop`/`cont` pause and resume etcd, `kill` kills it. End of stdin kills it and removes
/// the directory. The supervisor exits when etcd does, so `try_wait` tells whether it runs.
const SUPERVISOR: &str = r#"
"$@" </dev/null &
child=$!
exec 3<&0
(
  while read -r cmd; do
    case "$cmd" in
      stop) kill -STOP "$child" ;;
      cont) kill -CONT "$child" ;;
      kill) kill -KILL "$child"; exit 0 ;;
    esac
  done
  kill -KILL "$child" 2>/dev/null
  rm -rf "$SLUICE_ETCD_DIR"
) <&3 &
exec 3<&-
wait "$child"
"#;

/// A running etcd process, killed and its data removed on drop.
pub struct EtcdProcess {
    binary: PathBuf,
    dir: PathBuf,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    supervisor: Option<Supervisor>,
}

struct Supervisor {
    child: Child,
    commands: ChildStdin,
}

impl EtcdProcess {
    /// Starts etcd on 127.0.0.1 and waits until it serves requests.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts etcd listening on `ip` (a local address, e.g. a test network's bridge, so that
    /// processes in other network namespaces reach it) and waits until it serves requests.
    pub async fn start_on(ip: IpAddr) -> anyhow::Result<Self> {
        let binary = find_etcd()?;
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let (client_port, peer_port) = free_ports(ip)?;
            let mut etcd = Self {
                binary: binary.clone(),
                dir: data_dir()?,
                ip,
                client_port,
                peer_port,
                supervisor: None,
            };
            match etcd.launch().await {
                Ok(()) => return Ok(etcd),
                Err(error) => {
                    tracing::warn!(attempt, %error, "etcd failed to start, retrying on other ports");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("etcd failed to start")))
    }

    /// The client URL, `http://<ip>:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The data directory, which also holds `etcd.log`.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// etcd's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Whether etcd is running (paused counts as running).
    pub fn is_running(&mut self) -> bool {
        self.supervisor
            .as_mut()
            .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
    }

    /// Kills etcd with SIGKILL and waits for it to exit; the data directory is kept for
    /// [`restart`](Self::restart). Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            // Errors mean the supervisor is gone already, which is what we want.
            let _ = writeln!(supervisor.commands, "kill");
            drop(supervisor.commands);
            let _ = supervisor.child.wait();
        }
    }

    /// Freezes etcd with SIGSTOP: connections stay open but nothing answers, like a hung host.
    pub fn pause(&mut self) {
        self.command("stop");
    }

    /// Resumes etcd after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        self.command("cont");
    }

    /// Starts etcd again on the same ports and data (after [`kill`](Self::kill), or kills it
    /// first), and waits until it serves requests.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    fn command(&mut self, command: &str) {
        if let Some(supervisor) = self.supervisor.as_mut()
            && let Err(error) = writeln!(supervisor.commands, "{command}")
        {
            tracing::warn!(%error, command, "etcd supervisor is gone");
        }
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let peer_url = format!("http://{}:{}", self.ip, self.peer_port);
        let client_url = self.endpoint();
        let child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sluice-etcd-supervisor")
            .arg(&self.binary)
            .arg("--name=sluice-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=sluice-test={peer_url}"))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=50")
            .env("SLUICE_ETCD_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .spawn()
            .context("spawning sh to supervise etcd")?;
        let mut child = child;
        let commands = child
            .stdin
            .take()
            .context("supervisor stdin not captured")?;
        self.supervisor = Some(Supervisor { child, commands });
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::new(self.ip, self.client_port);
        loop {
            if !self.is_running() {
                bail!("etcd exited during start-up; log:\n{}", self.log_tail());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() && self.answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                bail!(
                    "etcd at {} did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.endpoint(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a linearizable read succeeds, which needs an elected leader.
    async fn answers(&self) -> bool {
        let probe = async {
            let mut client = etcd_client::Client::connect([self.endpoint()], None).await?;
            client.get("sluice-test-probe", None).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(_))
        )
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %self.dir.display(), "failed to remove etcd data");
        }
    }
}

/// `etcd` on `PATH`, else `/usr/bin/etcd`.
fn find_etcd() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file());
    let fallback = PathBuf::from("/usr/bin/etcd");
    match on_path {
        Some(path) => Ok(path),
        None if fallback.is_file() => Ok(fallback),
        None => bail!(
            "etcd not found on PATH or at /usr/bin/etcd: install Debian's `etcd-server` package \
             (apt-get install etcd-server) or run the tests through ./scripts/test"
        ),
    }
}

/// Two distinct free ports. They are released before etcd binds them, so another process may
/// take one in between; [`EtcdProcess::start`] retries when that happens.
fn free_ports(ip: IpAddr) -> anyhow::Result<(u16, u16)> {
    let client = TcpListener::bind((ip, 0)).context("picking a free port")?;
    let peer = TcpListener::bind((ip, 0)).context("picking a free port")?;
    Ok((client.local_addr()?.port(), peer.local_addr()?.port()))
}

/// A fresh directory in `/dev/shm` (memory-backed, so etcd's fsyncs cost nothing), or the
/// system temp dir where there is no `/dev/shm`.
fn data_dir() -> anyhow::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("sluice-etcd-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
