#!/usr/bin/env python3
"""Side-by-side benchmark of Sluice, NATS JetStream and Redis Streams on loopback.

What it measures (1 KiB incompressible values, 16-byte keys, 8 partitions / streams / keys):
  W1 produce  --count records as fast as acknowledgements allow        (MB/s, records/s)
  W2 consume  every record W1 of the same round wrote, from offset 0   (MB/s, records/s)
  W3 e2e      --rate records/s for --duration s while a consumer tails  (latency p50/p99/p99.9/max)
against six set-ups, each started fresh (new data dir) for every round and torn down after it:
  sluice-rf1    `sluice dev`, one node on the embedded metadata store, acks=1
  sluice-rf3    etcd + 1 coordinator + 3 storage nodes, acks=all, RF 3, min.insync.replicas=2
  sluice-fsync  `sluice dev --fsync`, acks=1
  nats-r1       `nats-server -js`, file storage, 1 replica
  nats-r3       3-node nats-server cluster with JetStream, 3 replicas
  redis         `redis-server`, AOF with appendfsync everysec
and, on request only (produce only):
  sluice-rf1-retention  sluice-rf1 with retention deleting segments throughout W1
Before each workload the script runs sync(2), so no workload pays for the previous one's
writeback (W1 leaves gigabytes dirty that the kernel would otherwise write during W3).
Rounds are interleaved (round 1 of every set-up, then round 2, ...) so drift of the machine hits
every set-up alike; the table shows the median of the rounds. W2 usually reads from the page cache
(nothing drops it between W1 and W2), as a consumer close behind the producers would.
Baselines measured in the same run: sequential write with fdatasync and the 4 KiB fsync rate of the
disk holding the data dirs, loopback TCP throughput (one Python connection), and the servers' RSS
(idle after start, peak = VmHWM after W1).

Rerun:  scripts/bench                       (builds release binaries, full run, ~15 min)
        scripts/bench --quick --no-build    (smoke test: 50,000 records, 3 s, one round)
        scripts/bench --setups sluice-rf1,nats-r1 --workloads produce,consume --repeats 5
Results: a table on stdout, every raw report plus the medians in bench-results/<timestamp>.json.
Everything listens on 127.0.0.1; Sluice uses ports 19092+ so a running `sluice dev` can stay up.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench_setups import (  # the set-ups and the server-process handling
    KEY_SIZE,
    PARTITIONS,
    RECORD_SIZE,
    BenchError,
    HOST,
    Redis,
    SETUPS,
    _die_with_parent,
    clean_env,
    require_free,
    rss_mb,
    stop_all,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_SETUPS = ["sluice-rf1", "sluice-rf3", "sluice-fsync", "nats-r1", "nats-r3", "redis"]
# Set-ups run only when named.
EXTRA_SETUPS = ["sluice-rf1-retention"]
ALL_WORKLOADS = ["produce", "consume", "e2e"]



# ---------------------------------------------------------------------------------------------
# Baselines: what the hardware gives before any server is involved.

def disk_write_mb_per_sec(dirpath, mib):
    """`dd` of `mib` MiB of zeros, fdatasync'ed before dd returns; MB = 10^6 bytes."""
    path = os.path.join(dirpath, "dd.bin")
    try:
        t0 = time.monotonic()
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
                        "conv=fdatasync", "status=none"], check=True, timeout=600)
        return mib * 1024 * 1024 / (time.monotonic() - t0) / 1e6
    finally:
        if os.path.exists(path):
            os.remove(path)


def fsync_rate(dirpath, seconds=2.0):
    """Appends of 4 KiB, each followed by fsync, for `seconds`: operations/s and mean ms."""
    path = os.path.join(dirpath, "fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block, ops = os.urandom(4096), 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            os.write(fd, block)
            os.fsync(fd)
            ops += 1
        elapsed = time.monotonic() - t0
    finally:
        os.close(fd)
        os.remove(path)
    return {"ops_per_sec": ops / elapsed, "mean_ms": elapsed / ops * 1000}


TCP_SENDER = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf, end = b"\\0" * (1 << 20), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(buf)
s.close()
"""


def loopback_tcp_mb_per_sec(seconds=2.0):
    """One TCP connection on 127.0.0.1, a separate sender process, 1 MiB writes and reads."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        sender = subprocess.Popen([sys.executable, "-c", TCP_SENDER,
                                   str(listener.getsockname()[1]), str(seconds)])
        try:
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn:
                buf, total, t0 = bytearray(1 << 20), 0, None
                while True:
                    n = conn.recv_into(buf)
                    if n == 0:
                        break
                    if t0 is None:
                        t0 = time.monotonic()
                    total += n
                elapsed = time.monotonic() - t0
        finally:
            sender.kill()
            sender.wait()
    return total / elapsed / 1e6


