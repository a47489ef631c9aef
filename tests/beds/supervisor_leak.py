"""Supervisor-leak scenario bed: the incident of issue 2, for real.

A real ``supervisord`` runs a real ``salt-minion`` (program ``salt-minion``)
inside a private PID namespace (``unshare --pid --fork --mount-proc``) whose
PID 1 is ``nsinit.py``, a tiny reaping init. The minion connects to a real
salt-master on loopback that lives in the host's PID namespace (started by
pytest-salt-factories; the bed only needs its loaded configuration).

:meth:`SupervisorLeakBed.leak` reproduces the incident: SIGKILL supervisord,
so its salt-minion tree is re-parented to the namespace's PID 1 and keeps
running, then start supervisord again with the same configuration, which
starts a second, supervised salt-minion with the same id.

All PIDs the bed hands out are *host* PIDs (what the host's ``/proc`` shows);
``Proc.nspid`` is the PID as seen inside the namespace. The bed only ever
signals processes that descend from the ``unshare`` process it started, and
re-checks each one's start time before signalling it (PID reuse). ``stop()``
SIGKILLs the namespace's init: the kernel then kills everything inside.

What this bed shows on Salt 3008.4 / supervisor 4.3.0 (measured on a 2-core
VM; asserted in ``tests/scenarios/test_supervisor_bed.py``):

* A salt-minion tree is 2 processes at rest: the keepalive parent (argv
  ``python .../salt-minion -c CONF``, comm ``salt-minion``, environ intact,
  carrying ``SUPERVISOR_ENABLED/PROCESS_NAME/GROUP_NAME/SERVER_URL``) and its
  multiprocessing child (cmdline one string ending in ``MultiMinionProcessManager
  MinionProcessManager``, comm truncated to ``/work/main/.ven``-like text,
  environ clobbered by setproctitle: one entry, no KEY=VALUE). Each running
  job adds a transient ``... ProcessPayload(jid=...)`` grandchild.
* After SIGKILL of supervisord the tree is re-parented to PID 1 (its session
  id still names the dead supervisord) and keeps answering the master. The
  restarted supervisord's salt-minion finds the live mantle file
  ``<pidfile dir>/process_responsibility_<pidfile name>`` (JSON pid, name,
  start time of the leaked MinionProcessManager), logs "An instance is already
  running. Exiting" within ~1.5 s of being spawned but only exits (status 1)
  5-6 s after spawn, and deletes the leaked copy's pidfile on its way out. It
  never authenticates, so the master sees one minion and no duplicate (no
  "duplicate key" message on 3008).
* With ``startsecs`` below that 5-6 s lifetime (the default 1 is) supervisord
  counts each doomed copy as started: RUNNING, EXITED (status 1, not
  expected), respawned within a second, forever (``autorestart=true`` or the
  default ``unexpected``); once the leaked tree is gone the next copy comes up
  by itself. With ``startsecs`` above it, each doomed copy is a failed start:
  BACKOFF, then FATAL after ``startretries`` (about 29 s after the leak with the
  default 3), and nothing restarts the minion after the leak is reaped.
* The leaked copy does not exit on SIGTERM (observed for 60 s): it logs
  "Minion received a SIGTERM. Exiting." and "Shutting down the Salt Minion",
  stops answering the master, but stays alive and keeps the mantle, so the
  supervised copies keep failing. Only SIGKILL frees the host. Cause, as far
  as measured: its stdout/stderr are pipes to the dead supervisord; the same
  leaked copy started with its output redirected to a file exits ~10 s after
  SIGTERM, and a supervised (unleaked) copy ~8 s after.
"""
import contextlib
import ctypes
import dataclasses
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import xmlrpc.client

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
NSINIT = HERE / "nsinit.py"

PROGRAM_NAME = "salt-minion"
PROVENANCE_KEYS = (
    "SUPERVISOR_ENABLED",
    "SUPERVISOR_PROCESS_NAME",
    "SUPERVISOR_GROUP_NAME",
    "SUPERVISOR_SERVER_URL",
)

# The [program:salt-minion] section the bed uses unless told otherwise: what
# an operator writes for a daemon that must always run. What the recovery after
# the leaked tree is reaped needs (see the module docstring): ``autorestart``
# not false, and ``startsecs`` below the ~5 s a doomed copy lives (the default
# 1 is), otherwise the program ends FATAL while the leak is alive.
OPERATOR_PROGRAM_SETTINGS = {
    "autostart": "true",
    "autorestart": "true",
    "startsecs": "1",
    "startretries": "3",
    "exitcodes": "0",
    "stopsignal": "TERM",
    "stopwaitsecs": "10",
    "redirect_stderr": "true",
}

