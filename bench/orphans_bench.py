#!/usr/bin/env python3
"""Benchmark: hostcheck's /proc snapshot, ``hostcheck.orphans`` and the grain
against the cheapest possible reader of the same /proc files.

Usage (root, from the repository root)::

    .venv/bin/python bench/orphans_bench.py [--procs 2000] [--repeat 15]

What it does
------------
1. Starts a private PID namespace (``unshare --pid --fork --kill-child
   --mount-proc``) whose PID 1 is this very script in ``--inner`` mode, and
   fills it with ``--procs`` processes (init included): small trees, deep
   chains, processes with long command lines, double-forked daemons adopted by
   init, two identical ``rsyslogd`` trees (plus a third one with another
   configuration, which is *not* a duplicate), and a fake ``supervisord``
   whose programs carry the ``SUPERVISOR_*`` environment. That supervisord is
   SIGKILLed (it is our own child, inside the namespace) and started again:
   exactly the incident of issue 2, so the first copies of its programs are
   leaked trees re-parented to the namespace init, and the leaked
   ``salt-minion`` has a managed twin.

   Safety: everything lives in that namespace. When this script exits, is
   interrupted or is killed, the namespace init exits (stdin EOF,
   ``--kill-child``, and ``PR_SET_PDEATHSIG`` on ``unshare``), and the kernel
   kills every process in it. The bench only ever signals processes it
   started itself, by PID, inside its namespace (the fake supervisord) or
   its own ``unshare`` child; it never signals anything by name. Its scripts
   live on a tmpfs mounted on ``/tmp`` inside the namespace's own mount
   namespace: nothing is written to the host's file systems.

2. Times, in this process, interleaved (the order rotates every run), over
   the whole host ``/proc``:

   ``floor_stat``     listdir + open/read/close of every ``/proc/PID/stat``
   ``snapshot_lazy``  ``hostcheck_proc.snapshot()``
   ``floor_full``     replay of exactly the files ``snapshot(load=True)`` reads
   ``snapshot_full``  ``hostcheck_proc.snapshot(load=True)``
   ``orphans_floor``  replay of exactly the files ``diagnose()`` reads
   ``orphans``        ``hostcheck_orphans.diagnose()`` + ``summary()``
   ``grain``          the ``hostcheck()`` grain function (``__opts__ = {}``)

   The file lists replayed by the floors are recorded by running the code
   under test once with its ``os`` module wrapped (every ``os.open``,
   ``os.readlink`` and ``os.listdir`` is logged); the floor then does the
   same system calls with nothing parsed and no Python objects built:
   ``os.open`` + ``os.read(fd, 65536)`` (again only while the buffer comes
   back full) + ``os.close``, ``os.readlink``, ``os.listdir``.

3. Checks the diagnosis against what it built (independently, from its own
   minimal /proc reading): every leaked tree is reported as a critical
   ``supervisor-leak`` with exactly its PIDs, the leaked ``salt-minion``
   points at its managed twin, the two identical ``rsyslogd`` trees are
   ``duplicate-daemon`` findings, and nothing else in the namespace is
   flagged. Exits 1 when that is wrong (``--strict`` also fails on missed
   speed targets).

The last line is ``BENCH_JSON {...}`` for machines.
"""

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import _read, fill_small_trees, measure, ns_members, serve_until_eof

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SLEEP_SECONDS = "3600"  # the namespace dies with the bench long before that
#: Where the bench's scripts live. Inside the namespace only: the namespace
#: init mounts a private tmpfs on /tmp in its own mount namespace, so nothing
#: is written to the host's file systems and nothing is left behind even
#: when the bench is SIGKILLed.
BENCH_DIR = "/tmp/hostcheck-bench"
RATIO_TARGET = 1.5
GRAIN_BUDGET_MS = 30.0

