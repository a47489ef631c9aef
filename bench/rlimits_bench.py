#!/usr/bin/env python3
"""Benchmark: ``hostcheck.rlimits`` against its floor (reading ``limits`` and
stat-ing ``fd`` of every process), with prlimit-style reading and psutil's
``num_fds`` for comparison. CPU time, median of interleaved runs.

Usage (root, from the repository root)::

    .venv/bin/python bench/rlimits_bench.py [--procs 2000] [--repeat 15]

What it does
------------
1. Starts a private PID namespace (``unshare --pid --fork --kill-child
   --mount-proc``) whose PID 1 is this script in ``--inner`` mode and fills
   it with ``--procs`` processes (init included): small ``sh -c 'sleep &
   ... wait'`` trees (every fourth a session leader) and ``--holders``
   Python processes that set their soft ``nofile`` to 1024 and hold many
   descriptors: most 100-700, one 900 (a warning) and one 990 (critical).

   Safety: only processes the bench started live in that namespace. When
   the bench exits, is interrupted or is killed, the namespace init exits
   (stdin EOF, ``--kill-child``, ``PR_SET_PDEATHSIG`` on ``unshare``) and the
   kernel kills everything in it. Nothing is signalled by name; nothing is
   written outside the namespace (the bench writes no file at all).

2. Times, in this process, interleaved (the order rotates every run, after
   ``gc.collect()``), over the whole host ``/proc`` (the bench's processes
   and everything else), as CPU time (``time.process_time``):

   ``floor``            listdir + open/read/close of ``/proc/PID/limits`` and
                        ``os.stat(/proc/PID/fd)`` of every PID, nothing parsed
                        (the issue's floor)
   ``floor_stat``       the same plus ``/proc/PID/stat`` (what any reader
                        needs to know the process tree)
   ``rlimits``          ``hostcheck_check.diagnose(hostcheck_rlimits)`` +
                        ``summarise()``: what ``hostcheck.rlimits`` does
   ``rlimits_listdir``  the same with the ``st_size`` count switched off
                        (descriptors counted by listing, as on kernels < 6.2)
   ``rlimits_quick``    the grain entry alone (``quick``: service processes
                        only), its own snapshot included
   ``grain``            the registry's grain without rlimits (every other
                        check, quick, on one shared snapshot)
   ``grain_rlimits``    the same plus the rlimits entry on that snapshot: the
                        difference is what rlimits adds to the grain
   ``prlimit``          per process: ``resource.prlimit`` of ``NOFILE`` and
                        ``NPROC`` (the system call ``prlimit(1)`` uses) and
                        ``len(os.listdir(/proc/PID/fd))``
   ``psutil``           per process: ``psutil.Process(pid).num_fds()`` and
                        ``.rlimit()`` of ``NOFILE`` and ``NPROC``

3. Checks the diagnosis: the holder at 900 of 1024 must be in a warning and
   the one at 990 in a critical ``fds-near-limit`` finding, no other holder
   in any finding, and the full diagnosis must have read the limits of
   every bench process. Exits 1 when that is wrong (``--strict``: also 3
   when ``rlimits / floor`` misses 1.5x or the grain entry 3 ms).

The last line is ``BENCH_JSON {...}`` for machines.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SLEEP_SECONDS = "3600"  # the namespace dies with the bench long before that
RATIO_TARGET = 1.5
GRAIN_BUDGET_MS = 30.0
ENTRY_BUDGET_MS = 3.0
MARK = "hc-rl-fdhold"

#: a Python process with soft nofile 1024 holding argv[2] descriptors in all
HOLDER = r"""
import os, resource, sys, time
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
want = int(sys.argv[2])
held = len(os.listdir("/proc/self/fd")) - 1
keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(max(0, want - held))]
while True:
    time.sleep(3600)
