"""Processes running old code (``hostcheck.deleted_binaries``) and their
remedy (``hostcheck.services_current``).

A process runs old code when, compared with what is on disk now:

``deleted`` (exe or lib)
    an executable mapping (its program or a shared library, from
    ``/proc/PID/maps``) was unlinked: the kernel prints `` (deleted)`` after
    the path. A real file whose name ends in `` (deleted)`` is told apart by
    its device and inode.
``replaced`` (exe or lib)
    the path still exists but holds another file (other device/inode) that
    changed after the process started. Paths are looked up through
    ``/proc/PID/root``, so a container's process is judged in its own file
    system. A different inode with an older change time is the overlayfs /
    btrfs subvolume quirk (maps show the lower inode), not an upgrade.
``changed`` (script)
    an interpreted daemon (Python, Perl, Ruby) whose main script changed
    (ctime) after the process started: the salt-minion after a Salt
    upgrade. The script is what :func:`hostcheck_ident.identify` names from
    the executable and the arguments together (``python3 -E
    /usr/bin/salt-minion`` runs ``/usr/bin/salt-minion``).

Mappings that are never package files are ignored: anonymous and inode-0
mappings, ``memfd:``, ``/dev/``, ``/SYSV``, ``[aio]`` and temporary
locations (``/tmp/``, ``/var/tmp/``, ``/run/``, JNA libraries); the list is
the ``ignore`` option.

The stages (see :mod:`hostcheck_check`):

:func:`read`
    the only code that touches ``/proc``, the file systems and the package
    manager. A fast scan (a ``readlink`` of ``exe`` and one read of ``maps``
    per process; a process whose executable mappings were all seen current
    already costs nothing more) returns plain :class:`Facts`: per suspicious
    process its executable, arguments, the mappings that were not current,
    the lookups of their paths in its own root, its start time (read only
    when a verdict needs it), cgroup and provenance, plus the process tree
    above them. ``quick`` (the grain) only reads the ``exe`` links of daemon
    roots in the shared snapshot.
:func:`analyse`
    pure: :func:`judge` each mapping, group the stale processes by owner.

Each stale process is owned by exactly one thing, and findings are one per
owner: PID 1 (``daemon-reexec``), the minion running this job (deferred
restart), a supervisord program (``supervisorctl restart``), a systemd
system service from the process's cgroup (``systemctl restart``), a user
session or scope (manual: never mapped to a system service by name) or
nothing (manual).

The remedy: :func:`validate_remedy` (unit names must exist),
:func:`remedy_facts` (load states and start limits of the units it would
restart), :func:`plan` (pure), :func:`apply` (through
:mod:`hostcheck_service` only), :func:`verify`.

Runtime dependencies: the Python standard library only.
"""

import fnmatch
import os
import re
import shutil

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_ident
import hostcheck_proc
import hostcheck_service

NAME = "deleted_binaries"
REMEDY = "services_current"
DELETED = " (deleted)"

#: Path prefixes (or globs, when they contain ``*?[``) of mappings that are
#: never package files.
DEFAULT_IGNORE = (
    "/memfd:",
    "/dev/",
    "/SYSV",
    "/[aio]",
    "/anon_hugepage",
    "/drm",
    "/tmp/",
    "/var/tmp/",
    "/run/",
    "*/jna*.tmp",
    "*/jna-*/*",
)

#: Units that are unsafe to restart: refused by the state unless overridden.
DEFAULT_REFUSE = (
    "dbus.service",
    "dbus-broker.service",
    "getty@*.service",
    "serial-getty@*.service",
    "console-getty.service",
    "container-getty@*.service",
    "display-manager.service",
    "gdm*.service",
    "lightdm.service",
    "sddm.service",
    "xdm.service",
    "user@*.service",
    "docker.service",
    "containerd.service",
    "podman*.service",
    "crio.service",
    "lxc*.service",
    "libvirtd.service",
    "systemd-nspawn@*.service",
)

#: Seconds a script's change time must exceed the process's start to count
#: as changed: the start time is computed from /proc/stat's ``btime``, which
#: is truncated to whole seconds, so it can be up to ~1 s early; without the
#: slack a daemon restarted right after its script was replaced (a package
#: postinst) would be reported as still running old code.
START_SLACK = 1.0

#: Interpreter families (:func:`hostcheck_ident.family_of`) whose main
#: script is checked for changes.
SCRIPT_FAMILIES = ("python", "perl", "ruby")

NOTE_NOT_ROOT = "not running as root: other users' processes cannot be read, so their old code is missed"
NOTE_NO_SYSTEMD = "systemd is not running: only supervisor programs are restarted, the rest is manual"
IDLE = "No service runs old code that this state may restart"

# Executable mappings: dev major, dev minor, inode, path. It starts at the
# "x" of the permissions ("r-xp", "--xs"), which never occurs in the hex
# address and offset fields, so the regex engine skips to candidates fast.
# The first group is the whole "dev inode path" text (the key of the caches).
_MAPS_RE = re.compile(rb"x[ps] [0-9a-f]+ (([0-9a-f]+):([0-9a-f]+) ([0-9]+) +([^\n]*))")
# Only that key: one bytes string per mapping is cheaper to collect and look
# up than tuples, for the clean-process test of the hot loop.
_MAPS_KEYS_RE = re.compile(rb"x[ps] [0-9a-f]+ ([0-9a-f]+:[0-9a-f]+ [0-9]+ +[^\n]*)")


