"""Resource limits of services (``hostcheck.rlimits``) and their remedy (``service_limits``).

The incident: ``/etc/security/limits.conf`` is read only by ``pam_limits``
in login-type PAM stacks (login, sshd, su, cron); it never applies to a
service started by init. A network service's init script set no limit,
root's ``~/.bash_profile`` ran ``ulimit -n 65536``: at boot the service had
1024 open files and failed under load; restarted by hand from a login shell
it had 65536, and nobody could say why. On systemd a service's limits
belong in its unit (``LimitNOFILE=``); since systemd 240 the default is
soft 1024 / hard 524288 (programs using ``select()`` need the soft 1024).

Service processes: the main process of every system service (init's
children in a ``*.service`` cgroup; with several, the one of the unit's
current invocation, or ``MainPID`` when ``systemctl`` answers), the
programs of every supervisord (its children), and daemons init adopted
outside any service (in a login session's scope, or on hosts without
systemd). Init's children come from ``/proc/1/task/*/children`` (no scan
of every process; the run's snapshot when another check took one, a full
snapshot where the kernel lacks that file). With ``quick`` (the grain)
only the service processes' limits and descriptors are read; otherwise the
``nofile`` and descriptors of every process, read flat (the benchmark's
floor), and those near their limit are attributed to the service above
them by their ancestry and cgroup.

Rules (``code``):

``limits-differ`` (warning; critical when it holds more descriptors than
    the unit would give it) a service process runs with other limits than
    its unit's ``Limit*=`` (unit file, drop-ins in precedence order) or
    ``DefaultLimit*=`` (``system.conf`` and ``system.conf.d``) or systemd's
    own default: a reboot takes them away. A daemon that runs outside
    systemd but is the program of a unit's ``ExecStart=`` is compared with
    that unit (``outside: true``). Where PID 1 lacks ``CAP_SYS_RESOURCE``
    (a container) systemd caps hard limits at its own, and so does the
    comparison. A program raising its own soft limit (Go, dbus) is fine.
``login-session`` a daemon adopted by init in a login session's scope
    (``session-3.scope``, ``session-c1.scope`` under ``user.slice``) or with
    a login uid: started by hand; the session's PAM service (sshd, su-l,
    cron) comes from ``/run/systemd/sessions/ID`` (never the ``*.ref``
    FIFOs). A warning when it runs a unit's program or systemd is absent
    (an init script's daemon restarted by hand), else info (tmux, agents).
``fds-near-limit`` (warning from 80 %, critical from 95 % of the soft
    limit, or more descriptors than the hard limit) counted cheaply: the
    ``st_size`` of ``/proc/PID/fd`` on kernels that give the count there
    (Linux 6.2+; checked once per run on this process, so a 0 there is no
    descriptor), else the directory listing (where it reads 0).
``limits-conf-unused`` (info) a ``nofile``/``nproc`` line of
    ``/etc/security/limits.conf`` or ``limits.d/*.conf`` for a user that
    runs services (or ``*``) while a service of that user gets none of it.
``supervisor-limits`` (warning/critical as above) a supervisord program
    near the open-file or process limit it inherited from supervisord
    (which raises its own soft limits to ``minfds``/``minprocs``).

Remedy ``service_limits``: one drop-in,
``/etc/systemd/system/<unit>.d/hostcheck-limits.conf`` (atomic, root,
0644), ``systemctl daemon-reload``, a restart of the unit (copies of its
program started by hand are stopped first, identity-checked), then the
new main process's ``/proc/PID/limits`` is verified. Never edits
``limits.conf`` or ``system.conf``; never restarts dbus, systemd-logind,
PID 1 or the minion's own unit; never lowers a limit below what the unit's
processes use without ``force``.

Runtime dependencies: the Python standard library only.
"""

import fnmatch
import grp
import os
import pwd
import re
import shlex

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_files
import hostcheck_ident
import hostcheck_proc
import hostcheck_reaper
import hostcheck_service

NAME = "rlimits"
REMEDY = "service_limits"

#: the resources hostcheck knows, in report order
RESOURCES = ("nofile", "nproc", "core", "memlock")
DEFAULT_LIMITS = ("nofile", "nproc")
#: their line in /proc/PID/limits
PROC_LABELS = {"nofile": b"Max open files", "nproc": b"Max processes",
               "core": b"Max core file size", "memlock": b"Max locked memory"}
#: the systemd directive suffix (LimitNOFILE=, DefaultLimitNOFILE=)
DIRECTIVES = {"nofile": "NOFILE", "nproc": "NPROC", "core": "CORE", "memlock": "MEMLOCK"}
BYTES = ("core", "memlock")
INF = float("inf")
UNLIMITED = "unlimited"
WARN_RATIO = 0.80
CRIT_RATIO = 0.95
#: systemd >= 240: soft 1024 (select()), hard 512K (at most fs.nr_open)
SYSTEMD_NOFILE = (1024, 524288)
NR_OPEN_DEFAULT = 1048576
CAP_SYS_RESOURCE = 24
#: supervisord's defaults
SUPERVISOR_DEFAULTS = {"minfds": 1024, "minprocs": 200}
DROPIN = "hostcheck-limits.conf"
TEXT_LIMIT = 256 * 1024
#: units whose restart breaks the host: never restarted
NEVER_RESTART = {
    "dbus.service": "the system bus: restarting it cuts systemd, logind and every client off",
    "dbus-broker.service": "the system bus: restarting it cuts systemd, logind and every client off",
    "systemd-logind.service": "restarting logind can end the login sessions",
}
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_UNIT_GLOB = re.compile(r"^[A-Za-z0-9:_.\\@*?\[\]!-]+$")
_SESSION = re.compile(r"^session-([A-Za-z0-9]+)\.scope$")
_SIZE = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
_OTHER_TYPES = (".socket", ".timer", ".mount", ".target", ".path", ".slice", ".scope", ".device",
                ".swap", ".automount")

NOTE_NO_SYSTEMD = ("systemd is not running here: there is no unit configuration to compare with "
                   "(limits-differ skipped)")
NOTE_NOT_ROOT = ("not running as root: the open descriptors of other users' processes are not "
                 "counted, and their environment is not read")


# --------------------------------------------------------------------------
# values (pure)


def show(value):
    """A limit as plain data: an int, or ``"unlimited"``."""
    return UNLIMITED if value == INF else int(value)


def pair(soft, hard):
    return {"soft": show(soft), "hard": show(hard)}


def fmt(soft, hard):
    """``1024:524288`` (``unlimited`` for infinity)."""
    return "{}:{}".format(show(soft), show(hard))


def parse_value(text, resource, words=("infinity",)):
    """One limit value as systemd (``words=("infinity",)``) or limits.conf
    reads it: a number (bytes with a K/M/G/T/P/E suffix for core and
    memlock), or infinity. ``None`` when it is not one."""
    text = text.strip()
    if text in words:
        return INF
    if resource in BYTES:
        m = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?\s*([KMGTPEB]?)", text)
        if not m:
            return None
        unit = _SIZE[m.group(3)]
        frac = m.group(2) or ""
        return int(m.group(1)) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
    return int(text) if text.isdigit() else None


def parse_rlimit(text, resource):
    """``(soft, hard)`` of a systemd ``Limit*=`` value (``N`` or ``S:H``); ``None``
    when systemd would ignore it (unparsable, or soft above hard)."""
    soft, sep, hard = text.partition(":")
    soft = parse_value(soft, resource)
    hard = parse_value(hard, resource) if sep else soft
    if soft is None or hard is None or soft > hard:
        return None
    return soft, hard


def _proc_value(word):
    return INF if word == b"unlimited" else int(word)


def parse_proc_limits(raw, resources=RESOURCES):
    """``{resource: (soft, hard)}`` from ``/proc/PID/limits`` bytes."""
    out = {}
    if not raw:
        return out
    for res in resources:
        label = PROC_LABELS[res]
        idx = raw.find(label)
        if idx < 0:
            continue
        parts = raw[idx + len(label):raw.find(b"\n", idx)].split()
        try:
            out[res] = (_proc_value(parts[0]), _proc_value(parts[1]))
        except (IndexError, ValueError):
            pass
    return out


# --------------------------------------------------------------------------
# systemd configuration files (read; the parsers are pure)


def ini_items(text):
    """``[(section, key, value)]`` of a systemd-style file: ``#``/``;``
    comments, ``[Section]`` headers, backslash continuation lines."""
    out, section, buf = [], None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if line[:1] in ("#", ";") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep and section is not None:
            out.append((section, key.strip(), value.strip()))
    return out


def exec_program(value):
    """The :class:`hostcheck_ident.Program` an ``ExecStart=`` line starts, or ``None``."""
    value = value.lstrip("-@:+!")
    try:
        argv = shlex.split(value)
    except ValueError:
        argv = value.split()
    if not argv:
        return None
    return hostcheck_ident.identify(argv[0], argv)


def unit_settings(sources, resources=RESOURCES):
    """What a unit's files say, in order (main file, then drop-ins sorted by
    name): ``{"limits": {res: (soft, hard, path)}, "exec": [program names],
    "pam": bool}``. Later assignments win; invalid ones are ignored, as systemd does."""
    limits, execs, pam = {}, [], False
    keys = {"Limit" + DIRECTIVES[r]: r for r in resources}
    for path, text in sources:
        for section, key, value in ini_items(text):
            if section != "Service":
                continue
            if key in keys:
                parsed = parse_rlimit(value, keys[key])
                if parsed is not None:
                    limits[keys[key]] = parsed + (path,)
            elif key == "ExecStart":
                if not value:
                    execs = []
                else:
                    prog = exec_program(value)
                    if prog is not None:
                        execs.append(prog.name)
            elif key == "PAMName":
                pam = bool(value)
    return {"limits": limits, "exec": execs, "pam": pam}


