"""PID 1 of a private PID (and mount) namespace for test_supervisor_leak2_pidns.py.

The second way the supervisor incident happens: supervisord stays alive,
the program's top process is SIGKILLed, and its child is re-parented to
PID 1 (supervisord had put the program in its own process group, so the
child's group leader is gone) while supervisord starts the program again.
A real supervisord (supervisor from the test virtualenv) runs
``/bin/sh -c '/bin/sh -c "exec sleep 901" & exec sleep 902'``. hostcheck
runs through a real ``salt-call --local``: the left-over ``sleep 901`` must
be reported and reaped, never the new program, never supervisord. Then two
``orphans_reaped`` runs at once on a second leftover: one reaps it, the
other finds nothing. Prints one JSON document; everything dies with the
namespace.
"""
import json
import os
import signal
import subprocess
import time

import pidns_driver  # same argv: REPO WORK SALT_CALL

REPO, WORK = pidns_driver.REPO, pidns_driver.WORK
PROGRAM = """\
    [program:sleeper]
    command=/bin/sh -c '/bin/sh -c "exec sleep 901" & exec sleep 902'
    startsecs=1
    autorestart=true
    """


def info():
    return pidns_driver.supervisor_info("sleeper")


def wait_running(not_pid=None):
    return pidns_driver.wait_running("sleeper", not_pid)


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/{}/stat".format(name)) as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def stat_of(pid):
    with open("/proc/{}/stat".format(pid)) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return {"ppid": int(fields[1]), "pgid": int(fields[2])}


def leak_once(top):
    """SIGKILL the program's top process; return its orphaned child and the new top."""
    deadline = time.time() + 10
    while not children(top) and time.time() < deadline:
        time.sleep(0.05)
    (child,) = children(top)
    os.kill(top, signal.SIGKILL)
    new_top = wait_running(not_pid=top)
    time.sleep(0.5)  # the new program's own child
    return child, new_top


def second_minion():
    """A second masterless minion on the same host (own cache, same files),
    as a leaked and a managed minion are; returns its config dir."""
    conf2 = os.path.join(WORK, "conf2")
    os.makedirs(conf2, exist_ok=True)
    with open(os.path.join(WORK, "conf", "minion")) as fh:
        text = fh.read()
    pidns_driver.write(os.path.join(conf2, "minion"), text.replace(
        "cachedir: {}/cache".format(WORK), "cachedir: {}/cache2".format(WORK)).replace(
        "sock_dir: {}/sock".format(WORK), "sock_dir: {}/sock2".format(WORK)))
    subprocess.run([pidns_driver.SALT_CALL, "--local", "-c", conf2, "-l", "quiet", "saltutil.sync_all"],
                   capture_output=True, check=False)
    return conf2


def concurrent_reapers(conf2):
    """Two reapers at once, from two minions on one host."""
    procs = [subprocess.Popen([pidns_driver.SALT_CALL, "--local", "-c", conf, "--out=json", "-l", "quiet",
                               "state.single", "hostcheck.orphans_reaped", "name=leaks", "timeout=2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for conf in (os.path.join(WORK, "conf"), conf2)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        try:
            out.append(json.loads(stdout)["local"])
        except ValueError:
            out.append({"error": stdout + stderr})
    return out


def main():
    assert os.getpid() == 1, "must be PID 1 of its namespace"
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    pidns_driver.mount_scratch()
    supervisord = pidns_driver.start_supervisord(PROGRAM)
    top = wait_running()
    orphan, new_top = leak_once(top)
    report = {"supervisord": supervisord.pid, "killed_top": top, "orphan": orphan, "new_top": new_top,
              "orphan_stat": stat_of(orphan), "new_children": children(new_top)}
    pidns_driver.setup_minion()
    report["diagnosis"] = pidns_driver.salt_call("hostcheck.orphans")
    report["grain"] = pidns_driver.salt_call("grains.get", "hostcheck:orphans")
    report["test_run"] = pidns_driver.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True")
    report["apply"] = pidns_driver.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "timeout=2")
    report["alive"] = {k: pidns_driver.alive(report[k]) for k in ("supervisord", "orphan", "new_top")}
    report["new_children_alive"] = [pidns_driver.alive(p) for p in report["new_children"]]
    report["still_running"] = info()["pid"] == new_top
    report["second_apply"] = pidns_driver.salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks")
    # two reapers at once on a second leftover
    conf2 = second_minion()
    orphan2, top3 = leak_once(new_top)
    report["orphan2"] = orphan2
    report["concurrent"] = concurrent_reapers(conf2)
    report["orphan2_alive"] = pidns_driver.alive(orphan2)
    report["after_concurrent"] = {"supervisord": pidns_driver.alive(supervisord.pid), "top": pidns_driver.alive(top3)}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
