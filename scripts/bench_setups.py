#!/usr/bin/env python3
"""The set-ups scripts/bench.py measures (Sluice, NATS JetStream, Redis Streams on loopback) and
the server-process handling they share: start fresh, wait until ready, stop with a grace period,
never outlive the driver. scripts/idle_cost.py uses the `sluice-rf3` set-up too."""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request


RECORD_SIZE, KEY_SIZE, PARTITIONS = 1024, 16, 8

HOST = "127.0.0.1"
SLUICE_COORD_PORT = 19092
SLUICE_NODE_PORTS = [19093, 19103, 19113]
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 22379, 22380
NATS_CLIENT_PORTS = [4222, 4223, 4224]
NATS_ROUTE_PORTS = [6222, 6223, 6224]
NATS_MONITOR_PORTS = [8222, 8223, 8224]
REDIS_PORT = 16379

START_TIMEOUT = 60.0  # seconds a set-up may take to become ready
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


class BenchError(Exception):
    """A set-up or a run that could not complete; the message says what and where its log is."""


# ---------------------------------------------------------------------------------------------
# Processes: every server is registered, so that any exit (error, Ctrl-C, SIGTERM) stops it.

LIVE = []  # every Server still running


try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it if this driver dies without cleaning up."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def clean_env():
    """The environment without SLUICE_* variables: every setting is passed as a flag instead."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}


class Server:
    """One server process with its log file."""

    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        with open(log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=clean_env(), start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                raise BenchError(f"cannot start {name} ({argv[0]}): {e}") from e
        LIVE.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_GRACE seconds."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in LIVE:
            LIVE.remove(self)


def stop_all():
    for server in reversed(list(LIVE)):
        server.stop()


def wait_until(what, ready, servers, timeout=START_TIMEOUT):
    """Polls `ready()` until it is true; fails at once when one of `servers` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for s in servers:
            if not s.running():
                raise BenchError(f"{s.name} exited while waiting for {what}; {s.log_path}:\n"
                                 f"{s.log_tail()}")
        try:
            if ready():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready after {timeout:.0f} s; logs in "
                             f"{os.path.dirname(servers[0].log_path)}")
        time.sleep(0.1)


