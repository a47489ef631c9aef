"""The resource-limits incident in a real systemd container, and its remedy.

* ``netsvc.service`` has no ``LimitNOFILE=``; root's ``.bash_profile`` runs
  ``ulimit -n N``; the service is stopped and its daemon started by hand
  from a root login shell (``su -l root``, PAM service ``su-l``):
  ``hostcheck.rlimits`` names it with live ``N`` against the unit's 1024
  and the login session it came from;
* ``fdhog.service`` holds 900 of its 1024 descriptors: a warning;
* ``* soft nofile 65536`` in ``limits.conf`` gives the info finding;
* ``hostcheck.service_limits`` pins netsvc through systemd (``test=True``
  first: nothing written, nothing stopped), then for real: the copy started
  by hand is stopped, the unit runs with ``N``, the finding is gone, the
  grain agrees, and a second apply changes nothing.

The test machines cap ``nofile`` (no ``CAP_SYS_RESOURCE``, hard 20000), and
so does the container's PID 1: ``N`` is 65536 where the container's own hard
limit allows it, else the largest power of two under it (16384 at 20000).
"""
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

NETSVC_BIN = """\
#!/usr/bin/python3
# a network service that sets no limit of its own
import time
while True:
    time.sleep(3600)
"""

NETSVC_UNIT = """\
[Unit]
Description=a network service whose unit sets no limit

[Service]
ExecStart=/usr/local/bin/netsvc
"""

FDHOG_BIN = """\
#!/usr/bin/python3
# holds 900 open descriptors in all, then sleeps
import os, time
held = len(os.listdir("/proc/self/fd")) - 1
keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(900 - held)]
while True:
    time.sleep(3600)
"""

FDHOG_UNIT = """\
[Unit]
Description=holds 900 descriptors

[Service]
ExecStart=/usr/local/bin/fdhog
"""

SERVICE_LIMITS = "hostcheck.service_limits"
SALT_CALL = ["/opt/salt/bin/salt-call", "--local", "--out=json", "--config-dir=/etc/salt", "--file-root=/srv/hostcheck"]
DROPIN = "/etc/systemd/system/netsvc.service.d/hostcheck-limits.conf"


def _wait(pred, timeout=15):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.1)
    return pred()


def _pids(c, pattern):
    out = c.run(["pgrep", "-f", pattern], check=False).stdout
    return sorted(int(p) for p in out.split())


def _nofile(c, pid):
    """(soft, hard) of ``Max open files`` in /proc/PID/limits inside the container."""
    line = c.run(["grep", "Max open files", "/proc/{}/limits".format(pid)]).stdout.split()
    return int(line[3]), int(line[4])


def _state(ret):
    (state,) = ret.values()
    return state


def _fds(c, pid):
    return int(c.run(["sh", "-c", "ls /proc/{}/fd | wc -l".format(pid)]).stdout)


def _by_code(diag):
    return {f["code"]: f for f in diag["findings"]}


def _setup(c):
    hard = _nofile(c, 1)[1]
    n = 65536 if hard >= 65536 else 1 << (hard.bit_length() - 1)
    c.write_file("/usr/local/bin/netsvc", NETSVC_BIN, mode=0o755)
    c.write_file("/usr/local/bin/fdhog", FDHOG_BIN, mode=0o755)
    c.write_file("/etc/systemd/system/netsvc.service", NETSVC_UNIT)
    c.write_file("/etc/systemd/system/fdhog.service", FDHOG_UNIT)
    c.write_file("/root/.bash_profile", "ulimit -n {}\n".format(n))
    c.run("printf '*  soft  nofile  65536\\n' >> /etc/security/limits.conf")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "netsvc.service", "fdhog.service"])
    assert _wait(lambda: c.main_pid("fdhog.service") and _fds(c, c.main_pid("fdhog.service")) >= 900)
    # the incident: stopped, then started by hand from a root login shell
    c.run(["systemctl", "stop", "netsvc.service"])
    c.run(["su", "-l", "root", "-c", "setsid /usr/local/bin/netsvc </dev/null >/dev/null 2>&1 &"])
    assert _wait(lambda: len(_pids(c, "^/usr/bin/python3 /usr/local/bin/netsvc")) == 1)
    (pid,) = _pids(c, "^/usr/bin/python3 /usr/local/bin/netsvc")
    assert _nofile(c, pid) == (n, n)
    return hard, n, pid


