"""Smoke test of the real-systemd container bed (tests/beds/nspawn.py).

It proves the bed boots a real systemd and reproduces the two systemd facts
the hostcheck scenarios rely on:

* a binary replaced on disk (copy + rename, as a package manager does) makes
  the running service show ``(deleted)`` in ``/proc/PID/exe``, and
  ``systemctl restart`` fixes it;
* with ``KillMode=process`` a child of the service outlives ``systemctl stop``
  and stays in the unit's cgroup.
"""
import os
import re
import time

import pytest

pytestmark = pytest.mark.root

LOGIND = "/usr/lib/systemd/systemd-logind"  # /lib is a symlink to /usr/lib (merged /usr)

LEAKY_UNIT = """\
[Unit]
Description=a service whose child outlives stop (KillMode=process)

[Service]
KillMode=process
ExecStart=/bin/sh -c 'sleep 1000 & exec sleep 2000'
"""


def _constraint(name):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "requirements", "constraints.txt")
    with open(path) as fp:
        for line in fp:
            if line.split("==")[0].strip().lower() == name:
                return line.split("==")[1].strip()
    return None


def _wait_for(predicate, timeout=10.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_boots_systemd_with_cron_logind_and_salt(systemd_container):
    c = systemd_container
    assert c.read_file("/proc/1/comm").strip() == "systemd"
    assert os.readlink(f"/proc/{c.pid1}/exe") == "/usr/lib/systemd/systemd"
    assert c.run(["systemctl", "is-system-running"], check=False).stdout.strip() in ("running", "degraded")
    assert c.run(["systemctl", "is-active", "cron", "systemd-logind", "dbus"]).stdout.split() == [
        "active", "active", "active",
    ]
    assert c.run(["systemd-detect-virt", "--container"]).stdout.strip() == "systemd-nspawn"
    # the checkout is there, read-only
    assert c.run(["test", "-f", "/srv/hostcheck/setup.py"], check=False).returncode == 0
    assert c.run(["touch", "/srv/hostcheck/.bed-write-probe"], check=False).returncode != 0
    assert c.salt_call("test.version") == _constraint("salt")
    grains = c.salt_call("grains.item", "init", "virtual", "id")
    assert grains == {"init": "systemd", "virtual": "systemd-nspawn", "id": c.name}


def test_replaced_binary_shows_deleted_until_restart(systemd_container, systemd_rootfs):
    c = systemd_container
    cached = os.path.join(systemd_rootfs, LOGIND.lstrip("/"))
    cached_inode = os.stat(cached).st_ino

    old = c.host_pid(c.main_pid("systemd-logind.service"))
    assert os.readlink(f"/proc/{old}/exe") == LOGIND

    # what a package manager does: write a new file beside it, rename it over
    c.run("cp -p /lib/systemd/systemd-logind /lib/systemd/systemd-logind.dpkg-new"
          " && mv -f /lib/systemd/systemd-logind.dpkg-new /lib/systemd/systemd-logind")
    assert os.readlink(f"/proc/{old}/exe") == f"{LOGIND} (deleted)"  # read from the host side
    inside = c.run(["readlink", f"/proc/{c.main_pid('systemd-logind.service')}/exe"]).stdout.strip()
    assert inside == f"{LOGIND} (deleted)"

    c.run(["systemctl", "restart", "systemd-logind"])
    new = c.host_pid(c.main_pid("systemd-logind.service"))
    assert new != old
    assert not os.path.exists(f"/proc/{old}")
    assert os.readlink(f"/proc/{new}/exe") == LOGIND
    assert c.run(["systemctl", "is-active", "systemd-logind"]).stdout.strip() == "active"

    # the container's writes never reach the cached rootfs
    assert os.stat(cached).st_ino == cached_inode


def test_killmode_process_child_survives_stop(systemd_container):
    c = systemd_container
    c.write_file("/etc/systemd/system/leaky.service", LEAKY_UNIT)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "leaky.service"])

    def sleeper_pids():
        out = c.run(["pgrep", "-x", "-f", "sleep 1000"], check=False).stdout
        return [int(p) for p in out.split()]

    assert _wait_for(sleeper_pids), "the service's child 'sleep 1000' never started"
    main = c.main_pid("leaky.service")
    assert c.read_file(f"/proc/{main}/cmdline").split("\0")[:2] == ["sleep", "2000"]

    c.run(["systemctl", "stop", "leaky.service"])
    assert c.run(["systemctl", "is-active", "leaky.service"], check=False).stdout.strip() == "inactive"
    assert c.run(["test", "-e", f"/proc/{main}"], check=False).returncode != 0  # main process gone

    [child] = sleeper_pids()  # ... but its child is still there
    cgroup = c.read_file(f"/proc/{child}/cgroup")
    # the unit's cgroup, whatever the layout (v1 name=systemd and/or v2 "0::")
    assert re.search(r"^\d+:[^:]*:/system\.slice/leaky\.service$", cgroup, re.M), cgroup
    # and systemd still counts it as the (stopped) unit's process
    status = c.run(["systemctl", "status", "--no-pager", "leaky.service"], check=False).stdout
    assert f"{child} sleep 1000" in status
    # seen from the host, the same process sits below the bed's nspawn cgroup
    host_cgroup = open(f"/proc/{c.host_pid(child)}/cgroup").read()
    assert re.search(r"/payload/system\.slice/leaky\.service$", host_cgroup, re.M), host_cgroup
