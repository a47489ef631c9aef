"""hostcheck.orphans and orphans_reaped against a real systemd (nspawn container).

* a freshly booted host reports no warning or critical finding;
* a ``KillMode=process`` service whose child survives ``systemctl stop`` is
  reported as a leftover of an inactive unit and reaped by the state;
* a healthy ``Type=forking`` daemon and cron are never touched;
* a child left by the previous run of a restarted ``KillMode=process``
  service is found by its stale ``INVOCATION_ID``, reported as a warning
  and reaped only when ``match`` names it;
* a running cron job that survives a cron restart (Debian's cron.service
  has ``KillMode=process`` on purpose) is reported, never reaped by default;
* a decoy started as ``exec -a cron sleep`` next to the real cron is not a
  duplicate cron and survives the remedy.
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
    assert (f["provenance"]["unit"], f["provenance"]["unit_state"]) == ("leaky.service", "inactive")
    assert f["reap"] == "default"
    assert "leaky.service" in f["summary"]
    touched = {p for x in diag["findings"] for p in x["pids"]}
    assert forky not in touched and cron not in touched
    assert [x for x in diag["findings"] if x["severity"] == "warning"] == []

    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True"))
    assert state["result"] is None
    assert state["changes"]["reaped"][0]["pids"] == [leftover]
    assert _pids(c, "sleep 1000") == [leftover]

    # excluded by unit glob: nothing happens
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "exclude=leaky.*"))
    assert state["result"] is True and state["changes"] == {}
    assert _pids(c, "sleep 1000") == [leftover]

    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True, state
    (item,) = state["changes"]["reaped"]
    assert item["pids"] == [leftover] and "1 terminated, 0 killed" in state["comment"]
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
    found = [(f["code"], f["severity"], f["pids"], f["provenance"]["unit_state"], f["reap"])
             for f in diag["findings"]]
    assert found == [("unit-leftover", "warning", [old], "previous-run", "when-named")], diag
    # an earlier run's leftover of a running unit is a job or a session: not reaped by default
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"] == {}, state
    assert "Left alone" in state["comment"] and _pids(c, "sleep 1000") == sorted([old] + new)
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "match=leaky.service"))
    assert state["result"] is True and state["changes"]["reaped"][0]["pids"] == [old]
    assert _pids(c, "sleep 1000") == new  # the current run's child is untouched
    assert c.run(["systemctl", "is-active", "leaky"]).stdout.strip() == "active"


CRON_JOB = "* * * * * root sleep 4000\n"


def test_cron_job_surviving_a_cron_restart_is_never_reaped_by_default(systemd_container):
    c = systemd_container
    c.write_file("/etc/cron.d/hc-job", CRON_JOB)
    assert _wait(lambda: _pids(c, "sleep 4000"), timeout=75), "cron did not start the job"
    (job,) = _pids(c, "sleep 4000")
    old_cron = c.main_pid("cron.service")
    c.run(["systemctl", "restart", "cron"])  # what timezone_pinned does
    assert _wait(lambda: c.main_pid("cron.service") not in (0, old_cron))
    assert _pids(c, "sleep 4000") == [job]  # KillMode=process: the job lives on

    diag = c.salt_call("hostcheck.orphans")
    (f,) = diag["findings"]
    assert (f["code"], f["severity"], f["reap"]) == ("unit-leftover", "warning", "when-named"), diag
    assert f["provenance"]["unit"] == "cron.service" and f["provenance"]["unit_state"] == "previous-run"
    assert job in f["pids"]
    assert c.salt_call("grains.get", "hostcheck:orphans") == {"count": 0, "programs": [], "warnings": 1}

    dry = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True"))
    assert dry["result"] is True and dry["changes"] == {}, dry
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"] == {}, state
    assert "Left alone" in state["comment"] and "earlier run" in state["comment"]
    assert _pids(c, "sleep 4000") == [job]
    assert c.run(["systemctl", "is-active", "cron"]).stdout.strip() == "active"


def test_exec_a_decoy_is_not_a_duplicate_cron(systemd_container):
    c = systemd_container
    c.run("setsid -f bash -c 'exec -a cron sleep 5000' </dev/null >/dev/null 2>&1")
    c.run("setsid -f bash -c 'exec -a /usr/sbin/cron sleep 5001' </dev/null >/dev/null 2>&1")
    assert _wait(lambda: _pids(c, "cron 5000") and _pids(c, "/usr/sbin/cron 5001"))
    decoys = _pids(c, "cron 5000") + _pids(c, "/usr/sbin/cron 5001")
    diag = c.salt_call("hostcheck.orphans")
    assert not {p for f in diag["findings"] for p in f["pids"]} & set(decoys), diag
    state = _state(c.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks"))
    assert state["result"] is True and state["changes"] == {}, state
    assert _pids(c, "cron 5000") + _pids(c, "/usr/sbin/cron 5001") == decoys
