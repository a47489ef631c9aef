"""services_current on a host without systemd: a real supervisord (in a
private PID namespace) runs a program whose binary was replaced on disk; the
state restarts it through supervisord's own socket (stdlib XML-RPC at the
SUPERVISOR_SERVER_URL supervisord gave the program; no supervisorctl on
PATH), the program runs the current binary under a new PID, and a second
apply is a no-op."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from beds.pidns import SALTS, run_driver  # noqa: E402

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module", params=SALTS)
def report(request, tmp_path_factory):
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "supervisord")):
        pytest.fail("supervisord is missing from the virtualenv (run scripts/bootstrap)")
    return run_driver(os.path.join(HERE, "supervisor_deleted_driver.py"),
                      tmp_path_factory.mktemp("supervisor-deleted"), request.param, tools=("unshare", "mount"))


def _state(ret):
    (state,) = ret.values()
    return state


def test_supervised_program_running_a_replaced_binary_is_found(report):
    assert report["exe_before"] == "/mnt/hc/bin/svc-daemon (deleted)"
    (f,) = report["diagnosis"]["findings"]
    assert f["code"] == "stale-supervisor" and f["owner"] == {"kind": "supervisor", "name": "svc:svc"}
    assert f["action"]["type"] == "supervisorctl" and f["action"]["server"] == "unix:///mnt/hc/supervisor.sock"
    assert f["pids"] == [report["before"]]


def test_test_run_restarts_nothing(report):
    state = _state(report["test_run"])
    # exactly the changes the real run reports (same keys)
    assert state["result"] is None and state["changes"] == {"supervisor_restarted": ["svc:svc"]}, state
    assert "systemd is not running" in state["comment"]
    assert report["pid_after_test"] == report["before"]


def test_apply_restarts_it_through_supervisord(report):
    state = _state(report["apply"])
    assert state["result"] is True, state
    assert state["changes"] == {"supervisor_restarted": ["svc:svc"]}
    assert "supervisor program svc:svc: XML-RPC at unix:///mnt/hc/supervisor.sock" in state["comment"]
    assert report["after"]["state"] == "RUNNING"
    assert report["after"]["pid"] != report["before"]
    assert report["after"]["exe"] == "/mnt/hc/bin/svc-daemon"
    assert report["supervisord_alive"]


def test_second_apply_is_a_no_op(report):
    state = _state(report["second_apply"])
    assert state["result"] is True and state["changes"] == {}, state
    assert state["comment"].startswith("No service runs old code")
    assert report["pid_after_second"] == report["after"]["pid"]