# The environment supervisord is started with (an init script's, not pytest's).
SUPERVISORD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}

_PR_SET_PDEATHSIG = 1
_PROGRAM_EVENT = re.compile(r"\w+ (spawned|success|exited|gave up|stopped): '?([\w.-]+)'?(.*)")


def _die_with_parent():
    """preexec_fn: SIGKILL this child (unshare) when the test process dies.

    With ``unshare --kill-child`` that takes the namespace's init, and with it
    every process of the namespace, down too: a crashed test run leaves nothing.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --------------------------------------------------------------------------
# Reading the host's /proc (host PIDs)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Proc:
    """One process as the host's /proc shows it."""

    pid: int  # host PID
    ppid: int  # host PID of the parent
    pgid: int  # host PGID
    sid: int  # host SID
    starttime: int  # clock ticks after boot (field 22 of stat)
    state: str
    comm: str
    cmdline: tuple
    nspid: int | None  # PID inside the innermost PID namespace

    @property
    def command(self):
        return " ".join(self.cmdline) if self.cmdline else f"[{self.comm}]"


def _read_stat(pid, proc_root="/proc"):
    with open(f"{proc_root}/{pid}/stat", "rb") as fp:
        data = fp.read()
    lparen = data.index(b"(")
    rparen = data.rindex(b")")
    comm = data[lparen + 1 : rparen].decode("utf-8", "replace")
    fields = data[rparen + 2 :].split()
    return {
        "state": fields[0].decode(),
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "sid": int(fields[3]),
        "starttime": int(fields[19]),
        "comm": comm,
    }


def read_proc(pid, proc_root="/proc"):
    """Return a :class:`Proc` for a host PID, or None if it is gone."""
    try:
        stat = _read_stat(pid, proc_root)
        with open(f"{proc_root}/{pid}/cmdline", "rb") as fp:
            raw = fp.read()
        nspid = None
        with open(f"{proc_root}/{pid}/status", "rb") as fp:
            for line in fp:
                if line.startswith(b"NSpid:"):
                    nspid = int(line.split()[-1])
                    break
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    cmdline = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)
    return Proc(pid=pid, cmdline=cmdline, nspid=nspid, **stat)


def parent_map(proc_root="/proc"):
    """{host pid: host ppid} for every process of the host (one stat read each)."""
    parents = {}
    for name in os.listdir(proc_root):
        if not name.isdigit():
            continue
        try:
            parents[int(name)] = _read_stat(name, proc_root)["ppid"]
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return parents


