#!/usr/bin/env python3
"""Idle cost of a Sluice cluster with many partitions: etcd + one coordinator + three storage
nodes (the `sluice-rf3` set-up of scripts/bench.py), --partitions partitions at replication
factor 3 in topics of 1,000, no traffic. Once every partition has a full ISR and the cluster
has settled, it measures each storage node's CPU (utime + stime from /proc) over --seconds and
prints the share of one core per node, for each binary directory given, in turn, --rounds times
(interleaved, so drift of the machine hits each alike).

    scripts/idle_cost.py --bins /var/cache/sluice-before --bins /var/cache/sluice-target/release
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench_setups as bench  # noqa: E402  (the set-ups and process handling of scripts/bench.py)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


ROW = re.compile(r"^\W*(\d+)\W+(\d+|none)\W+(\d+)\W+([\d,]+)\W+([\d,]*)\W*$")


def under_replicated(setup, topics):
    """Partitions of `topics` without a leader or with an ISR smaller than their replicas."""
    under = 0
    for topic in topics:
        out = subprocess.run(setup.sluice("topic", "describe", topic), capture_output=True,
                             text=True, timeout=60, env=bench.clean_env())
        rows = [m for m in map(ROW.match, out.stdout.splitlines()) if m]
        if out.returncode != 0 or not rows:
            return None
        under += sum(1 for m in rows if m.group(2) == "none"
                     or len(m.group(5).split(",")) < len(m.group(4).split(",")))
    return under


def measure(bins, partitions, seconds, settle):
    run_dir = tempfile.mkdtemp(prefix="sluice-idle-", dir="/var/tmp")
    setup = bench.SluiceRf3(bins, run_dir)
    try:
        setup.start()
        topics = [f"idle-{t}" for t in range(partitions // 1000)]
        for topic in topics:
            subprocess.run(setup.sluice("topic", "create", topic, "--partitions", "1000",
                                        "--replication-factor", "3"),
                           check=True, capture_output=True, env=bench.clean_env(), timeout=120)
        deadline = time.time() + 300
        while True:
            under = under_replicated(setup, topics)
            if under == 0:
                break
            if time.time() > deadline:
                raise bench.BenchError(f"{under} partitions without a full ISR after 300 s")
            time.sleep(2)
        time.sleep(settle)
        nodes = [s for s in setup.servers if s.name.startswith("node-")]
        before = [cpu_seconds(n.pid) for n in nodes]
        time.sleep(seconds)
        after = [cpu_seconds(n.pid) for n in nodes]
        return [100 * (a - b) / seconds for a, b in zip(after, before)]
    finally:
        setup.stop()
        subprocess.run(["rm", "-rf", run_dir])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bins", action="append", required=True, help="binary directory (repeatable)")
    p.add_argument("--partitions", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    opts = p.parse_args()
    results = {b: [] for b in opts.bins}
    for r in range(opts.rounds):
        for b in opts.bins:
            per_node = measure(b, opts.partitions, opts.seconds, opts.settle)
            results[b].append(per_node)
            print(f"round {r + 1} {b}: " + ", ".join(f"{c:.1f} %" for c in per_node), flush=True)
    print(f"\nidle CPU per storage node, % of one core ({opts.partitions} partitions, RF 3, 3 nodes):")
    for b, rounds in results.items():
        flat = [c for per_node in rounds for c in per_node]
        print(f"  {b}: median {statistics.median(flat):.1f} %, range {min(flat):.1f}-{max(flat):.1f} %")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.stop_all()
