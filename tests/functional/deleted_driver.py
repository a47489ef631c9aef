"""PID 1 of a private PID (and mount) namespace for test_deleted_pidns.py.

Starts processes running old code on a tmpfs mounted on /mnt inside the
namespace's own mount namespace (nothing reaches the host's file systems),
runs hostcheck on them (in-process and through a real ``salt-call
--local``) and prints one JSON document. Everything dies with the namespace.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pidns_driver  # same argv: REPO WORK SALT_CALL

REPO, WORK = pidns_driver.REPO, pidns_driver.WORK
sys.path.insert(0, os.path.join(REPO, "_utils"))
import hostcheck_check  # noqa: E402
import hostcheck_deleted  # noqa: E402

MEMFD = """\
import mmap, os, time
fd = os.memfd_create("jit")
with open("/bin/true", "rb") as fh:
    os.write(fd, fh.read())
m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)
print("ready", flush=True)
time.sleep(600)
"""


def libz():
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        path = os.path.join(d, "libz.so.1")
        if os.path.exists(path):
            return path
    raise SystemExit("no libz.so.1 to preload")


def main():
    assert os.getpid() == 1, "must be PID 1 of its namespace"
    subprocess.run(["mount", "-t", "tmpfs", "hc-test", "/mnt"], check=True)
    os.makedirs("/mnt/hc/bin")
    os.makedirs("/mnt/hc/lib")
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    shutil.copy2("/bin/sleep", "/mnt/hc/bin/old-daemon")
    daemon = subprocess.Popen(["/mnt/hc/bin/old-daemon", "600"], **quiet)
    shutil.copy2(libz(), "/mnt/hc/lib/libhc-old.so")
    preload = subprocess.Popen(["/bin/sleep", "601"], env=dict(os.environ, LD_PRELOAD="/mnt/hc/lib/libhc-old.so"),
                               **quiet)
    memfd = subprocess.Popen([sys.executable, "-c", MEMFD], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert memfd.stdout.readline().strip() == b"ready"
    healthy = subprocess.Popen(["/bin/sleep", "602"], **quiet)
    time.sleep(0.3)  # let the dynamic loader map the preloaded library
    os.unlink("/mnt/hc/bin/old-daemon")
    os.unlink("/mnt/hc/lib/libhc-old.so")

    diag = hostcheck_check.diagnose(hostcheck_deleted)  # read + analyse, as the module and the state run it
    report = {
        "pids": {"daemon": daemon.pid, "preload": preload.pid, "memfd": memfd.pid, "healthy": healthy.pid},
        "memfd_maps": [l for l in open("/proc/{}/maps".format(memfd.pid)) if "memfd:" in l],
        "findings": diag.findings,
        "processes": diag.details["processes"],
    }
    pidns_driver.setup_minion()
    report["salt"] = pidns_driver.salt_call("hostcheck.deleted_binaries")
    report["state"] = pidns_driver.salt_call("state.single", "hostcheck.services_current", "name=current")
    report["alive_after_state"] = {k: pidns_driver.alive(p) for k, p in report["pids"].items()}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
