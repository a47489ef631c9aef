"""PID 1 of a private PID (and mount) namespace for test_supervisor_deleted_pidns.py.

A real supervisord (supervisor from the test virtualenv, no systemd here)
runs a program whose binary is a copy on a tmpfs mounted on /mnt inside the
namespace; the copy is then replaced on disk (copy + rename, as a package
manager does), so the running program maps a deleted file. hostcheck runs
through a real ``salt-call --local``; the state must restart the program
through supervisord. Prints one JSON document; everything dies with the
namespace.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import xmlrpc.client

import pidns_driver  # same argv: REPO WORK SALT_CALL

REPO, WORK = pidns_driver.REPO, pidns_driver.WORK
VENV_BIN = os.path.dirname(sys.executable)  # supervisord from the test virtualenv, whatever Salt runs the state
SOCK = "/mnt/hc/supervisor.sock"
BIN = "/mnt/hc/bin/svc-daemon"

CONF = textwrap.dedent("""\
    [unix_http_server]
    file={sock}
    chmod=0700

    [supervisord]
    nodaemon=true
    logfile=/mnt/hc/supervisord.log
    pidfile=/mnt/hc/supervisord.pid

    [rpcinterface:supervisor]
    supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

    [supervisorctl]
    serverurl=unix://{sock}

    [program:svc]
    command={bin} 600
    startsecs=1
    stopsignal=TERM
    """).format(sock=SOCK, bin=BIN)


def rpc():
    from hostcheck_service import supervisor_proxy  # the module under test's own client, read-only use here
    server, why = supervisor_proxy("unix://" + SOCK)
    assert server is not None, why
    return server


def info():
    return rpc().supervisor.getProcessInfo("svc:svc")


def main():
    assert os.getpid() == 1, "must be PID 1 of its namespace"
    # no supervisorctl (or anything else from the virtualenv) on PATH: the
    # state must reach supervisord through its socket
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    sys.path.insert(0, os.path.join(REPO, "_utils"))
    subprocess.run(["mount", "-t", "tmpfs", "hc-test", "/mnt"], check=True)
    os.makedirs("/mnt/hc/bin")
    shutil.copy2("/bin/sleep", BIN)
    pidns_driver.write("/mnt/hc/supervisord.conf", CONF)
    supervisord = subprocess.Popen([os.path.join(VENV_BIN, "supervisord"), "-c", "/mnt/hc/supervisord.conf"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            if info()["statename"] == "RUNNING":
                break
        except (OSError, xmlrpc.client.Error, AssertionError):
            pass
        assert time.time() < deadline, "supervisord did not start svc"
        time.sleep(0.2)
    before = info()["pid"]
    # the upgrade: a new file renamed over the old one; the program keeps the old inode
    shutil.copy2("/bin/sleep", BIN + ".new")
    os.rename(BIN + ".new", BIN)

    pidns_driver.setup_minion()
    report = {"supervisord": supervisord.pid, "before": before,
              "exe_before": os.readlink("/proc/{}/exe".format(before))}
    report["diagnosis"] = pidns_driver.salt_call("hostcheck.deleted_binaries")
    report["test_run"] = pidns_driver.salt_call("state.single", "hostcheck.services_current", "name=current",
                                                "test=True")
    report["pid_after_test"] = info()["pid"]
    report["apply"] = pidns_driver.salt_call("state.single", "hostcheck.services_current", "name=current")
    after = info()
    report["after"] = {"pid": after["pid"], "state": after["statename"],
                       "exe": os.readlink("/proc/{}/exe".format(after["pid"])) if after["pid"] else None}
    report["second_apply"] = pidns_driver.salt_call("state.single", "hostcheck.services_current", "name=current")
    report["pid_after_second"] = info()["pid"]
    report["supervisord_alive"] = pidns_driver.alive(supervisord.pid)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