#: Programs of the fake supervisord: (name, script, args, processes in the tree).
#: ``worker N G`` starts N sleeps and G subshells with one sleep each.
SUPERVISED = (
    ("celery-worker", "worker", ["2", "0"], 3),
    ("queue-runner", "worker", ["3", "0"], 4),
    ("report-gen", "worker", ["1", "1"], 4),
    ("mailer", "worker", ["2", "0"], 3),
    ("salt-minion", "salt-minion", ["-c", "@DIR@/etc/salt"], 4),
)

SCRIPTS = {
    "bin/worker": """#!/bin/sh
# worker N G: N sleeping children and G subshells with one sleeping child each
n=${1:-2}; g=${2:-0}
i=0; while [ "$i" -lt "$n" ]; do sleep @SLEEP@ & i=$((i + 1)); done
i=0; while [ "$i" -lt "$g" ]; do ( sleep @SLEEP@ & wait ) & i=$((i + 1)); done
wait
""",
    # a Python program (hostcheck identifies daemons by executable and
    # script, so a shell script named salt-minion is not one); the forked
    # child keeps the same command line, as a real minion's children
    "bin/salt-minion": """#!@PYTHON@
import os, subprocess
if os.fork() == 0:
    subprocess.Popen(["sleep", "@SLEEP@"]).wait()
    os._exit(0)
subprocess.Popen(["sleep", "@SLEEP@"])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
""",
    "bin/chain": """#!/bin/sh
# chain N: N nested shells, a sleep at the bottom
n=$1
if [ "$n" -gt 0 ]; then "$0" $((n - 1)) & else sleep @SLEEP@ & fi
wait
""",
    "sbin/rsyslogd": """#!@PYTHON@
import os, subprocess
subprocess.Popen(["sleep", "@SLEEP@"])
subprocess.Popen(["sleep", "@SLEEP@"])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
""",
}


def _supervisord_script(bench_dir):
    """A fake supervisord (a Python program, as the real one): every program
    in its own session, with the SUPERVISOR_* environment, like
    supervisord's fork()+setpgid()+execve()."""
    programs = [(name, os.path.join(bench_dir, "bin", name), [a.replace("@DIR@", bench_dir) for a in args])
                for name, _script, args, _size in SUPERVISED]
    return "\n".join([
        "#!" + sys.executable,
        "import os, subprocess",
        "for name, path, args in {!r}:".format(programs),
        "    env = dict(os.environ, SUPERVISOR_ENABLED='1', SUPERVISOR_PROCESS_NAME=name,",
        "               SUPERVISOR_GROUP_NAME=name, SUPERVISOR_SERVER_URL='unix:///run/supervisor.sock')",
        "    subprocess.Popen([path] + args, env=env, start_new_session=True)",
        "while True:",
        "    try:",
        "        os.wait()",
        "    except ChildProcessError:",
        "        break",
    ]) + "\n"


def write_scripts(bench_dir):
    for sub in ("bin", "sbin", "etc"):
        os.makedirs(os.path.join(bench_dir, sub), exist_ok=True)
    for rel, text in SCRIPTS.items():
        path = os.path.join(bench_dir, rel)
        with open(path, "w") as fh:
            fh.write(text.replace("@SLEEP@", SLEEP_SECONDS).replace("@PYTHON@", sys.executable))
        os.chmod(path, 0o755)
    for name, script, _args, _size in SUPERVISED:
        if name != script:
            os.symlink(os.path.join(bench_dir, "bin", script), os.path.join(bench_dir, "bin", name))
    path = os.path.join(bench_dir, "bin", "supervisord")
    with open(path, "w") as fh:
        fh.write(_supervisord_script(bench_dir))
    os.chmod(path, 0o755)


# ===========================================================================
# inner side: PID 1 of the bench's namespace


def _ns_children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(name), "rb") as fh:
                raw = fh.read()
            with open("/proc/{}/cmdline".format(name), "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if int(raw[raw.rfind(b")") + 2 :].split()[1]) == ppid:
            out.append((int(name), cmd.split(b"\0")))
    return out


