#!/usr/bin/env python3
"""Benchmark: ``hostcheck.deleted_binaries`` against needrestart, Salt's
``restartcheck`` and the floor, on 2,000 processes some of which run old code.

Usage (root, from the repository root)::

    .venv/bin/python bench/deleted_bench.py [--procs 2000] [--repeat 7] [--fetch]

Everything runs inside a private PID and mount namespace (``unshare --pid
--fork --kill-child --mount-proc``) whose PID 1 is this script in
``--inner`` mode: it mounts tmpfs on ``/mnt`` and ``/opt`` (only in its own
mount namespace; the host's are untouched), builds the processes, times the
tools over the namespace's ``/proc`` (exactly the bench's processes) and
prints the results. When it exits, the kernel kills every process in the
namespace. Nothing is ever signalled by name.

The processes (``--procs`` in all, init included):

- 40 ``sleep`` copies at ``/mnt/b/old-svc``, deleted after start (deleted exe);
- 40 ``sleep`` with a copy of ``libz.so.1`` preloaded from ``/mnt/b/libold.so``,
  deleted after start (deleted library);
- 20 ``sleep`` copies at ``/opt/app/old-app``, deleted (restartcheck's
  joined ignore regex contains ``^/[aio]``, a character class that skips
  every path starting with ``/a``, ``/i`` or ``/o``, so ``/opt`` is never seen);
- 10 ``sleep`` copies at ``/mnt/b/bound`` with another file bind-mounted over
  the path (replaced, not deleted: the mapped inode is still linked);
- one Python process with an executable ``memfd`` mapping (never stale);
- plain ``sleep`` processes for the rest.

Timed (``--repeat`` runs each, interleaved; medians compared):

``floor``         listdir ``/proc`` + ``readlink exe`` + read all of ``maps`` of every process
``hostcheck``     ``hostcheck_check.diagnose(hostcheck_deleted)`` in-process (read + analyse)
``needrestart``   ``needrestart -b -l -v -r l`` as a whole process (list only, never restarts)
``restartcheck``  Salt's ``restartcheck.restartcheck`` in-process (through the Salt loader)

needrestart is the Debian package; if it is not installed, ``--fetch``
downloads it with ``apt-get download`` and unpacks it (``dpkg -x``) into
``/var/cache/hostcheck-bench/nr`` without installing it (so its apt hook
can never restart anything on this host); its Perl dependencies must be
installed (``libproc-processtable-perl libsort-naturally-perl
libmodule-find-perl libterm-readkey-perl libintl-perl``).

Targets: hostcheck >= 5x faster than needrestart, >= 10x faster than
restartcheck, <= 1.5x the floor, and no stale process that needrestart finds
missing. The last line is ``BENCH_JSON {...}``.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NR_CACHE = "/var/cache/hostcheck-bench/nr"
KINDS = (("old-svc", 40), ("libold", 40), ("old-app", 20), ("bound", 10))
MEMFD = ("import mmap, os, time\nfd = os.memfd_create('jit')\n"
         "os.write(fd, open('/bin/true', 'rb').read())\n"
         "m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)\ntime.sleep(100000)\n")


# ---------------------------------------------------------------------------
# tools


def needrestart_cmd():
    """argv prefix for needrestart, or ``None``."""
    found = shutil.which("needrestart") or shutil.which("needrestart", path="/usr/sbin:/sbin")
    if found:
        return [found]
    script = os.path.join(NR_CACHE, "usr/sbin/needrestart")
    if os.path.exists(script):
        return ["perl", "-I", os.path.join(NR_CACHE, "usr/share/perl5"), script,
                "-c", os.path.join(NR_CACHE, "etc/needrestart/needrestart.conf")]
    return None


def fetch_needrestart():
    os.makedirs(os.path.dirname(NR_CACHE), exist_ok=True)
    work = os.path.dirname(NR_CACHE)
    subprocess.run(["apt-get", "download", "needrestart"], cwd=work, check=True)
    debs = sorted(n for n in os.listdir(work) if n.startswith("needrestart_") and n.endswith(".deb"))
    subprocess.run(["dpkg", "-x", os.path.join(work, debs[-1]), NR_CACHE], check=True)


def run_needrestart(cmd):
    """PIDs needrestart reports (from its -v log), and its batch output."""
    out = subprocess.run(cmd + ["-b", "-l", "-v", "-r", "l"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=600, check=False)
    pids = {int(m) for m in re.findall(r"#(\d+) uses (?:obsolete|deleted|non-existing)", out.stderr)}
    return pids, out.stdout


def salt_restartcheck(work):
    """A callable running Salt's restartcheck in-process (loader set up once)."""
    import logging  # noqa: PLC0415

    import salt.config  # noqa: PLC0415
    import salt.loader  # noqa: PLC0415

    logging.disable(logging.CRITICAL)  # its cmd.run failures (runlevel, dpkg -S) are part of the cost, not news

    opts = salt.config.minion_config(None)
    opts.update(file_client="local", cachedir=os.path.join(work, "cache"), pki_dir=os.path.join(work, "pki"),
                sock_dir=os.path.join(work, "sock"), log_file=os.path.join(work, "minion.log"))
    opts["grains"] = salt.loader.grains(opts)
    mods = salt.loader.minion_mods(opts)
    if "restartcheck.restartcheck" not in mods:
        return None
    return lambda: mods["restartcheck.restartcheck"](verbose=True)