# --------------------------------------------------------------------------
# options

OPTIONS = {
    "ignore": hostcheck_config.string_list(
        DEFAULT_IGNORE, what="a path prefix or glob, or a list of them", allow_empty=True),
    "packages": hostcheck_config.boolean(False),
}


def _clean(path):
    return path[: -len(DELETED)] if path.endswith(DELETED) else path


def _matcher(patterns):
    """``ignored(path)``: ``path`` (`` (deleted)`` stripped) starts with one
    of the prefixes or matches one of the globs in ``patterns``."""
    prefixes = tuple(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if any(c in p for c in "*?[")]

    def ignored(path):
        path = _clean(path)
        if path.startswith(prefixes):
            return True
        return any(fnmatch.fnmatchcase(path, g) for g in globs)

    return ignored


# --------------------------------------------------------------------------
# pure verdicts


def parse_maps(raw):
    """Executable file mappings of ``/proc/PID/maps`` bytes.

    Returns ``[(dev, inode, path), ...]`` without repeats, in file order;
    ``dev`` is ``os.makedev(major, minor)`` (maps prints them in hex, so an
    NVMe disk, major 259, shows as ``103:xx``). Anonymous, ``[vdso]``-like
    and inode-0 mappings are left out. ``path`` keeps a trailing
    `` (deleted)`` exactly as the kernel printed it.
    """
    out = []
    seen = set()
    for key, major, minor, inode, path in _MAPS_RE.findall(raw or b""):
        if inode == b"0" or not path.startswith(b"/") or key in seen:
            continue
        seen.add(key)
        out.append((os.makedev(int(major, 16), int(minor, 16)), int(inode),
                    path.decode("utf-8", "surrogateescape")))
    return out


def judge(path, dev, ino, lookup, started):
    """Is the mapping ``(dev, ino)`` printed as ``path`` still what is on disk?

    ``lookup(path)`` returns ``(st_dev, st_ino, st_ctime)`` of the file at
    ``path`` in the process's root, ``None`` when there is none, or raises
    ``LookupError`` when it cannot tell (the process vanished).
    ``started`` is the process's start (Unix time), ``None``, or a callable
    returning it (only called when an inode differs).
    Returns ``(why, clean_path)``: ``why`` is ``None`` (current),
    ``"deleted"`` or ``"replaced"``.
    """
    if path.endswith(DELETED):
        real = lookup(path)
        if real is not None and real[0] == dev and real[1] == ino:
            return None, path  # a real file named "... (deleted)"
        return "deleted", path[: -len(DELETED)]
    now = lookup(path)
    if now is None:
        return "deleted", path
    if now[0] == dev and now[1] == ino:
        return None, path
    if callable(started):
        started = started()
    if started is None or now[2] > started:
        return "replaced", path
    return None, path  # other inode but older than the process: overlay/btrfs view


def script_family(exe):
    """True when ``exe`` (an ``exe`` link) is an interpreter whose main
    script is checked (:data:`SCRIPT_FAMILIES`)."""
    return hostcheck_ident.family_of(os.path.basename(_clean(exe))) in SCRIPT_FAMILIES


def script_path(exe, argv):
    """The absolute main script an interpreter process runs (from
    :func:`hostcheck_ident.identify`), or ``None``."""
    if not exe or not script_family(exe):
        return None  # the common case, without building a Program
    prog = hostcheck_ident.identify(exe, argv)
    if prog is None or prog.family not in SCRIPT_FAMILIES or not prog.script:
        return None
    return prog.script if prog.script.startswith("/") else None


def stale_files(rec, ignored, quick=False):
    """``[{"path", "kind": "exe"|"lib"|"script", "why"}]`` of one process
    record (see :class:`Facts`). Pure."""
    exe = _clean(rec["exe"])
    if quick:  # only the exe link was read
        deleted = rec["exe"].endswith(DELETED) and not ignored(exe)
        return [{"path": exe, "kind": "exe", "why": "deleted"}] if deleted else []
    lookup = rec["files"].get
    out, seen = [], set()
    for dev, ino, path in rec["maps"]:
        if ignored(path):
            continue
        why, clean = judge(path, dev, ino, lookup, rec["started"])
        if why is not None and clean not in seen:
            seen.add(clean)
            out.append({"path": clean, "kind": "exe" if clean == exe else "lib", "why": why})
    script = script_path(rec["exe"], rec["argv"])
    if script and not ignored(script):
        now, when = lookup(script), rec["started"]
        if now is not None and when is not None and now[2] > when + START_SLACK:
            out.append({"path": script, "kind": "script", "why": "changed"})
    return out


# --------------------------------------------------------------------------
# read: the fast scan


