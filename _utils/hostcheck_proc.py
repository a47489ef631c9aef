"""hostcheck's process snapshot: one pass over ``/proc`` that every check reuses.

Reading the host is kept apart from judging it. This module only reads. A
check's ``read`` stage takes a :class:`Snapshot` and loads the lazy fields
its analysis needs (:meth:`Proc.load`); its ``analyse`` stage then only
looks at values already read, so unit tests run it on synthetic snapshots
or fake ``/proc`` trees with every file access made to fail.

Cost model: the ``stat`` file of every process is read eagerly (pid, ppid,
pgid, sid, flags, start time, comm). ``cmdline``, ``exe``, ``cgroup``, ``maps`` and
the real uid (``status``) are read on first use and cached on the process, so a
check only pays for the files it needs; ``Snapshot.load_all()`` reads them
all in one pass for callers that want everything. ``environ`` is read only
through :meth:`Proc.provenance`, which keeps the few provenance keys listed in
:data:`PROVENANCE_KEYS` and drops every other value before returning.

Processes that vanish mid-scan are dropped silently (or keep ``None`` in the
fields that could not be read); permission errors give partial data, never
an exception.

Runtime dependencies: the Python standard library only.
"""

import os
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_ident

PF_KTHREAD = 0x00200000

#: The only environment keys hostcheck ever reads out of ``/proc/PID/environ``.
#: They prove where a process came from; no other value leaves the minion.
PROVENANCE_KEYS = (
    b"SUPERVISOR_ENABLED",
    b"SUPERVISOR_PROCESS_NAME",
    b"SUPERVISOR_GROUP_NAME",
    b"SUPERVISOR_SERVER_URL",
    b"INVOCATION_ID",
)

_UNIT_SUFFIXES = (
    ".service",
    ".scope",
    ".socket",
    ".mount",
    ".swap",
    ".timer",
    ".path",
    ".device",
    ".target",
)

_MISSING = object()
_GONE = (b"Z", b"X", b"x")
#: ``/proc/PID/loginuid`` of a process that no login set one for
NO_LOGINUID = 4294967295


def read_bytes(path, limit=1 << 20, to_eof=False):
    """Whole content of a (proc) file, or ``None`` when it cannot be read.

    ``to_eof``: read until ``read()`` returns nothing, for seq_files like
    ``/proc/PID/maps`` that the kernel hands out about a page per call.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            # A short read is the end of a /proc file: it saves the extra
            # read() that would only return b"".
            if size >= limit or (len(chunk) < 65536 and not to_eof):
                break
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def read_small(path):
    """A small ``/proc`` file (``stat``, ``cgroup``, ``limits``: under 4 KiB) in one read, or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_stat(raw):
    """Parse ``/proc/PID/stat`` bytes.

    Returns ``(comm, state, ppid, pgid, sid, flags, starttime)`` or ``None``.
    The comm field may contain spaces and parentheses, so the fields are
    taken after the *last* closing parenthesis.
    """
    if not raw:
        return None
    lpar = raw.find(b"(")
    rpar = raw.rfind(b")")
    if lpar < 0 or rpar < lpar:
        return None
    rest = raw[rpar + 2 :].split(b" ", 20)
    if len(rest) < 21:
        return None
    try:
        return (
            raw[lpar + 1 : rpar].decode("utf-8", "replace"),
            rest[0].decode("ascii", "replace"),
            int(rest[1]),
            int(rest[2]),
            int(rest[3]),
            int(rest[6]),
            int(rest[19]),
        )
    except ValueError:
        return None


def parse_cmdline(raw):
    """argv list from ``/proc/PID/cmdline`` bytes (empty for kernel threads).

    A process that rewrote its title with setproctitle has one NUL-less
    string with spaces; that is split on white space so argv[0] is still
    the program.
    """
    if not raw:
        return []
    # setproctitle pads the old argv area with NULs: drop the trailing ones.
    parts = raw.rstrip(b"\0").split(b"\0")
    if len(parts) == 1 and b" " in parts[0]:
        parts = parts[0].split()
    return [p.decode("utf-8", "surrogateescape") for p in parts]


