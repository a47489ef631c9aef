"""NAT bed: a real salt-master and a client site of salt-minions behind a NAT
router, in three network namespaces the bed creates (root only).

Topology (every address exists only inside the bed's namespaces)::

    master netns                router netns                      site netns
    m0 10.250.0.1/30 ---- r-m 10.250.0.2/30   r-s 10.250.1.1/30 ---- s0 10.250.1.2/30
    (no default route)     nft: masquerade out of r-m;                 default via 10.250.1.1
                           forward: only site -> master new
                           connections (+ established);
                           DNS (53) to the router dropped

A site minion connects out to the master's 4505/4506; the master sees the
router's address and has no route to the site, and even with one the
router drops any connection it did not see leave. The site's resolver is
the router, which drops DNS: exactly a client site without DNS, where Salt's
core grains stall on name look-ups unless ``enable_fqdns_grains: False``
(the bed's minions set it) or ``/etc/hosts`` answers them.

Every daemon (the master and each minion) runs as a child of ``nsinit.py``,
PID 1 of its own PID namespace (``unshare --pid --fork --kill-child
--mount-proc``) inside its network namespace, with its own mount namespace
where ``/etc/hosts`` and ``/etc/resolv.conf`` are the bed's files
(bind mounts; the host's files are never touched). A minion's remedies can
therefore only act inside its own PID namespace, and a leaked tree planted
there (:meth:`Minion.plant_leak`) is the only thing they can find.
Stopping a daemon is one SIGKILL to the ``unshare`` process the bed started
(by PID): the kernel then kills everything in that namespace. Each
``unshare`` also gets ``PR_SET_PDEATHSIG``, so a crashed test run leaves no
process behind. :meth:`NatBed.stop` kills the namespaces, deletes the three
network namespaces and the work directory.

The bed signals nothing but the ``unshare`` processes it started (and, by
PID, processes it planted itself inside its own namespaces).
"""
import contextlib
import ctypes
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .supervisor_leak import read_proc, wait_for

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
NSINIT = HERE / "nsinit.py"
BIN = pathlib.Path(sys.executable).parent
SERVED = ("_modules", "_states", "_grains", "_utils", "_runners", "_beacons", "hostcheck")
REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables", "unshare": "util-linux", "mount": "mount"}

MASTER_IP, ROUTER_M_IP = "10.250.0.1", "10.250.0.2"
ROUTER_S_IP, SITE_IP = "10.250.1.1", "10.250.1.2"
PORTS = (4505, 4506)

NFT_RULES = """\
table ip hcnat {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "r-s" oifname "r-m" accept
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        oifname "r-m" masquerade
    }
    chain input {
        type filter hook input priority 0; policy accept;
        udp dport 53 drop
        tcp dport 53 drop
    }
}
"""

#: runs argv after bind-mounting the bed's hosts and resolv.conf (own mount namespace)
MOUNT_SCRIPT = 'h=$1 r=$2; shift 2; mount --bind "$h" /etc/hosts && mount --bind "$r" /etc/resolv.conf && exec "$@"'

