//! A real network for fault tests: every server process runs in a network namespace of its own,
//! joined to the others by a veth pair on one bridge in the test's namespace (where etcd and the
//! test's clients live, on the bridge's address). Faults are real packet drops: nftables rules
//! inside a host's namespace drop what it sends to or receives from a peer (or one port of
//! it), so TCP sees what it would see on a broken link: silence, retransmissions, backoff.
//!
//! Needs root, iproute2 and nftables (`./scripts/test` installs them; CI runs as root). A test
//! calls [`Network::unavailable`] first and skips itself, saying why, when it returns a reason.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// One namespace of the network.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub netns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

/// A bridge and the namespaces on it; everything is removed on drop.
pub struct Network {
    id: u32,
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Every network of this process gets its own subnet and interface names.
static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft` inside `netns` with `script` on stdin.
fn nft(netns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {netns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// Why fault tests cannot build a network here (not root, or a tool missing), or `None`.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Some("needs root to create network namespaces".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!(
                    "`{tool}` is missing (Debian's iproute2 and nftables; ./scripts/test installs them)"
                ));
            }
        }
        None
    }

    /// A bridge with an address of its own (the gateway, where etcd and the test's clients
    /// are reached) and no hosts yet.
    pub fn new() -> anyhow::Result<Self> {
        let id = (std::process::id() % 200) * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16;
        // RFC 2544's benchmarking range (198.18.0.0/15): no real network uses it.
        let subnet = id % 500;
        let (a, b) = (18 + (subnet / 250) as u8, (subnet % 250) as u8);
        let bridge = format!("slb{id}");
        let net = Self {
            id,
            bridge: bridge.clone(),
            gateway: Ipv4Addr::new(198, a, b, 1),
            hosts: Vec::new(),
        };
        // Leftovers of an earlier run that was killed before it could clean up.
        let _ = run("ip", &["link", "del", &bridge]);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.gateway),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    /// The bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Adds a namespace with an address on the bridge and an empty nftables table whose input
    /// and output chains the faults fill.
    pub fn add_host(&mut self) -> anyhow::Result<Host> {
        let i = self.hosts.len() + 2;
        let netns = format!("sl{}h{i}", self.id);
        let (veth, peer) = (format!("slv{}h{i}", self.id), format!("slp{}h{i}", self.id));
        let o = self.gateway.octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], i as u8);
        let _ = run("ip", &["netns", "del", &netns]);
        let _ = run("ip", &["link", "del", &peer]);
        run("ip", &["netns", "add", &netns])?;
        let host = Host { netns, ip };
        self.hosts.push(host.clone());
        run(
            "ip",
            &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &veth, "netns", &host.netns])?;
        run("ip", &["link", "set", &peer, "master", &self.bridge, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", host.netns.as_str(), "ip"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        exec(&["addr", "add", &format!("{ip}/24"), "dev", &veth])?;
        exec(&["link", "set", &veth, "up"])?;
        exec(&["link", "set", "lo", "up"])?;
        nft(
            &host.netns,
            "table inet chaos {\n\
             chain input { type filter hook input priority 0; }\n\
             chain output { type filter hook output priority 0; }\n\
             }\n",
        )?;
        Ok(host)
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: &Host, b: Ipv4Addr) -> anyhow::Result<()> {
        nft(
            &a.netns,
            &format!(
                "add rule inet chaos input ip saddr {b} drop\n\
                 add rule inet chaos output ip daddr {b} drop\n"
            ),
        )
    }

    /// Drops every packet between `a` and port `port` of `b` (e.g. etcd's client port on the
    /// gateway, while the test's clients on the same address still reach `a`).
    pub fn cut_port(&self, a: &Host, b: Ipv4Addr, port: u16) -> anyhow::Result<()> {
        nft(
            &a.netns,
            &format!(
                "add rule inet chaos input ip saddr {b} tcp sport {port} drop\n\
                 add rule inet chaos output ip daddr {b} tcp dport {port} drop\n"
            ),
        )
    }

    /// Drops what `from` sends to `to`, nothing the other way.
    pub fn drop_one_way(&self, from: &Host, to: Ipv4Addr) -> anyhow::Result<()> {
        nft(
            &from.netns,
            &format!("add rule inet chaos output ip daddr {to} drop\n"),
        )
    }

    /// Cuts `a` from everything but itself.
    pub fn isolate(&self, a: &Host) -> anyhow::Result<()> {
        nft(
            &a.netns,
            "add rule inet chaos input iifname != \"lo\" drop\n\
             add rule inet chaos output oifname != \"lo\" drop\n",
        )
    }

    /// Resets `a`'s TCP connections to port `port` of `b`: for `hold` every segment `a` sends
    /// there is answered by a local RST (the connection fails as after a peer's reset), then
    /// traffic flows again. Returns how many segments were answered so.
    pub async fn reset_connections(
        &self,
        a: &Host,
        b: Ipv4Addr,
        port: u16,
        hold: std::time::Duration,
    ) -> anyhow::Result<u64> {
        nft(
            &a.netns,
            &format!(
                "add rule inet chaos output ip daddr {b} tcp dport {port} counter reject with tcp reset\n"
            ),
        )?;
        tokio::time::sleep(hold).await;
        let out = Command::new("ip")
            .args([
                "netns", "exec", &a.netns, "nft", "list", "chain", "inet", "chaos", "output",
            ])
            .output()?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let packets = listing
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        self.heal(a)?;
        Ok(packets)
    }

    /// Removes every fault of `a`.
    pub fn heal(&self, a: &Host) -> anyhow::Result<()> {
        nft(
            &a.netns,
            "flush chain inet chaos input\nflush chain inet chaos output\n",
        )
    }

    /// Removes every fault of every host.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        self.hosts.iter().try_for_each(|h| self.heal(h))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.netns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