def inner_main(args):
    """Populate the namespace, report, then wait for stdin EOF and exit (killing all)."""
    bench_dir = BENCH_DIR
    # a private tmpfs on /tmp, in the mount namespace unshare made for us
    # (propagation private): invisible to the host, gone with the namespace
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "hostcheck-bench", "/tmp"], check=True)
    write_scripts(bench_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    sh = shutil.which("sh")
    sleep = shutil.which("sleep")
    setsid = shutil.which("setsid")
    total = args.procs
    planned = 1  # this init

    def spawn(argv, session=False):
        return os.posix_spawn(argv[0], argv, env, setsid=session)

    # -- the incident: supervisord starts its programs, is SIGKILLed, restarted
    sup_cmd = [os.path.join(bench_dir, "bin", "supervisord"), "-c", os.path.join(bench_dir, "etc", "supervisord.conf")]
    sup1 = spawn(sup_cmd, session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids = _ns_children(sup1)
        execd = [k for k in kids if len(k[1]) > 1 and k[1][1].startswith(os.path.join(bench_dir, "bin").encode())]
        if len(execd) == len(SUPERVISED):
            break
        time.sleep(0.02)
    else:
        print("ERROR supervisord did not start its programs", flush=True)
        return 2
    os.kill(sup1, signal.SIGKILL)  # our own child, inside our namespace
    os.waitpid(sup1, 0)
    spawn(sup_cmd, session=True)
    planned += 1 + 2 * sum(size for _n, _s, _a, size in SUPERVISED)

    # -- duplicate daemons: two identical rsyslogd trees, one with another config
    rsyslogd = os.path.join(bench_dir, "sbin", "rsyslogd")
    for conf in ("rsyslog.conf", "rsyslog.conf", "rsyslog-b.conf"):
        spawn([setsid, "-f", rsyslogd, "-n", "-f", os.path.join(bench_dir, "etc", conf)])
        planned += 3

    # -- double-forked daemons that init adopted (no provenance): not leaks
    for _ in range(10):
        spawn([setsid, "-f", sleep, SLEEP_SECONDS])
        planned += 1

    # -- deep chains
    chains = max(1, total // 500)
    for _ in range(chains):
        spawn([os.path.join(bench_dir, "bin", "chain"), "40"])
        planned += 42

    # -- long command lines (java-like class paths), a few of ~200 KB
    longs = max(2, total // 40)
    for idx in range(longs):
        if idx < 2 or idx % 25 == 0:
            size = 100_000
            extra = ["-Dhuge.a=" + "x" * size, "-Dhuge.b=" + "y" * size]
        else:
            size = 256 << (idx % 8)  # 256 B .. 32 KB
            extra = []
        classpath = ":".join(
            "/opt/app{}/lib/component-{:05d}-1.2.3.jar".format(idx, i) for i in range(size // 36 + 1)
        )
        argv = [sh, "-c", "sleep {}; :".format(SLEEP_SECONDS), "java", "-Xmx512m",
                "-Dapp.name=svc{}".format(idx)] + extra + [
                "-cp", classpath, "com.example.Main", "--config", "/etc/app/{}.yml".format(idx)]
        spawn(argv, session=(idx % 3 == 0))
        planned += 2

    if planned > total:
        print("ERROR --procs {} is too small for the fixed structures ({})".format(total, planned), flush=True)
        return 2

    # -- fill with small trees: a shell with 1-4 sleeping children; every 4th
    #    is a session leader (like a daemon), so the environ rule sees it
    planned = fill_small_trees(planned, total, spawn, sh, sleep, SLEEP_SECONDS)
    print("SPAWNED {}".format(planned), flush=True)
    # Stay PID 1 until the bench closes our stdin (or dies): then exit, and the
    # kernel kills everything in the namespace.
    return serve_until_eof()


# ===========================================================================
# host side


def scan(pids):
    """Minimal, independent view of ``pids``: {pid: (ppid, pgid, argv list)}."""
    out = {}
    for pid in pids:
        raw = _read("/proc/{}/stat".format(pid))
        cmd = _read("/proc/{}/cmdline".format(pid))
        if raw is None or cmd is None:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        argv = [a.decode("utf-8", "replace") for a in cmd.rstrip(b"\0").split(b"\0")] if cmd else []
        out[pid] = (int(fields[1]), int(fields[2]), argv)
    return out


class Namespace(benchlib.Namespace):
    """The bench's PID namespace and what was built in it."""

    def __init__(self, procs):
        super().__init__(__file__, ["--procs", str(procs)])
        self.procs = procs
        self.bench_dir = BENCH_DIR


# ---------------------------------------------------------------------------
# floors


def floor_stat():
    """The cheapest snapshot: listdir + read every stat file, nothing parsed."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fd = os.open("/proc/" + name + "/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.read(fd, 4096)
            except OSError:
                pass
            os.close(fd)


def floor_scan():
    """One pass reading stat, cmdline and cgroup of every process, nothing parsed:
    what the grain must cost less than."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for leaf in ("/stat", "/cmdline", "/cgroup"):
            try:
                fd = os.open("/proc/" + name + leaf, flags)
            except OSError:
                continue
            try:
                while len(os.read(fd, 65536)) == 65536:
                    pass
            except OSError:
                pass
            os.close(fd)


class _RecordingOS:
    """Stands in for the ``os`` module of the code under test, logging file access."""

    def __init__(self, real, log):
        self._real = real
        self._log = log

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, path, flags, mode=0o777, **kwargs):
        self._log.append(("open", path))
        return self._real.open(path, flags, mode, **kwargs)

    def readlink(self, path, **kwargs):
        self._log.append(("readlink", path))
        return self._real.readlink(path, **kwargs)

    def listdir(self, path="."):
        self._log.append(("listdir", path))
        return self._real.listdir(path)


def record(fn, modules):
    """Run ``fn`` once with the ``os`` of ``modules`` wrapped; return the file accesses."""
    log = []
    saved = [(m, m.os) for m in modules]
    try:
        for mod in modules:
            mod.os = _RecordingOS(os, log)
        fn()
    finally:
        for mod, real in saved:
            mod.os = real
    return log


def make_replay(log):
    """A floor reader doing exactly the system calls in ``log``, nothing parsed."""
    ops = tuple(log)
    o_flags = os.O_RDONLY | os.O_CLOEXEC
    _open, _read, _close, _readlink, _listdir = os.open, os.read, os.close, os.readlink, os.listdir

    def replay():
        for kind, path in ops:
            if kind == "open":
                try:
                    fd = _open(path, o_flags)
                except OSError:
                    continue
                try:
                    while len(_read(fd, 65536)) == 65536:
                        pass
                except OSError:
                    pass
                _close(fd)
            elif kind == "readlink":
                try:
                    _readlink(path)
                except OSError:
                    pass
            else:
                _listdir(path)

    return replay


def describe(log):
    """Counts of the files in an access log, by kind (``stat``, ``cmdline``, ``ns/pid``...)."""
    counts = {}
    for kind, path in log:
        if kind == "listdir":
            key = "listdir " + path
        else:
            parts = path.split("/")
            if len(parts) >= 4 and parts[2].isdigit():
                key = "/".join(parts[3:])
            else:
                key = path
            if kind == "readlink":
                key = "readlink " + key
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------------------
# correctness


def verify(ns, analysis, grain_value):
    """Compare the diagnosis with what the bench built. Returns (ok, line, details)."""
    members = ns_members(ns.ns_id)
    view = scan(members)
    member_set = set(view)
    children = {}
    for pid, (ppid, _pgid, _argv) in view.items():
        children.setdefault(ppid, []).append(pid)

    def tree(root):
        out, queue = {root}, [root]
        while queue:
            for child in children.get(queue.pop(), ()):
                if child not in out:
                    out.add(child)
                    queue.append(child)
        return out

    bindir = os.path.join(ns.bench_dir, "bin")
    script_of = {os.path.join(bindir, name): (name, size) for name, _s, _a, size in SUPERVISED}
    sup_path = os.path.join(bindir, "supervisord")
    sup2 = [p for p, (_pp, _pg, argv) in view.items() if argv[1:2] == [sup_path]]
    leaked, managed = {}, {}
    for pid, (ppid, pgid, argv) in view.items():
        if argv[1:2] and argv[1] in script_of and pgid == pid:
            name, size = script_of[argv[1]]
            if ppid == ns.init_pid:
                leaked[name] = (pid, size)
            elif sup2 and ppid == sup2[0]:
                managed[name] = pid
    rsys = os.path.join(ns.bench_dir, "sbin", "rsyslogd")
    dup_conf = os.path.join(ns.bench_dir, "etc", "rsyslog.conf")
    dup_roots = {p for p, (pp, _pg, argv) in view.items()
                 if argv[1:2] == [rsys] and argv[-1] == dup_conf and view.get(pp, (0, 0, []))[2][1:2] != [rsys]}

    problems = []
    if len(leaked) != len(SUPERVISED) or len(managed) != len(SUPERVISED):
        problems.append("bed: {} leaked / {} managed program trees, expected {}".format(
            len(leaked), len(managed), len(SUPERVISED)))
    for name, (root, size) in leaked.items():
        if len(tree(root)) != size:
            problems.append("bed: leaked {} tree has {} processes, expected {}".format(name, len(tree(root)), size))

    inside = [f for f in analysis.findings if f["root"] in member_set]
    outside = [f for f in analysis.findings if f["root"] not in member_set and f["severity"] != "info"]
    leaks = [f for f in inside if f["code"] == "supervisor-leak" and f["severity"] == "critical"]
    by_root = {f["root"]: f for f in leaks}
    exact = 0
    for name, (root, _size) in leaked.items():
        f = by_root.get(root)
        if f is None:
            problems.append("leaked {} tree (root {}) not reported".format(name, root))
            continue
        if set(f["pids"]) != tree(root):
            problems.append("leaked {} tree: reported pids {} != tree {}".format(
                name, sorted(f["pids"]), sorted(tree(root))))
        elif (f["provenance"] or {}).get("supervisor_program") != name:
            problems.append("leaked {} tree: supervisor_program {!r}".format(
                name, (f["provenance"] or {}).get("supervisor_program")))
        else:
            exact += 1
    twin_ok = False
    if "salt-minion" in leaked and "salt-minion" in managed:
        f = by_root.get(leaked["salt-minion"][0])
        twin_ok = f is not None and f.get("duplicate_of") == managed["salt-minion"]
        if not twin_ok:
            problems.append("leaked salt-minion: duplicate_of {!r}, managed twin is {}".format(
                f and f.get("duplicate_of"), managed["salt-minion"]))
    dups = [f for f in inside if f["code"] == "duplicate-daemon"]
    dup_found = {f["root"] for f in dups if f["program"] == "rsyslogd"}
    if len(dup_roots) != 2:
        problems.append("bed: {} identical rsyslogd trees, expected 2".format(len(dup_roots)))
    elif dup_found != dup_roots:
        problems.append("duplicate rsyslogd roots {} reported as {}".format(sorted(dup_roots), sorted(dup_found)))
    expected_roots = {r for r, _s in leaked.values()} | dup_roots
    false_pos = [f for f in inside if f["severity"] != "info" and f["root"] not in expected_roots]
    for f in false_pos:
        problems.append("false alarm in the bench namespace: {} {}".format(f["code"], f["summary"]))
    grain_orphans = (grain_value or {}).get("hostcheck", {}).get("orphans", {})
    host_critical = sum(1 for f in outside if f["severity"] == "critical")
    if grain_orphans.get("count") != len(leaks) + host_critical:
        problems.append("grain count {!r} != {} critical findings".format(
            grain_orphans.get("count"), len(leaks) + host_critical))

    ok = not problems
    line = (
        "CORRECTNESS {}: supervisor-leak critical {}/{} (exact trees {}), salt-minion leak -> managed twin {}, "
        "duplicate-daemon rsyslogd {}/{}, false alarms in bench namespace {}, grain count {}; "
        "findings outside the bench (not ours): {}".format(
            "ok" if ok else "FAILED", len(leaks), len(leaked), exact,
            "yes" if twin_ok else "NO", len(dup_found & dup_roots), len(dup_roots), len(false_pos),
            grain_orphans.get("count"), len(outside),
        )
    )
    details = {
        "leaked_created": len(leaked),
        "leaked_found": len(leaks),
        "leaked_exact": exact,
        "twin_ok": twin_ok,
        "duplicates_created": len(dup_roots),
        "duplicates_found": len(dup_found & dup_roots),
        "false_alarms": len(false_pos),
        "outside_findings": len(outside),
        "problems": problems,
    }
    return ok, line, details


# ---------------------------------------------------------------------------


def load_grain(code_root):
    grain_file = os.path.join(code_root, "_grains", "hostcheck.py")
    spec = importlib.util.spec_from_file_location("hostcheck_grain", grain_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {}
    return mod


def host_main(args):
    if os.geteuid() != 0:
        raise SystemExit("the bench needs root (unshare --pid)")
    code_root = os.path.abspath(args.code_root)
    sys.path.insert(0, os.path.join(code_root, "_utils"))
    import hostcheck_check  # pylint: disable=import-outside-toplevel
    import hostcheck_orphans  # pylint: disable=import-outside-toplevel
    import hostcheck_proc  # pylint: disable=import-outside-toplevel
    import hostcheck_service  # pylint: disable=import-outside-toplevel

    grain = load_grain(code_root)

    def orphans():
        diag = hostcheck_check.diagnose(hostcheck_orphans, hostcheck_check.Host())
        hostcheck_orphans.summarise(diag)
        return diag

    benches = {
        "floor_stat": floor_stat,
        "snapshot_lazy": hostcheck_proc.snapshot,
        "snapshot_full": lambda: hostcheck_proc.snapshot(load=True),
        "orphans": orphans,
        "grain": grain.hostcheck,
        "floor_scan": floor_scan,
    }
    mods = (hostcheck_proc, hostcheck_orphans, hostcheck_service)

    ns = Namespace(args.procs)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    status = 0
    try:
        t0 = time.monotonic()
        in_ns = ns.start()
        setup_s = time.monotonic() - t0
        total = sum(1 for n in os.listdir("/proc") if n.isdigit())

        full_log = record(benches["snapshot_full"], mods)
        orphans_log = record(orphans, mods)
        benches["floor_full"] = make_replay(full_log)
        benches["orphans_floor"] = make_replay(orphans_log)
        order = ["floor_stat", "snapshot_lazy", "floor_full", "snapshot_full",
                 "orphans_floor", "orphans", "grain", "floor_scan"]

        if args.profile:
            prof = cProfile.Profile()
            fn = benches[args.profile]
            for _ in range(args.repeat):
                prof.enable()
                fn()
                prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())

        samples = measure(benches, args.repeat, args.warmup, order=order)
        med = {n: statistics.median(v) for n, v in samples.items()}
        low = {n: min(v) for n, v in samples.items()}

        analysis = orphans()
        grain_value = grain.hostcheck()
        ok, correctness, details = verify(ns, analysis, grain_value)
    finally:
        ns.stop()

    ratios = {
        "snapshot_full/floor_full": med["snapshot_full"] / med["floor_full"],
        "snapshot_lazy/floor_stat": med["snapshot_lazy"] / med["floor_stat"],
        "orphans/orphans_floor": med["orphans"] / med["orphans_floor"],
    }
    load1 = os.getloadavg()[0]
    imported_from = os.path.dirname(os.path.abspath(hostcheck_proc.__file__))
    print("code under test: {}/_utils and {}/_grains/hostcheck.py{}".format(
        code_root, code_root,
        "" if imported_from == os.path.join(code_root, "_utils")
        else " (WARNING: hostcheck_proc imported from {})".format(imported_from)))
    print("hostcheck orphans bench: {} processes in /proc ({} in the bench namespace, set up in {:.1f} s), "
          "{} timed runs (+{} warm-up), {} CPUs, load average {:.2f}".format(
              total, in_ns, setup_s, args.repeat, args.warmup, os.cpu_count(), load1))
    print()
    print("{:<15} {:>10} {:>10}  {}".format("", "median ms", "min ms", "what (CPU time of this process)"))
    what = {
        "floor_stat": "listdir + read every /proc/PID/stat, nothing parsed",
        "snapshot_lazy": "hostcheck_proc.snapshot()",
        "floor_full": "replay of the files snapshot(load=True) reads",
        "snapshot_full": "hostcheck_proc.snapshot(load=True)",
        "orphans_floor": "replay of the files diagnose() reads",
        "orphans": "hostcheck.orphans: diagnose(hostcheck_orphans) + summarise()",
        "grain": "_grains/hostcheck.py hostcheck(): every registered check, quick",
        "floor_scan": "listdir + read every stat, cmdline and cgroup, nothing parsed",
    }
    for name in order:
        print("{:<15} {:>10.2f} {:>10.2f}  {}".format(name, med[name], low[name], what[name]))
    print()
    misses = []
    for key, val in ratios.items():
        verdict = "ok" if val <= RATIO_TARGET else "MISS"
        if verdict == "MISS":
            misses.append(key)
        print("ratio {:<26} {:5.2f}x  (target <= {}x: {})".format(key, val, RATIO_TARGET, verdict))
    grain_ok = med["grain"] < GRAIN_BUDGET_MS and med["grain"] < med["floor_scan"]
    if not grain_ok:
        misses.append("grain")
    print("ratio {:<26} {:5.2f}x  (target < 1x: {})".format(
        "grain/floor_scan", med["grain"] / med["floor_scan"], "ok" if med["grain"] < med["floor_scan"] else "MISS"))
    print("grain {:<26} {:5.1f} ms (budget < {:.0f} ms at {} processes: {}; {:.0f}% of budget)".format(
        "hostcheck()", med["grain"], GRAIN_BUDGET_MS, total, "ok" if grain_ok else "MISS",
        100.0 * med["grain"] / GRAIN_BUDGET_MS))
    print()
    print("floor_full reads:    " + ", ".join("{} {}".format(v, k) for k, v in describe(full_log).items()))
    print("orphans_floor reads: " + ", ".join("{} {}".format(v, k) for k, v in describe(orphans_log).items()))
    print()
    print(correctness)
    for problem in details["problems"]:
        print("  - " + problem)
    if not ok:
        status = 1
    elif args.strict and misses:
        status = 3
    print("BENCH_JSON " + json.dumps({
        "procs_total": total,
        "procs_bench_namespace": in_ns,
        "repeat": args.repeat,
        "code_root": code_root,
        "cpus": os.cpu_count(),
        "loadavg1": round(load1, 2),
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "min_ms": {k: round(v, 3) for k, v in low.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratio_target": RATIO_TARGET,
        "grain_budget_ms": GRAIN_BUDGET_MS,
        "grain_ok": grain_ok,
        "misses": misses,
        "floor_files": {"floor_full": describe(full_log), "orphans_floor": describe(orphans_log)},
        "correct": ok,
        "correctness": details,
    }, sort_keys=True))
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2000,
                        help="processes in the bench namespace, its init included (default 2000)")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each measurement (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--profile", choices=("snapshot_lazy", "snapshot_full", "orphans", "grain"),
                        help="also print a cProfile of --repeat runs of one measurement")
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 when a speed target is missed (correctness failures always exit 1)")
    parser.add_argument("--code-root", default=ROOT,
                        help="tree whose _utils and _grains are measured (default: this checkout); "
                             "point it at a patched copy to compare")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return inner_main(args)
    if args.procs < 120:
        parser.error("--procs must be at least 120")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
