#!/usr/bin/env python3
"""What moving a partition costs on this machine: etcd + one coordinator + three storage nodes
(the `sluice-rf3` set-up of scripts/bench.py, release binaries, data on the real disk). A topic
of one partition at replication factor 1 is filled with --gib GiB (`sluice bench produce`,
1 KiB records); then, per round, the partition moves on to the next of the three nodes with
the reassignment throttle off, then at each --rates MiB/s, each timed from `sluice topic
reassign` until the partition's replica list is the target. W3 (`sluice bench e2e`, 10,000 records/s of 1 KiB,
RF 3, acks=all) runs on an unrelated topic during each move and once with no move, so its p99
can be set against each (dirty pages written back before each). Rounds: --rounds. Prints a
table and writes the figures as JSON.

    scripts/move_cost.py --bins /var/cache/sluice-target/release
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench_setups as bench  # noqa: E402  (the set-ups and process handling of scripts/bench.py)

BIG, OTHER = "big", "w3"
THROTTLE = "reassignment.throttle.bytes.per.second"


def run(setup, *args, timeout=600):
    out = subprocess.run(setup.sluice(*args), capture_output=True, text=True, timeout=timeout,
                         env=bench.clean_env())
    if out.returncode != 0:
        raise bench.BenchError(f"sluice {' '.join(args)}: {out.stderr.strip()[-500:]}")
    return out.stdout


def replicas(setup):
    """The replica list and target of partition 0 of the big topic."""
    for line in run(setup, "topic", "describe", BIG).splitlines():
        cells = [c for c in line.replace("│", " ").split() if c]
        if cells and cells[0] == "0" and len(cells) >= 5:
            return cells[3], ("moving" in line)
    raise bench.BenchError("partition 0 of the big topic not described")


def move(setup, to, rate):
    """Moves partition 0 of the big topic to node `to` at `rate` bytes/s (-1: no throttle);
    returns the seconds until its replicas are [to]."""
    run(setup, "cluster", "config", "--set", f"{THROTTLE}={rate}")
    t0 = time.monotonic()
    run(setup, "topic", "reassign", BIG, "--partition", "0", "--replicas", str(to))
    while True:
        listed = run(setup, "cluster", "reassignments")
        if "no partition is moving" in listed:
            current, _ = replicas(setup)
            if current == str(to):
                return time.monotonic() - t0
        if time.monotonic() - t0 > 900:
            raise bench.BenchError(f"the move to node {to} did not finish in 900 s")
        time.sleep(0.2)


def w3(setup, seconds, result):
    """W3 on the unrelated topic for `seconds`; stores its report in `result`."""
    argv = setup.sluice("bench", "e2e", "--topic", OTHER, "--rate", "10000", "--duration",
                        str(seconds), "--record-size", "1024", "--key-size", "16",
                        "--partitions", "8", "--acks", "all", "--replication-factor", "3",
                        "--min-insync-replicas", "2", "--json")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                         env=bench.clean_env())
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            result["report"] = json.loads(line)
            return
    result["error"] = out.stderr.strip()[-500:]


def p99_ms(result):
    rep = result.get("report")
    return rep["latency"]["p99_us"] / 1000 if rep else None


def with_w3(setup, seconds, action):
    """Runs W3 for `seconds` while `action()` runs (after a 2 s lead); returns both results.
    Every dirty page is written back first, so no measurement pays for the writes of the one
    before (the fill leaves a GiB dirty, which the kernel would write back in the middle)."""
    os.sync()
    result = {}
    t = threading.Thread(target=w3, args=(setup, seconds, result))
    t.start()
    time.sleep(2)
    value = action() if action else None
    t.join()
    return value, result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bins", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    p.add_argument("--gib", type=float, default=1.0, help="GiB in the partition that moves")
    p.add_argument("--rates", default="20,64", help="throttled move rates, MiB/s")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", help="JSON result file")
    opts = p.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-move-", dir=os.environ.get("SLUICE_BENCH_DIR", "/var/tmp"))
    setup = bench.SluiceRf3(opts.bins, work)
    bench.require_free(setup.ports)
    rates = [int(r) for r in opts.rates.split(",")]
    rows = {"move_off": [], "w3_none": [], "w3_off": []}
    for rate in rates:
        rows[f"move_{rate}"], rows[f"w3_{rate}"] = [], []
    try:
        setup.start()
        count = int(opts.gib * (1 << 30) / 1024)
        run(setup, "bench", "produce", "--topic", BIG, "--partitions", "1",
            "--replication-factor", "1", "--count", str(count), "--record-size", "1024",
            "--key-size", "0", "--acks", "1", "--json", timeout=1800)
        run(setup, "bench", "produce", "--topic", OTHER, "--partitions", "8",
            "--replication-factor", "3", "--min-insync-replicas", "2", "--count", "1000",
            "--json")
        at = int(replicas(setup)[0])
        for r in range(opts.rounds):
            _, none = with_w3(setup, 20, lambda: time.sleep(15))
            rows["w3_none"].append(p99_ms(none))
            for rate in [None, *rates]:
                at = (at + 1) % 3
                throttle = -1 if rate is None else rate << 20
                took, during = with_w3(setup, 20, lambda: move(setup, at, throttle))
                name = "off" if rate is None else str(rate)
                rows[f"move_{name}"].append(took)
                rows[f"w3_{name}"].append(p99_ms(during))
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {'-' if v[-1] is None else format(v[-1], '.2f')}" for k, v in rows.items()),
                flush=True)
    finally:
        setup.stop()
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median([v for v in vals if v is not None])
           for k, vals in rows.items() if any(v is not None for v in vals)}
    print(f"\n{opts.gib} GiB partition moved from node to node, medians of {opts.rounds} rounds")
    print(f"  W3 p99 with no move: {med.get('w3_none', 0):.2f} ms")
    for name in ["off", *map(str, rates)]:
        label = "throttle off" if name == "off" else f"{name} MiB/s"
        print(f"  {label:>13}: move {med.get('move_' + name, 0):.1f} s, "
              f"W3 p99 during it {med.get('w3_' + name, 0):.2f} ms")
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump({"rounds": rows, "medians": med, "gib": opts.gib, "rates_mib": rates},
                      f, indent=2)


if __name__ == "__main__":
    main()