class Facts:
    """What :func:`read` returns: plain data only.

    ``procs``: ``{pid: record}`` of the suspicious processes, each
    ``{"pid", "exe" (as the link reads), "argv", "maps": [[dev, ino,
    printed path], ...] (the executable mappings that were not current),
    "files": {path: [dev, ino, ctime] or None} (lookups in the process's
    root), "started" (Unix time or None), "cgroup", "provenance"}``;
    ``tree``: ``{pid: {"ppid", and for supervisord candidates "exe", "argv",
    "uid"; for this process "cgroup"}}`` of the processes above them and
    of this process's ancestry; ``self_pid``: the process reading;
    ``scanned``: processes looked at; ``quick``: only exe links were read;
    ``systemd``: systemd is PID 1; ``euid``; ``packages``: ``{path:
    package}`` when asked, else ``None``, and ``package_note``.
    ``refusals`` and ``remedy_notes`` are filled by :func:`remedy_facts`.
    """

    __slots__ = ("procs", "tree", "self_pid", "scanned", "quick", "systemd", "euid",
                 "packages", "package_note", "refusals", "remedy_notes")

    def __init__(self, procs=None, tree=None, self_pid=None, scanned=0, quick=False, systemd=False,
                 euid=0, packages=None, package_note=None):
        self.procs = dict(procs or {})
        self.tree = dict(tree or {})
        self.self_pid = self_pid
        self.scanned = scanned
        self.quick = quick
        self.systemd = systemd
        self.euid = euid
        self.packages = packages
        self.package_note = package_note
        self.refusals = {}
        self.remedy_notes = []


class FileLookup:
    """``(root key, lookup)`` per process root, with one ``stat`` per (root, path).

    The root of a process is identified by the device and inode of
    ``/proc/PID/root``: every process of a container (or chroot) shares it,
    and paths are resolved through the first process seen with that root.
    """

    def __init__(self, stat=os.stat):
        self._stat = stat
        self._cache = {}

    def for_base(self, base):
        """For the process at ``base`` (``/proc/PID``); ``None`` when gone."""
        stat = self._stat
        prefix = base + "/root"
        try:
            st = stat(prefix)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        cache = self._cache.setdefault(key, {})

        def lookup(path):
            try:
                return cache[path]
            except KeyError:
                pass
            try:
                st = stat(prefix + path)
                value = (st.st_dev, st.st_ino, st.st_ctime)
            except FileNotFoundError:
                try:
                    stat(prefix)
                except OSError:
                    raise LookupError(base) from None  # the process is gone: cannot tell
                value = None
            except OSError:
                value = None
            cache[path] = value
            return value

        return key, lookup


class Scanner:
    """One pass over ``/proc`` collecting the records of :class:`Facts`, with
    per-run caches: ignore decisions per path, interpreter decisions per
    executable and, per root, the mappings already seen current (the same
    library in hundreds of processes is looked up once)."""

    def __init__(self, proc_root="/proc", ignore=DEFAULT_IGNORE, files=None):
        self.proc_root = proc_root
        self._ignored = _matcher(ignore)
        self._ignore_cache = {}
        self._scripts = {}
        self.files = files if files is not None else FileLookup()
        self._current = {}
        #: "dev inode path" of mappings seen current (in any root)
        self.known = set()
        self.boot = hostcheck_proc.boot_time(proc_root)
        self.clk = hostcheck_proc.clock_ticks()

    def ignored(self, path):
        try:
            return self._ignore_cache[path]
        except KeyError:
            value = self._ignore_cache[path] = self._ignored(path)
            return value

    def run(self):
        """``({pid: record}, scanned)``. The hot loop: every process, so the
        clean case is inlined (no function call, no object per process): a
        ``readlink`` of ``exe``, one read of ``maps`` and a set test. A
        process whose executable mappings (device, inode and path) were all
        seen current already, in its own root or another one, and that is
        neither a deleted executable nor an interpreter is not looked at
        further. (The one case this skips: a container mapping the host's
        very inode at the same path while a mount inside the container
        hides that path; the kernel still reports every deleted file there.)
        Kernel threads and zombies have no ``exe`` link: the ``readlink``
        filters them without reading ``stat``."""
        prefix = self.proc_root + "/"
        records, scanned = {}, 0
        known, scripts, findall = self.known, self._scripts, _MAPS_KEYS_RE.findall
        _open, _read, _close, _readlink = os.open, os.read, os.close, os.readlink
        flags = os.O_RDONLY | os.O_CLOEXEC
        for name in os.listdir(self.proc_root):
            if not name.isdigit():
                continue
            base = prefix + name
            try:
                exe = _readlink(base + "/exe")  # fails for kernel threads and zombies
                fd = _open(base + "/maps", flags)
            except OSError:
                continue
            chunks = []
            try:
                chunk = _read(fd, 65536)
                while chunk:
                    chunks.append(chunk)
                    chunk = _read(fd, 65536)
            except OSError:
                continue
            finally:
                _close(fd)
            scanned += 1
            interp = scripts.get(exe)
            if interp is None:
                interp = scripts[exe] = script_family(exe)
            raw = b"".join(chunks)
            if not interp and not exe.endswith(DELETED) and known.issuperset(findall(raw)):
                continue  # every executable mapping already seen current
            try:
                rec = self.examine(int(name), base, exe, raw, interp)
            except LookupError:
                continue  # vanished mid-scan
            if rec is not None:
                records[rec["pid"]] = rec
        return records, scanned

    def examine(self, pid, base, exe, raw, interp):
        """The record of one process whose mappings were not all known
        current, or ``None`` when nothing about it can be stale. Raises
        ``LookupError`` when it vanished."""
        root = self.files.for_base(base)
        if root is None:
            return None
        root_key, lookup = root
        files = {}
        maps = self._unknown_maps(raw, self._current.setdefault(root_key, set()), lookup, files)
        argv, script = None, None
        if interp:
            argv = hostcheck_proc.parse_cmdline(hostcheck_proc.read_bytes(base + "/cmdline"))
            script = script_path(exe, argv)
            if script and not self.ignored(script):
                files[script] = lookup(script)
            else:
                script = None
        has_script = script is not None and files[script] is not None
        if not maps and not has_script:
            return None
        # the start time matters only for another inode at the path, or a script
        need = has_script or any(files[p] is not None and not p.endswith(DELETED) for _, _, p in maps)
        return {"pid": pid, "exe": exe, "argv": argv, "maps": maps, "files": files,
                "started": self.started(base) if need else None}

    def _unknown_maps(self, raw, current, lookup, files):
        """``[[dev, ino, path]]`` of the mappings in ``raw`` whose path in
        this root is not the very mapped inode; their lookups go into
        ``files``. The others become known current."""
        out, seen = [], set()
        known, ignored = self.known, self.ignored
        for key, major, minor, inode, rawpath in _MAPS_RE.findall(raw):
            if key in current or key in seen:
                continue
            path = rawpath.decode("utf-8", "surrogateescape")
            if inode == b"0" or not rawpath.startswith(b"/") or ignored(path):
                current.add(key)
                known.add(key)
                continue
            dev, ino = os.makedev(int(major, 16), int(minor, 16)), int(inode)
            now = lookup(path)
            if now is not None and now[0] == dev and now[1] == ino:
                current.add(key)  # the very inode at its path: current for every process
                known.add(key)
                continue
            seen.add(key)
            files[path] = now
            out.append([dev, ino, path])
        return out

    def started(self, base):
        """Start of the process at ``base`` (Unix time), or ``None``."""
        stat = hostcheck_proc.parse_stat(hostcheck_proc.read_bytes(base + "/stat"))
        if stat is None or self.boot is None:
            return None
        return self.boot + stat[6] / float(self.clk)