def measure_baselines(disk_dir, quick):
    print("baselines: disk write, fsync rate, loopback TCP ...", flush=True)
    return {
        "disk_dir": disk_dir,
        "disk_fs": filesystem_of(disk_dir),
        "disk_seq_write_fdatasync_mb_per_sec": disk_write_mb_per_sec(disk_dir,
                                                                     256 if quick else 1024),
        "fsync_4k": fsync_rate(disk_dir),
        "loopback_tcp_mb_per_sec": loopback_tcp_mb_per_sec(),
    }


# ---------------------------------------------------------------------------------------------
# Machine facts.

def command_output(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # a missing tool is a fact too
        return f"unavailable ({e.__class__.__name__})"


def filesystem_of(path):
    """The type of the filesystem holding `path` (longest matching mount point)."""
    path, best, fstype = os.path.realpath(path), "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, kind = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, fstype = mount, kind
    return f"{fstype} at {best}"


def machine_facts():
    def meminfo_gb():
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 1024 / 1024, 1)

    def cpu_model():
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        return "?"

    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": meminfo_gb(),
        "cpu": cpu_model(),
        "kernel": os.uname().release,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "nats_server": command_output(["nats-server", "--version"]),
        "redis_server": command_output(["redis-server", "--version"]),
        "etcd": command_output(["etcd", "--version"]),
        "rustc": command_output(["rustc", "--version"]),
        "git_commit": command_output(["git", "rev-parse", "HEAD"])
                      + ("" if dirty.startswith("unavailable") or not dirty else " (dirty)"),
    }


# ---------------------------------------------------------------------------------------------
# Runs.

def run_bench(argv, timeout):
    """Runs one bench command; returns its report (the last JSON line) or an error."""
    t0, cpu0 = time.monotonic(), machine_cpu()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env=clean_env(), preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {timeout} s", "argv": argv,
                "stderr_tail": tail(e.stderr)}
    result = {"argv": argv, "rc": out.returncode, "wall_seconds": time.monotonic() - t0,
              "machine_cpu_s": cpu_delta(cpu0, machine_cpu())}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result["report"] = json.loads(line)
                result["raw"] = line
                break
            except json.JSONDecodeError:
                pass
    if out.returncode != 0 or "report" not in result:
        result["error"] = (out.stderr.strip().splitlines() or ["no output"])[-1][:500]
        result["stderr_tail"] = tail(out.stderr)
    return result


CPU_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def machine_cpu():
    """The whole machine's CPU time so far, by kind, in clock ticks (`/proc/stat`)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:len(CPU_FIELDS) + 1]]
        return dict(zip(CPU_FIELDS, ticks))
    except (OSError, ValueError):
        return {}


def cpu_delta(before, after):
    """Seconds of each kind of CPU time between two `machine_cpu` readings. `steal` is time
    the hypervisor ran something else while this VM wanted a CPU: a latency outlier that
    comes with steal is the host's, not the set-up's."""
    hz = os.sysconf("SC_CLK_TCK")
    return {k: round((after[k] - before[k]) / hz, 2) for k in after if k in before}


def tail(output, lines=20):
    """The last lines of a captured output (bytes after a timeout, str otherwise)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return "\n".join((output or "").splitlines()[-lines:])


def run_round(setup_cls, round_no, opts, bins, work_dir, doc):
    """Starts one fresh set-up, runs the selected workloads on it, stops it. Appends to
    doc["runs"] and doc["memory"] as it goes, so an interrupted round keeps what it measured.
    Returns whether everything succeeded."""
    run_dir = os.path.join(work_dir, f"{setup_cls.name}-r{round_no}")
    os.makedirs(run_dir)
    setup = setup_cls(bins, run_dir)
    memory = {"setup": setup.name, "round": round_no}
    doc["memory"].append(memory)

    def record(workload, result):
        doc["runs"].append(dict(result, setup=setup.name, round=round_no, workload=workload))
        print_run(doc["runs"][-1])
        return "error" not in result

    try:
        require_free(setup.ports)
        setup.start()
        memory["idle_rss_mb"] = data_rss(setup, "VmRSS")
        return run_workloads(setup, round_no, opts, record, memory)
    except BenchError as e:
        return record("start", {"error": str(e)})
    finally:
        setup.stop()
        remove_data(run_dir)