def manager_defaults(sources, resources=RESOURCES):
    """``{res: (soft, hard, path)}`` from ``DefaultLimit*=`` in ``[Manager]``."""
    keys = {"DefaultLimit" + DIRECTIVES[r]: r for r in resources}
    out = {}
    for path, text in sources:
        for section, key, value in ini_items(text):
            if section == "Manager" and key in keys:
                parsed = parse_rlimit(value, keys[key])
                if parsed is not None:
                    out[keys[key]] = parsed + (path,)
    return out


def unit_dirs(host):
    """The system unit search path, highest precedence first, under the
    host's roots (``/usr`` and ``/lib`` beside its ``/etc``): ``[(dir, kind)]``."""
    root = os.path.dirname(os.path.normpath(host.etc_root)) or "/"
    etc = os.path.join(host.etc_root, "systemd")
    run = os.path.join(host.run_root, "systemd")
    return [
        (os.path.join(etc, "system.control"), "control"),
        (os.path.join(run, "system.control"), "control"),
        (os.path.join(run, "transient"), "transient"),
        (os.path.join(run, "generator.early"), "generator"),
        (os.path.join(etc, "system"), "etc"),
        (os.path.join(run, "system"), "run"),
        (os.path.join(run, "generator"), "generator"),
        (os.path.join(root, "usr/local/lib/systemd/system"), "vendor"),
        (os.path.join(root, "usr/lib/systemd/system"), "vendor"),
        (os.path.join(run, "generator.late"), "generator"),
        (os.path.join(root, "lib/systemd/system"), "vendor"),
    ]


def dropin_names(name):
    """The names whose ``.d`` directories hold drop-ins for unit ``name``:
    itself, its template, its dash prefixes (``a-b-.service``) and the type (``service``)."""
    stem, dot, suffix = name.rpartition(".")
    names = [name]
    if "@" in stem and not stem.endswith("@"):
        names.append(stem.split("@", 1)[0] + "@." + suffix)
    prefix = stem.split("@", 1)[0]
    parts = prefix.split("-")
    for idx in range(len(parts) - 1, 0, -1):
        names.append("-".join(parts[:idx]) + "-." + suffix)
    names.append(suffix)
    return names if dot else [name]


def _text(path):
    """A configuration file's text (bounded, regular only), ``None`` if missing/unusable."""
    try:
        got = hostcheck_files.read_regular(path, limit=TEXT_LIMIT)
    except OSError:
        return None
    return got.text() if got is not None else None


class UnitFiles:
    """The unit search path with each directory listed once per run."""

    def __init__(self, host):
        self.root = os.path.dirname(os.path.normpath(host.etc_root)) or "/"
        self.dirs = unit_dirs(host)
        self._listing = {}

    def names(self, directory):
        if directory not in self._listing:
            try:
                self._listing[directory] = frozenset(os.listdir(directory))
            except OSError:
                self._listing[directory] = frozenset()
        return self._listing[directory]

    def resolve(self, path, hops=8):
        """``(real path, masked)`` of a unit file: symlinks followed (absolute
        targets taken under the host's root), ``/dev/null`` is masked."""
        for _ in range(hops):
            try:
                target = os.readlink(path)
            except OSError:
                return path, False
            if target == "/dev/null":
                return path, True
            if os.path.isabs(target):
                path = os.path.join(self.root, target.lstrip("/")) if self.root != "/" else target
            else:
                path = os.path.join(os.path.dirname(path), target)
        return path, False

    def find(self, name):
        """``{"path", "name", "kind", "masked"}`` of unit ``name`` (an instance
        falls back to its template), or ``None`` when no directory has it."""
        stem, _, suffix = name.rpartition(".")
        candidates = [name]
        if "@" in stem and not stem.endswith("@"):
            candidates.append(stem.split("@", 1)[0] + "@." + suffix)
        for cand in candidates:
            for directory, kind in self.dirs:
                if cand in self.names(directory):
                    real, masked = self.resolve(os.path.join(directory, cand))
                    real_name = os.path.basename(real) if cand == name else name
                    return {"path": real, "name": real_name if real_name.endswith(suffix) else name,
                            "kind": kind, "masked": masked}
        return None

    def dropins(self, names):
        """``[(basename, path)]`` of the drop-ins for ``names``, sorted by file
        name: a name in a higher directory hides the same name below, a
        ``/dev/null`` symlink masks it."""
        chosen = {}
        for directory, _kind in self.dirs:
            listing = self.names(directory)
            for name in names:
                sub = name + ".d"
                if sub not in listing:
                    continue
                try:
                    files = os.listdir(os.path.join(directory, sub))
                except OSError:
                    continue
                for base in files:
                    if base.endswith(".conf") and base not in chosen:
                        real, masked = self.resolve(os.path.join(directory, sub, base))
                        chosen[base] = None if masked else real
        return sorted((b, p) for b, p in chosen.items() if p is not None)

    def services(self):
        """Every ``*.service`` name (no templates) on the search path."""
        out = set()
        for directory, _kind in self.dirs:
            out.update(n for n in self.names(directory) if n.endswith(".service") and "@." not in n)
        return out


def load_unit(files, name, resources=RESOURCES):
    """One unit's configuration: ``{"name", "path", "kind", "masked", "found",
    "sources": [(path, text)], "dropins": [(basename, path)], "limits",
    "exec", "pam"}``."""
    found = files.find(name)
    if found is None:
        return {"name": name, "path": None, "kind": None, "masked": False, "found": False,
                "sources": [], "dropins": [], "limits": {}, "exec": [], "pam": False}
    real = found["name"]
    names = list(dict.fromkeys(dropin_names(real) + ([name] if name != real else [])))
    dropins = files.dropins(names)
    sources = []
    if not found["masked"]:
        for path in [found["path"]] + [p for _, p in dropins]:
            text = _text(path)
            if text is not None:
                sources.append((path, text))
    conf = dict(found, found=True, sources=sources, dropins=dropins)
    conf.update(unit_settings(sources, resources))
    return conf


def load_defaults(host):
    """``DefaultLimit*=`` of ``system.conf`` (the first found) and its drop-ins."""
    root = os.path.dirname(os.path.normpath(host.etc_root)) or "/"
    bases = [os.path.join(host.etc_root, "systemd"), os.path.join(host.run_root, "systemd"),
             os.path.join(root, "usr/local/lib/systemd"), os.path.join(root, "usr/lib/systemd")]
    sources = []
    for base in bases:
        text = _text(os.path.join(base, "system.conf"))
        if text is not None:
            sources.append((os.path.join(base, "system.conf"), text))
            break
    chosen = {}
    for base in bases:
        try:
            names = os.listdir(os.path.join(base, "system.conf.d"))
        except OSError:
            continue
        for n in names:
            if n.endswith(".conf") and n not in chosen:
                chosen[n] = os.path.join(base, "system.conf.d", n)
    for _, path in sorted(chosen.items()):
        text = _text(path)
        if text is not None:
            sources.append((path, text))
    return manager_defaults(sources)


# --------------------------------------------------------------------------
# limits.conf (the parser is pure)