def _daemon_root(snap, proc):
    """PID 1, init's children, group leaders and children of a namespace's
    init: every service's main process is one."""
    if proc.pid == 1 or proc.ppid == 1 or proc.pgid == proc.pid:
        return True
    parent = snap.procs.get(proc.ppid)
    return parent is not None and parent.ppid == 0


def _with_owners(snap, records):
    """Add what the owner rules need to each record: cgroup, provenance
    (``SUPERVISOR_*`` keys only) and, where they name the program, the
    arguments."""
    for pid, rec in records.items():
        proc = snap.procs[pid]
        rec["cgroup"] = proc.cgroup
        rec["provenance"] = dict(proc.provenance())
        if rec["argv"] is None:
            rec["argv"] = proc.cmdline if hostcheck_ident.needs_args(rec["exe"]) else []
    return records


def _tree(snap, records):
    """``{pid: node}`` of the records' ancestors and this process's
    ancestry; supervisord candidates (ancestors of a process that carries
    ``SUPERVISOR_PROCESS_NAME``) with their program and uid."""
    me = snap.self_pid if snap.self_pid in snap.procs else None
    wanted = set(records)
    for pid in list(records) + ([me] if me else []):
        wanted.add(pid)
        wanted.update(snap.ancestors(pid))
    tree = {pid: {"ppid": snap.procs[pid].ppid} for pid in wanted}
    for rec in records.values():
        if rec["provenance"].get("SUPERVISOR_PROCESS_NAME"):
            for pid in snap.ancestors(rec["pid"]):
                proc = snap.procs[pid]
                tree[pid].update(exe=proc.exe, argv=proc.cmdline, uid=proc.uid)
    if me:
        tree[me]["cgroup"] = snap.procs[me].cgroup
    return tree


def _read_quick(host, opts):
    """The grain's view: daemon roots of the shared snapshot whose ``exe``
    link ends in `` (deleted)``: a few hundred ``readlink`` calls on a host
    with thousands of processes. Deleted libraries, replaced files and
    workers are left to the full read."""
    snap = host.snapshot()
    ignored = _matcher(opts["ignore"])
    records = {}
    for proc in snap.user_procs:
        if not _daemon_root(snap, proc):
            continue
        exe = proc.exe
        if exe is None or not exe.endswith(DELETED) or ignored(exe):
            continue
        records[proc.pid] = {"pid": proc.pid, "exe": exe, "argv": None, "maps": [], "files": {},
                             "started": None}
    _with_owners(snap, records)
    return Facts(records, _tree(snap, records), snap.self_pid, len(snap.user_procs), quick=True,
                 systemd=hostcheck_service.systemd_running(host.run_root), euid=host.euid())


def read(host, opts, quick=False):
    """The :class:`Facts` of ``host`` (roots from ``host``)."""
    if quick:
        return _read_quick(host, opts)
    ignored = _matcher(opts["ignore"])
    records, scanned = Scanner(host.proc_root, opts["ignore"]).run()
    # only what a verdict calls stale needs its owner read
    stale = {pid: rec for pid, rec in records.items() if stale_files(rec, ignored)}
    snap = hostcheck_proc.partial_snapshot(stale, host.proc_root)
    stale = {pid: rec for pid, rec in stale.items() if pid in snap.procs}  # exited meanwhile
    facts = Facts(_with_owners(snap, stale), _tree(snap, stale), snap.self_pid, scanned,
                  systemd=hostcheck_service.systemd_running(host.run_root), euid=host.euid())
    if opts["packages"]:
        paths = [f["path"] for rec in stale.values() for f in stale_files(rec, ignored)]
        facts.packages, facts.package_note = owning_packages(paths)
    return facts


