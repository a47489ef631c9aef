"""Processes running old code: analysis (pure) and the restart plan.

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
    (ctime) after the process started: the salt-minion after a Salt upgrade.

Mappings that are never package files are ignored: anonymous and inode-0
mappings, ``memfd:``, ``/dev/``, ``/SYSV``, ``[aio]`` and temporary
locations (``/tmp/``, ``/var/tmp/``, ``/run/``, JNA libraries); the list
is configurable (:func:`validate_ignore`).

Each stale process is owned by exactly one thing, and findings are one per
owner: PID 1 (``daemon-reexec``), the minion running this job (deferred
restart), a supervisord program (``supervisorctl restart``), a systemd
system service from the process's cgroup (``systemctl restart``), a user
session or scope (manual: never mapped to a system service by name) or
nothing (manual). Only the file system is read here through the callables
:func:`scan` is given, so the rules are unit-tested on synthetic samples.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_proc
import hostcheck_systemd

CHECK = "deleted_binaries"
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

#: Interpreters whose main script is checked for changes.
SCRIPT_INTERPRETERS = ("python", "perl", "ruby")

# Executable mappings: dev major, dev minor, inode, path. It starts at the
# "x" of the permissions ("r-xp", "--xs"), which never occurs in the hex
# address and offset fields, so the regex engine skips to candidates fast.
# The first group is the whole "dev inode path" text (the key of the caches).
_MAPS_RE = re.compile(rb"x[ps] [0-9a-f]+ (([0-9a-f]+):([0-9a-f]+) ([0-9]+) +([^\n]*))")
# Only that key: one bytes string per mapping is cheaper to collect and look
# up than tuples, for the clean-process test of diagnose().
_MAPS_KEYS_RE = re.compile(rb"x[ps] [0-9a-f]+ ([0-9a-f]+:[0-9a-f]+ [0-9]+ +[^\n]*)")


class ConfigError(ValueError):
    """Bad ``ignore``/``refuse`` configuration."""


def validate_patterns(value, what, default):
    """``None`` -> ``default``; a string or list of non-empty strings -> tuple."""
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("{} must be a string or a list of strings, got {!r}".format(what, value))
    return tuple(value)


def validate_ignore(value):
    return validate_patterns(value, "hostcheck:deleted_binaries:ignore", DEFAULT_IGNORE)


def _matcher(patterns):
    prefixes = tuple(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if any(c in p for c in "*?[")]

    def ignored(path):
        if path.startswith(prefixes):
            return True
        return any(fnmatch.fnmatchcase(path, g) for g in globs)

    return ignored


def parse_maps(raw):
    """Executable file mappings of ``/proc/PID/maps`` bytes.

    Returns ``[(dev, inode, path), ...]`` without repeats, in file order;
    ``dev`` is ``os.makedev(major, minor)`` (maps prints them in hex, so an
    NVMe disk, major 259, shows as ``103:xx``). Anonymous, ``[vdso]``-like
    and inode-0 mappings are left out. ``path`` keeps a trailing
    `` (deleted)`` exactly as the kernel printed it.
    """
    if not raw:
        return []
    out = []
    seen = set()
    for _key, major, minor, inode, path in _MAPS_RE.findall(raw):
        if inode == b"0" or not path.startswith(b"/"):
            continue
        key = (major, minor, inode, path)
        if key in seen:
            continue
        seen.add(key)
        out.append((
            os.makedev(int(major, 16), int(minor, 16)),
            int(inode),
            path.decode("utf-8", "surrogateescape"),
        ))
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


def script_of(argv):
    """Absolute path of the main script of an interpreter command line, or ``None``."""
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("-m", "-c", "-e", "-E"):
            return None  # a module or a snippet: no script file
        if arg in ("-W", "-X", "-I", "-r"):
            skip = arg != "-I"
            continue
        if arg.startswith("-"):
            continue
        return arg if arg.startswith("/") else None
    return None


def _interpreter(exe):
    base = os.path.basename(exe or "")
    return base.rstrip("0123456789.") in SCRIPT_INTERPRETERS


class FileLookup:
    """``(root key, lookup)`` per process root, with one ``stat`` per (root, path).

    The root of a process is identified by the device and inode of
    ``/proc/PID/root``: every process of a container (or chroot) shares it,
    and paths are resolved through the first process seen with that root.
    """

    def __init__(self, stat=os.stat):
        self._stat = stat
        self._cache = {}

    def for_proc(self, proc):
        base = proc._base  # pylint: disable=protected-access
        if base is None:
            return None
        try:
            st = self._stat(base + "/root")
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        cache = self._cache.setdefault(key, {})
        stat = self._stat
        prefix = base + "/root"

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
    """Finds the stale files of one process at a time, with per-run caches:
    ignore decisions per path and, per root, the mappings already seen to be
    current (the same library in hundreds of processes is judged once)."""

    def __init__(self, ignore=DEFAULT_IGNORE, files=None):
        self._ignored = _matcher(ignore)
        self._ignore_cache = {}
        self.files = files if files is not None else FileLookup()
        self._current = {}
        #: "dev inode path" of mappings seen current (in any root), for diagnose()
        self.known = set()

    def ignored(self, path):
        try:
            return self._ignore_cache[path]
        except KeyError:
            value = self._ignore_cache[path] = self._ignored(path)
            return value

    def stale(self, proc, started):
        """``[{"path", "kind": "exe"|"lib"|"script", "why"}]`` for ``proc``, or
        ``None`` when it cannot be read (kernel thread, zombie, gone).
        ``started()`` returns its start time; called only when needed."""
        exe = proc.exe
        if exe is None:
            return None
        root = self.files.for_proc(proc)
        if root is None:
            return None
        root_key, lookup = root
        current = self._current.setdefault(root_key, set())
        exe_path = exe[: -len(DELETED)] if exe.endswith(DELETED) else exe
        out = []
        seen = set()
        raw = proc.maps
        for m in _MAPS_RE.findall(raw) if raw else ():
            key = m[0]
            if key in current:
                continue
            _, major, minor, inode, rawpath = m
            path = rawpath.decode("utf-8", "surrogateescape")
            if inode == b"0" or not rawpath.startswith(b"/") or self.ignored(path):
                current.add(key)
                self.known.add(key)
                continue
            dev, ino = os.makedev(int(major, 16), int(minor, 16)), int(inode)
            why, clean = judge(path, dev, ino, lookup, started)
            if why is None:
                now = lookup(path)
                if now is not None and now[0] == dev and now[1] == ino:
                    current.add(key)  # the very inode at its path: current for every process
                    self.known.add(key)
                continue
            if clean not in seen:
                seen.add(clean)
                out.append({"path": clean, "kind": "exe" if clean == exe_path else "lib", "why": why})
        if ("py" in exe_path or "perl" in exe_path or "ruby" in exe_path) and _interpreter(exe_path):
            script = script_of(proc.cmdline or [])
            if script and not self.ignored(script):
                now = lookup(script)
                when = started()
                if now is not None and when is not None and now[2] > when + START_SLACK:
                    out.append({"path": script, "kind": "script", "why": "changed"})
        return out


def _supervised(snap, proc):
    """``(group:program, {"url", "uid"})`` when a live supervisord above
    ``proc`` started it, else ``None``. The URL is the
    ``SUPERVISOR_SERVER_URL`` supervisord gave the program; ``uid`` is that
    supervisord's user (the owner its socket must have)."""
    prov = proc.provenance()
    name = prov.get("SUPERVISOR_PROCESS_NAME")
    if not name:
        return None
    for pid in snap.ancestors(proc.pid):
        parent = snap.procs.get(pid)
        argv = (parent.cmdline or []) if parent is not None else []
        if any(os.path.basename(a) == "supervisord" for a in argv[:2]):
            try:
                uid = os.stat(parent._base).st_uid if parent._base else None  # pylint: disable=protected-access
            except OSError:
                uid = None
            server = {"url": prov.get("SUPERVISOR_SERVER_URL"), "uid": uid}
            return "{}:{}".format(prov.get("SUPERVISOR_GROUP_NAME") or name, name), server
    return None


