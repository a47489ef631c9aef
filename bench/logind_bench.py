#!/usr/bin/env python3
"""Benchmark: ``hostcheck.logind`` and its grain on 10,000 and 100,000 session
files, against the floor (listing and reading the files): CPU time, median of
interleaved runs.

Usage (from the repository root; any user, root not needed)::

    .venv/bin/python bench/logind_bench.py [--sizes 10000,100000] [--repeat 21]

For each size it builds, in a temporary directory on a tmpfs (``/dev/shm``,
like ``/run``; ``--dir`` to choose), a fake ``/run`` (systemd running,
``systemd/sessions`` and ``systemd/users``), a cgroup v2 tree and an ``/etc``
with RHEL 7's ``crond`` -> ``password-auth`` PAM stack (``pam_systemd``
included), and fills ``sessions`` with:

- 80%: stale files as systemd 219 wrote them for crond (no scope cgroup,
  leader gone; every tenth leader is PID 1, started after the session: a
  reused PID), plus the ``*.ref`` FIFO of every hundredth (never opened);
- 10%: closing sessions as systemd 252 writes them (``su-l``): the scope
  cgroup exists and its ``cgroup.procs`` holds one ``sleep`` the bench
  started (a leftover);
- 10%: live sessions whose leader is the bench itself (started before the
  session), their scope present (never read: the leader lives).

``/proc`` is the host's (read only). What is timed, each run in a rotated
order after ``gc.collect()``, as CPU time of this process:

``floor``        ``os.listdir`` of ``sessions``, then ``os.open`` +
                 ``os.read(fd, 65536)`` + ``os.close`` of every session
                 file (the ``*.ref`` names skipped); nothing parsed
``floor_all``    ``floor`` plus the other files the check must read, the
                 same way: ``os.listdir`` of ``user.slice`` and of each
                 user slice, ``cgroup.procs`` of every scope whose leader
                 is gone (the closing ones: where the leftovers are), and
                 ``/proc/PID/stat`` of every process (the snapshot that
                 tells live leaders from gone ones); listed by the bench
                 from what it built, not from the code under test
``floor_list``   ``os.listdir`` of ``sessions`` only
``logind``       ``hostcheck_check.diagnose(hostcheck_logind)`` +
                 ``summarise``: what ``hostcheck.logind`` does, minus Salt
``grain``        the same in quick mode (the ``hostcheck:logind`` entry)

Target: ``logind / floor <= 1.5``, judged on the median of each run's own
ratio (the two timed in one round, a few ms apart, so a drift of the shared
machine's load between them cancels), printed with its quartiles (how far
one run's load moves it) and a 95% confidence interval of that median
(order statistics, no assumption about the load's distribution: under,
over, or not told apart from the target). The ratio of the two medians
(taken apart, so moved by the drift) and ``logind / floor_all`` are printed
too.
The grain's cost is reported in ms and against ``floor_list``. After timing, the diagnosis is checked against what
was built (exit 1 when it is wrong; ``--strict``: exit 3 when the target is
missed). The bench signals only the one ``sleep`` it started, by its Popen.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))

import hostcheck_check  # noqa: E402
import hostcheck_logind  # noqa: E402
from benchlib import measure, median_ci  # noqa: E402

RATIO_TARGET = 1.5

S219 = ("# This is private data. Do not parse.\nUID=65534\nUSER=nobody\nACTIVE=1\nSTATE=closing\nREMOTE=0\n"
        "KILL_PROCESSES=0\nTYPE=unspecified\nCLASS=user\nSCOPE=session-{sid}.scope\n"
        "SCOPE_JOB=/org/freedesktop/systemd1/job/{sid}\nFIFO=/run/systemd/sessions/{sid}.ref\nSERVICE=crond\n"
        "LEADER={leader}\nAUDIT={sid}\nREALTIME={rt}\nMONOTONIC=12345678\n")
S252 = ("# This is private data. Do not parse.\nUID=65534\nUSER=nobody\nACTIVE=1\nIS_DISPLAY=0\nSTATE={state}\n"
        "REMOTE=0\nTYPE=unspecified\nORIGINAL_TYPE=unspecified\nCLASS=background\nSCOPE=session-{sid}.scope\n"
        "REMOTE_USER=root\nSERVICE=su\\x2dl\nPOSITION=0\nLEADER={leader}\nREALTIME={rt}\nMONOTONIC=4871415870\n")
CROND = ("auth       include    password-auth\naccount    required   pam_access.so\n"
         "account    include    password-auth\nsession    required   pam_loginuid.so\n"
         "session    include    password-auth\n")
PASSWORD_AUTH = ("auth        required      pam_env.so\nauth        sufficient    pam_unix.so nullok\n"
                 "account     required      pam_unix.so\nsession     optional      pam_keyinit.so revoke\n"
                 "session     required      pam_limits.so\n-session     optional      pam_systemd.so\n"
                 "session     [success=1 default=ignore] pam_succeed_if.so service in crond quiet use_uid\n"
                 "session     required      pam_unix.so\n")


class Tree:
    """The fake /run, cgroup tree and /etc for one size."""

    def __init__(self, base, size, leftover_pid):
        self.base = base
        self.size = size
        self.run = os.path.join(base, "run")
        self.sessions = os.path.join(self.run, "systemd", "sessions")
        self.cg = os.path.join(base, "cg")
        self.etc = os.path.join(base, "etc")
        self.expect = {"stale": 0, "closing": 0, "live": 0, "refs": 0}
        self.leftover = leftover_pid
        self.closing_scopes = []

    def build(self):
        for d in (self.sessions, os.path.join(self.run, "systemd", "system"), os.path.join(self.run, "systemd", "users"),
                  os.path.join(self.cg, "user.slice", "user-65534.slice"), os.path.join(self.etc, "pam.d")):
            os.makedirs(d)
        open(os.path.join(self.cg, "cgroup.controllers"), "w").close()
        with open(os.path.join(self.run, "systemd", "users", "65534"), "w") as fp:
            fp.write("NAME=nobody\nSTATE=active\n")
        for name, text in (("crond", CROND), ("password-auth", PASSWORD_AUTH)):
            with open(os.path.join(self.etc, "pam.d", name), "w") as fp:
                fp.write(text)
        old = int((time.time() - 3600) * 1e6)
        me = os.getpid()
        for i in range(self.size):
            kind = "stale" if i % 10 < 8 else ("closing" if i % 10 == 8 else "live")
            sid = str(100000 + i) if kind == "stale" else "c{}".format(i)
            self._session(kind, sid, i, old, me)
        return self

    def _session(self, kind, sid, i, old, me):
        self.expect[kind] += 1
        if kind == "stale":
            text = S219.format(sid=sid, leader=self.leftover if i % 100 == 0 else 9000000 + i, rt=old)
            if i % 100 == 0:
                os.mkfifo(os.path.join(self.sessions, sid + ".ref"))
                self.expect["refs"] += 1
        else:
            scope = os.path.join(self.cg, "user.slice", "user-65534.slice", "session-{}.scope".format(sid))
            os.mkdir(scope)
            if kind == "closing":
                self.closing_scopes.append(scope)
            with open(os.path.join(scope, "cgroup.procs"), "w") as fp:
                fp.write("{}\n".format(self.leftover if kind == "closing" else me))
            leader = 9000000 + i if kind == "closing" else me
            text = S252.format(sid=sid, leader=leader, rt=int(time.time() * 1e6) if kind == "live" else old,
                               state="closing" if kind == "closing" else "active")
        with open(os.path.join(self.sessions, sid), "w") as fp:
            fp.write(text)

    def host(self):
        return hostcheck_check.Host(run_root=self.run, etc_root=self.etc, cgroup_root=self.cg)


def floor(directory):
    flags = os.O_RDONLY | os.O_CLOEXEC
    _open, _read, _close = os.open, os.read, os.close
    prefix = directory + "/"
    for name in os.listdir(directory):
        if name.endswith(".ref"):
            continue
        fd = _open(prefix + name, flags)
        try:
            _read(fd, 65536)
        finally:
            _close(fd)


def _read_all(path, flags=os.O_RDONLY | os.O_CLOEXEC):
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        while os.read(fd, 65536):
            pass
    finally:
        os.close(fd)


def floor_all(tree):
    """``floor`` plus the scope listings, the closing scopes' ``cgroup.procs``
    and every ``/proc/PID/stat``."""
    floor(tree.sessions)
    top = os.path.join(tree.cg, "user.slice")
    for name in os.listdir(top):
        os.listdir(os.path.join(top, name))
    for path in tree.closing_scopes:
        _read_all(path + "/cgroup.procs")
    for name in os.listdir("/proc"):
        if name.isdigit():
            fd = None
            try:
                fd = os.open("/proc/" + name + "/stat", os.O_RDONLY | os.O_CLOEXEC)
                os.read(fd, 4096)
            except OSError:
                pass
            finally:
                if fd is not None:
                    os.close(fd)


def measures(tree):
    opts = hostcheck_check.options(hostcheck_logind)

    def logind():
        diag = hostcheck_check.diagnose(hostcheck_logind, tree.host(), opts)
        hostcheck_logind.summarise(diag)
        return diag

    def grain():
        return hostcheck_logind.summarise(hostcheck_check.diagnose(hostcheck_logind, tree.host(), opts, quick=True))

    return {
        "floor": lambda: floor(tree.sessions),
        "floor_all": lambda: floor_all(tree),
        "floor_list": lambda: os.listdir(tree.sessions),
        "logind": logind,
        "grain": grain,
    }


def check(tree, funcs):
    """Problems of the diagnosis against what was built."""
    diag = funcs["logind"]()
    d, problems = diag.details, []
    expect = tree.expect
    total = expect["stale"] + expect["closing"] + expect["live"]
    got = (d["sessions"], d["stale"], d["closing"], d["leftovers"], diag.facts.refs)
    want = (total, expect["stale"], expect["closing"], expect["closing"], expect["refs"])
    if got != want:
        problems.append("sessions/stale/closing/leftovers/refs {} != {}".format(got, want))
    codes = sorted(f["code"] for f in diag.findings)
    for code in ("session-pileup", "closing-leftovers", "stale-session-files", "cron-pam-systemd"):
        if code not in codes:
            problems.append("no {} finding ({})".format(code, codes))
    stale = [f for f in diag.findings if f["code"] == "stale-session-files"]
    reused = len([i for i in range(tree.size) if i % 10 < 8 and i % 100 == 0])
    if stale and stale[0]["reasons"].get("leader PID reused") != reused:
        problems.append("reused leaders {} != {}".format(stale[0]["reasons"], reused))
    grain = funcs["grain"]()
    if (grain["sessions"], grain["stale"], grain["closing"]) != (total, expect["stale"], None):
        problems.append("grain {} (expected {} sessions, {} without a scope)".format(grain, total, expect["stale"]))
    return problems


def run_size(size, args, leftover):
    base = tempfile.mkdtemp(prefix="hc-logind-bench-", dir=args.dir)
    try:
        t0 = time.monotonic()
        tree = Tree(base, size, leftover).build()
        built = time.monotonic() - t0
        funcs = measures(tree)
        times = measure(funcs, args.repeat, args.warmup)
        problems = check(tree, funcs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    # the ratio within each run (the two timed a few ms apart): the machine's load drifts less in between
    paired = [a / b for a, b in zip(times["logind"], times["floor"])]
    med["paired"] = statistics.median(paired)
    # the spread of the runs' own ratios: how far one run's load moves the verdict
    med["paired_q1"], _, med["paired_q3"] = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    # how sure this run is of that median (its own noise; the load can move a whole run beyond it)
    med["paired_ci"] = median_ci(paired)
    return built, med, low, problems


def report(size, built, med, low):
    print("{} session files (built in {:.1f} s), median of {} interleaved runs, CPU ms".format(size, built, ARGS.repeat))
    what = {"floor": "listdir + open/read/close of every session file, nothing parsed",
            "floor_list": "listdir of sessions only",
            "floor_all": "floor + scope listings, closing scopes' cgroup.procs, every /proc/PID/stat",
            "logind": "hostcheck.logind: diagnose(hostcheck_logind) + summarise()",
            "grain": "hostcheck:logind grain entry: quick diagnose + summarise()"}
    for name in ("floor", "floor_all", "floor_list", "logind", "grain"):
        print("  {:<11} {:9.1f}  min {:9.1f}  {}".format(name, med[name], low[name], what[name]))
    ratio = med["paired"]
    print("  ratio logind/floor       {:5.2f}x median of the runs' own ratios (target <= {}x: {})".format(
        ratio, RATIO_TARGET, "ok" if ratio <= RATIO_TARGET else "MISS"))
    print("                                 quartiles {:.2f}-{:.2f}x; {}".format(
        med["paired_q1"], med["paired_q3"], _ci_verdict(med["paired_ci"])))
    print("  ratio logind/floor       {:5.2f}x the medians' ratio (the two medians taken apart: "
          "moved by the load's drift)".format(med["logind"] / med["floor"]))
    print("  ratio logind/floor_all   {:5.2f}x the medians' ratio".format(med["logind"] / med["floor_all"]))
    print("  grain                    {:6.1f} ms ({:.2f}x floor_list, {:.2f}x floor)".format(
        med["grain"], med["grain"] / med["floor_list"], med["grain"] / med["floor"]))
    return ratio


def _ci_verdict(ci):
    """The 95% confidence interval of the median own ratio (the noise
    within this run; the machine's load can move a whole run beyond it),
    and what it says of the target."""
    if ci is None:
        return "too few runs for a 95% interval of the median (--repeat 6 or more)"
    low, high = ci
    verdict = ("under the target" if high <= RATIO_TARGET else "over the target" if low > RATIO_TARGET
               else "not told apart from the target")
    return "95% interval of the median {:.2f}-{:.2f}x: {}".format(low, high, verdict)


def main(argv=None):
    global ARGS  # pylint: disable=global-statement
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of session files")
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the temporary trees go (default /dev/shm, a tmpfs like /run)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when the target is missed (the median own ratio over 1.5x)")
    ARGS = args = ap.parse_args(argv)
    sleeper = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)  # the closing sessions' leftover
    status = 0
    try:
        print("CPUs {}, load average {:.2f}".format(os.cpu_count(), os.getloadavg()[0]))
        for size in (int(s) for s in args.sizes.split(",")):
            built, med, low, problems = run_size(size, args, sleeper.pid)
            ratio = report(size, built, med, low)
            print("  CORRECTNESS " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
            if problems:
                status = 1
            elif args.strict and ratio > RATIO_TARGET and status == 0:
                status = 3
    finally:
        sleeper.terminate()
        sleeper.wait()
    return status


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