# --------------------------------------------------------------------------
# analyse (pure)


def _ancestors(tree, pid):
    out, seen = [], {pid}
    node = tree.get(pid)
    while node is not None:
        ppid = node["ppid"]
        if ppid in seen or ppid <= 0 or ppid not in tree:
            break
        seen.add(ppid)
        out.append(ppid)
        node = tree[ppid]
    return out


def _supervised(tree, rec):
    """``(group:program, {"url", "uid"})`` when a live supervisord above the
    process started it, else ``None``. The URL is the
    ``SUPERVISOR_SERVER_URL`` supervisord gave the program; ``uid`` is that
    supervisord's user (the owner its socket must have)."""
    prov = rec.get("provenance") or {}
    name = prov.get("SUPERVISOR_PROCESS_NAME")
    if not name:
        return None
    for pid in _ancestors(tree, rec["pid"]):
        node = tree[pid]
        if hostcheck_ident.is_daemon(hostcheck_ident.identify(node.get("exe"), node.get("argv")), "supervisord"):
            server = {"url": prov.get("SUPERVISOR_SERVER_URL"), "uid": node.get("uid")}
            return "{}:{}".format(prov.get("SUPERVISOR_GROUP_NAME") or name, name), server
    return None


def _minion(facts):
    """The minion running this job: ``(this process and its ancestors but
    PID 1, its systemd service or None)``."""
    me = facts.tree.get(facts.self_pid) if facts.self_pid is not None else None
    if me is None:
        return set(), None
    pids = {facts.self_pid}
    pids.update(a for a in _ancestors(facts.tree, facts.self_pid) if a != 1)
    unit = hostcheck_proc.unit_of_cgroup(me.get("cgroup"))[0]
    return pids, unit if unit and unit.endswith(".service") else None


def owner_of(facts, rec, minion):
    """``(key, owner, action)`` of a stale process (see the module docstring).

    ``minion`` is ``(pids, unit)`` of the minion running this job."""
    pid = rec["pid"]
    if pid == 1:
        return ("init",), {"kind": "init", "name": "PID 1"}, {"type": "daemon-reexec"}
    unit = hostcheck_proc.unit_of_cgroup(rec.get("cgroup"))[0]
    if pid in minion[0] or (unit is not None and unit == minion[1]):
        action = {"type": "self-restart", "unit": unit} if unit and unit.endswith(".service") else {
            "type": "manual", "reason": "the minion running this job is not a systemd service"}
        return ("minion",), {"kind": "minion", "name": unit or "salt-minion"}, action
    supervised = _supervised(facts.tree, rec)
    if supervised:
        program, server = supervised
        return (("supervisor", program), {"kind": "supervisor", "name": program},
                {"type": "supervisorctl", "program": program, "server": server["url"], "uid": server["uid"]})
    if unit and unit.endswith(".service") and not unit.startswith("user@"):
        return ("unit", unit), {"kind": "unit", "name": unit}, {"type": "restart-unit", "unit": unit}
    if unit:
        reason = ("runs in {}, a user session, scope or container: restart it there or log out; "
                  "it is never mapped to a system service by name").format(unit)
        return ("scope", unit), {"kind": "scope", "name": unit}, {"type": "manual", "reason": reason}
    return (("unmanaged", pid), {"kind": "unmanaged", "name": None},
            {"type": "manual", "reason": "no service manager owns this process"})


_ORDER = {"init": 0, "unit": 1, "supervisor": 2, "scope": 3, "unmanaged": 4, "minion": 5}


def group(facts, stale):
    """One finding per owner from ``{pid: [stale file, ...]}``."""
    minion = _minion(facts)
    groups = {}
    for pid in sorted(stale):
        rec = facts.procs[pid]
        key, owner, action = owner_of(facts, rec, minion)
        g = groups.setdefault(key, {"owner": owner, "action": action, "pids": [], "files": {}, "programs": set()})
        g["pids"].append(pid)
        prog = hostcheck_ident.identify(rec["exe"], rec.get("argv"))
        if prog is not None:
            g["programs"].add(prog.name)
        for item in stale[pid]:
            f = g["files"].setdefault((item["path"], item["kind"], item["why"]), dict(item, pids=[]))
            f["pids"].append(pid)
    out = []
    for g in sorted(groups.values(), key=lambda g: (_ORDER[g["owner"]["kind"]], g["owner"]["name"] or "", g["pids"])):
        g["files"] = sorted(g["files"].values(), key=lambda f: (f["kind"] != "exe", f["path"]))
        g["programs"] = sorted(p for p in g["programs"] if p)
        out.append(hostcheck_check.finding(
            NAME, "stale-" + g["owner"]["kind"], "warning", _summary(g), g["pids"],
            owner=g["owner"], action=g["action"], files=g["files"], programs=g["programs"]))
    return out