"""


# the namespace harness shared with the orphans bench (bench/ is on sys.path: the script's own directory)
import benchlib  # noqa: E402
from benchlib import _read, fill_small_trees, measure, ns_members, serve_until_eof  # noqa: E402

# ===========================================================================
# inner side: PID 1 of the bench's namespace


def holder_counts(holders):
    """Descriptors each holder keeps: one at 900 (warning), one at 990
    (critical), the others spread over 100-700 (no finding)."""
    out = [900, 990][:holders]
    out += [100 + (600 * i) // max(1, holders - 3) for i in range(holders - len(out))]
    return out


def inner_main(args):
    """Populate the namespace, report, wait for stdin EOF, exit (the kernel kills all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    sh, sleep = shutil.which("sh"), shutil.which("sleep")
    planned = 1
    for count in holder_counts(args.holders):
        os.posix_spawn(sys.executable, [sys.executable, "-c", HOLDER, MARK, str(count)], env)
        planned += 1
    planned = fill_small_trees(planned, args.procs, lambda argv, session: os.posix_spawn(
        argv[0], argv, env, setsid=session), sh, sleep, SLEEP_SECONDS)
    print("SPAWNED {}".format(planned), flush=True)
    return serve_until_eof()


# ===========================================================================
# host side


class Namespace(benchlib.Namespace):
    """The bench's PID namespace (everything in it was started by the bench)."""

    def __init__(self, procs, holders):
        super().__init__(__file__, ["--procs", str(procs), "--holders", str(holders)])
        self.procs, self.holders = procs, holders

    def ready(self):
        """Every holder runs and holds its descriptors."""
        holders = self.holder_pids()
        return len(holders) == self.holders and all(
            len(os.listdir("/proc/{}/fd".format(p))) >= want for p, want in holders.items())

    def holder_pids(self):
        """``{host pid: descriptors it holds}`` of the holders."""
        out = {}
        for pid in ns_members(self.ns_id):
            argv = (_read("/proc/{}/cmdline".format(pid)) or b"").split(b"\0")
            if len(argv) > 4 and argv[3] == MARK.encode():
                out[pid] = int(argv[4])
        return out


# ---------------------------------------------------------------------------
# floors and comparisons


def floor(with_stat=False):
    """listdir + read every ``limits`` (+ ``stat``) + stat every ``fd``; nothing parsed."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    _open, _read_, _close, _stat = os.open, os.read, os.close, os.stat
    leaves = ("/stat", "/limits") if with_stat else ("/limits",)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        base = "/proc/" + name
        for leaf in leaves:
            try:
                fd = _open(base + leaf, flags)
            except OSError:
                continue
            try:
                _read_(fd, 4096)  # limits is under 2 KiB, stat under 1 KiB
            except OSError:
                pass
            _close(fd)
        try:
            _stat(base + "/fd")
        except OSError:
            pass


def prlimit_style():
    """What a prlimit(1)-like reader does: the prlimit system call per process
    and resource, and a listing of ``fd``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NPROC)
            len(os.listdir("/proc/{}/fd".format(pid)))
        except (OSError, ValueError):
            pass


def psutil_style(psutil):
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            proc.num_fds()
            proc.rlimit(psutil.RLIMIT_NOFILE)
            proc.rlimit(psutil.RLIMIT_NPROC)
        except (psutil.Error, OSError):
            pass


# ---------------------------------------------------------------------------
# host main


def check(ns, diag):
    """``(ok, problems)`` of the full diagnosis against what the bench built."""
    problems = []
    holders = ns.holder_pids()
    where = {}
    for f in diag.findings:
        for item in f.get("processes") or [{"pid": p, "severity": f["severity"]} for p in f["pids"]]:
            where[item["pid"]] = (f["code"], item["severity"])
    for pid, want in holders.items():
        got = where.get(pid)
        expected = {900: ("fds-near-limit", "warning"), 990: ("fds-near-limit", "critical")}.get(want)
        if got != expected:
            problems.append("holder PID {} ({} descriptors): {} instead of {}".format(pid, want, got, expected))
    missing = [p for p in ns_members(ns.ns_id) if p not in diag.facts.limits]
    if missing:
        problems.append("{} bench processes without limits read (e.g. {})".format(len(missing), missing[:5]))
    return not problems, problems


def load(code_root):
    sys.path.insert(0, os.path.join(code_root, "_utils"))
    import hostcheck_check  # pylint: disable=import-outside-toplevel
    import hostcheck_registry  # pylint: disable=import-outside-toplevel
    import hostcheck_rlimits  # pylint: disable=import-outside-toplevel
    return hostcheck_check, hostcheck_rlimits, hostcheck_registry


def grain_benches(hc, rl, registry, opts):
    """The registry's grain without and with the rlimits entry (one shared
    snapshot, as the grain runs): their difference is what rlimits adds."""
    others = tuple(c for c in registry.CHECKS if c is not rl)

    def grain(with_rlimits):
        real = registry.CHECKS
        registry.CHECKS = others
        try:
            host = hc.Host()
            out = registry.grain(host=host)
            if with_rlimits:
                out[rl.NAME] = rl.summarise(hc.diagnose(rl, host, opts, quick=True))
            return out
        finally:
            registry.CHECKS = real

    return {"grain": lambda: grain(False), "grain_rlimits": lambda: grain(True)}


def benches_for(hc, rl, registry, psutil):
    opts = hc.options(rl)

    def rlimits(quick=False):
        diag = hc.diagnose(rl, hc.Host(), opts, quick=quick)
        rl.summarise(diag)
        return diag

    def listdir_only():
        real = rl.fd_size_counts
        rl.fd_size_counts = lambda proc_root: False
        try:
            return rlimits()
        finally:
            rl.fd_size_counts = real

    benches = {"floor": floor, "floor_stat": lambda: floor(True), "rlimits": rlimits,
               "rlimits_listdir": listdir_only, "rlimits_quick": lambda: rlimits(True), "prlimit": prlimit_style}
    if psutil is not None:
        benches["psutil"] = lambda: psutil_style(psutil)
    benches.update(grain_benches(hc, rl, registry, opts))
    return benches, rlimits


