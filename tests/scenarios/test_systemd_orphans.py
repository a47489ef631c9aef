"""hostcheck.orphans and orphans_reaped against a real systemd (nspawn container).

* a freshly booted host reports no warning or critical finding;
* a ``KillMode=process`` service whose child survives ``systemctl stop`` is
  reported as a leftover of an inactive unit and reaped by the state;
* a healthy ``Type=forking`` daemon and cron are never touched;
* a child left by the previous run of a restarted ``KillMode=process``
  service is found by its stale ``INVOCATION_ID``.
"""
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

LEAKY = """\
[Unit]
Description=child outlives stop (KillMode=process)

[Service]
KillMode=process
ExecStart=/bin/sh -c 'sleep 1000 & exec sleep 2000'
"""

FORKY = """\
[Unit]
Description=a classic double-forking daemon

[Service]
Type=forking
ExecStart=/bin/sh -c 'setsid sleep 3000 </dev/null >/dev/null 2>&1 &'
"""


def _pids(c, pattern):
    out = c.run(["pgrep", "-x", "-f", pattern], check=False).stdout
    return sorted(int(p) for p in out.split())


def _state(ret):
    (state,) = ret.values()
    return state


def _wait(pred, timeout=10):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.1)
    return pred()


def test_fresh_container_has_no_alarm(systemd_container):
    diag = systemd_container.salt_call("hostcheck.orphans")
    loud = [f for f in diag["findings"] if f["severity"] in ("critical", "warning")]
    assert loud == [], loud
    assert diag["notes"] == []  # systemd answered: the unit rules ran
    assert systemd_container.salt_call("grains.get", "hostcheck:orphans") == {
        "count": 0, "programs": [], "warnings": 0}


def test_killmode_process_leftover_reported_and_reaped(systemd_container):
    c = systemd_container
    c.write_file("/etc/systemd/system/leaky.service", LEAKY)
    c.write_file("/etc/systemd/system/forky.service", FORKY)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "leaky.service", "forky.service"])
    assert _wait(lambda: _pids(c, "sleep 1000") and _pids(c, "sleep 3000"))
    c.run(["systemctl", "stop", "leaky.service"])
    (leftover,) = _pids(c, "sleep 1000")
    forky = c.main_pid("forky.service")
    cron = c.main_pid("cron.service")
    assert forky == _pids(c, "sleep 3000")[0]

    diag = c.salt_call("hostcheck.orphans")
    crit = [f for f in diag["findings"] if f["severity"] == "critical"]
    assert len(crit) == 1, diag
    f = crit[0]
    assert f["code"] == "unit-leftover"
    assert f["pids"] == [leftover]
    assert f["provenance"] == {"unit": "leaky.service", "unit_state": "inactive"}
    assert "leaky.service" in f["summary"]
    touched = {p for x in diag["findings"] for p in x["pids"]}
    assert forky not in touched and cron not in touched
    assert [x for x in diag["findings"] if x["severity"] == "warning"] == []

    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True"))
    assert state["result"] is None
    assert state["changes"]["would_reap"][0]["pids"] == [leftover]
    assert _pids(c, "sleep 1000") == [leftover]

    # excluded by unit glob: nothing happens
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "exclude=leaky.*"))
    assert state["result"] is True and state["changes"] == {}
    assert _pids(c, "sleep 1000") == [leftover]

    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True, state
    (item,) = state["changes"]["reaped"]
    assert item["pids"] == [leftover] and item["survivors"] == []
    assert _pids(c, "sleep 1000") == []
    # the healthy forking daemon and cron are untouched
    assert c.main_pid("forky.service") == forky and _pids(c, "sleep 3000") == [forky]
    assert c.main_pid("cron.service") == cron
    assert c.run(["systemctl", "is-active", "cron", "forky"]).stdout.split() == ["active", "active"]

    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"] == {}
    assert c.salt_call("hostcheck.orphans")["leaked"] == 0


def test_leftover_of_previous_run_after_restart(systemd_container):
    c = systemd_container
    c.write_file("/etc/systemd/system/leaky.service", LEAKY)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "leaky.service"])
    assert _wait(lambda: _pids(c, "sleep 1000"))
    (old,) = _pids(c, "sleep 1000")
    c.run(["systemctl", "restart", "leaky.service"])
    assert _wait(lambda: len(_pids(c, "sleep 1000")) == 2)
    new = [p for p in _pids(c, "sleep 1000") if p != old]

    diag = c.salt_call("hostcheck.orphans")
    crit = [f for f in diag["findings"] if f["severity"] == "critical"]
    assert [(f["code"], f["pids"], f["provenance"]["unit_state"]) for f in crit] == [
        ("unit-leftover", [old], "previous-run")], diag
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"]["reaped"][0]["pids"] == [old]
    assert _pids(c, "sleep 1000") == new  # the current run's child is untouched
    assert c.run(["systemctl", "is-active", "leaky"]).stdout.strip() == "active"
