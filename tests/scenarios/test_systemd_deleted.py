"""The upgrade incident in a real systemd container: logind, cron and dbus-daemon
replaced on disk (copy + rename, as a package manager does) keep running the
deleted binaries; hostcheck.deleted_binaries groups them by unit and
hostcheck.services_current restarts logind and cron, refuses dbus."""
import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

BINARIES = {
    "systemd-logind.service": "/usr/lib/systemd/systemd-logind",
    "cron.service": "/usr/sbin/cron",
    "dbus.service": "/usr/bin/dbus-daemon",
}


def _state(ret):
    (state,) = ret.values()
    return state


def _exe(c, unit):
    return os.readlink("/proc/{}/exe".format(c.host_pid(c.main_pid(unit))))


def test_upgrade_leaves_old_binaries_running_until_services_current(systemd_container):
    c = systemd_container
    assert c.salt_call("hostcheck.deleted_binaries")["findings"] == []
    for path in BINARIES.values():
        c.run("cp -p {0} {0}.dpkg-new && mv -f {0}.dpkg-new {0}".format(path))
    before = {unit: c.main_pid(unit) for unit in BINARIES}
    for unit, path in BINARIES.items():
        assert _exe(c, unit) == path + " (deleted)"

    diag = c.salt_call("hostcheck.deleted_binaries")
    by = {f["owner"]["name"]: f for f in diag["findings"]}
    assert set(by) == set(BINARIES), diag
    for unit, f in by.items():
        assert f["code"] == "stale-unit" and f["action"] == {"type": "restart-unit", "unit": unit}
        assert before[unit] in f["pids"]
        assert {"path": BINARIES[unit], "kind": "exe", "why": "deleted"} == {
            k: f["files"][0][k] for k in ("path", "kind", "why")}
    assert diag["units"] == sorted(BINARIES)
    grain = c.salt_call("grains.get", "hostcheck:deleted_binaries")
    assert grain["units"] == sorted(BINARIES) and grain["count"] >= 3
    assert c.salt_call("hostcheck.reboot_required")["required"] in (True, False)

    # test=True restarts nothing and lists the plan
    state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current", "test=True"))
    assert state["result"] is None, state
    assert state["changes"] == {"restarted": ["cron.service", "systemd-logind.service"]}  # the real run's keys
    assert "Refused dbus.service" in state["comment"]
    # bad arguments: result False, nothing restarted
    for bad, text in (("exclude=7", "exclude must be"), ("only=no-such-thing.service", "unknown unit")):
        state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current", bad, check=False))
        assert state["result"] is False and text in state["comment"], state
        assert state["changes"] == {}
    assert {unit: c.main_pid(unit) for unit in BINARIES} == before

    state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current"))
    assert state["result"] is True, state
    assert state["changes"] == {"restarted": ["cron.service", "systemd-logind.service"]}
    assert "Refused dbus.service: unsafe to restart" in state["comment"]
    for unit in ("cron.service", "systemd-logind.service"):
        assert c.main_pid(unit) != before[unit]
        assert _exe(c, unit) == BINARIES[unit]
    assert c.main_pid("dbus.service") == before["dbus.service"]
    assert _exe(c, "dbus.service").endswith(" (deleted)")
    assert c.run(["systemctl", "is-active", "cron", "systemd-logind", "dbus"]).stdout.split() == ["active"] * 3

    state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current"))
    assert state["result"] is True and state["changes"] == {}, state
    assert "Refused dbus.service" in state["comment"]
    assert [f["owner"]["name"] for f in c.salt_call("hostcheck.deleted_binaries")["findings"]] == ["dbus.service"]