def run_workloads(setup, round_no, opts, record, memory):
    """W1, W2, W3 (those selected) against a running set-up; W2 reads W1's topic."""
    topic, produced, all_ok = f"bench-r{round_no}", opts.count, True
    for workload in opts.workloads:
        if workload == "consume" and produced == 0:
            all_ok &= record(workload, {"error": "skipped: produce wrote nothing"})
            continue
        count = {"produce": opts.count, "consume": produced,
                 "e2e": opts.rate * opts.duration}[workload]
        record_writeback(memory, workload, settle_writeback())
        argv = setup.bench_argv(workload, f"{topic}-e2e" if workload == "e2e" else topic,
                                count, opts.rate, opts.duration, fresh=workload != "consume")
        result = run_bench(argv, opts.timeout + (opts.duration if workload == "e2e" else 0))
        all_ok &= record(workload, result)
        if workload == "produce":
            produced = result.get("report", {}).get("records", 0)
            memory["peak_rss_after_produce_mb"] = data_rss(setup, "VmHWM")
    memory["peak_rss_end_mb"] = data_rss(setup, "VmHWM")
    return all_ok


def settle_writeback():
    """Writes back every dirty page on the machine before a workload starts, and returns how
    long that took. Without it a workload pays for its predecessor's writes: W1 leaves up to
    3 GB dirty (RF 3), which the kernel writes back ~30 s later, in the middle of W3. Done for
    every set-up alike; W2 still reads from the page cache (nothing is dropped)."""
    t0 = time.monotonic()
    os.sync()
    return time.monotonic() - t0


def record_writeback(memory, workload, seconds):
    memory.setdefault("writeback_before_s", {})[workload] = round(seconds, 2)


def data_rss(setup, field):
    return [rss_mb(s.pid, field) for s in setup.data_servers]


