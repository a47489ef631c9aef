"""The second supervisor-leak path, with a real supervisord in a private PID
namespace: supervisord lives, the program's top process is SIGKILLed, its
child is adopted by init while supervisord starts the program again.
hostcheck reports exactly that child as a supervisor leak and orphans_reaped
reaps exactly it: never the new program, never supervisord. Two reapers run
at once: one reaps, the other finds nothing to do."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from beds.pidns import run_driver  # noqa: E402

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "supervisord")):
        pytest.fail("supervisord is missing from the virtualenv (run scripts/bootstrap)")
    return run_driver(os.path.join(HERE, "supervisor_leak2_driver.py"), tmp_path_factory.mktemp("leak2"),
                      "main", tools=("unshare", "mount"))


def _state(ret):
    (state,) = ret.values()
    return state


def test_the_orphan_is_adopted_by_init_with_the_dead_group(report):
    assert report["orphan_stat"] == {"ppid": 1, "pgid": report["killed_top"]}
    assert report["new_top"] != report["killed_top"] and report["new_children"]


def test_reported_as_a_supervisor_leak(report):
    (f,) = report["diagnosis"]["findings"]
    assert (f["code"], f["severity"], f["root"], f["pids"]) == (
        "supervisor-leak", "critical", report["orphan"], [report["orphan"]])
    assert f["provenance"]["supervisor_program"] == "sleeper" and f["reap"] == "default"
    assert report["grain"] == {"count": 1, "programs": ["sleep"], "warnings": 0}


def test_reaped_exactly_and_nothing_else(report):
    dry = _state(report["test_run"])
    assert dry["result"] is None and [i["root"] for i in dry["changes"]["reaped"]] == [report["orphan"]]
    state = _state(report["apply"])
    assert state["result"] is True, state
    assert state["changes"] == {"reaped": [{"root": report["orphan"], "program": "sleep",
                                            "code": "supervisor-leak", "pids": [report["orphan"]]}]}
    assert report["alive"] == {"supervisord": True, "orphan": False, "new_top": True}
    assert all(report["new_children_alive"]) and report["still_running"]
    second = _state(report["second_apply"])
    assert second["result"] is True and second["changes"] == {}


def test_two_reapers_at_once_claim_the_tree_once(report):
    states = [_state(r) for r in report["concurrent"]]
    assert all(s["result"] is True for s in states), states
    reaped = [s for s in states if s["changes"]]
    assert len(reaped) == 1, states
    assert reaped[0]["changes"]["reaped"][0]["root"] == report["orphan2"]
    other = [s for s in states if not s["changes"]][0]
    assert other["comment"] == "No leaked process trees to reap"
    assert report["orphan2_alive"] is False
    assert report["after_concurrent"] == {"supervisord": True, "top": True}