def owner_of(snap, proc, minion):
    """``(key, owner, action)`` of a stale process (see the module docstring).

    ``minion`` is ``(pids, unit)`` of the minion running this job."""
    if proc.pid == 1:
        return ("init",), {"kind": "init", "name": "PID 1"}, {"type": "daemon-reexec"}
    unit, _inner = hostcheck_proc.unit_of_cgroup(proc.cgroup)
    if proc.pid in minion[0] or (unit is not None and unit == minion[1]):
        action = {"type": "self-restart", "unit": unit} if unit and unit.endswith(".service") else {
            "type": "manual", "reason": "the minion running this job is not a systemd service"}
        return ("minion",), {"kind": "minion", "name": unit or "salt-minion"}, action
    supervised = _supervised(snap, proc)
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
    return (("unmanaged", proc.pid), {"kind": "unmanaged", "name": None},
            {"type": "manual", "reason": "no service manager owns this process"})


def _minion(snap):
    """The minion running this job: ``(this process and its ancestors but PID 1,
    its systemd service or None)``."""
    if snap.self_pid is None:
        return set(), None
    pids = {snap.self_pid}
    pids.update(a for a in snap.ancestors(snap.self_pid) if a != 1)
    me = snap.procs.get(snap.self_pid)
    unit = hostcheck_proc.unit_of_cgroup(me.cgroup)[0] if me is not None else None
    return pids, unit if unit and unit.endswith(".service") else None


