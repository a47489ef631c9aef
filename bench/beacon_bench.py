"""The ``hostcheck`` beacon's cost: CPU time of one pass at about 2,000
processes, as a share of one core at ``interval: 60``.

Run from the repository root (root sees every process; any user works)::

    .venv/bin/python bench/beacon_bench.py [--procs 2000] [--repeat 15] [--interval 60]

As root it runs in a private PID namespace of its own (``unshare --pid
--fork --kill-child --mount-proc``, this script as its PID 1), so what it
starts is seen by nothing else on the host and dies with it: ``--procs N``
starts process trees (as ``report_bench.py`` does: ``sh -c 'sleep & ...
wait'``, every fourth in its own session) until the namespace holds about N
processes, plus a leaked tree (a ``sh`` with supervisord's environment whose
parent is gone) so the beacon has a steady finding to remember. It stops
exactly those, by PID, when it ends. Without root it runs in place, without
the leaked tree.

The beacon module is loaded from ``_beacons/hostcheck.py`` as Salt loads it,
with ``__salt__["hostcheck.report"]`` being what the execution module runs
(``hostcheck_registry.report``) and its state file in a temporary cache
directory. What it times, interleaved, as CPU time (user + system of this
process and of the children it waited for) after ``gc.collect()``:

``beacon``   one beacon pass on a steady host: every check on one shared
             snapshot, the comparison with the last state, no event
``report``   ``hostcheck_registry.report(severity="warning")`` alone: what
             the pass cannot cost less than

Target: ``beacon`` median / (interval x 1 core) < 1 %.
"""
import argparse
import gc
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import hostcheck_registry  # noqa: E402
from report_bench import count_procs, cpu, spawn, stop  # noqa: E402

LEAK = ("env SUPERVISOR_ENABLED=1 SUPERVISOR_PROCESS_NAME=bench-worker SUPERVISOR_GROUP_NAME=bench "
        "sh -c 'sleep 600 & sleep 600 & wait' >/dev/null 2>&1 </dev/null & echo $!")


def load_beacon(cachedir):
    spec = importlib.util.spec_from_file_location("hc_beacon", os.path.join(REPO, "_beacons", "hostcheck.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {"cachedir": cachedir}
    mod.__salt__ = {"hostcheck.report": lambda **kw: hostcheck_registry.report(**kw)}
    mod.__context__ = {}
    return mod


def plant_leak():
    """A tree whose parent (this sh) exits at once: re-parented, supervisor provenance."""
    out = subprocess.run(["sh", "-c", LEAK], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def stop_leak(root):
    try:
        with open("/proc/{0}/task/{0}/children".format(root)) as fh:
            kids = [int(k) for k in fh.read().split()]
    except OSError:
        kids = []
    for pid in kids + [root]:
        try:
            os.kill(pid, 15)
        except OSError:
            pass


def measure(beacon, repeat, warmup):
    config = [{"interval": 60}, {"_beacon_name": "hostcheck"}]
    first = beacon.beacon(config)
    names = ["beacon", "report"]
    funcs = {"beacon": lambda: beacon.beacon(config),
             "report": lambda: hostcheck_registry.report(severity="warning")}
    times, events = {n: [] for n in names}, []
    for run in range(warmup + repeat):
        for name in names[run % 2:] + names[:run % 2]:
            gc.collect()
            t0 = cpu()
            result = funcs[name]()
            dt = cpu() - t0
            if name == "beacon":
                events.extend(result)
            if run >= warmup:
                times[name].append(dt)
    return first, events, times


def in_own_namespace(argv):
    """Run this script again as PID 1 of a private PID namespace (root)."""
    cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable,
           os.path.abspath(__file__), "--inner"] + list(argv)
    return subprocess.run(cmd, check=False).returncode


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=0, help="start own processes until about N are running")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.inner and os.geteuid() == 0:
        return in_own_namespace(argv)
    started = spawn(args.procs) if args.procs else []
    leak = plant_leak() if args.inner else None
    time.sleep(0.3)
    try:
        n = count_procs()
        with tempfile.TemporaryDirectory() as cachedir:
            first, events, times = measure(load_beacon(cachedir), args.repeat, args.warmup)
    finally:
        if leak:
            stop_leak(leak)
        stop(started)
    med = {k: statistics.median(v) for k, v in times.items()}
    share = med["beacon"] / args.interval * 100
    print("processes: {}{}   runs: {} (median CPU time, ms)".format(
        n, " (in the bench's own PID namespace)" if args.inner else "", args.repeat))
    for name in ("beacon", "report"):
        print("  {:<7} {:8.2f}   min {:8.2f}".format(name, med[name] * 1e3, min(times[name]) * 1e3))
    print("first pass: {} event(s) ({}); steady passes: {} event(s)".format(
        len(first), ", ".join(sorted({e["tag"] for e in first})) or "-", len(events)))
    print("beacon / report = {:.2f}x".format(med["beacon"] / med["report"]))
    print("one pass every {:.0f} s = {:.3f} % of one core   (target < 1 %: {})".format(
        args.interval, share, "ok" if share < 1 else "MISSED"))
    return 0 if share < 1 and not events else 3


if __name__ == "__main__":
    sys.exit(main())