def restartcheck_pids(text):
    if not isinstance(text, str):
        return set()
    return {int(m) for m in re.findall(r"^\s*(\d+) \S.* \(file: ", text, re.M)}


def floor():
    """The cheapest reader of the same information: exe links and whole maps files."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        base = "/proc/" + name
        try:
            os.readlink(base + "/exe")
        except OSError:
            continue
        try:
            fd = os.open(base + "/maps", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        n += 1
    return n


# ---------------------------------------------------------------------------
# inner side: PID 1 of the namespace


def _libz():
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        if os.path.exists(os.path.join(d, "libz.so.1")):
            return os.path.join(d, "libz.so.1")
    raise SystemExit("no libz.so.1 to preload")


def build(total):
    """Start the processes; return ``{kind: [pids]}``."""
    for mnt in ("/mnt", "/opt"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "hc-bench", mnt], check=True)
    os.makedirs("/mnt/b")
    os.makedirs("/opt/app")
    for path in ("/mnt/b/old-svc", "/opt/app/old-app", "/mnt/b/bound", "/mnt/b/bound-new"):
        shutil.copy2("/bin/sleep", path)
    shutil.copy2(_libz(), "/mnt/b/libold.so")
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    argv = {"old-svc": ["/mnt/b/old-svc"], "old-app": ["/opt/app/old-app"], "bound": ["/mnt/b/bound"],
            "libold": ["/bin/sleep"]}
    env = dict(os.environ, LD_PRELOAD="/mnt/b/libold.so")
    pids = {}
    for kind, count in KINDS:
        pids[kind] = [subprocess.Popen(argv[kind] + ["100000"], env=env if kind == "libold" else None,
                                       **quiet).pid for _ in range(count)]
    pids["memfd"] = [subprocess.Popen([sys.executable, "-c", MEMFD], **quiet).pid]
    filler = total - 1 - sum(len(v) for v in pids.values())
    pids["plain"] = [subprocess.Popen(["/bin/sleep", "100000"], **quiet).pid for _ in range(filler)]
    time.sleep(1.0)  # let every process exec and map its libraries
    os.unlink("/mnt/b/old-svc")
    os.unlink("/opt/app/old-app")
    os.unlink("/mnt/b/libold.so")
    time.sleep(0.05)  # the replacement is newer than every process
    os.utime("/mnt/b/bound-new")
    subprocess.run(["mount", "--bind", "/mnt/b/bound-new", "/mnt/b/bound"], check=True)
    return pids


def cpu_seconds():
    """CPU time (user + system) of this process and of the children it
    waited for: needrestart is a child, hostcheck and the floor run here."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    t0 = cpu_seconds()
    value = fn()
    return cpu_seconds() - t0, value