def remove_data(run_dir):
    """Deletes everything but the logs of a finished run (its data may be gigabytes)."""
    for entry in os.listdir(run_dir):
        path = os.path.join(run_dir, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif not entry.endswith((".log", ".conf")):
            os.remove(path)


def print_run(r):
    rep = r.get("report")
    if rep:
        line = (f"  {r['setup']:<13} r{r['round']} {r['workload']:<8} "
                f"{rep['mb_per_sec']:8.1f} MB/s {rep['records_per_sec']:10.0f} rec/s")
        lat = rep.get("latency")
        if lat:
            line += f"  p50 {lat['p50_us'] / 1000:.2f} ms p99 {lat['p99_us'] / 1000:.2f} ms"
        ack = rep.get("ack_latency")
        if ack:
            line += f"  (ack p50 {ack['p50_us'] / 1000:.2f} p99 {ack['p99_us'] / 1000:.2f})"
        steal = r.get("machine_cpu_s", {}).get("steal", 0)
        if steal >= 0.05:
            line += f"  steal {steal:.2f} s"
        if rep.get("failed"):
            line += f"  FAILED {rep['failed']}"
        print(line, flush=True)
    if r.get("error"):
        print(f"  {r['setup']:<13} r{r['round']} {r['workload']:<8} ERROR {r['error']}",
              flush=True)


# ---------------------------------------------------------------------------------------------
# Medians and the table.

METRICS = [
    ("mb_per_sec", lambda rep: rep["mb_per_sec"]),
    ("records_per_sec", lambda rep: rep["records_per_sec"]),
    ("p50_ms", lambda rep: rep["latency"]["p50_us"] / 1000),
    ("p99_ms", lambda rep: rep["latency"]["p99_us"] / 1000),
    ("p999_ms", lambda rep: rep["latency"]["p999_us"] / 1000),
    ("max_ms", lambda rep: rep["latency"]["max_us"] / 1000),
    # Send -> acknowledgement (Sluice only): how much of W3 is the produce request.
    ("ack_p50_ms", lambda rep: rep["ack_latency"]["p50_us"] / 1000),
    ("ack_p99_ms", lambda rep: rep["ack_latency"]["p99_us"] / 1000),
]


def has_metric(rep, key):
    if key.endswith("per_sec"):
        return True
    return bool(rep.get("ack_latency" if key.startswith("ack_") else "latency"))


def ok(run):
    rep = run.get("report")
    return rep is not None and "error" not in run and not rep.get("failed")


def medians(runs, memory, setups, workloads):
    out = {}
    for setup in setups:
        out[setup] = {}
        for workload in workloads:
            good = [r["report"] for r in runs
                    if r.get("setup") == setup and r.get("workload") == workload and ok(r)]
            tried = [r for r in runs if r.get("setup") == setup and r.get("workload") == workload]
            m = {"runs_ok": len(good), "runs": len(tried)}
            for key, get in METRICS:
                values = [get(rep) for rep in good if has_metric(rep, key)]
                if values:
                    m[key] = statistics.median(values)
            out[setup][workload] = m
        out[setup]["memory"] = memory_medians([m for m in memory if m["setup"] == setup])
    return out


def memory_medians(rows):
    """Median over rounds of the largest data process (one node of three, one nats-server)."""
    out = {}
    for key in ["idle_rss_mb", "peak_rss_after_produce_mb", "peak_rss_end_mb"]:
        values = [max(v for v in row[key] if v is not None)
                  for row in rows if any(v is not None for v in row.get(key, []))]
        if values:
            out[key] = statistics.median(values)
    return out


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(med, setups, workloads):
    print()
    print(f"{'set-up':<20} {'workload':<8} {'MB/s':>8} {'records/s':>11} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}  runs ok")
    for setup in setups:
        for workload in workloads:
            m = med[setup][workload]
            print(f"{setup:<20} {workload:<8} {fmt(m.get('mb_per_sec')):>8} "
                  f"{fmt(m.get('records_per_sec'), 0):>11} {fmt(m.get('p50_ms'), 2):>8} "
                  f"{fmt(m.get('p99_ms'), 2):>8} {fmt(m.get('p999_ms'), 2):>9} "
                  f"{fmt(m.get('max_ms'), 2):>8}  {m['runs_ok']}/{m['runs']}")
    acks = [(setup, med[setup]["e2e"]) for setup in setups
            if "e2e" in med[setup] and "ack_p50_ms" in med[setup]["e2e"]]
    if acks:
        print()
        print("W3 send -> acknowledgement: " + "; ".join(
            f"{setup} p50 {fmt(m['ack_p50_ms'], 2)} ms p99 {fmt(m.get('ack_p99_ms'), 2)} ms"
            for setup, m in acks))
    print()
    print(f"{'set-up':<20} {'idle RSS MB':>12} {'peak RSS after W1 MB':>21} {'peak RSS end MB':>16}"
          "   (largest data process)")
    for setup in setups:
        m = med[setup]["memory"]
        print(f"{setup:<20} {fmt(m.get('idle_rss_mb')):>12} "
              f"{fmt(m.get('peak_rss_after_produce_mb')):>21} {fmt(m.get('peak_rss_end_mb')):>16}")


def print_header(machine, baselines):
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
          f"kernel {machine['kernel']}, load {' '.join(machine['loadavg_at_start'])}, "
          f"commit {machine['git_commit']}")
    print(f"versions: {machine['rustc']}; {machine['nats_server']}; "
          f"{machine['redis_server'].split(' sha=')[0]}; {machine['etcd']}")
    print(f"disk ({baselines['disk_fs']}): sequential write + fdatasync "
          f"{baselines['disk_seq_write_fdatasync_mb_per_sec']:.0f} MB/s, 4 KiB append+fsync "
          f"{baselines['fsync_4k']['ops_per_sec']:.0f}/s ({baselines['fsync_4k']['mean_ms']:.2f} ms)")
    print(f"loopback TCP (one Python connection): {baselines['loopback_tcp_mb_per_sec']:.0f} MB/s")
    print()


