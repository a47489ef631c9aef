"""hostcheck.deleted_binaries on real processes inside a private PID namespace:
a deleted binary and a deleted preloaded library are found, a memfd
executable mapping is not; without systemd the state restarts nothing."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from beds.pidns import run_driver  # noqa: E402

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_driver(os.path.join(HERE, "deleted_driver.py"), tmp_path_factory.mktemp("deleted"),
                      tools=("unshare", "mount"))


def _by_pid(findings):
    return {pid: f for f in findings for pid in f["pids"]}


def test_deleted_binary_is_found(report):
    f = _by_pid(report["findings"])[report["pids"]["daemon"]]
    assert f["code"] == "stale-unmanaged" and f["action"]["type"] == "manual"
    assert {"path": "/mnt/hc/bin/old-daemon", "kind": "exe", "why": "deleted"}.items() <= f["files"][0].items()


def test_deleted_preloaded_library_is_found(report):
    f = _by_pid(report["findings"])[report["pids"]["preload"]]
    assert [(x["path"], x["kind"], x["why"]) for x in f["files"]] == [("/mnt/hc/lib/libhc-old.so", "lib", "deleted")]


def test_memfd_and_healthy_processes_are_not_reported(report):
    assert report["memfd_maps"], "the memfd process should have a memfd mapping"
    by = _by_pid(report["findings"])
    assert report["pids"]["memfd"] not in by
    assert report["pids"]["healthy"] not in by
    assert sorted(by) == sorted([report["pids"]["daemon"], report["pids"]["preload"]])


def test_through_salt_call_and_state_without_systemd(report):
    salt = report["salt"]
    assert salt["stale"] == 2 and salt["units"] == []
    assert sorted(p for f in salt["findings"] for p in f["pids"]) == sorted(
        [report["pids"]["daemon"], report["pids"]["preload"]])
    (state,) = report["state"].values()
    assert state["result"] is True and state["changes"] == {}
    assert "systemd is not running" in state["comment"] and "Manual" in state["comment"]
    assert all(report["alive_after_state"].values())