def analyse(snap, ignore=DEFAULT_IGNORE, files=None):
    """Judge a snapshot. Reads only the snapshot's lazy fields and, through
    ``files`` (a :class:`FileLookup`), the files the processes map.
    Returns ``(findings, scanned)``."""
    scanner = Scanner(ignore, files)
    stale = {}
    scanned = 0
    kthread = hostcheck_proc.PF_KTHREAD
    gone = (b"Z", b"X", b"x")
    for proc in snap.procs.values():
        if proc.flags & kthread or proc._state in gone:  # pylint: disable=protected-access
            continue
        try:
            found = scanner.stale(proc, lambda p=proc: snap.started_at(p))
        except LookupError:
            continue  # vanished mid-scan
        if found is None:
            continue
        scanned += 1
        if found:
            stale[proc.pid] = found
    return group(snap, stale), scanned


def group(snap, stale):
    """One finding per owner from ``{pid: [stale file, ...]}``."""
    minion = _minion(snap)
    groups = {}
    for pid in sorted(stale):
        proc = snap.procs[pid]
        key, owner, action = owner_of(snap, proc, minion)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "check": CHECK,
                "code": "stale-" + owner["kind"],
                "severity": "warning",
                "summary": "",
                "pids": [],
                "owner": owner,
                "action": action,
                "files": {},
                "programs": set(),
                "identities": [],
            }
        g["pids"].append(pid)
        g["identities"].append([pid, proc.starttime])
        exe = proc.exe or ""
        g["programs"].add(os.path.basename(exe[: -len(DELETED)] if exe.endswith(DELETED) else exe))
        for item in stale[pid]:
            f = g["files"].setdefault((item["path"], item["kind"], item["why"]), dict(item, pids=[]))
            f["pids"].append(pid)
    out = []
    order = {"init": 0, "unit": 1, "supervisor": 2, "scope": 3, "unmanaged": 4, "minion": 5}
    for g in sorted(groups.values(), key=lambda g: (order[g["owner"]["kind"]], g["owner"]["name"] or "", g["pids"])):
        g["files"] = sorted(g["files"].values(), key=lambda f: (f["kind"] != "exe", f["path"]))
        g["programs"] = sorted(p for p in g["programs"] if p)
        g["summary"] = _summary(g)
        out.append(g)
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


def summary(findings):
    """Grain-sized summary."""
    return {
        "count": sum(len(f["pids"]) for f in findings),
        "units": sorted({f["owner"]["name"] for f in findings if f["owner"]["kind"] == "unit"}),
        "programs": sorted({p for f in findings for p in f["programs"]}),
    }