def test_packages_true_names_real_owners_in_one_dpkg_query_call(systemd_container):
    """packages=True against the container's real dpkg database: the stale
    files of logind, cron and dbus-daemon are owned by systemd, cron and
    dbus-daemon (bookworm's dpkg lists logind as /lib/systemd/..., the
    process maps /usr/lib/systemd/...: the merged-/usr alias is asked in the
    same call), and dpkg-query runs exactly once (a logging wrapper first on
    PATH counts the calls)."""
    c = systemd_container
    c.write_file("/usr/local/bin/dpkg-query",
                 '#!/bin/sh\necho "$#" >> /run/dpkg-query.calls\nexec /usr/bin/dpkg-query "$@"\n', mode=0o755)
    for path in BINARIES.values():
        c.run("cp -p {0} {0}.dpkg-new && mv -f {0}.dpkg-new {0}".format(path))
    diag = c.salt_call("hostcheck.deleted_binaries", "packages=True")
    owners = {f["owner"]["name"]: {x["path"]: x["package"] for x in f["files"]} for f in diag["findings"]}
    assert owners == {
        "systemd-logind.service": {"/usr/lib/systemd/systemd-logind": "systemd"},
        "cron.service": {"/usr/sbin/cron": "cron"},
        "dbus.service": {"/usr/bin/dbus-daemon": "dbus-daemon"},
    }, diag
    assert diag["notes"] == []
    assert len(c.read_file("/run/dpkg-query.calls").split()) == 1
    # without packages=True dpkg-query is never run
    c.salt_call("hostcheck.deleted_binaries")
    assert len(c.read_file("/run/dpkg-query.calls").split()) == 1


LIMITED_UNIT = """\
[Unit]
StartLimitBurst=2
StartLimitIntervalSec=60
[Service]
ExecStart=/usr/local/bin/limd infinity
"""


def test_services_current_refuses_a_unit_at_its_start_limit(systemd_container):
    """lim.service (StartLimitBurst=2 in 60 s) is started and restarted by
    the test, i.e. at its limit: a third start would fail it with
    start-limit-hit. Its binary and cron's are replaced: the state restarts
    cron, refuses lim.service with the reason (result False) and leaves it
    running; applying again refuses it again (no loop, no failed unit)."""
    c = systemd_container
    c.run("cp -p /usr/bin/sleep /usr/local/bin/limd")
    c.write_file("/etc/systemd/system/lim.service", LIMITED_UNIT)
    c.run("systemctl daemon-reload && systemctl start lim.service && systemctl restart lim.service")
    for path in ("/usr/local/bin/limd", "/usr/sbin/cron"):
        c.run("cp -p {0} {0}.dpkg-new && mv -f {0}.dpkg-new {0}".format(path))
    lim_pid, cron_pid = c.main_pid("lim.service"), c.main_pid("cron.service")
    units = c.salt_call("hostcheck.deleted_binaries")["units"]
    assert units == ["cron.service", "lim.service"]

    state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current", "test=True"))
    assert state["result"] is None and state["changes"] == {"restarted": ["cron.service"]}, state
    assert "Refused lim.service: a restart now would hit its start limit" in state["comment"]

    for _ in range(2):
        state = _state(c.salt_call("state.single", "hostcheck.services_current", "name=current", check=False))
        assert state["result"] is False, state
        assert ("Refused lim.service: a restart now would hit its start limit: started 2 times in the last 1min "
                "(StartLimitBurst=2, StartLimitIntervalSec=1min)") in state["comment"], state
        assert "(needs attention)" in state["comment"]
        assert c.main_pid("lim.service") == lim_pid
        assert c.run(["systemctl", "show", "-p", "ActiveState", "--value", "lim.service"]).stdout.strip() == "active"
        assert c.run(["systemctl", "show", "-p", "Result", "--value", "lim.service"]).stdout.strip() == "success"
    assert c.main_pid("cron.service") != cron_pid
    assert _exe(c, "cron.service") == "/usr/sbin/cron"
    # the first apply restarted cron; the second had only lim.service left
    assert state["changes"] == {}
    assert c.salt_call("hostcheck.deleted_binaries")["units"] == ["lim.service"]