LEAK_ENV = ("SUPERVISOR_ENABLED=1", "SUPERVISOR_PROCESS_NAME=report-worker", "SUPERVISOR_GROUP_NAME=reports")
LEAK_SCRIPT = "sleep 3600 & sleep 3600 & wait"

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: SIGKILL this child (unshare) when the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run(*argv, check=True, timeout=60, **kwargs):
    """Run a host command; its output as text."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check,
                          timeout=timeout, **kwargs)


# --------------------------------------------------------------------------
# the network


class Network:
    """The three network namespaces, their veth pairs and the router's nft rules."""

    def __init__(self, suffix):
        self.master = "hcnat-m-" + suffix
        self.router = "hcnat-r-" + suffix
        self.site = "hcnat-s-" + suffix
        self.created = []

    def _ip(self, netns, *args):
        return run("ip", "-n", netns, *args)

    def create(self):
        for ns in (self.master, self.router, self.site):
            run("ip", "netns", "add", ns)
            self.created.append(ns)
            self._ip(ns, "link", "set", "lo", "up")
        run("ip", "link", "add", "m0", "netns", self.master, "type", "veth", "peer", "name", "r-m", "netns", self.router)
        run("ip", "link", "add", "s0", "netns", self.site, "type", "veth", "peer", "name", "r-s", "netns", self.router)
        for ns, dev, addr in ((self.master, "m0", MASTER_IP), (self.router, "r-m", ROUTER_M_IP),
                              (self.router, "r-s", ROUTER_S_IP), (self.site, "s0", SITE_IP)):
            self._ip(ns, "addr", "add", addr + "/30", "dev", dev)
            self._ip(ns, "link", "set", dev, "up")
        self._ip(self.site, "route", "add", "default", "via", ROUTER_S_IP)
        run("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "netns", "exec", self.router, "nft", "-f", "-", input=NFT_RULES)
        return self

    def cut_site(self):
        """The site's uplink goes down (a cable pulled at the client site)."""
        self._ip(self.router, "link", "set", "r-s", "down")

    def restore_site(self):
        self._ip(self.router, "link", "set", "r-s", "up")

    def destroy(self):
        for ns in reversed(self.created):
            run("ip", "netns", "del", ns, check=False)
        self.created = []

    def probe(self, netns, host, port, timeout=2.0):
        """From ``netns``, can a TCP connection to ``host:port`` be opened? ``(ok, why)``."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout({t})\n"
                "try:\n s.connect(({h!r},{p}));print('OK '+s.getsockname()[0])\n"
                "except OSError as e:\n print('FAIL '+(e.strerror or type(e).__name__))\n").format(
                    t=timeout, h=host, p=port)
        out = run("ip", "netns", "exec", netns, sys.executable, "-c", code, timeout=timeout + 20).stdout.strip()
        return out.startswith("OK"), out


# --------------------------------------------------------------------------
# a daemon in its own PID namespace


class NsDaemon:
    """``nsinit.py`` as PID 1 of a new PID namespace inside ``netns``, with the
    bed's ``/etc/hosts`` and ``/etc/resolv.conf``; programs are started
    through its control FIFO."""

    def __init__(self, name, netns, workdir, hosts, resolv):
        self.name = name
        self.netns = netns
        self.dir = pathlib.Path(workdir)
        self.ctl = self.dir / "ctl"
        self.hosts, self.resolv = hosts, resolv
        self.unshare = None

    def start(self):
        self.ctl.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.ctl / "control")
        out = open(self.dir / "unshare.out", "ab")  # noqa: SIM115 - kept by the child
        argv = ["ip", "netns", "exec", self.netns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                "--propagation", "private", "sh", "-c", MOUNT_SCRIPT, "sh", self.hosts, self.resolv,
                sys.executable, NSINIT, self.ctl]
        self.unshare = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        out.close()
        wait_for(lambda: self.log_events("ready"), 30, what="nsinit of " + self.name)
        return self

    def log_events(self, kind=None):
        try:
            lines = (self.ctl / "init.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line being written
                events.append(json.loads(line))
        return [e for e in events if kind is None or e.get("event") == kind]

    def spawn(self, argv, tag, output=None):
        """Start ``argv`` as a child of the namespace's init; its namespace PID."""
        request = {"argv": [str(a) for a in argv], "tag": tag, "output": str(output or os.devnull), "cwd": "/"}
        with open(self.ctl / "control", "w") as fifo:
            fifo.write(json.dumps(request) + "\n")
        spawned = wait_for(lambda: [e for e in self.log_events("spawn") if e.get("tag") == tag], 30,
                           what="{} to start in {}".format(tag, self.name))
        return spawned[-1]["pid"]

    def reaped(self, nspid):
        """True once the namespace's init has reaped ``nspid``."""
        return any(e["pid"] == nspid for e in self.log_events("reap"))

    def init_pid(self):
        """Host PID of the namespace's init (the unshare process's child)."""
        try:
            with open("/proc/{0}/task/{0}/children".format(self.unshare.pid)) as fh:
                kids = fh.read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def host_pids(self):
        """``{namespace PID: host PID}`` of every process in the namespace."""
        init = self.init_pid()
        if init is None:
            return {}
        ns = os.readlink("/proc/{}/ns/pid".format(init))
        out = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink("/proc/{}/ns/pid".format(name)) == ns:
                    proc = read_proc(int(name))
                    if proc is not None:
                        out[proc.nspid] = proc.pid
        return out

    def alive(self):
        return self.unshare is not None and self.unshare.poll() is None

    def stop(self):
        """SIGKILL to the unshare process the bed started: the namespace dies with it."""
        if self.unshare is None:
            return
        if self.unshare.poll() is None:
            self.unshare.kill()
        try:
            self.unshare.wait(30)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------
# master and minions


def _yaml(data):
    return json.dumps(data, indent=2, sort_keys=True) + "\n"  # JSON is YAML


class Minion(NsDaemon):
    """A salt-minion in the site: its own root_dir, id and pki."""

    def __init__(self, minion_id, bed, beacons=None, extra=None):
        super().__init__(minion_id, bed.net.site, bed.workdir / minion_id, bed.site_hosts, bed.site_resolv)
        self.id = minion_id
        self.bin = bed.bin
        self.conf_dir = self.dir / "conf"
        self.config = {
            "id": minion_id, "master": MASTER_IP, "ipv6": False, "user": "root",
            "root_dir": str(self.dir), "pki_dir": str(self.dir / "pki"), "cachedir": str(self.dir / "cache"),
            "sock_dir": str(self.dir / "sock"), "pidfile": str(self.dir / "minion.pid"),
            "log_file": str(self.dir / "minion.log"), "log_level_logfile": "info",
            "enable_fqdns_grains": False, "acceptance_wait_time": 1, "acceptance_wait_time_max": 2,
            "random_reauth_delay": 0, "grains": {"site": "acme"},
        }
        if beacons:
            self.config["beacons"] = beacons
        self.config.update(extra or {})
        self.leaks = {}

    def start(self):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "minion").write_text(_yaml(self.config))
        super().start()
        self.minion_nspid = self.spawn([self.bin / "salt-minion", "-c", self.conf_dir, "-l", "quiet"], "salt-minion",
                                       output=self.dir / "console.out")
        return self

    def plant_leak(self, tag="leak"):
        """A tree with supervisord's provenance whose supervisord is gone (its
        parent is the namespace's init): what a SIGKILLed supervisord leaves.
        Returns the namespace PID of its root; waits for its two children."""
        root = self.spawn(["/usr/bin/env", *LEAK_ENV, "/bin/sh", "-c", LEAK_SCRIPT], tag)
        wait_for(lambda: len(self.tree(root)) == 3, 10, interval=0.05, what="the leaked tree")
        self.leaks[tag] = root
        return root

    def add_processes(self, count, tag="load"):
        """``count`` sleeping processes under one ``sh`` in the namespace (a busier host)."""
        script = "i=0; while [ $i -lt {} ]; do sleep 3600 & i=$((i+1)); done; wait".format(count)
        root = self.spawn(["/bin/sh", "-c", script], tag)
        wait_for(lambda: len(self.tree(root)) > count, 60, interval=0.2, what="the extra processes")
        return root

    def tree(self, nsroot):
        """Namespace PIDs of ``nsroot`` and its descendants."""
        pids = self.host_pids()
        by_host = {h: n for n, h in pids.items()}
        if nsroot not in pids:
            return []
        out, todo = [], [pids[nsroot]]
        while todo:
            pid = todo.pop()
            out.append(by_host.get(pid, pid))
            with contextlib.suppress(OSError):
                with open("/proc/{0}/task/{0}/children".format(pid)) as fh:
                    todo.extend(int(k) for k in fh.read().split())
        return sorted(out)