def diagnose(proc_root="/proc", ignore=DEFAULT_IGNORE):
    """Scan every process and judge it (what module, state and bench use).

    The fast path of :func:`analyse`: a process's ``stat`` is read only when
    it matters (its start time when an inode differs, and the ancestry of
    the stale processes for their owners), so a clean process costs a
    ``readlink`` of ``exe``, its ``maps`` and a set lookup: a process whose
    executable mappings (device, inode and path) were all seen current
    already, in its own root or another one, is not looked at further; all
    others are judged in their own root as :func:`analyse` does. (The one
    case this skips: a container mapping the host's very inode at the same
    path while a mount inside the container hides that path; the kernel
    still reports every deleted file there.)
    Returns ``(findings, scanned)``.
    """
    scanner = Scanner(ignore)
    known = scanner.known
    prefix = proc_root + "/"
    boot = hostcheck_proc.boot_time(proc_root)
    clk = hostcheck_proc.clock_ticks()
    stale = {}
    scanned = 0
    # the hot loop: every process, so the clean case is inlined (no objects)
    _open, _read, _close, _readlink = os.open, os.read, os.close, os.readlink
    flags = os.O_RDONLY | os.O_CLOEXEC
    findall = _MAPS_KEYS_RE.findall
    for name in os.listdir(proc_root):
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
        raw = b"".join(chunks)
        if (known.issuperset(findall(raw))
                and not exe.endswith(DELETED)
                and not ("py" in exe or "perl" in exe or "ruby" in exe)):
            continue  # every executable mapping already seen current
        proc = hostcheck_proc.Proc(int(name), base, 0, 0, 0, 0, b"S")  # stand-in: pid and lazy fields
        proc._exe, proc._maps = exe, raw  # pylint: disable=protected-access

        def started(base=base):
            stat = hostcheck_proc.parse_stat(hostcheck_proc.read_bytes(base + "/stat"))
            return None if stat is None or boot is None else boot + stat[6] / float(clk)

        try:
            found = scanner.stale(proc, started)
        except LookupError:
            continue
        if found:
            stale[proc.pid] = found
    snap = hostcheck_proc.partial_snapshot(stale, proc_root)
    for pid, proc in list(stale.items()):
        if pid not in snap.procs:
            del stale[pid]  # exited meanwhile
    return group(snap, stale), scanned


def grain_summary(snap):
    """The cheap grain view of an existing snapshot.

    Only daemon roots are looked at (PID 1, children of init and
    process-group leaders: every service's main process is one), and only
    their ``/proc/PID/exe`` link ending in `` (deleted)``: a few hundred
    ``readlink`` calls on a host with thousands of processes. Deleted
    libraries, replaced files and workers are left to
    ``hostcheck.deleted_binaries``.
    """
    ignored = _matcher(DEFAULT_IGNORE)
    programs = set()
    units = set()
    count = 0
    procs = snap.procs
    kthread = hostcheck_proc.PF_KTHREAD
    for proc in procs.values():
        if proc.flags & kthread:
            continue
        if proc.pid != 1 and proc.ppid != 1 and proc.pgid != proc.pid:
            parent = procs.get(proc.ppid)
            if parent is None or parent.ppid != 0:
                continue
        exe = proc.exe
        if exe is None or not exe.endswith(DELETED) or ignored(exe):
            continue
        count += 1
        programs.add(os.path.basename(exe[: -len(DELETED)]))
        unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
        if unit and unit.endswith(".service"):
            units.add(unit)
    return {"count": count, "units": sorted(units), "programs": sorted(programs)}


# --------------------------------------------------------------------------
# packages (optional, batched)


#: Top-level directories that merged-/usr hosts alias into /usr: dpkg's
#: database may list a file under either name (bookworm's systemd ships
#: /lib/systemd/..., while the process maps /usr/lib/systemd/...).
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _aliases(path):
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "usr" and parts[2] in _MERGED_USR:
        return [path, path[len("/usr"):]]
    if len(parts) > 2 and parts[1] in _MERGED_USR:
        return [path, "/usr" + path]
    return [path]