def _summary(g):
    n = len(g["pids"])
    files = g["files"]
    what = "{} process{} ({}) run{} {}".format(
        n, "" if n == 1 else "es", ", ".join(g["programs"]) or "?", "s" if n == 1 else "",
        "; ".join("{} {} {}".format(f["why"], f["kind"], f["path"]) for f in files[:2])
        + (" and {} more".format(len(files) - 2) if len(files) > 2 else ""))
    owner = g["owner"]
    action = g["action"]
    if action["type"] == "restart-unit":
        return "{}: {}; fix: systemctl restart {}".format(owner["name"], what, owner["name"])
    if action["type"] == "daemon-reexec":
        return "PID 1: {}; fix: systemctl daemon-reexec".format(what)
    if action["type"] == "supervisorctl":
        return "supervisor program {}: {}; fix: supervisorctl restart {}".format(owner["name"], what, owner["name"])
    if action["type"] == "self-restart":
        return "the salt-minion running this job ({}): {}; fix: restart it after the job".format(owner["name"], what)
    return "{}; manual: {}".format(what, action["reason"])


def analyse(facts, opts):
    """Judge the :class:`Facts` :func:`read` returned. Pure."""
    ignored = _matcher(opts["ignore"])
    stale = {}
    for pid, rec in facts.procs.items():
        found = stale_files(rec, ignored, facts.quick)
        if found:
            stale[pid] = found
    findings = group(facts, stale)
    notes = [NOTE_NOT_ROOT] if facts.euid != 0 else []
    if facts.packages is not None:
        for f in findings:
            for item in f["files"]:
                item["package"] = facts.packages.get(item["path"])
    if facts.package_note:
        notes.append(facts.package_note)
    details = {
        "stale": sum(len(f["pids"]) for f in findings),
        "units": sorted({f["owner"]["name"] for f in findings if f["owner"]["kind"] == "unit"}),
        "processes": facts.scanned,
    }
    return hostcheck_check.Diagnosis(NAME, findings, notes, details, facts)


def summarise(diag):
    """The grain entry: ``{count, units, programs}``."""
    return {
        "count": diag.details["stale"],
        "units": diag.details["units"],
        "programs": sorted({p for f in diag.findings for p in f["programs"]}),
    }


# --------------------------------------------------------------------------
# packages (optional, batched)


#: Top-level directories that merged-/usr hosts alias into /usr: dpkg's
#: database may list a file under either name (bookworm's systemd ships
#: /lib/systemd/..., while the process maps /usr/lib/systemd/...).
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DPKG_NOT_FOUND = "dpkg-query: no path found matching pattern "
_RPM_NOT_OWNED = re.compile(r"^(?:error: file (/.*?): .*|file (/.*) is not owned by any package)$")


def _aliases(path):
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "usr" and parts[2] in _MERGED_USR:
        return [path, path[len("/usr"):]]
    if len(parts) > 2 and parts[1] in _MERGED_USR:
        return [path, "/usr" + path]
    return [path]


def owning_packages(paths, runner=None, which=None):
    """``({path: package}, note)`` for the stale files, in ONE package-manager
    call (``dpkg-query -S`` or ``rpm -qf``, whichever is on ``PATH``), run
    through :func:`hostcheck_service.run` (or ``runner``, same signature).

    A path no package owns is left out. ``note`` is ``None``, or one line
    saying why some or all owners are unknown (no package manager, the call
    failed or timed out); nothing raises. With dpkg each path is also asked
    under its merged-``/usr`` alias (``/usr/lib/x`` and ``/lib/x``) in the
    same call, since the database may list either.
    """
    paths = sorted(set(paths))
    if not paths:
        return {}, None
    which = which or shutil.which
    runner = runner or hostcheck_service.run
    if which("dpkg-query"):
        return _dpkg_owners(paths, runner)
    if which("rpm"):
        return _rpm_owners(paths, runner)
    return {}, "packages: neither dpkg-query nor rpm is on PATH, owning packages not looked up"


def _dpkg_owners(paths, runner):
    """dpkg-query exits 1 when some path is owned by no package: that is no
    error, and its "no path found" lines (stderr, merged) are skipped."""
    query = sorted({a for p in paths for a in _aliases(p)})
    ok, text = runner(["dpkg-query", "-S", "--"] + query, timeout=60)
    found, odd = {}, []
    for line in text.splitlines():
        if line.startswith(("diversion by ", _DPKG_NOT_FOUND)) or not line.strip():
            continue  # "diversion by P from: X" / "... to: Y": not an owner
        pkgs, sep, path = line.partition(": ")
        if sep and path.startswith("/") and not pkgs.startswith("dpkg-query"):
            found[path] = pkgs.split(",")[0].split(":")[0].strip()
        else:
            odd.append(line)
    out = {}
    for p in paths:
        for a in _aliases(p):
            if a in found:
                out[p] = found[a]
                break
    if not ok and odd:
        return out, "packages: dpkg-query failed: {}{}".format(
            odd[0][:200], "" if out else ", owning packages not looked up")
    return out, None


def _rpm_owners(paths, runner):
    """One name per owned path, in order; the lines for unowned or missing
    paths name their path, so they are told apart whatever the order of
    stdout and stderr."""
    ok, text = runner(["rpm", "-qf", "--queryformat", "%{NAME}\n", "--"] + paths, timeout=60)
    names, unowned, odd = [], set(), []
    for line in text.splitlines():
        m = _RPM_NOT_OWNED.match(line)
        if m:
            unowned.add(m.group(1) or m.group(2))
        elif line and " " not in line:
            names.append(line)
        elif line.strip():
            odd.append(line)
    rest = [p for p in paths if p not in unowned]
    if odd and not ok:
        return {}, "packages: rpm -qf failed: {}, owning packages not looked up".format(odd[0][:200])
    if len(names) != len(rest):
        return {}, "packages: rpm -qf gave {} lines for {} paths, owners not matched".format(len(names), len(rest))
    return dict(zip(rest, names)), None


