"""The salt-minion itself runs old code after a Salt upgrade: a real
salt-minion daemon (a systemd service in the container) connected to a real
salt-master on 127.0.0.1 in the same container. The state is applied THROUGH
that master: the job must return its result first, then the minion is
restarted by the transient timer (``systemd-run --on-active``), answers the
master again, and a second apply is a no-op."""
import json
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

SALT = "/opt/salt/bin"
MINION_ID = "hc-self"
ROOT_LINKS = ("_modules", "_states", "_grains", "_utils")

MASTER_CONF = """\
interface: 127.0.0.1
auto_accept: true
file_roots:
  base:
    - /srv/hc-root
pki_dir: /etc/hc-master/pki
cachedir: /var/cache/hc-master
sock_dir: /run/hc-master
pidfile: /run/hc-master.pid
log_file: /var/log/hc-master.log
"""

MINION_CONF = """\
id: {}
master: 127.0.0.1
pki_dir: /etc/hc-minion/pki
cachedir: /var/cache/hc-minion
sock_dir: /run/hc-minion
pidfile: /run/hc-minion.pid
log_file: /var/log/hc-minion.log
enable_fqdns_grains: false
""".format(MINION_ID)

# as Salt's packaged units: KillMode=process keeps running jobs alive
MASTER_UNIT = """\
[Service]
ExecStart={0}/salt-master -c /etc/hc-master
KillMode=process
""".format(SALT)
MINION_UNIT = """\
[Service]
ExecStart={0}/salt-minion -c /etc/hc-minion
KillMode=process
""".format(SALT)


def _salt(c, *args, wait=60):
    """Run ``salt hc-self ARGS`` on the in-container master; the minion's
    return, or None when it did not answer within ``wait`` seconds."""
    try:
        out = c.run([SALT + "/salt", "-c", "/etc/hc-master", "--out=json", "--static", "-t", str(wait),
                     MINION_ID, *args], check=False, timeout=wait + 30)
        return json.loads(out.stdout).get(MINION_ID)
    except (ValueError, subprocess.TimeoutExpired):
        return None


def _ping(c):
    # a publish the minion missed (not connected yet) only costs the short wait
    return _salt(c, "test.ping", wait=5) is True


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(1)
    raise AssertionError("timed out waiting for " + what)


def _state(ret):
    assert isinstance(ret, dict), ret
    (state,) = ret.values()
    return state


def test_minion_running_old_salt_is_restarted_after_the_job_returned(systemd_container):
    c = systemd_container
    c.run("mkdir -p /srv/hc-root && for d in {}; do ln -sfn /srv/hostcheck/$d /srv/hc-root/$d; done".format(
        " ".join(ROOT_LINKS)))
    c.write_file("/etc/hc-master/master", MASTER_CONF)
    c.write_file("/etc/hc-minion/minion", MINION_CONF)
    c.write_file("/etc/systemd/system/salt-master.service", MASTER_UNIT)
    c.write_file("/etc/systemd/system/salt-minion.service", MINION_UNIT)
    c.run("systemctl daemon-reload && systemctl start salt-master.service && sleep 2 && "
          "systemctl start salt-minion.service")
    _wait(lambda: _ping(c), 120, "the minion to answer the master")
    synced = _salt(c, "saltutil.sync_all")
    assert "modules.hostcheck" in synced["modules"] and "states.hostcheck" in synced["states"], synced

    # a Salt upgrade replaces the minion's script on disk (new inode, new ctime)
    c.run("cp -p {0}/salt-minion {0}/salt-minion.new && mv -f {0}/salt-minion.new {0}/salt-minion".format(SALT))
    before = c.main_pid("salt-minion.service")
    diag = _salt(c, "hostcheck.deleted_binaries")
    (mine,) = [f for f in diag["findings"] if f["code"] == "stale-minion"]
    assert mine["owner"] == {"kind": "minion", "name": "salt-minion.service"}, diag
    assert mine["action"] == {"type": "self-restart", "unit": "salt-minion.service"}
    assert before in mine["pids"]
    assert {"path": SALT + "/salt-minion", "kind": "script", "why": "changed"} in [
        {k: f[k] for k in ("path", "kind", "why")} for f in mine["files"]]

    state = _state(_salt(c, "state.single", "hostcheck.services_current", "name=x", "test=True"))
    assert state["result"] is None and state["changes"] == {"deferred": "salt-minion.service"}, state
    assert c.main_pid("salt-minion.service") == before

    # applied through the master: the job's result comes back first ...
    state = _state(_salt(c, "state.single", "hostcheck.services_current", "name=x"))
    assert state["result"] is True, state
    assert state["changes"] == {"deferred": "salt-minion.service"}, state
    assert "salt-minion.service is restarted about 10 s after this job returns" in state["comment"], state
    assert c.main_pid("salt-minion.service") == before  # not yet: the job returned first
    # ... then the transient timer restarts the minion, which answers again
    after = _wait(lambda: (lambda p: p if p not in (0, before) else 0)(c.main_pid("salt-minion.service")),
                  90, "the deferred restart of salt-minion.service")
    _wait(lambda: _ping(c), 120, "the restarted minion to answer")
    assert c.run(["systemctl", "is-active", "salt-minion.service"]).stdout.strip() == "active"

    state = _state(_salt(c, "state.single", "hostcheck.services_current", "name=x"))
    assert state["result"] is True and state["changes"] == {}, state
    assert state["comment"].startswith("No service runs old code"), state
    assert c.main_pid("salt-minion.service") == after
    assert [f for f in _salt(c, "hostcheck.deleted_binaries")["findings"] if f["code"] == "stale-minion"] == []
