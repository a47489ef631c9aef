"""Issue 2's incident end to end, remedied through the master.

A real salt-master (loopback) and, in a private PID namespace, a real
supervisord running a real salt-minion. supervisord is SIGKILLed and started
again: the old minion tree lives on under the namespace's init and is the one
answering the master, while each new supervised copy finds its mantle and
exits. hostcheck must report the leaked tree, and ``hostcheck.orphans_reaped``
applied through the master must leave exactly one, supervised, minion.

All PIDs hostcheck reports are namespace PIDs (the minion lives in the
namespace); the bed maps them to host PIDs.
"""
import time

import pytest

from tests.beds.supervisor_leak import PROGRAM_NAME, read_proc, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

JOB_MARK = "ProcessPayload"


def _one(bed, fun, *args, timeout=60):
    """Run ``fun`` through the master; return the single answer's value."""
    ret = bed.client().cmd(bed.minion_id, fun, list(args), timeout=timeout)
    assert bed.minion_id in ret, (fun, ret)
    return ret[bed.minion_id]


def _state(ret):
    assert isinstance(ret, dict), ret
    (state,) = ret.values()
    return state


def _nspids(bed, host_pids):
    by_host = {p.pid: p.nspid for p in bed.ns_processes()}
    return {by_host[p] for p in host_pids if p in by_host}


def test_leaked_minion_reported_and_reaped_through_master(supervisor_leak_bed_factory):
    # Console logging off, as for any daemon whose stdout/stderr is a pipe to
    # its supervisor: once supervisord is dead, a Salt 3008 minion that wrote
    # to the broken stderr fails every later fork of a job process
    # (BrokenPipeError in multiprocessing's stream flush), so no remedy at all
    # can reach it through the master. See README, "Note for supervisord users".
    bed = supervisor_leak_bed_factory(minion_overrides={"log_level": "quiet"})
    bed.wait_for_answer(timeout=60)
    synced = bed.sync_all()
    assert "modules.hostcheck" in str(synced), synced

    # a healthy supervised minion: no alarm at all
    healthy = _one(bed, "hostcheck.orphans")
    assert [f for f in healthy["findings"] if f["severity"] != "info"] == [], healthy

    leak = bed.leak()
    (leaked_root,) = leak["leaked_roots"]
    new_sup = leak["supervisord"]
    new_sup_start = read_proc(new_sup).starttime
    resting = [p for p in bed.tree_pids(leaked_root) if JOB_MARK not in read_proc(p).command]
    time.sleep(2)  # let supervisord start (and lose) its doomed copy

    # -- diagnosis through the master (answered by the leaked copy) ---------
    diag = _one(bed, "hostcheck.orphans")
    crit = [f for f in diag["findings"] if f["severity"] == "critical"]
    assert len(crit) == 1, diag
    f = crit[0]
    assert f["code"] == "supervisor-leak"
    assert f["program"] == "salt-minion"
    assert f["provenance"]["supervisor_program"] == PROGRAM_NAME
    assert f["provenance"]["supervisor_group"] == PROGRAM_NAME
    assert f["user"] == "root" and f["started"]
    assert _nspids(bed, resting) <= set(f["pids"]), (resting, f["pids"])
    assert f["root"] == read_proc(leaked_root).nspid
    # supervisord and whatever it runs now are not flagged
    sup_tree = _nspids(bed, bed.tree_pids(new_sup))
    flagged = {p for x in diag["findings"] if x["severity"] != "info" for p in x["pids"]}
    assert not (sup_tree & flagged), (sup_tree, flagged)
    assert diag["leaked"] == 1 and diag["programs"] == ["salt-minion"]

    # -- test=True kills nothing --------------------------------------------
    state = _state(_one(bed, "state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True"))
    assert state["result"] is None, state
    # the job runs inside the leaked copy: the keys a real run uses, deferred
    assert list(state["changes"]) == ["deferred"], state
    assert [w["root"] for w in state["changes"]["deferred"]] == [f["root"]]
    assert "after it returns" in state["comment"]
    time.sleep(1)
    assert bed.alive(resting) == resting

    # -- apply through the master: the job runs inside the leaked copy -------
    state = _state(_one(bed, "state.single", "hostcheck.orphans_reaped", "name=leaks", "timeout=5"))
    assert state["result"] is True, state
    assert [d["root"] for d in state["changes"]["deferred"]] == [f["root"]], state
    # the leaked minion ignores SIGTERM (its stdout is a dead pipe); SIGKILL follows
    wait_for(lambda: bed.alive(resting) == [], 40, what="the leaked tree to be reaped")
    # supervisord untouched
    assert bed.supervisord_pid() == new_sup
    assert read_proc(new_sup).starttime == new_sup_start

    # a supervised minion comes up, answers the master, and stays up
    responders = bed.wait_for_answer(timeout=60)
    supervised = bed.supervised_trees()
    assert len(supervised) == 1 and bed.leaked_trees() == [], bed.minion_trees()
    assert {r["host_pid"] for r in responders} <= set(supervised[0]["pids"]), (responders, supervised)
    root_now = supervised[0]["root"]
    time.sleep(6)
    assert bed.supervised_trees()[0]["root"] == root_now
    assert bed.supervisor_status()[PROGRAM_NAME]["state"] == "RUNNING"
    assert len(bed.responders(timeout=3)) == 1

    # -- a further apply changes nothing ------------------------------------
    state = _state(_one(bed, "state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"] == {}, state
    after = _one(bed, "hostcheck.orphans")
    assert after["leaked"] == 0, after