def report(args, ns, total, in_ns, setup_s, med, low, ok, problems, diag, code_root):
    ratios = {"rlimits/floor": med["rlimits"] / med["floor"],
              "rlimits/floor_stat": med["rlimits"] / med["floor_stat"],
              "rlimits_listdir/floor": med["rlimits_listdir"] / med["floor"],
              "prlimit/floor": med["prlimit"] / med["floor"]}
    if "psutil" in med:
        ratios["psutil/floor"] = med["psutil"] / med["floor"]
    load1 = os.getloadavg()[0]
    print("code under test: {}/_utils".format(code_root))
    print("hostcheck rlimits bench: {} processes in /proc ({} in the bench namespace, {} holders, set up in "
          "{:.1f} s), {} timed runs (+{} warm-up), {} CPUs, load average {:.2f}".format(
              total, in_ns, args.holders, setup_s, args.repeat, args.warmup, os.cpu_count(), load1))
    print("the full diagnosis read the limits of {} processes and counted the descriptors of {}\n".format(
        len(diag.facts.limits), sum(1 for v in diag.facts.fds.values() if v is not None)))
    print("{:<16} {:>10} {:>10}".format("", "median ms", "min ms"))
    for name in med:
        print("{:<16} {:>10.2f} {:>10.2f}".format(name, med[name], low[name]))
    print()
    misses = []
    for key, val in ratios.items():
        target = " (target <= {}x: {})".format(RATIO_TARGET, "ok" if val <= RATIO_TARGET else "MISS") \
            if key == "rlimits/floor" else ""
        if key == "rlimits/floor" and val > RATIO_TARGET:
            misses.append(key)
        print("ratio {:<24} {:5.2f}x{}".format(key, val, target))
    added = med["grain_rlimits"] - med["grain"]
    quick_ok = med["rlimits_quick"] <= ENTRY_BUDGET_MS
    if not quick_ok:
        misses.append("rlimits_quick")
    print("grain: the other checks {:.2f} ms, with the rlimits entry {:.2f} ms ({:+.2f} ms); the entry alone, "
          "its own process view included, {:.2f} ms (target <= {:.0f} ms, a tenth of the grain's {:.0f} ms "
          "budget: {})".format(med["grain"], med["grain_rlimits"], added, med["rlimits_quick"], ENTRY_BUDGET_MS,
                               GRAIN_BUDGET_MS, "ok" if quick_ok else "MISS"))
    print("\ncorrectness: {}".format("ok" if ok else "WRONG"))
    for problem in problems:
        print("  - " + problem)
    print("BENCH_JSON " + json.dumps({
        "procs_total": total, "procs_bench_namespace": in_ns, "holders": args.holders, "repeat": args.repeat,
        "cpus": os.cpu_count(), "loadavg1": round(load1, 2),
        "median_ms": {k: round(v, 3) for k, v in med.items()}, "min_ms": {k: round(v, 3) for k, v in low.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()}, "ratio_target": RATIO_TARGET,
        "read_limits": len(diag.facts.limits), "misses": misses, "correct": ok, "problems": problems,
    }, sort_keys=True))
    return misses


def host_main(args):
    if os.geteuid() != 0:
        raise SystemExit("the bench needs root (unshare --pid)")
    code_root = os.path.abspath(args.code_root)
    hc, rl, registry = load(code_root)
    try:
        import psutil  # pylint: disable=import-outside-toplevel
    except ImportError:
        psutil = None
    benches, rlimits = benches_for(hc, rl, registry, psutil)
    order = list(benches)
    ns = Namespace(args.procs, args.holders)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        t0 = time.monotonic()
        in_ns = ns.start()
        setup_s = time.monotonic() - t0
        total = sum(1 for n in os.listdir("/proc") if n.isdigit())
        samples = measure(benches, args.repeat, args.warmup, order)
        diag = rlimits()
        ok, problems = check(ns, diag)
    finally:
        ns.stop()
    med = {n: statistics.median(v) for n, v in samples.items()}
    low = {n: min(v) for n, v in samples.items()}
    misses = report(args, ns, total, in_ns, setup_s, med, low, ok, problems, diag, code_root)
    if not ok:
        return 1
    return 3 if args.strict and misses else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2000,
                        help="processes in the bench namespace, its init included (default 2000)")
    parser.add_argument("--holders", type=int, default=20,
                        help="processes holding many descriptors among them (default 20, at least 2)")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each measurement (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a speed target is missed")
    parser.add_argument("--code-root", default=ROOT, help="tree whose _utils is measured (default: this checkout)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return inner_main(args)
    if args.holders < 2 or args.procs < args.holders + 10:
        parser.error("--holders must be at least 2 and --procs at least holders + 10")
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