# ---------------------------------------------------------------------------------------------
# Main.

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--setups", default=",".join(ALL_SETUPS),
                   help="comma-separated subset of " + ",".join(ALL_SETUPS))
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                   help="comma-separated subset of produce,consume,e2e")
    p.add_argument("--repeats", type=int, help="rounds per set-up (default 3)")
    p.add_argument("--count", type=int, help="records of W1 and W2 (default 1,000,000)")
    p.add_argument("--duration", type=int, help="seconds of W3 (default 20)")
    p.add_argument("--rate", type=int, default=10_000, help="records/s of W3")
    p.add_argument("--timeout", type=int, default=300, help="seconds per bench command")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: --count 50000 --duration 3 --repeats 1 (as defaults)")
    p.add_argument("--no-build", action="store_true", help="(handled by scripts/bench)")
    p.add_argument("--work-dir", default=os.environ.get("SLUICE_BENCH_DIR", "/var/tmp"),
                   help="where the data dirs go; must be on the disk under test "
                        "(default /var/tmp, or $SLUICE_BENCH_DIR)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    p.add_argument("--out", help="result file (default bench-results/<timestamp>.json)")
    p.add_argument("--baseline-bins",
                   help="a second directory of Sluice binaries (e.g. a build of the previous "
                        "commit): every sluice set-up also runs with them, as <set-up>@baseline, "
                        "in the same rounds, so a change is measured before and after in one run")
    opts = p.parse_args(argv)
    defaults = (50_000, 3, 1) if opts.quick else (1_000_000, 20, 3)
    for key, default in zip(["count", "duration", "repeats"], defaults):
        if getattr(opts, key) is None:
            setattr(opts, key, default)
    opts.setups = split_choices(p, "--setups", opts.setups, ALL_SETUPS + EXTRA_SETUPS)
    opts.workloads = split_choices(p, "--workloads", opts.workloads, ALL_WORKLOADS)
    if "sluice-rf1-retention" in opts.setups and opts.workloads != ["produce"]:
        p.error("sluice-rf1-retention deletes what W2 would read: use --workloads produce")
    if "consume" in opts.workloads and "produce" not in opts.workloads:
        p.error("consume reads what produce wrote in the same round: select produce too")
    if min(opts.repeats, opts.count, opts.duration, opts.rate) < 1:
        p.error("--repeats, --count, --duration and --rate must be positive")
    return opts


def split_choices(parser, flag, value, allowed):
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown {unknown}; choose from {','.join(allowed)}")
    return [v for v in allowed if v in chosen]  # canonical order


def check_binaries(bins, setups):
    needed = {"sluice"} if any(s.startswith("sluice") for s in setups) else set()
    if "sluice-rf3" in setups:
        needed |= {"sluice-coordinator", "sluice-storage-node"}
    if any(not s.startswith("sluice") for s in setups):
        needed.add("sluice-peer-bench")
    missing = [b for b in sorted(needed) if not os.access(os.path.join(bins, b), os.X_OK)]
    tools = {"sluice-rf3": "etcd", "nats-r1": "nats-server", "nats-r3": "nats-server",
             "redis": "redis-server"}
    missing += [t for s, t in tools.items() if s in setups and not shutil.which(t)]
    if missing:
        raise BenchError(f"missing {', '.join(sorted(set(missing)))} (binaries from {bins}; "
                         "run scripts/bench without --no-build, or set SLUICE_BIN_DIR)")


def default_out():
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(ROOT, "bench-results", f"{stamp}.json")


def write_results(path, doc):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def baseline_setup(name):
    """The set-up `name` under the name `<name>@baseline` (run with --baseline-bins)."""
    cls = SETUPS[name]
    return type(cls.__name__ + "Baseline", (cls,), {"name": name + "@baseline"})


def measure(opts, bins, work_dir, doc):
    """Baselines, then every round of every set-up; returns whether every run succeeded."""
    all_ok = True
    doc["machine"] = machine_facts()
    doc["baselines"] = measure_baselines(work_dir, opts.quick)
    print_header(doc["machine"], doc["baselines"])
    for round_no in range(1, opts.repeats + 1):
        for name in opts.setups:
            print(f"round {round_no}/{opts.repeats}: {name}", flush=True)
            all_ok &= run_round(SETUPS[name], round_no, opts, bins, work_dir, doc)
            if opts.baseline_bins and name.startswith("sluice"):
                print(f"round {round_no}/{opts.repeats}: {name}@baseline", flush=True)
                all_ok &= run_round(baseline_setup(name), round_no, opts, opts.baseline_bins,
                                    work_dir, doc)
    return all_ok


def main(argv):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    signal.signal(signal.SIGHUP, raise_on_sigterm)
    bins = os.environ.get("SLUICE_BIN_DIR") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    try:
        check_binaries(bins, opts.setups)
        if opts.baseline_bins:
            check_binaries(opts.baseline_bins,
                           [s for s in opts.setups if s.startswith("sluice")])
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_path = opts.out or default_out()
    os.makedirs(opts.work_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="sluice-bench-", dir=opts.work_dir)
    doc = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
           "options": {k: v for k, v in vars(opts).items() if k not in ("no_build", "keep")},
           "record_size": RECORD_SIZE, "key_size": KEY_SIZE, "partitions": PARTITIONS,
           "bin_dir": bins, "runs": [], "memory": [], "interrupted": True}
    reported = [n for s in opts.setups
                for n in ([s, s + "@baseline"] if opts.baseline_bins and s.startswith("sluice")
                          else [s])]
    all_ok = False
    try:
        all_ok = measure(opts, bins, work_dir, doc)
        doc["interrupted"] = False
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers, writing what was measured", file=sys.stderr)
    finally:
        # Whatever happened, no server outlives the driver and what was measured is kept.
        stop_all()
        doc["medians"] = medians(doc["runs"], doc["memory"], reported, opts.workloads)
        write_results(out_path, doc)
        if all_ok and not opts.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_table(doc["medians"], reported, opts.workloads)
    print(f"\nresults: {out_path}")
    if not all_ok:
        print(f"some runs failed or were interrupted; server logs in {work_dir}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