class Master(NsDaemon):
    """The salt-master in the master namespace, serving this checkout."""

    def __init__(self, bed, reactor=None):
        super().__init__("master", bed.net.master, bed.workdir / "master", bed.master_hosts, bed.master_resolv)
        self.bin = bed.bin
        self.conf_dir = self.dir / "conf"
        self.config = {
            "id": "hc-nat-master", "interface": MASTER_IP, "ipv6": False, "user": "root",
            "root_dir": str(self.dir), "pki_dir": str(self.dir / "pki"), "cachedir": str(self.dir / "cache"),
            "sock_dir": str(self.dir / "sock"), "pidfile": str(self.dir / "master.pid"),
            "log_file": str(self.dir / "master.log"), "log_level_logfile": "info",
            "key_logfile": str(self.dir / "key.log"),
            "enable_fqdns_grains": False, "auto_accept": False, "gather_job_timeout": 3, "timeout": 10,
            "worker_threads": 3,
            "file_roots": {"base": [str(bed.file_root)]}, "pillar_roots": {"base": [str(bed.pillar_root)]},
        }
        if reactor:
            self.config["reactor"] = reactor

    def start(self):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "master").write_text(_yaml(self.config))
        super().start()
        self.spawn([self.bin / "salt-master", "-c", self.conf_dir, "-l", "quiet"], "salt-master",
                   output=self.dir / "console.out")
        return self

    def pending_keys(self):
        try:
            return sorted(os.listdir(pathlib.Path(self.config["pki_dir"]) / "minions_pre"))
        except FileNotFoundError:
            return []