def owning_packages(paths, run=subprocess.run, which=None):
    """``({path: package}, note)`` for the stale files, in ONE package-manager
    call (``dpkg-query -S`` or ``rpm -qf``, whichever is on ``PATH``).

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
    if which("dpkg-query"):
        query = sorted({a for p in paths for a in _aliases(p)})
        cmd = ["dpkg-query", "-S", "--"] + query
    elif which("rpm"):
        cmd = ["rpm", "-qf", "--queryformat", "%{NAME}\n", "--"] + paths
    else:
        return {}, "packages: neither dpkg-query nor rpm is on PATH, owning packages not looked up"
    try:
        proc = run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                   timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return {}, "packages: {} timed out after 60 s, owning packages not looked up".format(cmd[0])
    except (OSError, subprocess.SubprocessError) as exc:
        return {}, "packages: {} failed ({}), owning packages not looked up".format(cmd[0], exc)
    text = proc.stdout.decode("utf-8", "replace")
    out = {}
    if cmd[0] == "dpkg-query":
        found = {}
        for line in text.splitlines():
            if line.startswith("diversion by "):
                continue  # "diversion by P from: X" / "... to: Y": not an owner
            pkgs, sep, path = line.partition(": ")
            if sep:
                found[path] = pkgs.split(",")[0].split(":")[0].strip()
        for p in paths:
            for a in _aliases(p):
                if a in found:
                    out[p] = found[a]
                    break
        # dpkg-query exits 1 when some path is owned by no package: not an error
        if proc.returncode not in (0, 1):
            return out, "packages: dpkg-query -S exited {}".format(proc.returncode)
    else:
        lines = text.splitlines()
        if len(lines) != len(paths):
            return {}, "packages: rpm -qf gave {} lines for {} paths, owners not matched".format(
                len(lines), len(paths))
        for path, pkg in zip(paths, lines):
            if " " not in pkg:
                out[path] = pkg
    return out, None


# --------------------------------------------------------------------------
# plan and restart (the hostcheck.services_current state)

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


def load_states(names, run_root="/run", timeout=10):
    """``{unit: LoadState}`` from one ``systemctl show``, ``None`` without systemd."""
    if not hostcheck_systemd.systemd_running(run_root) or not shutil.which("systemctl"):
        return None
    if not names:
        return {}
    try:
        proc = subprocess.run(
            ["systemctl", "show", "--no-pager", "-p", "Id,LoadState", "--"] + list(names),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=timeout, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # systemctl show prints the blocks in argument order, even for unknown units
    blocks = [b for b in proc.stdout.decode("utf-8", "replace").split("\n\n") if b.strip()]
    out = {}
    for name, block in zip(names, blocks):
        props = dict(line.partition("=")[::2] for line in block.splitlines())
        out[name] = props.get("LoadState") or "not-found"
    return out


def plan(findings, only=None, exclude=None, refuse=DEFAULT_REFUSE, systemd=True):
    """What the state does with ``findings``. Pure.

    Returns ``{"units": [...], "reexec": bool, "supervisor": [...],
    "self": unit or None, "refused": [{name, reason}], "manual": [{name, reason, pids}],
    "skipped": N}``.
    """
    out = {"units": [], "reexec": False, "supervisor": [], "self": None,
           "refused": [], "manual": [], "skipped": 0, "supervisor_via": {}}
    for f in findings:
        if (only and not _matches(f, only)) or (exclude and _matches(f, exclude)):
            out["skipped"] += 1
            continue
        action = f["action"]
        name = f["owner"]["name"]
        kind = action["type"]
        if kind == "restart-unit":
            if any(fnmatch.fnmatchcase(name, g) for g in refuse):
                out["refused"].append({"name": name, "reason": "unsafe to restart (refuse list): reboot to update it"})
            else:
                out["units"].append(name)
        elif kind == "daemon-reexec":
            if systemd:
                out["reexec"] = True
            else:
                out["manual"].append({"name": "PID 1", "reason": "PID 1 is not systemd: reboot", "pids": f["pids"]})
        elif kind == "supervisorctl":
            out["supervisor"].append(name)
            if action.get("server"):
                out["supervisor_via"][name] = {"url": action["server"], "uid": action.get("uid")}
        elif kind == "self-restart":
            out["self"] = action["unit"]
        else:
            out["manual"].append({"name": name or "pid {}".format(f["pids"][0]), "reason": action["reason"],
                                  "pids": f["pids"]})
    out["units"].sort()
    out["supervisor"].sort()
    return out


def run_command(argv, timeout=120):
    """``(ok, output)`` of a service-manager command (never a binary found
    through a process)."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return proc.returncode == 0, proc.stdout.decode("utf-8", "replace").strip()


def unit_results(units, timeout=10):
    """``{unit: "ActiveState/Result"}`` after a failed restart (start-limit-hit shows here)."""
    ok, text = run_command(["systemctl", "show", "--no-pager", "-p", "Id,ActiveState,Result", "--"] + list(units),
                           timeout=timeout)
    if not ok:
        return {}
    return {u: "{}/{}".format(p.get("ActiveState"), p.get("Result"))
            for u, p in hostcheck_systemd.parse_show(text).items()}


#: journal MESSAGE_IDs systemd (PID 1) logs once per start attempt that
#: counts against a unit's start limit: "Started X" and "Failed to start X".
#: (Type=simple units log no "Starting X...", so that one is not counted.)
SD_MESSAGE_UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
SD_MESSAGE_UNIT_FAILED = "be02cf6855d2428ba40df7e9d022f03d"

_SPAN_USEC = {
    "us": 1, "usec": 1, "ms": 10**3, "msec": 10**3, "s": 10**6, "sec": 10**6,
    "min": 60 * 10**6, "m": 60 * 10**6, "h": 3600 * 10**6, "hr": 3600 * 10**6,
    "d": 86400 * 10**6, "w": 7 * 86400 * 10**6, "M": 2629800 * 10**6, "y": 31557600 * 10**6,
}