# --------------------------------------------------------------------------
# the remedy: services_current

REMEDY_ARGS = {
    "only": hostcheck_config.globs(),
    "exclude": hostcheck_config.globs(),
    "refuse": hostcheck_config.string_list(
        DEFAULT_REFUSE, what="a glob string or a list of glob strings", allow_empty=True),
}
CONFIG_KEYS = ("refuse",)

#: Names in ``only``/``exclude`` that select a kind of owner, not a unit.
OWNER_KINDS = ("init", "minion", "supervisor", "unit", "scope", "unmanaged")


def _names(finding):
    owner = finding["owner"]
    names = [owner["kind"]]
    if owner["name"]:
        names.append(owner["name"])
        if owner["name"].endswith(".service"):
            names.append(owner["name"][: -len(".service")])
    return names


def _matches(finding, globs):
    return any(fnmatch.fnmatchcase(n, g) for n in _names(finding) for g in globs)


def unit_names_to_check(globs):
    """The plain unit names in ``only``/``exclude`` (no glob, no owner kind,
    no ``group:program``): each must be a unit systemd knows."""
    out = []
    for g in globs or ():
        if any(c in g for c in "*?[") or g in OWNER_KINDS or ":" in g or g == "PID 1":
            continue
        out.append(g if "." in g else g + ".service")
    return out


def validate_remedy(name, args, host):  # pylint: disable=unused-argument
    """Plain unit names in ``only``/``exclude`` must be units systemd knows
    (one ``systemctl show``); raises :class:`hostcheck_config.ConfigError`."""
    names = unit_names_to_check((args["only"] or []) + (args["exclude"] or []))
    if not names:
        return
    loaded = hostcheck_service.load_states(names, host.run_root)
    unknown = [n for n in names if loaded is None or loaded.get(n) == "not-found"]
    if unknown:
        why = "" if loaded is not None else (
            " (systemd did not answer)" if hostcheck_service.systemd_running(host.run_root)
            else " (systemd is not running)")
        raise hostcheck_config.ConfigError("unknown unit(s): {}{}".format(", ".join(unknown), why))


def _manual(f, reason=None):
    return {"name": f["owner"]["name"] or "pid {}".format(f["pids"][0]),
            "reason": reason or f["action"]["reason"], "pids": f["pids"]}


def select(findings, only=None, exclude=None, refuse=DEFAULT_REFUSE, systemd=True):
    """What the state does with ``findings``. Pure.

    Returns ``{"units": [...], "reexec": bool, "supervisor": [...],
    "supervisor_via": {program: {"url", "uid"}}, "self": unit or None,
    "refused": [{name, reason}], "manual": [{name, reason, pids}], "skipped": N}``.
    Without systemd, units, PID 1 and the minion are manual.
    """
    out = {"units": [], "reexec": False, "supervisor": [], "supervisor_via": {}, "self": None,
           "refused": [], "manual": [], "skipped": 0}
    no_systemd = "systemd is not running here: restart it by hand or reboot"
    for f in findings:
        if (only and not _matches(f, only)) or (exclude and _matches(f, exclude)):
            out["skipped"] += 1
            continue
        action, name = f["action"], f["owner"]["name"]
        kind = action["type"]
        if kind in ("restart-unit", "daemon-reexec", "self-restart") and not systemd:
            out["manual"].append(_manual(f, "PID 1 is not systemd: reboot" if kind == "daemon-reexec" else no_systemd))
        elif kind == "restart-unit" and any(fnmatch.fnmatchcase(name, g) for g in refuse):
            out["refused"].append({"name": name, "reason": "unsafe to restart (refuse list): reboot to update it"})
        elif kind == "restart-unit":
            out["units"].append(name)
        elif kind == "daemon-reexec":
            out["reexec"] = True
        elif kind == "supervisorctl":
            out["supervisor"].append(name)
            if action.get("server"):
                out["supervisor_via"][name] = {"url": action["server"], "uid": action.get("uid")}
        elif kind == "self-restart":
            out["self"] = action["unit"]
        else:
            out["manual"].append(_manual(f))
    out["units"].sort()
    out["supervisor"].sort()
    return out


def remedy_facts(host, diag, args):
    """What only the remedy needs, read before :func:`plan` (in test mode
    too, so ``test=True`` predicts the real run): the ``LoadState`` of the
    units it would restart and their start limits
    (:func:`hostcheck_service.start_limits`). Stored in ``diag.facts``:
    ``refusals`` ``{unit: reason}`` and ``remedy_notes``."""
    facts = diag.facts
    if not facts.systemd:
        return
    sel = select(diag.findings, args["only"], args["exclude"], args["refuse"], True)
    units = sel["units"] + ([sel["self"]] if sel["self"] else [])
    if not units:
        return
    loaded = hostcheck_service.load_states(units, host.run_root) or {}
    refusals = {}
    for unit in units:
        state = loaded.get(unit, "loaded")
        if state != "loaded":
            refusals[unit] = ("its unit is {0} (LoadState={0}): systemctl cannot restart it; "
                              "stop it by hand or reboot").format(state)
    limited, notes = hostcheck_service.start_limits([u for u in units if u not in refusals])
    refusals.update(limited)
    facts.refusals = refusals
    facts.remedy_notes = list(notes)