class Agent:
    """``nat_agent.py`` in the master's network namespace: LocalClient and
    RunnerClient calls for the test, one JSON line each way."""

    def __init__(self, bed):
        argv = ["ip", "netns", "exec", bed.net.master, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", MOUNT_SCRIPT, "sh", bed.master_hosts, bed.master_resolv,
                bed.bin / "python", HERE / "nat_agent.py", bed.master.conf_dir / "master"]
        self.log = open(bed.workdir / "agent.err", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, preexec_fn=_die_with_parent)
        self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the master agent died; see agent.err")
        return json.loads(line)

    def call(self, op, timed=False, **request):
        """The result of ``op`` on the master; with ``timed``, ``(result,
        seconds the call took in the agent)``."""
        self.proc.stdin.write(json.dumps(dict(request, op=op)) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if not answer["ok"]:
            raise RuntimeError("{} failed on the master: {}\n{}".format(op, answer["error"], answer.get("trace")))
        return (answer["result"], answer["seconds"]) if timed else answer["result"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class NatBed:
    """The whole bed: network, master, minions, and the ways to drive them.

    ``minions``: ``{minion id: {"beacons": {...}, "extra": {...}}}``;
    ``pillar``: ``{minion id: pillar dict}`` served from the master's
    pillar_roots; ``reactor``: the master's ``reactor`` setting; ``served``:
    ``{"_modules": other directory, ...}`` to serve another tree than this
    checkout's for some of the directories; ``salt_bin``: the ``bin``
    directory of another Salt (e.g. ``.venv-compat/salt3006-py310/bin``).
    """

    def __init__(self, minions, pillar=None, reactor=None, workdir=None, served=None, salt_bin=None):
        self.suffix = secrets.token_hex(3)
        self.bin = pathlib.Path(salt_bin or BIN)
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="hcnat-", dir="/tmp"))
        self.own_workdir = workdir is None
        self.net = Network(self.suffix)
        self.file_root = self.workdir / "file_root"
        self.pillar_root = self.workdir / "pillar"
        self.served = {name: REPO / name for name in SERVED}
        self.served.update({k: pathlib.Path(v) for k, v in (served or {}).items()})
        self._write_files(pillar or {})
        self.master = Master(self, reactor)
        self.minions = {mid: Minion(mid, self, **(spec or {})) for mid, spec in minions.items()}
        self.agent = None
        self.timings = {}

    # -- files --------------------------------------------------------------

    def _write_files(self, pillar):
        hostname = socket.gethostname()
        # The host name for IPv4 *and* IPv6: Salt's ip_fqdn grain asks for both,
        # and an unanswered AAAA look-up stalls every grains load by 10 s.
        names = "127.0.0.1 localhost\n127.0.1.1 {h}\n::1 localhost ip6-localhost {h}\n".format(h=hostname)
        self.master_hosts = self._write("hosts-master", names + "{} hc-master\n".format(MASTER_IP))
        self.site_hosts = self._write("hosts-site", names + "{} hc-master\n{} hc-site\n".format(MASTER_IP, SITE_IP))
        self.master_resolv = self._write("resolv-master", "nameserver 127.0.0.1\n")
        self.site_resolv = self._write("resolv-site", "nameserver {}\noptions timeout:5 attempts:2\n".format(ROUTER_S_IP))
        self.file_root.mkdir()
        for name, path in self.served.items():
            (self.file_root / name).symlink_to(path)
        self.pillar_root.mkdir()
        top = {"base": {mid: ["m_" + mid.replace("-", "_")] for mid in pillar}}
        self._write("pillar/top.sls", _yaml(top))
        for mid, data in pillar.items():
            self._write("pillar/m_{}.sls".format(mid.replace("-", "_")), _yaml(data))

    def _write(self, rel, text):
        path = self.workdir / rel
        path.write_text(text)
        return path

    # -- life cycle ---------------------------------------------------------

    def start(self):
        t0 = time.monotonic()
        self.net.create()
        self.master.start()
        wait_for(lambda: all(self.net.probe(self.net.site, MASTER_IP, p, 1)[0] for p in PORTS), 90, interval=0.5,
                 what="the master's ports from the site")
        self.agent = Agent(self)
        self.timings["master"] = time.monotonic() - t0
        for minion in self.minions.values():
            minion.start()
        return self

    def stop(self):
        if self.agent is not None:
            with contextlib.suppress(Exception):
                self.agent.stop()
            self.agent = None
        for daemon in list(self.minions.values()) + [self.master]:
            with contextlib.suppress(Exception):
                daemon.stop()
        self.net.destroy()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the master's tools (run in the master's network namespace) ---------

    def master_cmd(self, tool, *args, timeout=120):
        """``salt``, ``salt-key`` or ``salt-run`` as an operator runs it on the master."""
        argv = ["ip", "netns", "exec", self.net.master, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", MOUNT_SCRIPT, "sh", self.master_hosts, self.master_resolv,
                self.bin / tool, "-c", self.master.conf_dir] + list(args)
        return run(*argv, check=False, timeout=timeout)

    def accept_keys(self, timeout=90):
        """Wait for every minion's key, then accept them all with ``salt-key -A``."""
        want = sorted(self.minions)
        wait_for(lambda: set(want) <= set(self.master.pending_keys()), timeout, interval=0.2,
                 what="the minions' keys")
        listed = self.master_cmd("salt-key", "-L", "--out=json")
        accepted = self.master_cmd("salt-key", "-A", "-y")
        return {"listed": json.loads(listed.stdout), "accepted": accepted.stdout}

    def master_opts(self):
        import salt.config  # noqa: PLC0415

        return salt.config.master_config(str(self.master.conf_dir / "master"))

    def cmd(self, tgt, fun, arg=(), timeout=60, tgt_type="glob", kwarg=None, timed=False):
        """``LocalClient.cmd`` on the master (through the agent)."""
        return self.agent.call("cmd", timed=timed, tgt=tgt, fun=fun, arg=list(arg), timeout=timeout,
                               tgt_type=tgt_type, kwarg=kwarg or {})

    def runner(self, fun, **kwarg):
        """A runner function, as ``salt-run`` runs it (through the agent)."""
        return self.agent.call("runner", fun=fun, kwarg=kwarg)

    def wait_all_answer(self, ids=None, timeout=90):
        ids = sorted(ids or self.minions)
        return wait_for(lambda: set(ids) <= set(self.cmd(ids, "test.ping", timeout=2, tgt_type="list")), timeout,
                        interval=0.5, what="every minion to answer test.ping")

    def stop_minion(self, minion_id):
        """The minion's process (its whole PID namespace) stopped, by the bed's own PID."""
        self.minions[minion_id].stop()


