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

import pidns_driver  # same argv: REPO WORK SALT_CALL

REPO, WORK = pidns_driver.REPO, pidns_driver.WORK
BIN = pidns_driver.SUPERVISOR_DIR + "/bin/svc-daemon"
PROGRAM = """\
    [program:svc]
    command={bin} 600
    startsecs=1
    stopsignal=TERM
    """.format(bin=BIN)


def info():
    return pidns_driver.supervisor_info("svc:svc")


def main():
    assert os.getpid() == 1, "must be PID 1 of its namespace"
    # no supervisorctl (or anything else from the virtualenv) on PATH: the
    # state must reach supervisord through its socket
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    pidns_driver.mount_scratch()
    shutil.copy2("/bin/sleep", BIN)
    supervisord = pidns_driver.start_supervisord(PROGRAM)
    pidns_driver.wait_running("svc:svc")
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