def _gate(sel, refusals):
    """Take the units :func:`remedy_facts` refused out of ``sel``; their
    problem lines."""
    problems = ["Refused {}: {} (needs attention)".format(u, refusals[u])
                for u in sorted(refusals) if u in sel["units"] or u == sel["self"]]
    sel["units"] = [u for u in sel["units"] if u not in refusals]
    if sel["self"] in refusals:
        sel["self"] = None
    return problems


def _changes(sel):
    """The ``changes`` a run that works reports (the keys :func:`apply` uses)."""
    changes = {}
    if sel["reexec"]:
        changes["reexecuted"] = ["PID 1"]
    if sel["units"]:
        changes["restarted"] = list(sel["units"])
    if sel["supervisor"]:
        changes["supervisor_restarted"] = list(sel["supervisor"])
    if sel["self"]:
        changes["deferred"] = sel["self"]
    return changes


def _preview(sel):
    lines = ["Would restart:"]
    if sel["reexec"]:
        lines.append("  PID 1: systemctl daemon-reexec")
    lines.extend("  {}: systemctl restart".format(u) for u in sel["units"])
    lines.extend("  {}: restart through its supervisord".format(p) for p in sel["supervisor"])
    if sel["self"]:
        lines.append("  {}: last, about 10 s after this job returns".format(sel["self"]))
    return lines


def _leftovers(sel):
    lines = ["Refused {}: {}".format(item["name"], item["reason"]) for item in sel["refused"]]
    lines.extend("Manual {} (pids {}): {}".format(item["name"], ", ".join(map(str, item["pids"])), item["reason"])
                 for item in sel["manual"])
    return lines


def plan(diag, args):
    """What ``services_current`` would do. Pure: every fact it needs is in
    ``diag`` (:func:`remedy_facts` added the refusals)."""
    facts = diag.facts
    sel = select(diag.findings, args["only"], args["exclude"], args["refuse"], facts.systemd)
    problems = _gate(sel, facts.refusals)
    notes = _leftovers(sel) + list(facts.remedy_notes) + ([] if facts.systemd else [NOTE_NO_SYSTEMD])
    idle = IDLE + (" ({} owner(s) left alone by only/exclude)".format(sel["skipped"]) if sel["skipped"] else "")
    return hostcheck_check.Plan(_changes(sel), sel, problems, notes, _preview(sel), idle)


def _apply_reexec(out):
    ok, text = hostcheck_service.daemon_reexec()
    if ok:
        out.changes["reexecuted"] = ["PID 1"]
        out.lines.append("Re-executed PID 1 (systemctl daemon-reexec)")
    else:
        out.problems.append("systemctl daemon-reexec failed: " + text)


def _apply_units(out, units):
    results = hostcheck_service.restart_units(units)
    done = sorted(u for u, err in results.items() if err is None)
    if done:
        out.changes["restarted"] = done
        out.lines.extend("Restarted {} (systemctl restart)".format(u) for u in done)
    out.problems.extend("Restarting {} failed: {}".format(u, err) for u, err in sorted(results.items()) if err)


def _apply_supervisor(out, programs, via):
    restarted, errors, methods = hostcheck_service.supervisor_restart_all(programs, via)
    if restarted:
        out.changes["supervisor_restarted"] = sorted(restarted)
        out.lines.extend("Restarted supervisor program {}".format(p) for p in sorted(restarted))
    out.notes.extend("supervisor program " + m for m in methods)
    out.problems.extend("supervisor restart failed: " + e for e in errors)


def _apply_self(out, unit):
    ok, text = hostcheck_service.schedule_restart(unit)
    if ok:
        out.changes["deferred"] = unit
        out.lines.append("{} is restarted about 10 s after this job returns; apply again to verify".format(unit))
    else:
        out.problems.append("could not schedule the minion's restart ({}): {}".format(unit, text))


def apply(host, plan_, args):  # pylint: disable=unused-argument
    """Restart what the plan names, in this order: PID 1, units (one
    ``systemctl restart``, never retried), supervisor programs, then the
    minion's own unit (a timer, after the job). The outcome says what
    happened to each."""
    sel = plan_.actions
    out = hostcheck_check.Outcome()
    if sel["reexec"]:
        _apply_reexec(out)
    if sel["units"]:
        _apply_units(out, sel["units"])
    if sel["supervisor"]:
        _apply_supervisor(out, sel["supervisor"], sel["supervisor_via"])
    if sel["self"]:
        _apply_self(out, sel["self"])
    return out


def verify(plan_, outcome, after, args):  # pylint: disable=unused-argument
    """Problems: an owner restarted (or PID 1 re-executed) that the new
    diagnosis still finds running old code. The deferred minion is not
    checked: it restarts after the job."""
    done = set(outcome.changes.get("restarted", [])) | set(outcome.changes.get("supervisor_restarted", []))
    if outcome.changes.get("reexecuted"):
        done.add("PID 1")
    still = sorted({f["owner"]["name"] for f in after.findings if f["owner"]["name"] in done})
    return ["Still running old code after the restart: " + ", ".join(still)] if still else []
