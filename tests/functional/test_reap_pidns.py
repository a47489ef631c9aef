"""The reaper on real processes, inside a private PID namespace.

Nothing outside the namespace can be seen or signalled by the state run in
it (``--mount-proc`` gives it its own /proc), and the kernel kills whatever
is left when the namespace's init exits.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from beds.common import skip_or_fail  # noqa: E402
from beds.pidns import EXPECTED_COMPAT, SALTS, run_driver  # noqa: E402

pytestmark = [pytest.mark.root]


def test_all_supported_salt_versions_present():
    missing = EXPECTED_COMPAT - set(SALTS)
    if missing:
        skip_or_fail("compat venvs missing (run scripts/bootstrap-compat): " + ", ".join(sorted(missing)))


@pytest.fixture(scope="module", params=SALTS)
def report(request, tmp_path_factory):
    return run_driver(os.path.join(HERE, "pidns_driver.py"), tmp_path_factory.mktemp("pidns"), request.param)


def _state(ret):
    (state,) = ret.values()
    return state


def test_synced_through_salt_route(report, request):
    assert "modules.hostcheck" in report["synced"]["modules"], report["synced"]
    assert "utils.hostcheck_proc" in report["synced"]["utils"], report["synced"]
    want = {"main": "3008", "salt3006-py310": "3006", "salt3007-py310": "3007"}
    name = request.node.callspec.params["report"]
    if name in want:
        assert report["version"].startswith(want[name]), report["version"]


def test_diagnosis_finds_exactly_the_leaked_tree(report):
    diag = report["diagnosis"]
    crit = [f for f in diag["findings"] if f["severity"] == "critical"]
    assert len(crit) == 1, diag
    f = crit[0]
    assert f["code"] == "supervisor-leak"
    assert f["root"] == report["leaked_root"]
    assert len(f["pids"]) == 3  # the root and its two children
    assert f["provenance"]["supervisor_program"] == "worker"
    assert f["duplicate_of"] == report["twin"]
    assert all(x["severity"] != "warning" for x in diag["findings"])
    reported = [p for x in diag["findings"] for p in x["pids"]]
    assert report["daemon"] not in reported
    # exec -a worker sleep, and sh .../init.d/worker status, are not the daemon worker
    assert not set(report["decoys"].values()) & set(reported), (report["decoys"], diag)
    assert report["grain"]["orphans"] == {"count": 1, "programs": ["worker"], "warnings": 0}


def test_test_mode_kills_nothing(report):
    state = _state(report["test_run"])
    assert state["result"] is None
    (item,) = state["changes"]["reaped"]  # the keys a real run uses
    assert item["root"] == report["leaked_root"] and len(item["pids"]) == 3
    assert state["comment"].startswith("Would reap 1 leaked tree(s)")
    assert report["alive_after_test"] is True


def test_apply_reaps_the_tree_and_nothing_else(report):
    state = _state(report["apply"])
    assert state["result"] is True, state
    (item,) = state["changes"]["reaped"]
    assert item["root"] == report["leaked_root"] and len(item["pids"]) == 3
    # the child that ignores SIGTERM needed SIGKILL
    assert "Reaped worker (root {}): 2 terminated, 1 killed".format(report["leaked_root"]) in state["comment"]
    assert report["leaked_alive_after_apply"] == []
    assert report["survivors"] == {"twin": True, "supervisord": True, "daemon": True}
    assert report["decoys_alive"] == {"exec_a": True, "init_script": True}


def test_second_apply_is_a_noop(report):
    state = _state(report["second_apply"])
    assert state["result"] is True
    assert state["changes"] == {}


def test_bad_arguments_change_nothing(report):
    state = _state(report["bad_args"])
    assert state["result"] is False
    assert "exclude must be" in state["comment"]