def inner_main(args):
    sys.path.insert(0, os.path.join(ROOT, "_utils"))
    import hostcheck_check  # noqa: PLC0415
    import hostcheck_deleted  # noqa: PLC0415

    pids = build(args.procs)
    expected = set(pids["old-svc"] + pids["libold"] + pids["old-app"] + pids["bound"])
    nr_cmd = needrestart_cmd()
    rc = salt_restartcheck("/mnt/salt")

    opts = hostcheck_check.options(hostcheck_deleted)

    def hostcheck():
        return hostcheck_check.diagnose(hostcheck_deleted, hostcheck_check.Host(), opts).findings

    benches = {"floor": floor, "hostcheck": hostcheck}
    if nr_cmd:
        benches["needrestart"] = lambda: run_needrestart(nr_cmd)
    if rc:
        benches["restartcheck"] = rc
    heavy = {"needrestart": max(1, args.repeat // 2), "restartcheck": max(1, args.repeat // 3)}
    times = {name: [] for name in benches}
    last = {}
    for fn in benches.values():  # warm-up (page cache, imports)
        fn()
    for i in range(args.repeat):
        names = list(benches)
        names = names[i % len(names):] + names[: i % len(names)]
        for name in names:
            if i >= heavy.get(name, args.repeat):
                continue
            secs, last[name] = timed(benches[name])
            times[name].append(secs)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}

    found = {"hostcheck": {p for f in last["hostcheck"] for p in f["pids"]}}
    if "needrestart" in last:
        found["needrestart"] = last["needrestart"][0]
    if "restartcheck" in last:
        found["restartcheck"] = restartcheck_pids(last["restartcheck"])
    kind_of = {p: k for k, v in pids.items() for p in v}
    per_kind = {tool: {k: sum(1 for p in pids[k] if p in s) for k in pids} for tool, s in found.items()}
    print("processes in the namespace: {} (expected stale: {})".format(args.procs, len(expected)))
    print("{:<13} {:>10}  {}".format("tool", "median CPU ms", "stale found per kind " + json.dumps({k: len(v) for k, v in pids.items()})))
    for name in benches:
        print("{:<13} {:>10.1f}  {}".format(name, med[name], json.dumps(per_kind.get(name, {}))))
    ratios = {"hostcheck/floor": med["hostcheck"] / med["floor"]}
    if "needrestart" in med:
        ratios["needrestart/hostcheck"] = med["needrestart"] / med["hostcheck"]
    if "restartcheck" in med:
        ratios["restartcheck/hostcheck"] = med["restartcheck"] / med["hostcheck"]
    for k, v in ratios.items():
        print("{:<24} {:.2f}x".format(k, v))
    missing_vs_nr = sorted(found.get("needrestart", set()) - found["hostcheck"])
    extra = sorted(found["hostcheck"] - expected)
    targets = {
        "hostcheck/floor<=1.5": ratios["hostcheck/floor"] <= 1.5,
        "needrestart/hostcheck>=5": ratios.get("needrestart/hostcheck", 0) >= 5,
        "restartcheck/hostcheck>=10": ratios.get("restartcheck/hostcheck", 0) >= 10,
        "nothing needrestart finds is missed": not missing_vs_nr,
        "hostcheck finds exactly the stale processes": found["hostcheck"] == expected,
    }
    for k, v in targets.items():
        print("{:<45} {}".format(k, "ok" if v else "MISSED"))
    diffs = {tool: {"missed": sorted({kind_of.get(p, "?") for p in expected - s}),
                    "extra": sorted({kind_of.get(p, "other") for p in s - expected})}
             for tool, s in found.items()}
    print("differences (kinds missed / reported beyond the stale ones): " + json.dumps(diffs))
    if not nr_cmd:
        print("needrestart not found: install it, or run with --fetch (apt-get download + dpkg -x, not installed)")
    print("BENCH_JSON " + json.dumps({
        "procs": args.procs, "repeat": args.repeat, "median_ms": med, "ratios": ratios, "targets": targets,
        "found_per_kind": per_kind, "differences": diffs, "missing_vs_needrestart": missing_vs_nr,
        "hostcheck_extra": extra, "cpus": os.cpu_count(), "loadavg1": os.getloadavg()[0],
    }), flush=True)
    return 0 if targets["hostcheck finds exactly the stale processes"] and not missing_vs_nr else 1


# ---------------------------------------------------------------------------
# host side


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2000, help="processes in the namespace (default 2000)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of the fast tools (default 7)")
    parser.add_argument("--fetch", action="store_true", help="download and unpack needrestart if missing")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return inner_main(args)
    if os.geteuid() != 0:
        parser.error("run as root (it needs a PID namespace)")
    if args.procs < 200:
        parser.error("--procs must be at least 200")
    if needrestart_cmd() is None and args.fetch:
        fetch_needrestart()
    cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, os.path.abspath(__file__),
           "--inner", "--procs", str(args.procs), "--repeat", str(args.repeat)]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