class EventWatch:
    """Collect master events whose tag starts with one of ``prefixes``, in a thread."""

    def __init__(self, opts, prefixes=("salt/beacon/",)):
        self.opts = opts
        self.prefixes = tuple(prefixes)
        self.events = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import salt.utils.event  # noqa: PLC0415

        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
        try:
            bus.connect_pub()
            self._ready.set()
            while not self._stop.is_set():
                event = bus.get_event(wait=0.5, full=True)
                if event and event["tag"].startswith(self.prefixes):
                    self.events.append(dict(event, t=time.monotonic()))
        finally:
            bus.destroy()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(30)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def tagged(self, prefix):
        return [e for e in self.events if e["tag"].startswith(prefix)]


def dns_stall_config(minion_dir, fqdns):
    """A masterless minion config for measuring grain loading in the site."""
    conf = pathlib.Path(minion_dir) / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    d = str(minion_dir)
    (conf / "minion").write_text(_yaml({
        "id": "dns-probe", "file_client": "local", "root_dir": d, "cachedir": d + "/cache", "pki_dir": d + "/pki",
        "sock_dir": d + "/sock", "log_file": d + "/minion.log", "enable_fqdns_grains": fqdns}))
    return conf


def time_grains_in_site(bed, conf, hosts):
    """Wall time of ``salt-call --local grains.items`` in the site namespace,
    with the site's resolver (the router, which drops DNS) and ``hosts``."""
    argv = ["ip", "netns", "exec", bed.net.site, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", MOUNT_SCRIPT, "sh", hosts, bed.site_resolv,
            BIN / "salt-call", "--local", "-c", conf, "--out=json", "-l", "quiet", "grains.items"]
    t0 = time.monotonic()
    out = run(*argv, check=False, timeout=120)
    return time.monotonic() - t0, out


def stock_hosts(bed):
    """An /etc/hosts as many images ship it: the host name for IPv4 only,
    nothing for the site's addresses."""
    return bed._write("hosts-bare", "127.0.0.1 localhost\n127.0.1.1 {}\n".format(socket.gethostname()))


def requirements():
    """``None`` when the bed can run here, else why not."""
    probe = "hcnat-probe-" + secrets.token_hex(2)
    try:
        run("ip", "netns", "add", probe)
        run("ip", "netns", "exec", probe, "nft", "list", "ruleset")
    except (OSError, subprocess.SubprocessError) as exc:
        return "network namespaces or nft do not work here: {}".format(exc)
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None