def port_busy(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def require_free(ports):
    busy = [p for p in ports if port_busy(p)]
    if busy:
        raise BenchError(f"ports {busy} on {HOST} are in use: stop what listens there first")


def http_json(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.load(r)


def rss_mb(pid, field):
    """VmRSS (current) or VmHWM (peak) of a process in MB (10^6 bytes), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Set-ups. Each knows how to start fresh in a run directory, which processes hold the data (for
# RSS), and the command line of one workload against it.

class Setup:
    name = ""
    system = ""
    ports = []

    def __init__(self, bins, run_dir):
        self.bins, self.run_dir = bins, run_dir
        self.servers = []  # every process of the set-up, in start order
        self.data_servers = []  # the ones whose memory is reported

    def spawn(self, name, argv):
        server = Server(name, argv, os.path.join(self.run_dir, name + ".log"))
        self.servers.append(server)
        return server

    def start(self):
        raise NotImplementedError

    def stop(self):
        for server in reversed(self.servers):
            server.stop()

    def bench_argv(self, workload, topic, count, rate, duration, fresh):
        raise NotImplementedError


class SluiceSetup(Setup):
    system = "sluice"
    bench_flags = ["--acks", "1"]
    node_count = 1

    def sluice(self, *args):
        return [os.path.join(self.bins, "sluice"), "--bootstrap", f"{HOST}:{SLUICE_COORD_PORT}",
                *args]

    def wait_ready(self):
        """Ready once `cluster status` shows a controller and every storage node."""
        addresses = [f"{HOST}:{p}" for p in SLUICE_NODE_PORTS[:self.node_count]]

        def ready():
            out = subprocess.run(self.sluice("cluster", "status"), capture_output=True,
                                 text=True, timeout=10, env=clean_env())
            return (out.returncode == 0 and "controller none" not in out.stdout
                    and all(a in out.stdout for a in addresses))

        wait_until(f"{self.name} cluster", ready, self.servers)

    def bench_argv(self, workload, topic, count, rate, duration, fresh):
        argv = self.sluice("bench", workload, "--topic", topic, "--count", str(count),
                           "--record-size", str(RECORD_SIZE), "--key-size", str(KEY_SIZE),
                           "--partitions", str(PARTITIONS), *self.bench_flags, "--json")
        if workload == "e2e":
            argv += ["--rate", str(rate), "--duration", str(duration)]
        return argv


class SluiceDev(SluiceSetup):
    """`sluice dev`: coordinator and storage node in one process on the embedded store."""
    name = "sluice-rf1"
    ports = [SLUICE_COORD_PORT, SLUICE_NODE_PORTS[0]]
    fsync = False

    def start(self):
        argv = [os.path.join(self.bins, "sluice"), "dev",
                "--data-dir", os.path.join(self.run_dir, "data"),
                "--coordinator", f"{HOST}:{SLUICE_COORD_PORT}",
                "--node", f"{HOST}:{SLUICE_NODE_PORTS[0]}"]
        if self.fsync:
            argv.append("--fsync")
        self.data_servers = [self.spawn("sluice-dev", argv)]
        self.wait_ready()


class SluiceFsync(SluiceDev):
    name = "sluice-fsync"
    fsync = True


class SluiceRetention(SluiceDev):
    """`sluice dev` with retention deleting segments throughout W1: 16 MiB segments, 64 MiB kept
    per partition (W1 writes ~128 MiB to each of its 8), checked every 200 ms. Produce only: W2
    reads from offset 0, which retention deleted."""
    name = "sluice-rf1-retention"
    bench_flags = ["--acks", "1",
                   "--topic-config", "retention.bytes=67108864",
                   "--topic-config", "segment.bytes=16777216"]

    def start(self):
        argv = [os.path.join(self.bins, "sluice"), "dev",
                "--data-dir", os.path.join(self.run_dir, "data"),
                "--coordinator", f"{HOST}:{SLUICE_COORD_PORT}",
                "--node", f"{HOST}:{SLUICE_NODE_PORTS[0]}",
                "--retention-check-interval-ms", "200"]
        self.data_servers = [self.spawn("sluice-dev", argv)]
        self.wait_ready()


class SluiceRf3(SluiceSetup):
    """etcd (on /dev/shm) + one coordinator + three storage nodes (data on the real disk)."""
    name = "sluice-rf3"
    ports = [ETCD_CLIENT_PORT, ETCD_PEER_PORT, SLUICE_COORD_PORT, *SLUICE_NODE_PORTS]
    bench_flags = ["--acks", "all", "--replication-factor", "3", "--min-insync-replicas", "2"]
    node_count = 3

    def start(self):
        etcd_url = self.start_etcd()
        self.spawn("coordinator", [
            os.path.join(self.bins, "sluice-coordinator"), "--id", "coordinator-0",
            "--listen", f"{HOST}:{SLUICE_COORD_PORT}", "--etcd", etcd_url])
        for n, port in enumerate(SLUICE_NODE_PORTS):
            self.data_servers.append(self.spawn(f"node-{n}", [
                os.path.join(self.bins, "sluice-storage-node"), "--node-id", str(n),
                "--data-dir", os.path.join(self.run_dir, f"node-{n}"),
                "--listen", f"{HOST}:{port}", "--etcd", etcd_url,
                # Three nodes share the machine's cores: one async worker each (see the flag).
                "--worker-threads", "1"]))
        self.wait_ready()

    def start_etcd(self):
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.etcd_dir = tempfile.mkdtemp(prefix="sluice-bench-etcd-", dir=shm)
        client = f"http://{HOST}:{ETCD_CLIENT_PORT}"
        peer = f"http://{HOST}:{ETCD_PEER_PORT}"
        etcd = self.spawn("etcd", [
            "etcd", "--name", "bench", "--data-dir", os.path.join(self.etcd_dir, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"bench={peer}",
            "--heartbeat-interval=10", "--election-timeout=50"])
        wait_until("etcd", lambda: http_json(client + "/health").get("health") == "true", [etcd])
        return client

    def stop(self):
        super().stop()
        shutil.rmtree(getattr(self, "etcd_dir", ""), ignore_errors=True)


class PeerSetup(Setup):
    """A system driven by `sluice-peer-bench`."""
    url = ""
    replicas = None

    def bench_argv(self, workload, topic, count, rate, duration, fresh):
        argv = [os.path.join(self.bins, "sluice-peer-bench"), self.system, workload,
                "--url", self.url, "--topic", topic, "--count", str(count),
                "--record-size", str(RECORD_SIZE), "--key-size", str(KEY_SIZE),
                "--partitions", str(PARTITIONS), "--json"]
        if self.replicas is not None:
            argv += ["--replicas", str(self.replicas)]
        if workload == "e2e":
            argv += ["--rate", str(rate), "--duration", str(duration)]
        if fresh:
            argv.append("--fresh")
        return argv


class NatsR1(PeerSetup):
    name, system = "nats-r1", "nats"
    ports = [NATS_CLIENT_PORTS[0], NATS_MONITOR_PORTS[0]]
    url = f"nats://{HOST}:{NATS_CLIENT_PORTS[0]}"
    replicas = 1

    def start(self):
        server = self.spawn("nats", [
            "nats-server", "-js", "-a", HOST, "-p", str(NATS_CLIENT_PORTS[0]),
            "-m", str(NATS_MONITOR_PORTS[0]), "-sd", os.path.join(self.run_dir, "jetstream")])
        self.data_servers = [server]
        wait_until("nats-server JetStream", lambda: nats_js_ready(NATS_MONITOR_PORTS[0]),
                   self.servers)


class NatsR3(PeerSetup):
    name, system = "nats-r3", "nats"
    ports = NATS_CLIENT_PORTS + NATS_ROUTE_PORTS + NATS_MONITOR_PORTS
    url = f"nats://{HOST}:{NATS_CLIENT_PORTS[0]}"
    replicas = 3

    def start(self):
        for i in range(3):
            conf = os.path.join(self.run_dir, f"n{i + 1}.conf")
            with open(conf, "w") as f:
                f.write(nats_cluster_config(i, self.run_dir))
            self.data_servers.append(self.spawn(f"n{i + 1}", ["nats-server", "-c", conf]))
        wait_until("nats JetStream meta leader",
                   lambda: nats_cluster_ready(NATS_MONITOR_PORTS), self.servers)


def nats_cluster_config(i, run_dir):
    routes = ", ".join(f"nats-route://{HOST}:{p}" for p in NATS_ROUTE_PORTS)
    store = os.path.join(run_dir, f"n{i + 1}-jetstream")
    return f"""server_name: n{i + 1}
listen: {HOST}:{NATS_CLIENT_PORTS[i]}
http: {HOST}:{NATS_MONITOR_PORTS[i]}
jetstream {{
  store_dir: "{store}"
}}
cluster {{
  name: sluice-bench
  listen: {HOST}:{NATS_ROUTE_PORTS[i]}
  routes: [{routes}]
}}
"""


def nats_js_ready(monitor_port):
    """JetStream is enabled and answers on this server."""
    jsz = http_json(f"http://{HOST}:{monitor_port}/jsz")
    return not jsz.get("disabled") and "config" in jsz


def nats_cluster_ready(monitor_ports):
    """Every server agrees on one JetStream meta leader, which sees every other peer current
    (only the leader lists the replicas)."""
    metas = [http_json(f"http://{HOST}:{p}/jsz").get("meta_cluster") or {} for p in monitor_ports]
    leaders = {m.get("leader") for m in metas}
    if len(leaders) != 1 or not leaders.pop():
        return False
    replicas = [r for m in metas for r in m.get("replicas") or []]
    return len(replicas) == len(monitor_ports) - 1 and all(r.get("current") for r in replicas)


class Redis(PeerSetup):
    name, system = "redis", "redis"
    ports = [REDIS_PORT]
    url = f"redis://{HOST}:{REDIS_PORT}"

    def start(self):
        server = self.spawn("redis", [
            "redis-server", "--bind", HOST, "--port", str(REDIS_PORT), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--dir", self.run_dir])
        self.data_servers = [server]
        wait_until("redis", redis_ping, self.servers)


def redis_ping():
    with socket.create_connection((HOST, REDIS_PORT), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


SETUPS = {cls.name: cls for cls in [SluiceDev, SluiceRf3, SluiceFsync, SluiceRetention, NatsR1,
                                    NatsR3, Redis]}
