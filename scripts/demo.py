"""The embedded demo: a private master + minion on loopback (see scripts/demo);
with --fleet (root), a master and a client site of minions behind NAT."""
import argparse
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SERVED = ("_modules", "_states", "_grains", "_utils", "hostcheck")
MINION_ID = "hostcheck-demo"

# What the demo shows, in order: (title, salt arguments)
CALLS = [
    ("Every check at once, worst first", ["hostcheck.report"]),
    ("Leaked process trees", ["hostcheck.orphans"]),
    ("Services running deleted binaries", ["hostcheck.deleted_binaries"]),
    ("Kernel and reboot flag", ["hostcheck.reboot_required"]),
    ("Timezone sources", ["hostcheck.timezone"]),
    ("The hostcheck grain", ["grains.get", "hostcheck"]),
    ("What the remedy would do (test=True changes nothing)",
     ["state.single", "hostcheck.orphans_reaped", "name=leaked-trees", "test=True"]),
]


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_configs(base):
    pub, ret = free_ports(2)
    user = getpass.getuser()
    file_root = os.path.join(base, "file_root")
    os.makedirs(file_root, exist_ok=True)
    for name in SERVED:
        link = os.path.join(file_root, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(REPO, name), link)
    common = (
        "root_dir: {b}\nuser: {u}\nsock_dir: {b}/run/{{role}}\npidfile: {b}/run/{{role}}.pid\n"
        "log_file: {b}/log/{{role}}\nlog_level_logfile: info\n"
        "publish_port: {p}\nret_port: {r}\n"
    ).format(b=base, u=user, p=pub, r=ret)
    conf = os.path.join(base, "conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "master"), "w") as fh:
        fh.write(common.replace("{role}", "master"))
        fh.write("interface: 127.0.0.1\nauto_accept: True\n"
                 "pki_dir: {b}/pki/master\ncachedir: {b}/cache/master\n"
                 "file_roots:\n  base:\n    - {f}\n".format(b=base, f=file_root))
    with open(os.path.join(conf, "minion"), "w") as fh:
        fh.write(common.replace("{role}", "minion"))
        fh.write("master: 127.0.0.1\nmaster_port: {r}\nid: {i}\n"
                 "pki_dir: {b}/pki/minion\ncachedir: {b}/cache/minion\n"
                 "acceptance_wait_time: 1\n".format(r=ret, i=MINION_ID, b=base))
    return conf


LEAK_SCRIPT = (
    # PID 1 of a private PID namespace starts a "supervised" program whose
    # supervisord is not there: exactly what a SIGKILLed supervisord leaves.
    'env SUPERVISOR_ENABLED=1 SUPERVISOR_PROCESS_NAME=report-worker SUPERVISOR_GROUP_NAME=reports '
    'setsid sh -c "sleep 3600 & sleep 3600 & wait" & exec sleep 3600'
)


def start_leak():
    """A leaked tree inside a throw-away PID namespace (root only); killed at exit."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.stderr.write("demo: --with-leak needs root and unshare (util-linux)\n")
        sys.exit(2)
    return subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                             "sh", "-c", LEAK_SCRIPT], stdin=subprocess.DEVNULL)


def salt(conf, *args, timeout=60):
    cmd = [os.path.join(BIN, "salt"), "-c", conf, "--timeout", str(timeout)] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


FLEET_BEACON = {"hostcheck": [{"interval": 2}, {"severity": "warning"}]}


def fleet_demo(opts):
    """--fleet: a private master and a client site of three minions behind a
    NAT router (tests/beds/nat.py), one with a leaked tree; prints the
    hostcheck.fleet table and the beacon's event, then tears it all down."""
    if os.geteuid() != 0:
        sys.stderr.write("demo: --fleet needs root (network and PID namespaces)\n")
        return 2
    sys.path.insert(0, REPO)
    from tests.beds import nat  # pylint: disable=import-outside-toplevel

    reason = nat.requirements()
    if reason:
        sys.stderr.write("demo: --fleet cannot run here: {}\n".format(reason))
        return 2
    bed = nat.NatBed({"site-1": {}, "site-2": {"beacons": FLEET_BEACON}, "site-3": {}})
    try:
        return _fleet_steps(bed, nat, opts)
    finally:
        bed.stop()
        print("demo: stopped the master and the minions, deleted the network namespaces", file=sys.stderr)


def _say(text):
    print("demo: " + text, file=sys.stderr)


def _fleet_steps(bed, nat, opts):
    bed.start()
    _say("master at {} (own network namespace); site {} behind a NAT router; 3 minions, each in its own "
         "PID namespace".format(nat.MASTER_IP, nat.SITE_IP))
    _say("keys: " + bed.accept_keys()["accepted"].strip().replace("\n", "; "))
    bed.wait_all_answer()
    bed.cmd("*", "saltutil.sync_all", timeout=120)
    bed.master_cmd("salt-run", "saltutil.sync_all")
    _say("saltutil.sync_all done on the minions and the master (runner)")
    with nat.EventWatch(bed.master_opts()) as watch:
        root = bed.minions["site-2"].plant_leak()
        _say("planted a leaked tree on site-2 (root PID {} in its namespace); waiting for the beacon".format(root))
        nat.wait_for(lambda: watch.tagged("salt/beacon/site-2/hostcheck/"), 60, interval=0.5,
                     what="the beacon's event")
    extra = ["--out={}".format(opts.out)] if opts.out else []
    extra.append("--force-color" if sys.stdout.isatty() else "--no-color")
    ret = bed.master_cmd("salt-run", *extra, "hostcheck.fleet", "timeout=10")
    print("\n### The fleet, worst first: salt-run hostcheck.fleet\n")
    sys.stdout.write(ret.stdout)
    print("\n### The beacon's event for the leak (salt-run state.event)\n")
    for event in watch.tagged("salt/beacon/"):
        print("{}\t{}".format(event["tag"], json.dumps(event["data"], indent=2, sort_keys=True)))
    return ret.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", help="throw-away directory (default: a new one under .hostcheck-demo/)")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away directory")
    parser.add_argument("--with-leak", action="store_true",
                        help="root: first start a leaked process tree in a private PID namespace, "
                             "so the diagnosis has something to show (test=True only; nothing is killed)")
    parser.add_argument("--out", help="Salt outputter (json, yaml, ...); default: Salt's own choice")
    parser.add_argument("--fleet", action="store_true",
                        help="root: a private master plus a client site of three minions behind a NAT router "
                             "(network namespaces), one with a leaked tree; prints the hostcheck.fleet table "
                             "and the beacon's event, then tears everything down")
    opts = parser.parse_args()
    if opts.fleet:
        return fleet_demo(opts)
    if opts.dir:
        base = os.path.abspath(opts.dir)
        os.makedirs(base, exist_ok=True)
    else:
        parent = os.path.join(REPO, ".hostcheck-demo")
        os.makedirs(parent, exist_ok=True)
        base = tempfile.mkdtemp(prefix="run-", dir=parent)
    conf = write_configs(base)
    procs = []
    if opts.with_leak:
        procs.append(start_leak())
    log = open(os.path.join(base, "daemons.out"), "w")
    try:
        for daemon in ("salt-master", "salt-minion"):
            procs.append(subprocess.Popen([os.path.join(BIN, daemon), "-c", conf, "-l", "warning"],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        print("demo: master and minion starting on 127.0.0.1 under {}".format(base), file=sys.stderr)
        deadline = time.time() + 120
        while True:
            ret = salt(conf, "--out=json", MINION_ID, "test.ping", timeout=5)
            if ret.returncode == 0 and "true" in ret.stdout:
                break
            if time.time() > deadline or any(p.poll() is not None for p in procs[-2:]):
                sys.stderr.write("demo: the minion did not answer; see {}/log\n".format(base))
                return 1
            time.sleep(1)
        ret = salt(conf, "--out=json", MINION_ID, "saltutil.sync_all")
        synced = json.loads(ret.stdout or "{}").get(MINION_ID, {})
        print("demo: saltutil.sync_all: modules={} states={} grains={} utils={}".format(
            *(synced.get(k, []) for k in ("modules", "states", "grains", "utils"))), file=sys.stderr)
        status = 0
        for title, args in CALLS:
            print("\n### {}: salt {} {}\n".format(title, MINION_ID, " ".join(args)))
            extra = ["--out={}".format(opts.out)] if opts.out else []
            extra.append("--force-color" if sys.stdout.isatty() else "--no-color")
            ret = salt(conf, *extra, MINION_ID, *args)
            sys.stdout.write(ret.stdout)
            if ret.returncode != 0:
                sys.stderr.write(ret.stderr)
                status = ret.returncode
        return status
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
