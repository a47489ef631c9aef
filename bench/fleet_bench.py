"""``salt '*' hostcheck.report`` against ``salt '*' test.ping`` on the same
master, through the NAT bed (tests/beds/nat.py), in one run.

Run as root from the repository root::

    .venv/bin/python bench/fleet_bench.py [--minions 8] [--procs 200] [--repeat 9]

It builds the bed: a salt-master in its own network namespace and
``--minions`` salt-minions at a client site behind a NAT router, each in its
own PID namespace with ``--procs`` extra sleeping processes (so each report
has a host's worth of processes to read), accepts their keys and runs
``saltutil.sync_all``, then ``saltutil.refresh_grains`` (the state of any
minion started since the sync: the ``hostcheck`` grain has imported
hostcheck's core into the minion's main process, and every job process
forked from it finds it there; ``--cold`` skips the refresh, so each job
imports the core itself, as right after a sync). Then, interleaved (the
order alternates every run),
it times the master's ``LocalClient.cmd('*', fun)`` until every minion has
answered (wall time, measured inside the process on the master that makes
the call: what an operator waits for):

``ping``     ``test.ping``: the job round trip through the NAT, nothing run
``report``   ``hostcheck.report``: every check on every minion

Target: ``report`` median <= 1.2 x ``ping`` median. Everything the bench
started is stopped at the end (the bed kills its namespaces by the PIDs it
started and deletes its network namespaces), also on failure.
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.beds import nat  # noqa: E402


def build(minions, procs, cold=False):
    bed = nat.NatBed({"site-{}".format(i + 1): {} for i in range(minions)})
    t0 = time.monotonic()
    bed.start()
    bed.accept_keys()
    bed.wait_all_answer(timeout=180)
    synced = bed.cmd("*", "saltutil.sync_all", timeout=180)
    assert sorted(synced) == sorted(bed.minions), synced
    for minion in bed.minions.values():
        if procs:
            minion.add_processes(procs)
    if not cold:
        # as after any minion start: the hostcheck grain has loaded the core
        # (_utils) into the minion's main process, so a job does not import it
        assert sorted(bed.cmd("*", "saltutil.refresh_grains", timeout=60)) == sorted(bed.minions)
        time.sleep(2)
    return bed, time.monotonic() - t0


def one(bed, fun):
    ret, seconds = bed.cmd("*", fun, timeout=120, timed=True)
    missing = sorted(set(bed.minions) - set(ret))
    if missing:
        raise RuntimeError("{}: no answer from {}".format(fun, ", ".join(missing)))
    if fun == "hostcheck.report":
        bad = [m for m, r in ret.items() if not isinstance(r, dict) or "checks" not in r]
        if bad:
            raise RuntimeError("hostcheck.report failed on {}: {}".format(bad, [ret[m] for m in bad]))
    return seconds


def measure(bed, repeat, warmup):
    names = ["ping", "report"]
    funs = {"ping": "test.ping", "report": "hostcheck.report"}
    times = {n: [] for n in names}
    for run in range(warmup + repeat):
        for name in names[run % 2:] + names[:run % 2]:
            seconds = one(bed, funs[name])
            if run >= warmup:
                times[name].append(seconds)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minions", type=int, default=8)
    ap.add_argument("--procs", type=int, default=200, help="extra processes in each minion's PID namespace")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cold", action="store_true",
                    help="measure right after saltutil.sync_all, before any grains refresh: every job then "
                         "imports hostcheck's core in its own process")
    args = ap.parse_args(argv)
    bed = None
    try:
        bed, setup = build(args.minions, args.procs, args.cold)
        procs = [len(m.host_pids()) for m in bed.minions.values()]
        times = measure(bed, args.repeat, args.warmup)
    finally:
        if bed is not None:
            bed.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["report"] / med["ping"]
    print("NAT bed: {} minions behind the router, {}-{} processes in each one's PID namespace (set up in {:.0f} s)"
          .format(args.minions, min(procs), max(procs), setup))
    print("runs: {} interleaved (+{} warm-up); wall time until every minion answered, ms; {}".format(
        args.repeat, args.warmup, "cold: right after sync_all" if args.cold else
        "steady: grains refreshed after sync_all, as after any minion start"))
    for name, fun in (("ping", "test.ping"), ("report", "hostcheck.report")):
        print("  salt '*' {:<17} median {:8.1f}   min {:8.1f}   max {:8.1f}".format(
            fun, med[name] * 1e3, min(times[name]) * 1e3, max(times[name]) * 1e3))
    print("hostcheck.report / test.ping = {:.2f}x   (target <= 1.2: {})".format(ratio, "ok" if ratio <= 1.2 else "MISSED"))
    return 0 if ratio <= 1.2 else 3


if __name__ == "__main__":
    sys.exit(main())