def descendants(root_pid, parents=None):
    """Host PIDs below ``root_pid`` (not including it), parents before children."""
    if parents is None:
        parents = parent_map()
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], sorted(children.get(root_pid, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


def read_environ(pid, keys=PROVENANCE_KEYS, proc_root="/proc"):
    """What a process's /proc/PID/environ says, reduced to ``keys``.

    Returns ``{"vars": {key: value for the requested keys present},
    "entries": number of NUL-separated entries, "clobbered": bool}`` or None if the
    process is gone. ``clobbered`` is True when the environ area no longer
    parses as KEY=VALUE entries (setproctitle moved argv over it) or is empty.
    Only the requested keys' values are returned (see DESIGN safety rules).
    """
    try:
        with open(f"{proc_root}/{pid}/environ", "rb") as fp:
            raw = fp.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    entries = [e for e in raw.split(b"\0") if e]
    well_formed = [e for e in entries if b"=" in e and not e.startswith(b"=")]
    found = {}
    for entry in well_formed:
        key, _, value = entry.partition(b"=")
        key = key.decode("utf-8", "replace")
        if key in keys:
            found[key] = value.decode("utf-8", "replace")
    clobbered = not entries or len(well_formed) != len(entries)
    return {"vars": found, "entries": len(entries), "clobbered": clobbered}


def wait_for(predicate, timeout, interval=0.25, what="condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# The bed
# --------------------------------------------------------------------------


class SupervisorLeakBed:
    """supervisord + salt-minion in a PID namespace, leaked on request.

    Args:
        workdir: an empty directory the bed owns (keep it short: unix
            sockets live under it and their paths are limited to 107 bytes).
        master_config: the salt-master's loaded configuration (the bed reads
            ``interface``, ``ret_port``, ``publish_port``, ``transport``,
            ``sock_dir`` and uses it for an in-process LocalClient).
        minion_id: the fixed minion id of the supervised salt-minion.
        program_settings: the ``[program:salt-minion]`` settings (without
            ``command``); defaults to :data:`OPERATOR_PROGRAM_SETTINGS`.
        minion_overrides: extra minion configuration keys.
        venv_bin: directory holding ``salt-minion``, ``supervisord`` and
            ``supervisorctl`` (default: the running interpreter's).
        command: the program's ``command=`` (default: ``salt-minion -c
            <minion conf dir>``; ``{conf_dir}``, ``{bin}`` and ``{workdir}``
            are substituted).
    """

    def __init__(
        self,
        workdir,
        master_config,
        minion_id="hostcheck-leak-minion",
        program_settings=None,
        minion_overrides=None,
        venv_bin=None,
        command=None,
    ):
        self.workdir = pathlib.Path(workdir).resolve()
        # salt-factories hands out an ImmutableDict; salt's clients write to opts
        self.master_config = (
            master_config.copy() if hasattr(master_config, "copy") else dict(master_config)
        )
        self.minion_id = minion_id
        self.program_settings = dict(
            OPERATOR_PROGRAM_SETTINGS if program_settings is None else program_settings
        )
        self.minion_overrides = dict(minion_overrides or {})
        self.venv_bin = pathlib.Path(venv_bin or pathlib.Path(sys.prefix) / "bin")
        self.command = command
        self.ctl_dir = self.workdir / "ctl"
        self.sup_dir = self.workdir / "sup"
        self.minion_dir = self.workdir / "minion"
        self.minion_conf_dir = self.minion_dir / "conf"
        self.supervisord_conf = self.sup_dir / "supervisord.conf"
        self.supervisord_log = self.sup_dir / "supervisord.log"
        self.supervisord_pidfile = self.sup_dir / "supervisord.pid"
        self.socket_path = self.sup_dir / "supervisor.sock"
        self.minion_log = self.minion_dir / "logs" / "minion.log"
        self.minion_pidfile = self.minion_dir / "run" / "salt-minion.pid"
        self.unshare = None  # subprocess.Popen of unshare (host namespace)
        self.init_pid = None  # host PID of the namespace's PID 1
        self._init_starttime = None
        self._client = None
        self._spawn_seq = 0
        # time.time() - time.monotonic(): maps wall-clock log stamps to monotonic
        self._wall_offset = time.time() - time.monotonic()
        self.marks = []  # [(monotonic, text)] recorded by the bed and by tests

    # -- configuration -----------------------------------------------------

    def mark(self, text):
        """Record a timeline event (monotonic time)."""
        self.marks.append((time.monotonic(), text))

    def _write_configs(self):
        for path in (
            self.ctl_dir,
            self.sup_dir,
            self.minion_conf_dir,
            self.minion_dir / "run",
            self.minion_dir / "logs",
        ):
            path.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to 107 bytes; salt's are ~40 below sock_dir
        if len(str(self.minion_dir / "run" / "sock")) > 64:
            raise ValueError(f"workdir too long for unix sockets: {self.workdir}")
        mc = self.master_config
        minion = {
            "id": self.minion_id,
            "master": mc.get("interface", "127.0.0.1"),
            "master_port": mc["ret_port"],
            "publish_port": mc["publish_port"],
            "transport": mc.get("transport", "zeromq"),
            "user": "root",
            "root_dir": str(self.minion_dir),
            "conf_file": str(self.minion_conf_dir / "minion"),
            "pki_dir": str(self.minion_dir / "pki"),
            "cachedir": str(self.minion_dir / "cache"),
            "extension_modules": str(self.minion_dir / "cache" / "extmods"),
            "sock_dir": str(self.minion_dir / "run" / "sock"),
            "pidfile": str(self.minion_pidfile),
            "log_file": str(self.minion_log),
            "log_level_logfile": "info",
            "file_client": "remote",
            # no DNS on these machines: fqdn grains would wait for timeouts
            "enable_fqdns_grains": False,
            "enable_gpu_grains": False,
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 5,
        }
        minion.update(self.minion_overrides)
        # JSON is YAML: no yaml dependency needed to write the config
        (self.minion_conf_dir / "minion").write_text(json.dumps(minion, indent=2) + "\n")

        command = (self.command or "{bin}/salt-minion -c {conf_dir}").format(
            bin=self.venv_bin, conf_dir=self.minion_conf_dir, workdir=self.workdir
        )
        program = [f"command={command}"]
        program += [f"{k}={v}" for k, v in self.program_settings.items()]
        program.append(f"stdout_logfile={self.sup_dir / 'salt-minion.out'}")
        conf = "\n".join(
            [
                "[unix_http_server]",
                f"file={self.socket_path}",
                "chmod=0700",
                "",
                "[supervisord]",
                f"logfile={self.supervisord_log}",
                "logfile_maxbytes=0",
                "loglevel=info",
                f"pidfile={self.supervisord_pidfile}",
                f"childlogdir={self.sup_dir}",
                "nodaemon=false",
                "",
                "[rpcinterface:supervisor]",
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                "",
                "[supervisorctl]",
                f"serverurl=unix://{self.socket_path}",
                "",
                f"[program:{PROGRAM_NAME}]",
                *program,
                "",
            ]
        )
        self.supervisord_conf.write_text(conf)
        os.mkfifo(self.ctl_dir / "control", 0o600)

    # -- namespace ---------------------------------------------------------

    def start(self, timeout=30):
        """Create the namespace, its init, and start supervisord (daemonized).

        Returns once supervisord answers on its socket; the minion may still
        be starting (see :meth:`wait_for_answer`).
        """
        if self.unshare is not None:
            raise RuntimeError("bed already started")
        self._write_configs()
        out = open(self.ctl_dir / "unshare.out", "ab")  # noqa: SIM115
        try:
            self.unshare = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    sys.executable,
                    str(NSINIT),
                    str(self.ctl_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        finally:
            out.close()
        self.mark("unshare started")
        try:
            wait_for(lambda: self._init_event("ready"), timeout, what="namespace init")
            children = [p for p, pp in parent_map().items() if pp == self.unshare.pid]
            if len(children) != 1:
                raise RuntimeError(f"expected one child of unshare, found {children}")
            init = read_proc(children[0])
            if init is None or init.nspid != 1:
                raise RuntimeError(f"unshare's child is not PID 1 of a namespace: {init}")
            self.init_pid = init.pid
            self._init_starttime = init.starttime
            self.start_supervisord(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def init_records(self):
        """nsinit's log: [{"event": ready|spawn|reap|error|exit, "t": monotonic, ...}]."""
        path = self.ctl_dir / "init.log"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a partially written last line
        return records

    def _init_event(self, event, **match):
        for record in self.init_records():
            if record.get("event") == event and all(record.get(k) == v for k, v in match.items()):
                return record
        return None

    def spawn(self, argv, env=None, output=None, timeout=10):
        """Start ``argv`` as a child of the namespace's PID 1; return its host PID
        (None if it exited before its host PID could be read).

        The child gets its own session (setsid), stdin from /dev/null and
        stdout/stderr appended to ``output`` (default: ctl/spawn-N.out).
        """
        self._check_alive()
        self._spawn_seq += 1
        tag = f"spawn-{self._spawn_seq}"
        request = {
            "argv": [str(a) for a in argv],
            "env": dict(SUPERVISORD_ENV if env is None else env),
            "output": str(output or self.ctl_dir / f"{tag}.out"),
            "tag": tag,
        }
        line = (json.dumps(request) + "\n").encode()
        if len(line) > 4096:  # PIPE_BUF: larger writes to a FIFO are not atomic
            raise ValueError("spawn request too long")
        fd = os.open(self.ctl_dir / "control", os.O_WRONLY)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        record = wait_for(
            lambda: self._init_event("spawn", tag=tag), timeout, interval=0.05, what=f"{tag}"
        )
        found = wait_for(
            lambda: self.host_pid(record["pid"]) or self._init_event("reap", pid=record["pid"]),
            timeout,
            interval=0.05,
            what=f"host PID of {tag}",
        )
        return found if isinstance(found, int) else None  # None: already exited

    def _check_alive(self):
        if self.unshare is None or self.unshare.poll() is not None:
            raise RuntimeError("the bed's namespace is not running")

    # -- processes ---------------------------------------------------------

    def ns_processes(self):
        """Every process of the namespace (init included), as :class:`Proc`."""
        if self.unshare is None or self.unshare.poll() is not None:
            return []
        procs = []
        for pid in descendants(self.unshare.pid):
            proc = read_proc(pid)
            if proc is not None:
                procs.append(proc)
        return procs

    def host_pid(self, nspid):
        """Host PID of the namespace process whose namespace PID is ``nspid``."""
        for proc in self.ns_processes():
            if proc.nspid == nspid:
                return proc.pid
        return None

    def tree_pids(self, root_pid):
        """``root_pid`` and all its descendants (host PIDs), parents first.

        Only processes of this bed's namespace are considered.
        """
        if root_pid not in {p.pid for p in self.ns_processes()}:
            return []
        return [root_pid, *descendants(root_pid)]

    def supervisord_pid(self):
        """Host PID of the live supervisord of this bed, or None."""
        try:
            nspid = int(self.supervisord_pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        for proc in self.ns_processes():
            if proc.nspid == nspid and proc.state != "Z" and "supervisord" in proc.command:
                return proc.pid
        return None

    def minion_trees(self):
        """The salt-minion process trees in the namespace.

        A tree's root is a process whose command line mentions ``salt-minion``
        and whose parent's does not. Each tree is a dict: ``root`` (host PID),
        ``pids`` (host PIDs, root first), ``procs`` (:class:`Proc`),
        ``parent`` ("supervisord", "init" or the parent's command),
        ``ppid`` (host PID), ``environ`` (:func:`read_environ` of the root).
        """
        procs = {p.pid: p for p in self.ns_processes()}
        sup = self.supervisord_pid()
        trees = []
        for proc in procs.values():
            if "salt-minion" not in proc.command or proc.state == "Z":
                continue
            parent = procs.get(proc.ppid)
            if parent is not None and "salt-minion" in parent.command:
                continue
            if proc.ppid == self.init_pid:
                kind = "init"
            elif proc.ppid == sup:
                kind = "supervisord"
            else:
                kind = parent.command if parent else str(proc.ppid)
            pids = [proc.pid, *descendants(proc.pid)]
            trees.append(
                {
                    "root": proc.pid,
                    "pids": pids,
                    "procs": [procs[p] for p in pids if p in procs],
                    "parent": kind,
                    "ppid": proc.ppid,
                    "environ": read_environ(proc.pid),
                }
            )
        return sorted(trees, key=lambda t: procs[t["root"]].starttime)

    def leaked_trees(self):
        """Minion trees whose root was re-parented to the namespace's PID 1."""
        return [t for t in self.minion_trees() if t["parent"] == "init"]

    def supervised_trees(self):
        """Minion trees whose root is a child of the live supervisord."""
        return [t for t in self.minion_trees() if t["parent"] == "supervisord"]

    def alive(self, pids):
        """The subset of ``pids`` (host PIDs) still alive (not zombies) in the bed."""
        live = {p.pid for p in self.ns_processes() if p.state != "Z"}
        return [p for p in pids if p in live]

    def signal_pid(self, pid, sig, starttime=None):
        """Send ``sig`` to a process of this bed's namespace only.

        Refuses the namespace's init unless asked through :meth:`stop`, any
        process that does not descend from our unshare, and (when
        ``starttime`` is given) a process whose start time changed.
        Returns True if the signal was sent.
        """
        procs = {p.pid: p for p in self.ns_processes()}
        proc = procs.get(pid)
        if proc is None or pid == self.init_pid:
            return False
        if starttime is not None and proc.starttime != starttime:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill_tree(self, root_pid, sig=signal.SIGTERM):
        """Signal every process of the tree rooted at ``root_pid`` (host PIDs).

        Identities (start times) are taken before the first signal and
        re-checked for each one. Returns the PIDs that were signalled.
        """
        procs = {p.pid: p for p in self.ns_processes()}
        targets = [(p, procs[p].starttime) for p in self.tree_pids(root_pid) if p in procs]
        return [pid for pid, st in targets if self.signal_pid(pid, sig, starttime=st)]

    # -- supervisord -------------------------------------------------------

    def start_supervisord(self, timeout=30):
        """Start supervisord (it daemonizes; its parent becomes PID 1)."""
        self.spawn(
            [self.venv_bin / "supervisord", "-c", self.supervisord_conf],
            output=self.sup_dir / "supervisord.out",
        )
        pid = wait_for(self._supervisord_answers, timeout, what="supervisord to answer")
        self.mark(f"supervisord started (host pid {pid})")
        return pid

    def _supervisord_answers(self):
        pid = self.supervisord_pid()
        if pid is None:
            return None
        return pid if self.process_info() is not None else None

    def rpc(self):
        """An XML-RPC proxy to this bed's supervisord (over its unix socket)."""
        from supervisor.xmlrpc import SupervisorTransport  # noqa: PLC0415

        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def process_info(self, name=PROGRAM_NAME):
        """supervisord's getProcessInfo(name) (dict), or None if it does not answer."""
        try:
            return self.rpc().supervisor.getProcessInfo(name)
        except (OSError, xmlrpc.client.Error):
            return None

    def supervisorctl(self, *args, timeout=30):
        """Run the real supervisorctl with the bed's configuration."""
        return subprocess.run(
            [str(self.venv_bin / "supervisorctl"), "-c", str(self.supervisord_conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def supervisor_status(self):
        """``supervisorctl status`` parsed: {program: {"state", "pid", "description"}}.

        ``pid`` is the namespace PID supervisord reports (None unless RUNNING);
        ``host_pid`` is the same process's host PID.
        """
        ret = self.supervisorctl("status")
        status = {}
        for line in ret.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 2:
                continue
            name, state = parts[0], parts[1]
            description = parts[2] if len(parts) > 2 else ""
            pid = None
            if description.startswith("pid "):
                pid = int(description.split()[1].rstrip(","))
            status[name] = {
                "state": state,
                "pid": pid,
                "host_pid": self.host_pid(pid) if pid else None,
                "description": description,
            }
        return status

    # -- the incident ------------------------------------------------------

    def leak(self, restart=True, timeout=30):
        """SIGKILL supervisord, then (``restart``) start it again.

        Returns ``{"killed": host pid, "leaked_roots": [...], "supervisord": new
        host pid or None, "killed_at": monotonic, "restarted_at": monotonic}``.
        """
        sup = self.supervisord_pid()
        if sup is None:
            raise RuntimeError("supervisord is not running")
        roots = [t["root"] for t in self.minion_trees() if t["parent"] == "supervisord"]
        sup_proc = read_proc(sup)
        killed_at = time.monotonic()
        if not self.signal_pid(sup, signal.SIGKILL, starttime=sup_proc.starttime):
            raise RuntimeError(f"could not SIGKILL supervisord {sup}")
        self.mark(f"SIGKILL supervisord (host pid {sup})")
        wait_for(lambda: read_proc(sup) is None, timeout, interval=0.05, what="supervisord to die")
        result = {
            "killed": sup,
            "leaked_roots": roots,
            "killed_at": killed_at,
            "supervisord": None,
            "restarted_at": None,
        }
        if restart:
            result["restarted_at"] = time.monotonic()
            result["supervisord"] = self.start_supervisord(timeout=timeout)
        return result

    # -- talking to the master --------------------------------------------

    def client(self):
        """An in-process salt LocalClient on the master's configuration."""
        if self._client is None:
            import salt.client  # noqa: PLC0415

            self._client = salt.client.get_local_client(mopts=self.master_config)
        return self._client

    def answers(self, fun="grains.get", arg=("pid",), timeout=5):
        """Publish ``fun`` to the bed's minion id; return *every* return event.

        Unlike ``LocalClient.cmd`` this does not fold returns by minion id, so
        two minions with the same id give two entries. Each entry is
        ``{"id", "return", "t"}`` (``t``: monotonic arrival time).
        """
        import salt.exceptions  # noqa: PLC0415

        client = self.client()
        # LocalClient prints "No minions matched the target ..." to stdout
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                pub = client.run_job(self.minion_id, fun, list(arg), timeout=timeout, listen=True)
        except salt.exceptions.SaltClientError:
            return []  # a master still starting (or busy) did not take the publish: no answer yet
        if not pub or not pub.get("jid"):
            return []
        tag = f"salt/job/{pub['jid']}/ret/"
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = client.event.get_event(wait=0.25, tag=tag, full=True)
            if not event:
                continue
            data = event.get("data") or {}
            out.append({"id": data.get("id"), "return": data.get("return"), "t": time.monotonic()})
        return out

    def responders(self, timeout=5):
        """Which minion processes answer: host PIDs of their main processes.

        Publishes ``grains.get pid`` (the ``pid`` grain is the namespace PID of
        the minion process that loaded the grains) and maps each answer to a
        host PID (None if it cannot be mapped).
        """
        out = []
        for ans in self.answers("grains.get", ("pid",), timeout=timeout):
            nspid = ans["return"] if isinstance(ans["return"], int) else None
            out.append({**ans, "nspid": nspid, "host_pid": self.host_pid(nspid) if nspid else None})
        return out

    def wait_for_answer(self, timeout=60, per_try=3):
        """Wait until some minion with the bed's id answers; return the responders."""
        return wait_for(
            lambda: self.responders(timeout=per_try),
            timeout,
            interval=0.1,
            what=f"minion {self.minion_id} to answer",
        )

    def sync_all(self, timeout=60):
        """``saltutil.sync_all`` on the bed's minion (through the master)."""
        return self.client().cmd(self.minion_id, "saltutil.sync_all", timeout=timeout)

    # -- records ------------------------------------------------------------

    def supervisord_events(self):
        """supervisord.log lines as [(monotonic, text)]."""
        out = []
        if not self.supervisord_log.exists():
            return out
        for line in self.supervisord_log.read_text(errors="replace").splitlines():
            try:
                stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                stamp += int(line[20:23]) / 1000.0
            except ValueError:
                continue
            out.append((stamp - self._wall_offset, line[24:]))
        return out

    def program_events(self, name=PROGRAM_NAME):
        """supervisord's transitions for ``name``: [(monotonic, event, detail)].

        ``event`` is one of spawned (detail: namespace pid), success
        (RUNNING), exited (detail: "exit status N; (not) expected"), gave_up
        (FATAL), stopped.
        """
        out = []
        for t, text in self.supervisord_events():
            match = _PROGRAM_EVENT.match(text)
            if not match or match.group(2) != name:
                continue
            event, rest = match.group(1).replace(" ", "_"), match.group(3)
            detail = None
            if event == "spawned":
                detail = int(re.search(r"with pid (\d+)", rest).group(1))
            elif event == "exited":
                detail = re.search(r"\((.*)\)", rest).group(1)
            out.append((t, event, detail))
        return out

    def timeline(self, since=None):
        """Bed marks, init spawn/reap records and supervisord's log, merged.

        Returns [(seconds relative to ``since``, source, text)].
        """
        pid_names = {}
        for proc in self.ns_processes():
            pid_names[proc.nspid] = proc.command[:60]
        events = [(t, "bed", text) for t, text in self.marks]
        for rec in self.init_records():
            if rec.get("event") == "spawn":
                text = f"spawn ns-pid {rec['pid']}: {' '.join(rec['argv'])[:80]}"
            elif rec.get("event") == "reap":
                how = f"signal {rec['signal']}" if "signal" in rec else f"exit {rec['exitcode']}"
                text = f"reaped ns-pid {rec['pid']} ({how})"
            else:
                text = rec.get("event", "?")
            events.append((rec["t"], "init", text))
        events += [(t, "supervisord", text) for t, text in self.supervisord_events()]
        events.sort(key=lambda e: e[0])
        base = since if since is not None else (events[0][0] if events else 0.0)
        return [(round(t - base, 2), src, text) for t, src, text in events]

    def format_timeline(self, since=None):
        return "\n".join(f"{t:+8.2f}s  {src:<11} {text}" for t, src, text in self.timeline(since))

    # -- teardown ------------------------------------------------------------

    def stop(self, timeout=15):
        """Kill the namespace (SIGKILL to its init) and wait for unshare to exit."""
        if self._client is not None:
            try:
                self._client.destroy()
            except Exception:  # noqa: BLE001, S110 - teardown must go on
                pass
            self._client = None
        if self.unshare is None:
            return
        if self.unshare.poll() is None and self.init_pid is None:
            self.unshare.kill()  # our own child: --kill-child takes init with it
        elif self.unshare.poll() is None:
            init = read_proc(self.init_pid)
            if (
                init is not None
                and init.ppid == self.unshare.pid
                and init.starttime == self._init_starttime
            ):
                os.kill(self.init_pid, signal.SIGKILL)
        try:
            self.unshare.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.unshare.kill()  # our own child: --kill-child takes init with it
            self.unshare.wait(timeout=timeout)
        self.mark("namespace stopped")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