def parse_timespan(text):
    """Microseconds of a ``systemctl show`` time span (``1min``, ``1min 30s``,
    ``10s``, ``500ms``, ``0``); ``None`` for ``infinity`` or what cannot be parsed."""
    text = (text or "").strip()
    if text == "infinity" or not text:
        return None
    if text.isdigit():
        return int(text)  # a bare number: microseconds, as the property name says
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    if any(u not in _SPAN_USEC for _, u in parts):
        return None
    return int(sum(float(n) * _SPAN_USEC[u] for n, u in parts))


def start_limits(units, now=None, run=None):
    """Which of ``units`` a restart now would push into ``start-limit-hit``.

    systemd (252 too) does not expose a unit's start counter; it exposes
    ``StartLimitBurst``, ``StartLimitIntervalUSec`` and ``Result``
    (``NRestarts`` counts only automatic ``Restart=`` restarts, not manual
    ones). So: one ``systemctl show`` for all units, then one ``journalctl``
    counting each unit's start attempts (``Started``/``Failed to start``,
    logged by PID 1) within its interval. A restart is one more start, so a
    unit with ``count >= burst`` is refused, as is a unit already in
    ``start-limit-hit``. The journal window slides while systemd's is fixed
    from its first start, so this may refuse a restart systemd would still
    allow, never the other way round.

    Returns ``({unit: reason}, notes)``; a unit whose count cannot be read
    (no journal) is not refused, and a note says so.
    """
    run = run or run_command
    units = list(units)
    if not units:
        return {}, []
    ok, text = run(["systemctl", "show", "--no-pager",
                    "-p", "Id,ActiveState,Result,StartLimitBurst,StartLimitIntervalUSec", "--"] + units)
    if not ok:
        return {}, ["start limits not checked: systemctl show failed: " + text[:200]]
    props = hostcheck_systemd.parse_show(text)
    refused = {}
    limited = {}
    for unit in units:
        p = props.get(unit, {})
        if p.get("Result") == "start-limit-hit":
            refused[unit] = ("already in start-limit-hit ({}): fix why it restarts, then "
                             "systemctl reset-failed {} and restart it").format(p.get("ActiveState"), unit)
            continue
        try:
            burst = int(p.get("StartLimitBurst") or 0)
        except ValueError:
            burst = 0
        interval = parse_timespan(p.get("StartLimitIntervalUSec"))
        if burst > 0 and interval:  # burst 0 or interval 0: no limit
            limited[unit] = (burst, interval, p.get("StartLimitIntervalUSec"))
    if not limited:
        return refused, []
    now = time.time() if now is None else now
    since = int(now - max(i for _, i, _ in limited.values()) / 1e6) - 1
    argv = ["journalctl", "--no-pager", "-q", "-b", "-o", "json", "--output-fields=UNIT,MESSAGE_ID",
            "--since=@{}".format(since), "_PID=1",
            "MESSAGE_ID=" + SD_MESSAGE_UNIT_STARTED, "MESSAGE_ID=" + SD_MESSAGE_UNIT_FAILED]
    argv += ["UNIT=" + u for u in sorted(limited)]
    ok, text = run(argv)
    if not ok:
        return refused, ["start limits not checked for {}: journalctl failed: {}".format(
            ", ".join(sorted(limited)), text[:200])]
    counts = dict.fromkeys(limited, 0)
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            unit = entry.get("UNIT")
            when = int(entry["__REALTIME_TIMESTAMP"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if unit in limited and entry.get("MESSAGE_ID") in (SD_MESSAGE_UNIT_STARTED, SD_MESSAGE_UNIT_FAILED) \
                and when >= now * 1e6 - limited[unit][1]:
            counts[unit] += 1
    for unit, (burst, _interval, shown) in sorted(limited.items()):
        if counts[unit] >= burst:
            refused[unit] = ("a restart now would hit its start limit: started {} time{} in the last {} "
                             "(StartLimitBurst={}, StartLimitIntervalSec={}); not restarted, "
                             "apply again after {}").format(
                counts[unit], "" if counts[unit] == 1 else "s", shown, burst, shown, shown)
    return refused, []


def schedule_self_restart(unit, delay=10):
    """Restart the minion's own unit after this job returned: a transient
    systemd timer outside the minion's cgroup (``systemd-run --on-active``)."""
    return run_command(["systemd-run", "--no-block", "--collect", "--on-active={}".format(int(delay)),
                        "systemctl", "restart", "--", unit])
