"""``hostcheck.report`` against its checks run one by one, and the grain
against one pass over ``/proc``: CPU time, median of interleaved runs.

Run from the repository root (root sees every process; any user works)::

    .venv/bin/python bench/report_bench.py [--procs 2000] [--repeat 15]

``--procs N`` first starts process trees of its own (``sh -c 'sleep & ...
wait'``, every fourth in its own session) until this host shows about N
processes; it stops exactly those, by PID, when it ends.

What it times, each run in a rotated order after ``gc.collect()``, as CPU
time (user + system of this process and of the children it waited for,
from ``getrusage``), so the load of other tenants on a shared machine does
not count:

``report``       ``hostcheck_registry.report()``: every check on one shared
                 snapshot, as ``salt '*' hostcheck.report`` runs them
``one_by_one``   each registered check diagnosed with its own fresh
                 ``Host`` (its own snapshot): four separate calls
``grain``        ``hostcheck_registry.grain()``: the ``hostcheck`` grain
``floor_scan``   one pass over ``/proc`` reading ``stat``, ``cmdline`` and
                 ``cgroup`` of every process, nothing parsed

Targets: ``report / one_by_one <= 1.0`` (sharing the snapshot must not cost
more) and ``grain / floor_scan < 1.0`` (the grain is cheaper than one pass
reading those three files).
"""
import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))

import hostcheck_check  # noqa: E402
import hostcheck_registry  # noqa: E402
from orphans_bench import floor_scan  # noqa: E402  (one pass: stat, cmdline, cgroup)


def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def one_by_one():
    for check in hostcheck_registry.CHECKS:
        hostcheck_check.diagnose(check, hostcheck_check.Host())


MEASURES = {
    "report": hostcheck_registry.report,
    "one_by_one": one_by_one,
    "grain": hostcheck_registry.grain,
    "floor_scan": floor_scan,
}


def count_procs():
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


def spawn(target):
    """Start our own sleeper trees until /proc shows about ``target`` processes."""
    started = []
    idx = 0
    while count_procs() < target - 4:
        kids = 1 + idx % 4
        script = " ".join(["sleep 600 &"] * kids) + " wait"
        started.append(subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL,
                                        start_new_session=(idx % 4 == 0)))
        idx += 1
        if idx % 50 == 0:
            time.sleep(0.05)
    time.sleep(0.5)
    return started


def stop(started):
    """Stop the trees we started: each shell's children, then the shell, by PID."""
    for popen in started:
        try:
            with open("/proc/{0}/task/{0}/children".format(popen.pid)) as fh:
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            kids = []
        for kid in kids:
            try:
                os.kill(kid, 15)
            except OSError:
                pass
        if popen.poll() is None:
            popen.terminate()
    for popen in started:
        popen.wait()


def measure(repeat, warmup):
    names = list(MEASURES)
    times = {n: [] for n in names}
    for run in range(warmup + repeat):
        order = names[run % len(names):] + names[:run % len(names)]
        for name in order:
            gc.collect()
            t0 = cpu()
            result = MEASURES[name]()
            dt = cpu() - t0
            del result
            if run >= warmup:
                times[name].append(dt)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=0, help="start own processes until about N are running")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    started = spawn(args.procs) if args.procs else []
    try:
        n = count_procs()
        times = measure(args.repeat, args.warmup)
    finally:
        stop(started)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("processes: {}   runs: {} (median CPU time, ms)".format(n, args.repeat))
    for name in MEASURES:
        print("  {:<11} {:8.2f}   min {:8.2f}".format(name, med[name] * 1e3, min(times[name]) * 1e3))
    print("report / one_by_one = {:.2f}x   (target <= 1.0)".format(med["report"] / med["one_by_one"]))
    print("grain / floor_scan  = {:.2f}x   (target < 1.0)".format(med["grain"] / med["floor_scan"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