def parse_cgroup(raw):
    """The systemd-relevant cgroup path from ``/proc/PID/cgroup`` bytes.

    cgroup v2 (``0::/path``) and the v1 named hierarchy
    (``N:name=systemd:/path``) are both understood; on a hybrid host the
    named hierarchy wins because that is the one systemd tracks units in.
    Returns ``None`` when neither is present.
    """
    if not raw:
        return None
    unified = None
    for line in raw.split(b"\n"):
        if not line:
            continue
        parts = line.split(b":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == b"name=systemd":
            return parts[2].decode("utf-8", "surrogateescape")
        if parts[0] == b"0" and parts[1] == b"":
            unified = parts[2].decode("utf-8", "surrogateescape")
    return unified


def unit_of_cgroup(path):
    """Map a cgroup path to ``(system_unit, inner_unit)``.

    The system unit is the first path component below the slices
    (``/system.slice/cron.service`` -> ``cron.service``). Anything deeper
    belongs to that unit: a user manager's own units
    (``user@1000.service/app.slice/foo.service`` -> inner ``foo.service``),
    a container's payload (``machine-x.scope/...``) or a delegated subtree.
    A unit name is never taken from a deeper level for the system manager,
    so a container's ``cron.service`` is never confused with the host's.
    """
    if not path or path == "/":
        return None, None
    system_unit = None
    inner = None
    for comp in path.strip("/").split("/"):
        if not comp:
            continue
        if system_unit is None:
            if comp.endswith(".slice"):
                continue
            if comp.endswith(_UNIT_SUFFIXES):
                system_unit = comp
                continue
            return None, None
        if comp.endswith(_UNIT_SUFFIXES):
            inner = comp
    return system_unit, inner


def extract_environ_keys(raw, keys=PROVENANCE_KEYS):
    """Pick only ``keys`` out of raw ``environ`` bytes; everything else is dropped."""
    out = {}
    if not raw:
        return out
    for key in keys:
        prefix = key + b"="
        if raw.startswith(prefix):
            start = len(prefix)
        else:
            idx = raw.find(b"\0" + prefix)
            if idx < 0:
                continue
            start = idx + 1 + len(prefix)
        end = raw.find(b"\0", start)
        value = raw[start:] if end < 0 else raw[start:end]
        out[key.decode("ascii")] = value.decode("utf-8", "replace")
    return out


class Proc:
    """One process as seen at snapshot time.

    ``pid``, ``ppid``, ``pgid``, ``sid``, ``flags``, ``starttime`` (clock
    ticks since boot; with the pid it is the process identity), ``state``
    and ``comm`` are always set. ``cmdline``, ``exe``, ``cgroup`` and ``uid``
    are read lazily and cached; ``None`` means unreadable or vanished.
    """

    __slots__ = (
        "pid",
        "ppid",
        "pgid",
        "sid",
        "flags",
        "_state",
        "_stat",
        "_comm",
        "_starttime",
        "_base",
        "_cmdline",
        "_exe",
        "_cgroup",
        "_uid",
        "_prov",
        "_maps",
        "_program",
        "_ns",
        "_loginuid",
    )

    def __init__(self, pid, base, ppid, pgid, sid, flags, state, stat=None):
        self.pid = pid
        self._base = base
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        self.flags = flags
        self._state = state  # bytes, one letter
        self._stat = stat  # raw stat bytes: comm and start time are parsed on use
        self._comm = _MISSING
        self._starttime = _MISSING
        self._cmdline = _MISSING
        self._exe = _MISSING
        self._cgroup = _MISSING
        self._uid = _MISSING
        self._prov = _MISSING
        self._program = _MISSING
        self._ns = _MISSING
        self._loginuid = _MISSING
        # _maps is left unset here (the eager path pays nothing for it)

    @classmethod
    def from_stat(cls, pid, base, raw):
        """A process from its raw ``stat`` bytes, or ``None`` if they are garbage.

        Only the fields every check needs are converted here; comm and the
        start time stay in the raw bytes until asked for.
        """
        rpar = raw.rfind(b")")
        if rpar < 0:
            return None
        f = raw[rpar + 2 :].split(b" ", 7)
        if len(f) < 8:
            return None
        try:
            return cls(pid, base, int(f[1]), int(f[2]), int(f[3]), int(f[6]), f[0], raw)
        except ValueError:
            return None

    @property
    def comm(self):
        if self._comm is _MISSING:
            raw = self._stat or b""
            self._comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode("utf-8", "replace")
        return self._comm

    @property
    def starttime(self):
        """Start time in clock ticks after boot (with the pid: the identity)."""
        if self._starttime is _MISSING:
            stat = parse_stat(self._stat)
            self._starttime = stat[6] if stat else None
        return self._starttime

    @property
    def state(self):
        return self._state.decode("ascii", "replace")

    @property
    def tty(self):
        """The controlling terminal (``tty_nr`` of ``stat``; 0 when none)."""
        raw = self._stat
        if not raw:
            return 0
        try:
            return int(raw[raw.rfind(b")") + 2:].split(b" ", 6)[4])
        except (ValueError, IndexError):
            return 0

    @classmethod
    def synthetic(cls, pid, ppid, comm="proc", cmdline=None, pgid=None, sid=None,
                  starttime=1000, flags=0, exe=_MISSING, cgroup=None, uid=0,
                  environ=None, state="S", maps=None, tty=0, loginuid=NO_LOGINUID, ns=None):
        """A process built from plain values, for tests and recorded snapshots.

        ``exe`` defaults to ``cmdline[0]`` when that is an absolute path (as
        for a process started by path), else ``None`` (unreadable)."""
        stat = "{} ({}) {} {} {} {} {} -1 {}".format(
            pid, comm, state, ppid, pid if pgid is None else pgid, pid if sid is None else sid,
            tty, flags).encode("utf-8", "replace")
        proc = cls(pid, None, ppid, pid if pgid is None else pgid,
                   pid if sid is None else sid, flags, state.encode("ascii"), stat)
        proc._comm = comm
        proc._starttime = starttime
        # through the same parser as real cmdline bytes (setproctitle titles)
        proc._cmdline = parse_cmdline(
            "\0".join(cmdline if cmdline is not None else [comm]).encode("utf-8", "surrogateescape")
        )
        if exe is _MISSING:
            first = proc._cmdline[0] if proc._cmdline else ""
            exe = first if first.startswith("/") else None
        proc._exe = exe
        proc._loginuid = loginuid
        proc._ns = dict(ns or {})
        proc._cgroup = cgroup
        proc._uid = uid
        proc._prov = {
            k: v for k, v in (environ or {}).items()
            if k.encode() in PROVENANCE_KEYS
        }
        proc._maps = maps.encode("utf-8", "surrogateescape") if isinstance(maps, str) else maps
        return proc

    @property
    def kernel_thread(self):
        # Only the PF_KTHREAD flag: inside a PID namespace (a container) PID 2
        # is an ordinary process, not kthreadd.
        return bool(self.flags & PF_KTHREAD)

    @property
    def program(self):
        """What this process runs (:class:`hostcheck_ident.Program`, from exe
        and cmdline together; ``None`` for kernel threads and vanished ones)."""
        if self._program is _MISSING:
            self._program = None if self.kernel_thread else hostcheck_ident.identify(self.exe, self.cmdline)
        return self._program

    def ns(self, kind):
        """Namespace id (``pid:[4026531836]``) of ``kind`` (``pid``, ``mnt``), or ``None``."""
        if self._ns is _MISSING:
            self._ns = {}
        if kind not in self._ns:
            try:
                self._ns[kind] = os.readlink(self._base + "/ns/" + kind) if self._base else None
            except OSError:
                self._ns[kind] = None
        return self._ns[kind]

    @property
    def loginuid(self):
        """The audit login uid (``None`` when unset or unreadable): set by
        ``pam_loginuid`` for whatever a login session starts."""
        if self._loginuid is _MISSING:
            raw = read_small(self._base + "/loginuid") if self._base else None
            try:
                self._loginuid = int(raw) if raw else NO_LOGINUID
            except ValueError:
                self._loginuid = NO_LOGINUID
        return None if self._loginuid == NO_LOGINUID else self._loginuid

    @property
    def cmdline(self):
        if self._cmdline is _MISSING:
            self._cmdline = parse_cmdline(read_bytes(self._base + "/cmdline"))
        return self._cmdline

    @property
    def exe(self):
        if self._exe is _MISSING:
            try:
                self._exe = os.readlink(self._base + "/exe")
            except OSError:
                self._exe = None
        return self._exe

    @property
    def cgroup(self):
        if self._cgroup is _MISSING:
            self._cgroup = parse_cgroup(read_small(self._base + "/cgroup"))
        return self._cgroup

    @property
    def uid(self):
        """Real uid from ``status`` (``None`` if unreadable)."""
        if self._uid is _MISSING:
            self._uid = None
            raw = read_bytes(self._base + "/status")
            if raw:
                idx = raw.find(b"\nUid:")
                if idx >= 0:
                    try:
                        self._uid = int(raw[idx + 5 :].split(None, 1)[0])
                    except (ValueError, IndexError):
                        pass
        return self._uid

    @property
    def maps(self):
        """Raw ``/proc/PID/maps`` bytes (``None`` if unreadable); read on first use only."""
        try:
            return self._maps
        except AttributeError:
            self._maps = read_bytes(self._base + "/maps", 16 << 20, True) if self._base else None
            return self._maps

    def provenance(self):
        """The provenance keys of this process's environment (dict, maybe empty)."""
        if self._prov is _MISSING:
            self._prov = extract_environ_keys(read_bytes(self._base + "/environ"))
        return self._prov

    def load(self, fields=("cmdline", "exe", "cgroup")):
        """Read the named lazy fields now (a check's read stage), so that its
        analysis only looks at values already read. ``fields`` may name
        ``cmdline``, ``exe``, ``cgroup``, ``uid``, ``maps``, ``program``,
        ``loginuid``, ``provenance`` and ``ns:<kind>``."""
        for field in fields:
            if field == "provenance":
                self.provenance()
            elif field.startswith("ns:"):
                self.ns(field[3:])
            else:
                getattr(self, field)
        return self

    @property
    def identity(self):
        return (self.pid, self.starttime)

    def __repr__(self):
        return "<Proc {} ppid={} {!r}>".format(self.pid, self.ppid, self.comm)


class Snapshot:
    """All processes of one ``/proc`` at one moment, plus the tree relations."""

    def __init__(self, procs, proc_root="/proc", boot_time=None, clk_tck=100,
                 self_pid=None, taken_at=None):
        self.procs = procs
        self.proc_root = proc_root
        self.boot_time = boot_time
        self.clk_tck = clk_tck or 100
        self.self_pid = self_pid
        self.taken_at = taken_at if taken_at is not None else time.time()
        self._children = None
        self._user = None

    @classmethod
    def from_procs(cls, procs, **kwargs):
        """Build a snapshot from :meth:`Proc.synthetic` objects (tests)."""
        kwargs.setdefault("boot_time", 1_700_000_000.0)
        return cls({p.pid: p for p in procs}, **kwargs)

    @property
    def children(self):
        """Map pid -> list of child pids."""
        if self._children is None:
            children = {}
            for proc in self.procs.values():
                children.setdefault(proc.ppid, []).append(proc.pid)
            self._children = children
        return self._children

    @property
    def user_procs(self):
        """The processes that are not kernel threads and not zombies, in
        ``/proc`` order (the one kernel-thread filter; computed once)."""
        if self._user is None:
            kthread = PF_KTHREAD
            self._user = [p for p in self.procs.values() if not p.flags & kthread and p._state not in _GONE]
        return self._user

    def ancestors(self, pid):
        """Pids above ``pid`` (parent first), stopping at a pid not in the snapshot."""
        out = []
        seen = {pid}
        proc = self.procs.get(pid)
        while proc is not None:
            ppid = proc.ppid
            if ppid in seen or ppid <= 0:
                break
            seen.add(ppid)
            parent = self.procs.get(ppid)
            if parent is None:
                break
            out.append(ppid)
            proc = parent
        return out

    def descendants(self, pid):
        """Pids below ``pid`` (breadth first), not including ``pid``."""
        out = []
        children = self.children
        queue = list(children.get(pid, ()))
        seen = {pid}
        while queue:
            nxt = queue.pop(0)
            if nxt in seen:
                continue
            seen.add(nxt)
            out.append(nxt)
            queue.extend(children.get(nxt, ()))
        return out

    def started_at(self, proc):
        """Start time of ``proc`` as Unix time (float), or ``None``."""
        if self.boot_time is None:
            return None
        return self.boot_time + proc.starttime / float(self.clk_tck)

    def started_iso(self, proc):
        ts = self.started_at(proc)
        if ts is None:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

    def load_all(self, fields=("cmdline", "exe", "cgroup")):
        for proc in self.user_procs:
            proc.load(fields)
        return self


def boot_time(proc_root="/proc"):
    raw = read_bytes(proc_root + "/stat")
    if raw:
        idx = raw.find(b"\nbtime ")
        if idx >= 0:
            try:
                return float(raw[idx + 7 :].split(None, 1)[0])
            except (ValueError, IndexError):
                pass
    return None


def clock_ticks():
    """``SC_CLK_TCK``: the unit of the start times in ``stat``."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def _self_pid(proc_root):
    try:
        link = os.readlink(proc_root + "/self")
    except OSError:
        return None
    return int(link) if link.isdigit() else None


def partial_snapshot(pids, proc_root="/proc"):
    """A :class:`Snapshot` of only ``pids``, their ancestors and this process's
    ancestry: what a check needs to name the owners of a few processes
    without reading the ``stat`` of every process. Vanished ones are left out."""
    procs = {}
    prefix = proc_root + "/"
    self_pid = _self_pid(proc_root)
    for pid in list(pids) + ([self_pid] if self_pid else []):
        while pid > 0 and pid not in procs:
            base = prefix + str(pid)
            raw = read_small(base + "/stat")
            proc = Proc.from_stat(pid, base, raw) if raw else None
            if proc is None:
                break
            procs[pid] = proc
            pid = proc.ppid
    return Snapshot(procs, proc_root=proc_root, boot_time=boot_time(proc_root),
                    clk_tck=clock_ticks(), self_pid=self_pid)


def snapshot(proc_root="/proc", load=False):
    """Take a snapshot of every process under ``proc_root``.

    :param proc_root: the ``/proc`` to read (a fake tree in tests).
    :param load: read cmdline, exe and cgroup of every process now instead
        of on first use.
    """
    try:
        names = os.listdir(proc_root)
    except OSError as exc:
        raise OSError("cannot list {}: {}".format(proc_root, exc)) from exc
    procs = {}
    prefix = proc_root + "/"
    # the hot loop of every check: read_small() inlined, names looked up once
    _open, _read, _close = os.open, os.read, os.close
    from_stat = Proc.from_stat
    flags = os.O_RDONLY | os.O_CLOEXEC
    for name in names:
        if not name.isdigit():
            continue
        base = prefix + name
        try:
            fd = _open(base + "/stat", flags)
        except OSError:
            continue  # vanished between listdir and open
        try:
            raw = _read(fd, 4096)
        except OSError:
            continue  # vanished between open and read
        finally:
            _close(fd)
        pid = int(name)
        proc = from_stat(pid, base, raw)
        if proc is not None:  # garbage is skipped like a vanished process
            procs[pid] = proc
    snap = Snapshot(procs, proc_root=proc_root, boot_time=boot_time(proc_root),
                    clk_tck=clock_ticks(), self_pid=_self_pid(proc_root))
    if load:
        snap.load_all()
    return snap


def still_same(pid, starttime, proc_root="/proc"):
    """True when ``pid`` is alive (not a zombie) and started at ``starttime``.

    This is the PID-reuse guard every signal goes through.
    """
    stat = parse_stat(read_small("{}/{}/stat".format(proc_root, pid)))
    if stat is None:
        return False
    return stat[6] == starttime and stat[1] not in ("Z", "X", "x")