def test_daemon_restarted_by_hand_is_found_and_pinned_through_systemd(systemd_container):
    c = systemd_container
    hard, n, by_hand = _setup(c)
    hog = c.main_pid("fdhog.service")

    diag = c.salt_call("hostcheck.rlimits")
    found = _by_code(diag)
    assert sorted(found) == ["fds-near-limit", "limits-conf-unused", "limits-differ"], diag
    f = found["limits-differ"]
    assert (f["unit"], f["program"], f["pids"], f["outside"], f["severity"]) == (
        "netsvc.service", "netsvc", [by_hand], True, "warning")
    assert f["live"] == {"soft": n, "hard": n}
    assert f["expected"] == {"soft": 1024, "hard": min(hard, 524288)}
    assert f["configured"] == {"soft": 1024, "hard": 524288, "source": "systemd's default"}
    assert f["session"]["service"] == "su-l" and f["session"]["user"] == "root" and f["started_by_hand"]
    assert "runs with nofile {0}:{0} but netsvc.service gives 1024:".format(n) in f["summary"]
    w = found["fds-near-limit"]
    assert (w["unit"], w["severity"], w["pids"], w["in_use"]) == ("fdhog.service", "warning", [hog], 900)
    i = found["limits-conf-unused"]
    assert (i["severity"], i["domain"], i["value"]) == ("info", "*", 65536)
    assert "fdhog.service" in i["units"] and "netsvc.service" not in i["units"]
    grain = c.salt_call("grains.get", "hostcheck:rlimits")
    assert grain["count"] == 3 and grain["lowest_nofile"] == 1024
    assert set(grain["units"]) >= {"netsvc.service", "fdhog.service"}

    # test=True: the planned changes, nothing written, nothing stopped
    dry = _state(c.salt_call("state.single", SERVICE_LIMITS, "name=netsvc", "nofile={}".format(n), "test=True"))
    assert dry["result"] is None, dry
    assert set(dry["changes"]) == {"dropin", "stopped", "restarted"}
    assert dry["changes"]["stopped"] == [{"pid": by_hand, "program": "netsvc", "session": f["session"]["id"]}]
    assert "LimitNOFILE={}".format(n) in dry["changes"]["dropin"]["new"]
    assert c.run(["test", "-e", DROPIN], check=False).returncode == 1
    assert _pids(c, "^/usr/bin/python3 /usr/local/bin/netsvc") == [by_hand]

    real = _state(c.salt_call("state.single", SERVICE_LIMITS, "name=netsvc", "nofile={}".format(n)))
    assert real["result"] is True, real
    assert set(real["changes"]) == set(dry["changes"])
    new = c.main_pid("netsvc.service")
    assert real["changes"]["restarted"] == {"unit": "netsvc.service", "old_pid": None, "new_pid": new}
    assert _pids(c, "^/usr/bin/python3 /usr/local/bin/netsvc") == [new] and new != by_hand
    assert _nofile(c, new) == (n, n)
    assert c.run(["stat", "-c", "%a %U", DROPIN]).stdout.split() == ["644", "root"]
    assert c.run(["systemctl", "show", "-p", "LimitNOFILE", "--value", "netsvc"]).stdout.strip() == str(n)

    after = c.salt_call("hostcheck.rlimits")
    assert sorted(_by_code(after)) == ["fds-near-limit", "limits-conf-unused"], after
    assert c.salt_call("grains.get", "hostcheck:rlimits") == {
        "count": 2, "units": after["units"], "lowest_nofile": 1024}
    assert c.main_pid("fdhog.service") == hog  # the other service was not touched

    again = _state(c.salt_call("state.single", SERVICE_LIMITS, "name=netsvc", "nofile={}".format(n)))
    assert again["result"] is True and again["changes"] == {}, again
    assert c.main_pid("netsvc.service") == new


def test_refusals_in_the_container_change_nothing(systemd_container):
    c = systemd_container
    hard = _nofile(c, 1)[1]
    dbus = c.main_pid("dbus.service")
    for args, fragment in (
            (["name=dbus", "nofile=4096"], "never restarted by hostcheck"),
            (["name=../etc/passwd", "nofile=4096"], "is not a unit name"),
            (["name=nosuch", "nofile=4096"], "does not exist"),
            (["name=cron.timer", "nofile=4096"], "is not a service"),
            (["name=cron", "nofile=4096:1024"], "is above the hard limit"),
            (["name=cron", "nofile={}".format(hard * 2)], "PID 1's own hard limit is {}".format(hard)),
    ):
        ret = _state(c.salt_call("state.single", SERVICE_LIMITS, *args, check=False))
        assert ret["result"] is False and ret["changes"] == {}, (args, ret)
        assert fragment in ret["comment"], (args, ret["comment"])
    # an unknown key never reaches the state: Salt refuses the call
    res = c.run(SALT_CALL + ["state.single", SERVICE_LIMITS, "name=cron", "nofile=4096", "colour=blue"],
                check=False)
    assert res.returncode != 0 and "'colour' is an invalid keyword argument" in res.stdout + res.stderr
    assert c.main_pid("dbus.service") == dbus
    assert c.run("ls -d /etc/systemd/system/*.d 2>/dev/null", check=False).stdout == ""


PILLAR_TOP = "base:\n  '*':\n    - hc\n"


def test_formula_pins_units_from_pillar_and_refuses_a_bad_pillar(systemd_container):
    c = systemd_container
    cron_dropin = "/etc/systemd/system/cron.service.d/hostcheck-limits.conf"
    cron = c.main_pid("cron.service")
    assert c.salt_call("state.apply", "hostcheck.rlimits", check=False) == {}  # opt-in: no pillar, no state
    c.write_file("/srv/pillar/top.sls", PILLAR_TOP)
    c.write_file("/srv/pillar/hc.sls", "hostcheck:\n  rlimits:\n    units:\n      cron.service:\n"
                                       "        nofile: '1024:8192'\n      typo.service:\n        nofle: 1\n")
    bad = c.salt_call("state.apply", "hostcheck.rlimits", check=False)
    assert "unknown key nofle" in str(bad)
    assert c.run(["test", "-e", cron_dropin], check=False).returncode == 1  # nothing applied
    c.write_file("/srv/pillar/hc.sls", "hostcheck:\n  rlimits:\n    units:\n      cron.service:\n"
                                       "        nofile: '1024:8192'\n")
    applied = c.salt_call("state.apply", "hostcheck")  # included by the formula's init.sls
    (ret,) = [v for k, v in applied.items() if k.endswith("_|-service_limits")]
    assert ret["result"] is True and set(ret["changes"]) == {"dropin", "restarted"}, ret
    new = c.main_pid("cron.service")
    assert new != cron and _nofile(c, new) == (1024, 8192)
    again = c.salt_call("state.apply", "hostcheck")
    assert all(s["changes"] == {} for s in again.values()), again