def parse_limits_conf(text, path):
    """``nofile``/``nproc`` entries: ``[{"file", "line", "domain", "type", "item", "value"}]``.
    Other items, bad lines and bad values are skipped (never echoed)."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if len(line) != 4 or line[2] not in ("nofile", "nproc") or line[1] not in ("soft", "hard", "-"):
            continue
        domain, kind, item, value = line
        if not re.fullmatch(r"[*]|[@%]?[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?|[@%]?[0-9]*:[0-9]*", domain):
            continue
        number = INF if value in ("unlimited", "infinity", "-1") else (int(value) if value.isdigit() else None)
        if number is None:
            continue
        out.append({"file": path, "line": lineno, "domain": domain, "type": kind, "item": item,
                    "value": number})
    return out


def read_limits_conf(etc_root):
    """Entries of ``security/limits.conf`` then ``security/limits.d/*.conf`` (sorted)."""
    base = os.path.join(etc_root, "security")
    paths = [os.path.join(base, "limits.conf")]
    try:
        paths += [os.path.join(base, "limits.d", n) for n in sorted(os.listdir(os.path.join(base, "limits.d")))
                  if n.endswith(".conf")]
    except OSError:
        pass
    out = []
    for path in paths:
        text = _text(path)
        if text is not None:
            out.extend(parse_limits_conf(text, path))
    return out


def domain_matches(domain, user, uid, groups):
    """True when a limits.conf ``domain`` names ``user`` (pam_limits' rules,
    except that ``*`` is taken for every user: the line is meant for them)."""
    if domain == "*":
        return True
    if ":" in domain:
        low, _, high = domain.lstrip("@%").partition(":")
        if domain[0] in "@%":
            return False
        return uid is not None and (not low or uid >= int(low)) and (not high or uid <= int(high))
    if domain[0] in "@%":
        return domain[1:] in groups
    return domain == user


# --------------------------------------------------------------------------
# processes (read)


class Svc:
    """One service process: ``kind`` ``unit`` (main process of a system
    service), ``supervisor`` (a supervisord program) or ``adopted`` (a
    daemon init adopted outside any service); ``unit`` (its own or, with
    ``outside``, the unit whose program it runs), ``members`` (the unit's
    other top processes and, in full mode, the processes below it that are
    near their open-file limit)."""

    __slots__ = ("pid", "starttime", "kind", "unit", "outside", "program", "session", "loginuid", "uid",
                 "supervisor", "members", "cgroup_unit")

    def __init__(self, proc, kind, unit=None, session=None):
        self.pid = proc.pid
        self.starttime = proc.starttime
        self.kind = kind
        self.unit = unit
        self.outside = False
        self.program = proc.program.name if proc.program is not None else proc.comm
        self.session = {"id": session} if session else None
        self.loginuid = None
        self.uid = None
        self.supervisor = None
        self.members = []
        self.cgroup_unit = None

    def label(self):
        if self.kind == "supervisor":
            return self.supervisor["program"]
        return self.unit if self.unit and not self.outside else self.program


class Facts:
    """What :func:`read` collected (plain values only; ``snap`` for the remedy)."""

    def __init__(self, snap, opts, quick, euid):
        self.snap = snap
        self.opts = opts
        self.quick = quick
        self.euid = euid
        self.systemd = False
        self.services = []
        self.limits = {}
        self.fds = {}
        self.owner = {}
        self.units = {}
        self.detail_units = []
        self.defaults = {}
        self.pid1 = {"limits": {}, "cap_sys_resource": True}
        self.nr_open = NR_OPEN_DEFAULT
        self.invocations = None
        self.witness = None
        self.limits_conf = []
        self.users = {}
        self.groups = {}
        self.supervisors = {}
        self.tasks = None
        self.notes = []
        self.unreadable = 0
        self.remedy = None
        self.full = True


def _is_supervisord(proc):
    return proc is not None and hostcheck_ident.is_daemon(proc.program, "supervisord")


def _classify(proc):
    """``(kind, unit, session)`` of an init child from its cgroup; kind
    ``None`` for what is no service (other scopes, user managers)."""
    unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
    if unit is None:
        return "adopted", None, None
    if unit.endswith(".service"):
        return (None, None, None) if unit.startswith("user@") else ("unit", unit, None)
    m = _SESSION.match(unit)
    if m:
        return "adopted", None, m.group(1)
    return None, None, None


def _unit_main(procs, current):
    """The main process among one unit's init children: the current
    invocation's (by ``INVOCATION_ID``), earliest started. ``(main, extra)``;
    leftovers of earlier runs are dropped (``hostcheck.orphans`` reports them)."""
    if len(procs) > 1 and current:
        for proc in procs:
            proc.load(("provenance",))
        now = [p for p in procs if p.provenance().get("INVOCATION_ID") in (None, current)]
        procs = now or procs
    procs = sorted(procs, key=lambda p: (p.starttime or 0, p.pid))
    return procs[0], procs[1:]


def task_children(proc_root, pid):
    """Children of ``pid`` from ``/proc/PID/task/*/children``, without reading
    every process; ``None`` where the kernel has no such file."""
    base = "{}/{}/task".format(proc_root, pid)
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    out = []
    for tid in tids:
        raw = hostcheck_proc.read_bytes("{}/{}/children".format(base, tid), to_eof=True)
        if raw is None and tid == str(pid):
            return None
        out.extend(int(x) for x in (raw or b"").split())  # a thread may end meanwhile
    return out


def process_view(host):
    """``(snapshot, full)``: the run's snapshot when another check already took
    one; else only init's children and their ancestry (a partial snapshot,
    from ``/proc/1/task/*/children``); a full one where that file is missing."""
    snap = host.taken()
    if snap is not None:
        return snap, True
    kids = task_children(host.proc_root, 1)
    if kids is None:
        return host.snapshot(), True
    return hostcheck_proc.partial_snapshot(kids, host.proc_root), False


def with_pids(snap, pids, proc_root):
    """``snap`` plus ``pids`` and their ancestors (a partial snapshot grows on demand)."""
    missing = [p for p in pids if p not in snap.procs]
    if not missing:
        return snap
    procs = dict(hostcheck_proc.partial_snapshot(missing, proc_root).procs)
    procs.update(snap.procs)
    return hostcheck_proc.Snapshot(procs, proc_root=proc_root, boot_time=snap.boot_time, clk_tck=snap.clk_tck,
                                   self_pid=snap.self_pid, taken_at=snap.taken_at)


def children_of(facts, pid, proc_root):
    if facts.full:
        return list(facts.snap.children.get(pid, ()))
    kids = task_children(proc_root, pid) or []
    facts.snap = with_pids(facts.snap, kids, proc_root)
    return kids


def _supervisor_svcs(facts, sup_pids, proc_root):
    out = []
    for spid in sorted(sup_pids):
        for pid in children_of(facts, spid, proc_root):
            proc = facts.snap.procs.get(pid)
            if proc is None or proc.kernel_thread or proc.state in ("Z", "X"):
                continue
            proc.load(("program", "provenance"))
            svc = Svc(proc, "supervisor")
            name = proc.provenance().get("SUPERVISOR_PROCESS_NAME") or svc.program
            svc.supervisor = {"pid": spid, "program": name}
            out.append(svc)
    return out


def find_services(facts, proc_root):
    """The service processes (:class:`Svc`): units' main processes, supervisord
    programs, daemons init adopted (no controlling terminal)."""
    snap = facts.snap
    init_kids = [p for p in snap.user_procs if p.ppid == 1 and p.pid != 1]
    pid1 = snap.procs.get(1)
    for proc in init_kids + ([pid1] if pid1 else []):
        proc.load(("program",))
    sups = {p.pid for p in init_kids if _is_supervisord(p)} | ({1} if _is_supervisord(pid1) else set())
    svcs = _supervisor_svcs(facts, sups, proc_root)
    taken = {s.pid for s in svcs}
    by_unit = {}
    for proc in init_kids:
        if proc.pid in taken:
            continue
        proc.load(("cgroup",))
        kind, unit, session = _classify(proc)
        if kind == "unit":
            by_unit.setdefault(unit, []).append(proc)
        elif kind == "adopted" and not proc.tty:
            svcs.append(Svc(proc, "adopted", session=session))
    for unit, procs in sorted(by_unit.items()):
        main, extra = _unit_main(procs, (facts.invocations or {}).get(unit))
        svc = Svc(main, "unit", unit)
        svc.members = [p.pid for p in extra]
        svcs.append(svc)
    facts.supervisors = {pid: {} for pid in sups}
    return svcs


def fd_size_counts(proc_root):
    """True when ``st_size`` of ``/proc/PID/fd`` is the descriptor count here
    (Linux 6.2 and later), checked on this very process; fake trees list."""
    try:
        me = os.readlink(os.path.join(proc_root, "self"))
        path = os.path.join(proc_root, me, "fd")
        size = os.stat(path).st_size
        listed = len(os.listdir(path))  # includes the descriptor listdir holds
    except OSError:
        return False
    return size > 0 and listed - 1 <= size <= listed


def count_fds(base, trust_size):
    """Open descriptors of the process at ``base`` (``st_size`` of its ``fd``
    where that is the count, else its listing); ``None`` when unreadable."""
    path = base + "/fd"
    try:
        return os.stat(path).st_size if trust_size else len(os.listdir(path))
    except OSError:
        return None


def read_process(facts, base, pid, trust_size, resources=RESOURCES):
    """Limits and descriptor count of one process into ``facts``."""
    raw = hostcheck_proc.read_small(base + "/limits")
    if raw is None:
        facts.unreadable += 1
    else:
        facts.limits[pid] = parse_proc_limits(raw, resources)
    facts.fds[pid] = count_fds(base, trust_size)


def read_members(facts, proc_root, names, trust_size):
    """Full mode's hot loop over ``names`` (``/proc`` entries): soft/hard
    ``nofile`` and descriptors of each (system calls inlined: this is what
    the benchmark compares with its floor). Where ``st_size`` counts
    descriptors, 0 is 0; else the directory is listed. Returns the pids
    near their limit."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    _open, _read, _close, _stat, _listdir = os.open, os.read, os.close, os.stat, os.listdir
    limits, fds, label, near = facts.limits, facts.fds, PROC_LABELS["nofile"], []
    skip = len(label)
    prefix = proc_root + "/"
    for name in names:
        base = prefix + name
        try:
            fd = _open(base + "/limits", flags)
        except OSError:
            continue  # vanished since the listing
        try:
            raw = _read(fd, 4096)
        except OSError:
            raw = b""
        _close(fd)
        idx = raw.find(label)
        if idx < 0:
            continue  # vanished between open and read
        words = raw[idx + skip:raw.find(b"\n", idx)].split()
        soft = INF if words[0] == b"unlimited" else int(words[0])
        hard = INF if words[1] == b"unlimited" else int(words[1])
        pid = int(name)
        limits[pid] = {"nofile": (soft, hard)}
        try:
            count = _stat(base + "/fd").st_size if trust_size else len(_listdir(base + "/fd"))
        except OSError:
            count = None  # another user's process, seen by a non-root minion
        fds[pid] = count
        if count is not None and (count >= WARN_RATIO * soft or count > hard):
            near.append(pid)
    return near


def read_processes(facts, proc_root):
    """Limits and descriptors of the service processes; in full mode of every
    other process too (``nofile`` only), read flat, and those near their
    limit are attributed to the service above them (a login session below
    sshd is not sshd's: their cgroups are compared)."""
    trust = fd_size_counts(proc_root)
    for svc in facts.services:
        proc = facts.snap.procs[svc.pid]
        proc.load(("uid", "loginuid", "cgroup"))
        svc.uid, svc.loginuid = proc.uid, proc.loginuid
        svc.cgroup_unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
        read_process(facts, "{}/{}".format(proc_root, svc.pid), svc.pid, trust)
    if facts.quick:
        return
    skip = {str(s.pid) for s in facts.services} | {"1"}
    try:
        names = [n for n in os.listdir(proc_root) if n.isdigit() and n not in skip]
    except OSError:
        names = []
    attribute(facts, read_members(facts, proc_root, names, trust), proc_root)


def attribute(facts, near, proc_root):
    """Add each process near its limit to the members of the service process
    it descends from (the first one up its ancestry), with its cgroup's unit."""
    facts.snap = with_pids(facts.snap, near, proc_root)
    owners = {s.pid: s for s in facts.services}
    owners.update({m: s for s in facts.services for m in s.members})
    for pid in near:
        svc = owners.get(pid) or next((owners[a] for a in facts.snap.ancestors(pid) if a in owners), None)
        if svc is None:
            continue
        if pid not in svc.members:
            svc.members.append(pid)
        proc = facts.snap.procs[pid].load(("cgroup",))
        facts.owner[pid] = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]


def read_pid1(facts, host, snap):
    """PID 1's own limits (what systemd hands on where nothing is set) and
    whether it may raise hard limits (``CAP_SYS_RESOURCE``); ``fs.nr_open``."""
    base = os.path.join(host.proc_root, "1")
    facts.pid1["limits"] = parse_proc_limits(hostcheck_proc.read_small(base + "/limits"))
    status = hostcheck_proc.read_bytes(base + "/status") or b""
    idx = status.find(b"\nCapEff:")
    if idx >= 0:
        try:
            caps = int(status[idx + 8:].split(None, 1)[0], 16)
            facts.pid1["cap_sys_resource"] = bool(caps & (1 << CAP_SYS_RESOURCE))
        except (ValueError, IndexError):
            pass
    facts.nr_open = read_nr_open(host.proc_root)
    proc = snap.procs.get(1)
    facts.pid1["program"] = proc.program.name if proc is not None and proc.program else None


def read_nr_open(proc_root):
    raw = hostcheck_proc.read_bytes(os.path.join(proc_root, "sys", "fs", "nr_open"))
    try:
        return int(raw)
    except (TypeError, ValueError):
        return NR_OPEN_DEFAULT


# --------------------------------------------------------------------------
# read: units, sessions, users, supervisord, the witness


def _unit_matches(name, pattern):
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".service")


def exec_index(files):
    """``{program: {unit, ...}}`` from the ``ExecStart=`` of every service's
    own unit file (drop-ins are not read here: only to find whose program a
    stray daemon runs)."""
    programs = {}
    for name in sorted(files.services()):
        found = files.find(name)
        if found is None or found["masked"]:
            continue
        text = _text(found["path"]) or ""
        for prog in unit_settings([(found["path"], text)])["exec"]:
            programs.setdefault(prog, set()).add(found["name"])
    return programs


def attribute_adopted(facts, files):
    """Daemons init adopted outside any service that run the program of a
    unit's ``ExecStart=`` (exactly one unit): compared with that unit."""
    adopted = [s for s in facts.services if s.kind == "adopted"]
    if not adopted:
        return
    programs = exec_index(files)
    for svc in adopted:
        units = sorted(programs.get(svc.program, ()))
        if len(units) == 1:
            svc.unit, svc.outside = units[0], True
            if svc.unit not in facts.units:
                facts.units[svc.unit] = load_unit(files, svc.unit)


def read_units(facts, host):
    """The configuration of every unit a service process belongs to, of the
    units ``unit`` names, and the manager defaults."""
    files = UnitFiles(host)
    attribute_adopted(facts, files)
    for svc in facts.services:
        if svc.kind == "unit" and svc.unit not in facts.units:
            facts.units[svc.unit] = load_unit(files, svc.unit)
    pattern = facts.opts.get("unit")
    if pattern:
        names = [n for n in files.services() | set(facts.units) if _unit_matches(n, pattern)]
        if not any(c in pattern for c in "*?["):
            names.append(pattern if pattern.endswith(".service") or "." in pattern else pattern + ".service")
        for name in sorted(set(names)):
            if name not in facts.units:
                facts.units[name] = load_unit(files, name)
        facts.detail_units = sorted(set(names))
    facts.defaults = load_defaults(host)
    return files


def read_sessions(facts, run_root):
    """The PAM service and user of each login session a daemon came from
    (``SERVICE=``/``USER=`` of ``/run/systemd/sessions/ID``, a regular file;
    the ``ID.ref`` FIFOs are never opened)."""
    cache = {}
    for svc in facts.services:
        if not svc.session:
            continue
        sid = svc.session["id"]
        if sid not in cache:
            text = _text(os.path.join(run_root, "systemd", "sessions", sid)) if sid.isalnum() else None
            keys = {}
            for line in (text or "").splitlines():
                key, sep, value = line.partition("=")
                if sep and key in ("SERVICE", "USER") and re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", value):
                    keys[key.lower()] = value
            cache[sid] = keys
        svc.session.update(cache[sid])


def _user(uid):
    try:
        return pwd.getpwuid(uid)
    except (KeyError, OverflowError):
        return None


def read_users(facts):
    """Names of the services' users and, where limits.conf names groups, their groups."""
    want_groups = any(e["domain"][:1] in "@%" and ":" not in e["domain"] for e in facts.limits_conf)
    for uid in sorted({s.uid for s in facts.services if s.uid is not None}):
        entry = _user(uid)
        facts.users[uid] = entry.pw_name if entry else str(uid)
        if want_groups and entry is not None:
            try:
                gids = os.getgrouplist(entry.pw_name, entry.pw_gid)
            except OSError:
                gids = [entry.pw_gid]
            names = []
            for gid in gids:
                try:
                    names.append(grp.getgrgid(gid).gr_name)
                except KeyError:
                    pass
            facts.groups[uid] = names


def _supervisor_config(host, proc):
    """Path and text of a supervisord's configuration file (``-c`` or the defaults)."""
    prog = proc.program
    given = hostcheck_ident.option_values(prog.args if prog else [], ["-c", "--configuration"])
    path = given.get("-c") or given.get("--configuration")
    root = os.path.dirname(os.path.normpath(host.etc_root)) or "/"
    if path:
        if not os.path.isabs(path):
            where = os.path.join(host.proc_root, str(proc.pid), "cwd", path)
        elif path.startswith("/etc/"):
            where = os.path.join(host.etc_root, path[5:])
        else:
            where = os.path.join(root, path.lstrip("/"))
        return path, _text(where)
    for rel in ("supervisord.conf", "supervisor/supervisord.conf"):
        text = _text(os.path.join(host.etc_root, rel))
        if text is not None:
            return "/etc/" + rel, text
    return None, None


def supervisor_settings(text):
    """``minfds``/``minprocs`` of a supervisord.conf ``[supervisord]`` section."""
    section, out = None, {}
    for line in (text or "").splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip().lower()
            continue
        key, sep, value = s.partition("=")
        value = re.split(r"\s;", value, maxsplit=1)[0].strip()
        if sep and section == "supervisord" and key.strip().lower() in SUPERVISOR_DEFAULTS and value.isdigit():
            out[key.strip().lower()] = int(value)
    return out


def read_supervisors(facts, host):
    """Each supervisord's own limits, ``minfds``/``minprocs`` and, in full
    mode, the tasks of its programs' users (``nproc`` counts them all)."""
    for spid in facts.supervisors:
        proc = facts.snap.procs[spid]
        path, text = _supervisor_config(host, proc)
        settings = dict(SUPERVISOR_DEFAULTS, **supervisor_settings(text))
        limits = parse_proc_limits(hostcheck_proc.read_small("{}/{}/limits".format(host.proc_root, spid)))
        facts.supervisors[spid] = {"config": path, "read": text is not None, **settings, "limits": limits}
    if facts.quick or not any(s.kind == "supervisor" for s in facts.services):
        return
    facts.tasks = tasks_by_uid(host.snapshot())


def tasks_by_uid(snap):
    """``{uid: tasks}`` (threads count: ``RLIMIT_NPROC`` counts tasks)."""
    out = {}
    for proc in snap.user_procs:
        raw = proc._stat or b""  # pylint: disable=protected-access  # num_threads: stat field 20
        try:
            threads = int(raw[raw.rfind(b")") + 2:].split(b" ", 18)[17]) or 1
        except (ValueError, IndexError):
            threads = 1
        proc.load(("uid",))
        if proc.uid is not None:
            out[proc.uid] = out.get(proc.uid, 0) + threads
    return out


def read_witness(facts, host):
    """``systemctl show`` of the units (full mode only): what systemd has
    loaded (``{unit: {res: (soft, hard)}, "MainPID": pid}``), a witness."""
    names = sorted(n for n in facts.units if facts.units[n]["found"])
    if not names:
        return
    props = ["MainPID"] + [p for r in RESOURCES for p in ("Limit" + DIRECTIVES[r], "Limit" + DIRECTIVES[r] + "Soft")]
    shown = hostcheck_service.show(names, props, run_root=host.run_root)
    if shown is None:
        return
    facts.witness = {}
    for unit, p in shown.items():
        got = {"MainPID": p.get("MainPID") or 0}
        for res in RESOURCES:
            soft = parse_value(p.get("Limit" + DIRECTIVES[res] + "Soft", ""), res)
            hard = parse_value(p.get("Limit" + DIRECTIVES[res], ""), res)
            if soft is not None and hard is not None:
                got[res] = (soft, hard)
        facts.witness[unit] = got


def main_pids(facts, proc_root):
    """Where systemd's ``MainPID`` is another of the unit's top processes than
    the one guessed from the invocation and start time, take systemd's."""
    trust = None
    for svc in facts.services:
        main = ((facts.witness or {}).get(svc.unit) or {}).get("MainPID") if svc.kind == "unit" else None
        if not main or main == svc.pid or main not in svc.members or main not in facts.snap.procs:
            continue
        trust = fd_size_counts(proc_root) if trust is None else trust
        proc = facts.snap.procs[main]
        svc.members = sorted((set(svc.members) - {main}) | {svc.pid})
        svc.pid, svc.starttime = main, proc.starttime
        svc.program = proc.program.name if proc.program is not None else proc.comm
        proc.load(("uid", "loginuid"))
        svc.uid, svc.loginuid = proc.uid, proc.loginuid
        read_process(facts, "{}/{}".format(proc_root, main), main, trust)


def read(host, opts, quick=False):
    """Every fact the rules look at. ``quick`` (the grain): the service
    processes' own limits and descriptors only, no subprocess."""
    snap, full = process_view(host)
    facts = Facts(snap, opts, quick, host.euid())
    facts.full = full
    facts.systemd = hostcheck_service.systemd_running(host.run_root)
    if facts.systemd:
        facts.invocations = hostcheck_service.invocations(host.run_root)
    read_pid1(facts, host, snap)
    facts.services = find_services(facts, host.proc_root)
    read_processes(facts, host.proc_root)
    if facts.systemd:
        read_units(facts, host)
        if not quick:
            read_witness(facts, host)
            main_pids(facts, host.proc_root)
    read_sessions(facts, host.run_root)
    facts.limits_conf = read_limits_conf(host.etc_root)
    read_users(facts)
    read_supervisors(facts, host)
    return facts


# --------------------------------------------------------------------------
# analyse (pure)


def configured(facts, unit, res):
    """``(soft, hard, source)`` a unit's next start gets for ``res`` from its
    files, ``DefaultLimit*=`` or systemd's default; ``None`` when unknown."""
    conf = facts.units.get(unit) or {}
    if res in conf.get("limits", {}):
        return conf["limits"][res]
    if res in facts.defaults:
        soft, hard, path = facts.defaults[res]
        return soft, hard, "DefaultLimit{}= in {}".format(DIRECTIVES[res], path)
    if res == "nofile":
        return SYSTEMD_NOFILE[0], min(facts.nr_open, SYSTEMD_NOFILE[1]), "systemd's default"
    if res in facts.pid1["limits"]:
        return facts.pid1["limits"][res] + ("PID 1's own (systemd passes it on)",)
    return None


def expected(facts, res, soft, hard):
    """``(soft, hard, cap)``: what systemd can really set; without
    ``CAP_SYS_RESOURCE`` it stops at PID 1's own hard limit (``cap``)."""
    own = facts.pid1["limits"].get(res)
    cap = None
    if own is not None and own[1] != INF and hard > own[1] and (
            not facts.pid1["cap_sys_resource"] or (res == "nofile" and hard > facts.nr_open)):
        cap = own[1]
    if cap is None:
        return soft, hard, None
    return min(soft, cap), min(hard, cap), cap


def _differs(svc, live, exp):
    """True when ``live`` is not what the unit gives (a program raising its own
    soft limit up to the hard one is fine; a copy outside systemd must match)."""
    (ls, lh), (es, eh) = live, exp[:2]
    if (ls, lh) == (es, eh):
        return False
    if svc.outside:
        return True
    return lh != eh or ls < es


def _where(svc):
    s = svc.session
    if s:
        return "from login session {}{}".format(
            s["id"], " ({}{})".format(s["service"], ", user " + s["user"] if s.get("user") else "")
            if s.get("service") else "")
    if svc.loginuid is not None:
        return "from a login (login uid {})".format(svc.loginuid)
    return None


def _session_fields(svc):
    return {"session": dict(svc.session) if svc.session else None, "loginuid": svc.loginuid}


def _limits_summary(svc, res, live, conf, exp, cap, fds):
    what = "{} (PID {})".format(svc.program if svc.outside else svc.unit, svc.pid)
    text = "{} runs with {} {} but {} gives {}".format(
        what, res, fmt(*live), svc.unit if svc.outside else "its unit", fmt(exp[0], exp[1]))
    if cap is not None:
        text += " (configured {} by {}, capped at PID 1's hard limit {}: it lacks CAP_SYS_RESOURCE)".format(
            fmt(conf[0], conf[1]), conf[2], show(cap))
    else:
        text += " (by {})".format(conf[2])
    if svc.outside:
        where = _where(svc)
        text += ": it was started outside systemd" + (", " + where if where else "")
    text += "; a restart through systemd or a reboot takes these limits away"
    if fds is not None and res == "nofile" and fds > exp[0]:
        text += ", and it holds {} descriptors now".format(fds)
    return text + ". Set Limit{}= in the unit (hostcheck.service_limits)".format(DIRECTIVES[res])


def rule_limits_differ(facts, svc, resources):
    """``limits-differ`` findings of one service process."""
    conf_unit = facts.units.get(svc.unit) or {}
    live_all = facts.limits.get(svc.pid)
    if not facts.systemd or not svc.unit or not live_all or conf_unit.get("pam") or conf_unit.get("masked"):
        return []
    out = []
    fds = facts.fds.get(svc.pid)
    for res in resources:
        conf = configured(facts, svc.unit, res)
        if conf is None or res not in live_all:
            continue
        exp = expected(facts, res, conf[0], conf[1])
        if not _differs(svc, live_all[res], exp):
            continue
        crit = res == "nofile" and fds is not None and fds > exp[0]
        severity = "critical" if crit else ("info" if conf_unit.get("kind") == "generator" else "warning")
        summary = _limits_summary(svc, res, live_all[res], conf, exp, exp[2], fds)
        if severity == "info":
            summary += " (a generated unit: its init script may set its own limits)"
        out.append(hostcheck_check.finding(
            NAME, "limits-differ", severity, summary, [svc.pid], unit=svc.unit, program=svc.program,
            resource=res, live=pair(*live_all[res]), configured=dict(pair(conf[0], conf[1]), source=conf[2]),
            expected=pair(exp[0], exp[1]), outside=svc.outside, in_use=fds if res == "nofile" else None,
            **_session_fields(svc)))
    return out


def rule_login_session(facts, svc):
    """``login-session``: a daemon adopted by init that a login started. A
    warning when it runs a unit's program, or where there is no systemd (an
    init script's daemon restarted by hand); else info (on systemd hosts
    that is mostly a person's tool: tmux, an agent, a nohup job)."""
    where = _where(svc)
    if svc.kind != "adopted" or where is None:
        return None
    severity = "warning" if svc.unit or not facts.systemd else "info"
    text = "{} (PID {}) was started by hand {} and runs outside any service manager: it has that " \
           "shell's limits and environment, and nothing starts it again after a crash or a reboot".format(
               svc.program, svc.pid, where)
    if svc.unit:
        text += "; it is the program of {}: start it with systemctl instead".format(svc.unit)
    return hostcheck_check.finding(NAME, "login-session", severity, text, [svc.pid], unit=svc.unit,
                                   program=svc.program, **_session_fields(svc))


def _ratio_severity(fds, soft, hard):
    if fds > hard or fds >= CRIT_RATIO * soft:
        return "critical"
    if fds >= WARN_RATIO * soft:
        return "warning"
    return None


def near_limit(facts, svc):
    """``[(pid, fds, soft, hard, severity)]`` of a service's processes near
    their open-file limit, worst first (members in another cgroup skipped)."""
    out = []
    pids = [svc.pid] + [p for p in svc.members if facts.owner.get(p, svc.cgroup_unit) == svc.cgroup_unit]
    for pid in pids:
        lim, fds = (facts.limits.get(pid) or {}).get("nofile"), facts.fds.get(pid)
        if lim is None or fds is None:
            continue
        sev = _ratio_severity(fds, lim[0], lim[1])
        if sev:
            out.append((pid, fds, lim[0], lim[1], sev))
    return sorted(out, key=lambda t: (hostcheck_check.RANK[t[4]], -t[1] / max(t[2], 1)))


def _fds_text(name, pid, fds, soft, hard, many):
    text = "{} (PID {}) holds {} of {} open files ({:.0f} % of its soft limit; hard {})".format(
        name, pid, fds, show(soft), 100.0 * fds / max(soft, 1), show(hard))
    if fds > hard:
        text += ": its hard limit is below what it already holds"
    if many > 1:
        text += "; {} of its processes are near their limit".format(many)
    return text


def rule_fds(facts, svc):
    """``fds-near-limit`` (or ``supervisor-limits`` for a supervisord program)."""
    hits = near_limit(facts, svc)
    if not hits:
        return None
    pid, fds, soft, hard, sev = hits[0]
    if svc.kind == "supervisor":
        return rule_supervisor_fds(facts, svc, hits)
    text = _fds_text(svc.label(), pid, fds, soft, hard, len(hits))
    text += ". Raise LimitNOFILE= of {} (hostcheck.service_limits)".format(svc.unit) if svc.unit else ""
    conf = configured(facts, svc.unit, "nofile") if svc.unit and facts.systemd else None
    return hostcheck_check.finding(
        NAME, "fds-near-limit", sev, text, [h[0] for h in hits], unit=svc.unit, program=svc.program,
        resource="nofile", in_use=fds, live=pair(soft, hard), processes=_near_detail(hits),
        configured=dict(pair(conf[0], conf[1]), source=conf[2]) if conf else None)


def _near_detail(hits):
    """Each process near its limit: ``[{pid, fds, soft, hard, severity}]``."""
    return [{"pid": pid, "fds": fds, "soft": show(soft), "hard": show(hard), "severity": sev}
            for pid, fds, soft, hard, sev in hits]


def rule_supervisor_fds(facts, svc, hits):
    pid, fds, soft, hard, sev = hits[0]
    sup = facts.supervisors.get(svc.supervisor["pid"]) or {}
    own = (sup.get("limits") or {}).get("nofile")
    text = _fds_text("supervisord program '{}'".format(svc.supervisor["program"]), pid, fds, soft, hard, len(hits))
    text += (": programs inherit supervisord's limits (minfds={} in {}); raise minfds, or LimitNOFILE= of "
             "supervisord's unit").format(sup.get("minfds"), sup.get("config") or "supervisord's defaults")
    return hostcheck_check.finding(
        NAME, "supervisor-limits", sev, text, [h[0] for h in hits], program=svc.supervisor["program"],
        supervisord=svc.supervisor["pid"], resource="nofile", in_use=fds, live=pair(soft, hard),
        minfds=sup.get("minfds"), config=sup.get("config"), processes=_near_detail(hits),
        supervisord_limits=pair(*own) if own else None)


def rule_supervisor_nproc(facts, svc):
    """``supervisor-limits`` for ``nproc``: the program's user has nearly as
    many tasks as the process limit the program inherited."""
    lim = (facts.limits.get(svc.pid) or {}).get("nproc")
    if facts.tasks is None or lim is None or svc.uid is None or svc.uid == 0:
        return None  # root is not held to RLIMIT_NPROC
    tasks = facts.tasks.get(svc.uid, 0)
    sev = _ratio_severity(tasks, lim[0], lim[1])
    if sev is None:
        return None
    sup = facts.supervisors.get(svc.supervisor["pid"]) or {}
    own = (sup.get("limits") or {}).get("nproc")
    text = ("supervisord program '{}' (PID {}): its user {} runs {} tasks of the {} its process limit allows "
            "(inherited from supervisord, minprocs={}); raise minprocs or LimitNPROC= of supervisord's unit").format(
        svc.supervisor["program"], svc.pid, facts.users.get(svc.uid, svc.uid), tasks, show(lim[0]),
        sup.get("minprocs"))
    return hostcheck_check.finding(
        NAME, "supervisor-limits", sev, text, [svc.pid], program=svc.supervisor["program"],
        supervisord=svc.supervisor["pid"], resource="nproc", in_use=tasks, live=pair(*lim),
        minprocs=sup.get("minprocs"), config=sup.get("config"), supervisord_limits=pair(*own) if own else None)


def _gets(entry, live):
    soft, hard = live
    if entry["type"] == "soft":
        return soft == entry["value"]
    if entry["type"] == "hard":
        return hard == entry["value"]
    return soft == entry["value"] and hard == entry["value"]


def rule_limits_conf(facts, resources):
    """``limits-conf-unused`` (info): one per limits.conf line meant for services."""
    out = []
    for entry in facts.limits_conf:
        if entry["item"] not in resources:
            continue
        missed = []
        for svc in facts.services:
            conf = facts.units.get(svc.unit) or {}
            live = (facts.limits.get(svc.pid) or {}).get(entry["item"])
            user = facts.users.get(svc.uid)
            if live is None or svc.uid is None or conf.get("pam") or svc.session or svc.loginuid is not None:
                continue
            if domain_matches(entry["domain"], user, svc.uid, facts.groups.get(svc.uid, ())) and not _gets(entry, live):
                missed.append(svc)
        if missed:
            out.append(_limits_conf_finding(facts, entry, missed))
    return out


def _limits_conf_finding(facts, entry, missed):
    names = sorted({s.label() for s in missed})
    shown = ", ".join(names[:8]) + (" and {} more".format(len(names) - 8) if len(names) > 8 else "")
    where = ("LimitNOFILE= in the unit (hostcheck.service_limits) or DefaultLimitNOFILE= in system.conf"
             if facts.systemd else "the init script (ulimit) or the service's own configuration")
    if entry["item"] == "nproc":
        where = where.replace("NOFILE", "NPROC")
    text = ("{}:{}: '{} {} {} {}' never reaches services: limits.conf is read only by pam_limits in login "
            "sessions (login, sshd, su, cron); {} get{} none of it. It belongs in {}").format(
        entry["file"], entry["line"], entry["domain"], entry["type"], entry["item"], show(entry["value"]),
        shown, "s" if len(names) == 1 else "", where)
    return hostcheck_check.finding(
        NAME, "limits-conf-unused", "info", text, sorted(s.pid for s in missed), file=entry["file"],
        line=entry["line"], domain=entry["domain"], type=entry["type"], resource=entry["item"],
        value=show(entry["value"]), units=names)


def _merge_session(found, session_f):
    """A ``login-session`` hit on a process that ``limits-differ`` reports too is folded into it."""
    pid = session_f["pids"][0]
    for f in found:
        if f["code"] == "limits-differ" and f["pids"] == [pid]:
            f["started_by_hand"] = True
            return True
    return False


def service_findings(facts, resources):
    out = []
    for svc in facts.services:
        mine = rule_limits_differ(facts, svc, resources)
        sess = rule_login_session(facts, svc)
        if sess is not None and not _merge_session(mine, sess):
            mine.append(sess)
        if "nofile" in resources:
            mine.append(rule_fds(facts, svc))
        if svc.kind == "supervisor" and "nproc" in resources:
            mine.append(rule_supervisor_nproc(facts, svc))
        out.extend(f for f in mine if f)
    return out


def _notes(facts):
    notes = list(facts.notes)
    if not facts.systemd:
        notes.append(NOTE_NO_SYSTEMD)
    if facts.euid != 0:
        notes.append(NOTE_NOT_ROOT)
    if facts.unreadable:
        notes.append("{} service process(es) vanished or had unreadable limits".format(facts.unreadable))
    if facts.systemd and not facts.pid1["cap_sys_resource"]:
        notes.append("PID 1 lacks CAP_SYS_RESOURCE (a container?): systemd cannot raise a hard limit above "
                     "its own; expected values are capped there")
    return notes + witness_notes(facts)


def witness_notes(facts):
    """Units whose loaded limits (``systemctl show``) differ from their files."""
    out = []
    for unit, seen in sorted((facts.witness or {}).items()):
        conf = facts.units.get(unit) or {}
        if not conf.get("found") or conf.get("masked"):
            continue
        diffs = []
        for res in facts.opts.get("limits") or DEFAULT_LIMITS:
            want = configured(facts, unit, res)
            if want is not None and res in seen and seen[res] != (want[0], want[1]):
                diffs.append("{} {} loaded, {} in its files".format(res, fmt(*seen[res]), fmt(want[0], want[1])))
        if diffs:
            out.append("{}: systemd's loaded limits differ from its files ({}): systemctl daemon-reload "
                       "pending?".format(unit, "; ".join(diffs)))
    return out


def unit_detail(facts, unit):
    """The ``unit`` option's view: configured, expected, loaded and live limits."""
    conf = facts.units.get(unit) or {}
    out = {"unit": unit, "file": conf.get("path"), "found": conf.get("found", False),
           "masked": conf.get("masked", False), "dropins": [p for _, p in conf.get("dropins", [])],
           "configured": {}, "expected": {}, "loaded": None, "processes": []}
    for res in RESOURCES:
        got = configured(facts, unit, res)
        if got is not None:
            out["configured"][res] = dict(pair(got[0], got[1]), source=got[2])
            exp = expected(facts, res, got[0], got[1])
            out["expected"][res] = pair(exp[0], exp[1])
    seen = (facts.witness or {}).get(unit)
    if seen:
        out["loaded"] = {r: pair(*seen[r]) for r in RESOURCES if r in seen}
    for svc in facts.services:
        if svc.unit == unit:
            lim = facts.limits.get(svc.pid) or {}
            out["processes"].append({"pid": svc.pid, "program": svc.program, "outside": svc.outside,
                                     "live": {r: pair(*lim[r]) for r in RESOURCES if r in lim},
                                     "fds": facts.fds.get(svc.pid)})
    return out


def lowest_nofile(facts):
    """``(soft, svc)`` of the lowest soft ``nofile`` among the service processes."""
    best = None
    for svc in facts.services:
        lim = (facts.limits.get(svc.pid) or {}).get("nofile")
        if lim is not None and (best is None or lim[0] < best[0]):
            best = (lim[0], svc)
    return best


def _scope(findings, pattern):
    if not pattern:
        return findings
    return [f for f in findings if any(_unit_matches(u, pattern) for u in [f.get("unit")] + f.get("units", [])
                                       if u)]


def analyse(facts, opts):
    """The findings of the five rules. Pure."""
    resources = opts.get("limits") or list(DEFAULT_LIMITS)
    findings = service_findings(facts, resources) + rule_limits_conf(facts, resources)
    findings = hostcheck_check.by_severity(_scope(findings, opts.get("unit")))
    low = lowest_nofile(facts)
    details = {
        "count": len(findings),
        "units": sorted({f.get("unit") or f.get("program") for f in findings
                         if f.get("unit") or f.get("program")}),
        "lowest_nofile": show(low[0]) if low else None,
        "lowest_nofile_of": {"pid": low[1].pid, "name": low[1].label()} if low else None,
        "services": len(facts.services),
        "limits": list(resources),
    }
    if opts.get("unit"):
        details["detail"] = [unit_detail(facts, u) for u in facts.detail_units]
    return hostcheck_check.Diagnosis(NAME, findings, _notes(facts), details, facts)


def summarise(diag):
    """The grain entry: ``{count, units, lowest_nofile}``."""
    d = diag.details
    return {"count": d["count"], "units": d["units"], "lowest_nofile": d["lowest_nofile"]}


# --------------------------------------------------------------------------
# options


def validate_unit(value, name="unit"):
    """A unit name or glob (``.service`` optional); ``None`` for all."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise hostcheck_config.ConfigError("{} must be a unit name or glob, got {!r}".format(name, value))
    value = value.strip()
    if "/" in value or ".." in value or len(value) > 255 or not _UNIT_GLOB.match(value):
        raise hostcheck_config.ConfigError("{}: {!r} is not a unit name or glob".format(name, value))
    return value


def validate_limits(value, name="limits"):
    """Resources to check: a list (or comma-separated string) of nofile, nproc, core, memlock."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    items = hostcheck_config.string_list(
        list(DEFAULT_LIMITS), what="a list of nofile, nproc, core, memlock",
        check=lambda r: None if r in RESOURCES else "is not one of {}".format(", ".join(RESOURCES)))(value, name)
    return [r for r in RESOURCES if r in items]


OPTIONS = {"unit": validate_unit, "limits": validate_limits}


# --------------------------------------------------------------------------
# the remedy: service_limits (validate)

_MAX = 2 ** 63 - 1


def _one(value, name):
    if isinstance(value, bool) or value is None:
        raise hostcheck_config.ConfigError("{}: {!r} is not a limit".format(name, value))
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip() in ("unlimited", "infinity"):
        return INF
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise hostcheck_config.ConfigError(
            "{}: {!r} is not a limit (a non-negative integer or unlimited)".format(name, value))
    if not 0 <= number <= _MAX:
        raise hostcheck_config.ConfigError("{}: {!r} is out of range".format(name, value))
    return number


def _to_pair(value, name):
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - {"soft", "hard"})
        if unknown or "soft" not in value or "hard" not in value:
            raise hostcheck_config.ConfigError(
                "{}: a mapping needs exactly the keys soft and hard, got {}".format(name, sorted(map(str, value))))
        return _one(value["soft"], name + ":soft"), _one(value["hard"], name + ":hard")
    if isinstance(value, str) and ":" in value:
        soft, _, hard = value.partition(":")
        return _one(soft, name), _one(hard, name)
    one = _one(value, name)
    return one, one


def limit_value(resource):
    """Validator of one limit argument: an int, ``unlimited``, ``"soft:hard"``
    or ``{soft, hard}``; soft at most hard. Returns ``(soft, hard)`` or ``None``."""

    def validate(value, name):
        if value is None:
            return None
        soft, hard = _to_pair(value, name)
        if soft > hard:
            raise hostcheck_config.ConfigError("{}: soft limit {} is above the hard limit {}".format(
                name, show(soft), show(hard)))
        if resource == "nofile" and hard == INF:
            raise hostcheck_config.ConfigError(
                "{}: open files cannot be unlimited (the kernel caps them at fs.nr_open)".format(name))
        return soft, hard

    return validate


REMEDY_ARGS = {
    "nofile": limit_value("nofile"),
    "nproc": limit_value("nproc"),
    "core": limit_value("core"),
    "memlock": limit_value("memlock"),
    "restart": hostcheck_config.boolean(True),
    "force": hostcheck_config.boolean(False),
}
CONFIG_KEYS = ()


def unit_name(name):
    """The ``.service`` unit a state names (suffix optional); ConfigError when
    it is no plain service name."""
    if not isinstance(name, str) or not name.strip():
        raise hostcheck_config.ConfigError("name must be a service unit, got {!r}".format(name))
    name = name.strip()
    if "/" in name or ".." in name or len(name) > 255 or not _UNIT_NAME.match(name):
        raise hostcheck_config.ConfigError("name: {!r} is not a unit name".format(name))
    if name.endswith(_OTHER_TYPES):
        raise hostcheck_config.ConfigError("name: {} is not a service (.service) unit".format(name))
    if not name.endswith(".service"):
        name += ".service"
    if name.endswith("@.service"):
        raise hostcheck_config.ConfigError("name: {} is a template; name an instance (x@y.service)".format(name))
    return name


def _check_values(wanted, host):
    nr_open = read_nr_open(host.proc_root)
    nofile = wanted.get("nofile")
    if nofile and nofile[1] > nr_open:
        raise hostcheck_config.ConfigError("nofile: hard limit {} is above fs.nr_open ({})".format(
            show(nofile[1]), nr_open))
    facts = Facts(None, {}, True, 0)
    facts.nr_open = nr_open
    read_pid1(facts, host, hostcheck_proc.Snapshot({}))
    for res, (soft, hard) in wanted.items():
        exp = expected(facts, res, soft, hard)
        if exp[2] is not None:
            raise hostcheck_config.ConfigError(
                "{}: hard limit {} is above what systemd can give here: PID 1's own hard limit is {} and it "
                "lacks CAP_SYS_RESOURCE (a container?)".format(res, show(hard), show(exp[2])))


def _own_units(host):
    """Units of this process and its ancestors (the minion running this job)."""
    snap = hostcheck_proc.partial_snapshot([], host.proc_root)
    out = set()
    for pid in hostcheck_reaper.protected(snap) - {1}:
        proc = snap.procs.get(pid)
        if proc is not None:
            unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
            if unit:
                out.add(unit)
    return out


def validate_remedy(name, args, host):
    """The unit exists (a unit file on the search path, not masked) and is a
    service; the limits are possible here. Adds ``unit``, ``wanted``,
    ``dropin`` and ``never_restart`` (the reason, or ``None``) to ``args``."""
    unit = unit_name(name)
    wanted = {r: args[r] for r in RESOURCES if args.get(r) is not None}
    if not wanted:
        raise hostcheck_config.ConfigError("no limit given: set at least one of " + ", ".join(RESOURCES))
    found = UnitFiles(host).find(unit)
    if found is None:
        raise hostcheck_config.ConfigError(
            "unit {} does not exist (no unit file on systemd's search path)".format(unit))
    if found["masked"]:
        raise hostcheck_config.ConfigError("unit {} is masked".format(unit))
    _check_values(wanted, host)
    unit = found["name"]
    args["unit"] = unit
    args["wanted"] = wanted
    args["dropin"] = os.path.join(host.etc_root, "systemd", "system", unit + ".d", DROPIN)
    reason = NEVER_RESTART.get(unit)
    if reason is None and unit in _own_units(host):
        reason = "it runs the minion executing this state"
    args["never_restart"] = reason


# --------------------------------------------------------------------------
# the remedy: remedy_facts (read), plan (pure)


def remedy_facts(host, diag, args):
    """The target unit's files (even when it is not running), the drop-in
    as it is, and the tasks of its users when ``nproc`` is set."""
    facts = diag.facts
    files = UnitFiles(host)
    unit = args["unit"]
    facts.units[unit] = load_unit(files, unit)
    snap = host.snapshot()  # every process: the trees of the unit's processes
    main, copies = unit_processes(facts, unit)
    trees = {}
    for svc in ([main] if main else []) + copies:
        proc = snap.procs.get(svc.pid)
        if proc is not None and proc.starttime == svc.starttime:
            trees[svc.pid] = [[p, snap.procs[p].starttime] for p in [svc.pid] + snap.descendants(svc.pid)]
    facts.remedy = {"old": _text(args["dropin"]), "trees": trees,
                    "tasks": tasks_by_uid(snap) if "nproc" in args["wanted"] else None,
                    "dropin_dir_link": os.path.islink(os.path.dirname(args["dropin"]))}


def render(unit, wanted):
    """The drop-in's text."""
    lines = ["# Managed by Salt (hostcheck.service_limits): the resource limits of {}.".format(unit),
             "# Edit the state, not this file.", "[Service]"]
    for res in RESOURCES:
        if res in wanted:
            soft, hard = wanted[res]
            value = "infinity" if soft == INF else str(soft)
            if hard != soft:
                value += ":" + ("infinity" if hard == INF else str(hard))
            lines.append("Limit{}={}".format(DIRECTIVES[res], value))
    return "\n".join(lines) + "\n"


def effective_with(conf, path, text):
    """``(limits, masked_by)``: the unit's ``Limit*=`` with our drop-in at
    ``path`` holding ``text``; ``masked_by`` a same-named drop-in that hides it."""
    base = os.path.basename(path)
    dropins = [(b, p) for b, p in conf["dropins"] if not (b == base and p == path)]
    masked_by = next((p for b, p in dropins if b == base), None)
    texts = dict(conf["sources"])
    texts[path] = text
    sources = [(conf["path"], texts.get(conf["path"], ""))]
    sources += [(p, texts.get(p, "")) for _, p in sorted(dropins + [(base, path)])]
    return unit_settings(sources)["limits"], masked_by


def unit_processes(facts, unit):
    """``(main, copies)``: the unit's main process (:class:`Svc`) and the
    copies of its program running outside systemd."""
    main = next((s for s in facts.services if s.kind == "unit" and s.unit == unit), None)
    copies = [s for s in facts.services if s.outside and s.unit == unit]
    return main, copies


def in_use_problems(facts, unit, wanted, main, copies):
    """Limits that would go below what the unit's processes use now."""
    problems = []
    trees = facts.remedy["trees"]
    procs = [p for s in ([main] if main else []) + copies for p, _ in trees.get(s.pid, [[s.pid, None]])]
    if "nofile" in wanted and procs:
        pid = max(procs, key=lambda p: facts.fds.get(p) or 0)
        used = facts.fds.get(pid) or 0
        if used > wanted["nofile"][0]:
            problems.append("nofile {} is below the {} descriptors PID {} holds".format(
                fmt(*wanted["nofile"]), used, pid))
    tasks = (facts.remedy or {}).get("tasks")
    if "nproc" in wanted and tasks:
        for svc in ([main] if main else []) + copies:
            used = tasks.get(svc.uid, 0)
            if svc.uid not in (None, 0) and used > wanted["nproc"][0]:
                problems.append("nproc {} is below the {} tasks its user {} runs".format(
                    fmt(*wanted["nproc"]), used, facts.users.get(svc.uid, svc.uid)))
    return problems


def _blockers(diag, args, conf, text):
    """Why nothing may be done (each a reason), before anything is planned."""
    facts, unit, wanted = diag.facts, args["unit"], args["wanted"]
    if not facts.systemd:
        return ["systemd is not running here: {} cannot be given limits; nothing done".format(unit)]
    if facts.euid != 0:
        return ["the minion runs as uid {}: writing {} and restarting {} need root; nothing done".format(
            facts.euid, args["dropin"], unit)]
    if facts.remedy["dropin_dir_link"]:
        return ["{} is a symlink; nothing done".format(os.path.dirname(args["dropin"]))]
    limits, masked_by = effective_with(conf, args["dropin"], text)
    if masked_by:
        return ["{} hides {}; nothing done".format(masked_by, args["dropin"])]
    over = ["Limit{}= in {}".format(DIRECTIVES[r], limits[r][2] if r in limits else "?") for r in wanted
            if limits.get(r, (None, None))[:2] != wanted[r]]
    if over:
        return ["{} would override the drop-in (it sorts later); nothing done".format(", ".join(sorted(set(over))))]
    main, copies = unit_processes(facts, unit)
    problems = in_use_problems(facts, unit, wanted, main, copies)
    if problems and not args["force"]:
        return ["{}: {}; force: True to set it anyway. Nothing done".format(unit, "; ".join(problems))]
    return []


def has_limits(live, wanted):
    """True when ``live`` (``{res: (soft, hard)}``) has ``wanted``; a soft limit
    the program raised itself (Go, dbus do) counts as having it."""
    for res, (soft, hard) in wanted.items():
        got = live.get(res)
        if got is None or got[1] != hard or got[0] < soft:
            return False
    return True


def _live_ok(facts, svc, wanted):
    return has_limits(facts.limits.get(svc.pid) or {}, wanted)


def _restart_plan(facts, args, write):
    """``(restart, pending)``: whether the unit is (re)started now, or only
    reported as pending, and why."""
    main, copies = unit_processes(facts, args["unit"])
    stale = bool(copies) or (main is not None and not _live_ok(facts, main, args["wanted"]))
    if not stale:
        return False, None
    if not args["restart"]:
        return False, "restart: False"
    return True, None


def _changes(args, old, text, write, restart, pending, main, copies):
    changes = {}
    if write:
        changes["dropin"] = {"path": args["dropin"], "old": old, "new": text}
    if copies and restart:
        changes["stopped"] = [{"pid": s.pid, "program": s.program, "session": (s.session or {}).get("id")}
                              for s in copies]
    if restart:
        changes["restarted"] = {"unit": args["unit"], "old_pid": main.pid if main else None, "new_pid": None}
    if pending and write:
        changes["restart_pending"] = {"unit": args["unit"], "pids": [s.pid for s in ([main] if main else []) + copies]}
    return changes


def _preview(args, text, changes):
    out = ["Would set the limits of {}".format(args["unit"])]
    if "dropin" in changes:
        out.append("  write {} and run systemctl daemon-reload:".format(args["dropin"]))
        out += ["    " + line for line in text.splitlines() if line.startswith("Limit")]
    for s in changes.get("stopped", []):
        out.append("  stop PID {} ({}), a copy started outside systemd".format(s["pid"], s["program"]))
    if "restarted" in changes:
        out.append("  restart {}".format(args["unit"]))
    if "restart_pending" in changes:
        out.append("  not restart it (restart: False): the limits apply at its next start")
    return out


def plan(diag, args):
    """The drop-in to write and whether the unit restarts. Pure."""
    facts, unit = diag.facts, args["unit"]
    conf = facts.units[unit]
    text = render(unit, args["wanted"])
    blockers = _blockers(diag, args, conf, text)
    if blockers:
        return hostcheck_check.Plan(problems=blockers)
    old = facts.remedy["old"]
    write = old != text
    restart, pending = _restart_plan(facts, args, write)
    if restart and args["never_restart"]:
        return hostcheck_check.Plan(problems=[
            "{} is never restarted by hostcheck ({}); set restart: False to write the drop-in only "
            "(it applies at the next boot). Nothing done".format(unit, args["never_restart"])])
    main, copies = unit_processes(facts, unit)
    changes = _changes(args, old, text, write, restart, pending, main, copies)
    notes = []
    if pending:
        notes.append("restart pending: {} runs with other limits until it restarts (restart: False)".format(unit))
    if main is None and not copies:
        notes.append("{} is not running: the limits apply when it starts".format(unit))
    declared = ", ".join("{} {}".format(r, fmt(*w)) for r, w in args["wanted"].items())
    idle = ("{} has {} as declared in {}".format(unit, declared, args["dropin"]) if not pending
            else "{} declares {} for {}".format(args["dropin"], declared, unit))
    trees = facts.remedy["trees"]
    actions = {"write": write, "text": text, "restart": restart, "main": main, "copies": copies,
               "stop": [trees.get(s.pid, [[s.pid, s.starttime]]) for s in copies] if restart else []}
    return hostcheck_check.Plan(changes, actions, notes=notes, preview=_preview(args, text, changes), idle=idle)


# --------------------------------------------------------------------------
# the remedy: apply, verify


def write_dropin(path, text):
    """Write the drop-in (directory 0755, file root 0644, atomic)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    hostcheck_files.atomic_write(path, text.encode("utf-8"), mode=0o644, uid=0, gid=0)


def _stop_copies(host, plan_, lines, problems):
    never = hostcheck_reaper.protected(hostcheck_proc.partial_snapshot([], host.proc_root))
    stopped = []
    for svc, members in zip(plan_.actions["copies"], plan_.actions["stop"]):
        out = hostcheck_reaper.reap(members, timeout=10, proc_root=host.proc_root, never=never)
        if out["survivors"]:
            problems.append("PID {} ({}) survived SIGTERM and SIGKILL".format(svc.pid, svc.program))
            continue
        stopped.append({"pid": svc.pid, "program": svc.program, "session": (svc.session or {}).get("id")})
        lines.append("Stopped PID {} ({}), started outside systemd".format(svc.pid, svc.program))
    return stopped


def _restart(host, unit, main, lines, problems):
    errors = hostcheck_service.restart_units([unit])
    if errors.get(unit):
        problems.append("systemctl restart {} failed: {}".format(unit, errors[unit]))
    if main is not None:
        left = hostcheck_reaper.wait_gone([(main.pid, main.starttime)], 30, host.proc_root)
        if left:
            problems.append("{} PID {} survived the restart".format(unit, main.pid))
    shown = hostcheck_service.show([unit], ("MainPID",), run_root=host.run_root) or {}
    new_pid = (shown.get(unit) or {}).get("MainPID") or None
    if main is not None:
        lines.append("Restarted {}: PID {} -> {}".format(unit, main.pid, new_pid))
    else:
        lines.append("Started {} through systemd: PID {}".format(unit, new_pid))
    return {"unit": unit, "old_pid": main.pid if main else None, "new_pid": new_pid}


def apply(host, plan_, args):
    """Write, daemon-reload, stop copies started by hand, restart."""
    acts, unit = plan_.actions, args["unit"]
    changes, lines, problems = {}, [], []
    if acts["write"]:
        try:
            write_dropin(args["dropin"], acts["text"])
        except OSError as exc:
            return hostcheck_check.Outcome({}, [], ["Writing {} failed: {}; nothing changed".format(
                args["dropin"], exc.strerror or exc)])
        changes["dropin"] = plan_.changes["dropin"]
        lines.append("Wrote {}".format(args["dropin"]))
        ok, out = hostcheck_service.daemon_reload()
        if not ok:
            problems.append("systemctl daemon-reload failed: {}; {} not restarted".format(out, unit))
            return hostcheck_check.Outcome(changes, lines, problems)
        lines.append("Reloaded systemd")
    if acts["restart"]:
        stopped = _stop_copies(host, plan_, lines, problems)
        if stopped:
            changes["stopped"] = stopped
        changes["restarted"] = _restart(host, unit, acts["main"], lines, problems)
    if "restart_pending" in plan_.changes:
        changes["restart_pending"] = plan_.changes["restart_pending"]
    return hostcheck_check.Outcome(changes, lines, problems)


def verify(plan_, outcome, after, args):  # pylint: disable=unused-argument
    """Problems: the restarted unit's new main process without the limits
    (from its ``/proc/PID/limits``), or systemd not having loaded them."""
    problems = []
    restarted = outcome.changes.get("restarted")
    if restarted:
        pid = restarted["new_pid"]
        live = after.facts.limits.get(pid) if pid else None
        if not pid:
            problems.append("{} has no main process after its restart".format(args["unit"]))
        elif live is None:
            problems.append("cannot read /proc/{}/limits of {}".format(pid, args["unit"]))
        else:
            problems += ["{} PID {} runs with {} {}, not {}".format(args["unit"], pid, r, fmt(*live[r]), fmt(*w))
                         for r, w in args["wanted"].items() if not has_limits(live, {r: w})]
    seen = (after.facts.witness or {}).get(args["unit"])
    if seen and outcome.changes.get("dropin"):
        problems += ["systemd has {} {} loaded for {}, not {}".format(r, fmt(*seen[r]), args["unit"], fmt(*w))
                     for r, w in args["wanted"].items() if r in seen and seen[r] != w]
    return problems
