"""Timezone consistency (``hostcheck.timezone``) and its remedy (``timezone_pinned``).

The incident: ``/etc/timezone`` said ``Etc/UTC`` while ``/etc/localtime`` was
a *copy* of ``Asia/Shanghai``. ``date`` used one, cron the other, and cron
reads the zone only when it starts. So this check collects every source of
the zone (tzlocal's "collect every source, then compare"), never trusting
one file per OS family, and it needs neither ``timedatectl`` nor D-Bus:

* ``/etc/localtime``: a symlink (its target names the zone), a copy (the
  zones whose files have identical bytes; the TZif header is validated) or
  missing (glibc then uses UTC);
* ``/etc/timezone`` (Debian family), ``ZONE=``/``TIMEZONE=`` in
  ``/etc/sysconfig/clock`` (Red Hat / SUSE), ``TZ`` in ``/etc/environment``
  and in PID 1's environment (only that key is read);
* ``timedatectl`` only as an extra witness, when systemd runs and it answers.

The stages of :mod:`hostcheck_check`'s protocol:

:func:`read`
    the only stage that touches files, processes or the service manager.
    Every source, the bytes of every zone any source names, the texts of
    the files the remedy rewrites, the running time-caching daemons and
    their units' main PIDs: one read per run. Every ``/etc`` file is read
    through :func:`hostcheck_files.read_regular` (non-blocking, regular
    files only, bounded), so a FIFO is a source error, never a hang.
    ``quick`` (the grain): no process scan, no subprocess, and a copied
    ``/etc/localtime`` is compared only with the named and canonical zones.
:func:`analyse`, :func:`summarise`, :func:`plan`
    pure: plain data in, findings or the planned changes out.
:func:`apply`, :func:`verify`
    writes (atomic, owner and mode kept, all or none: a failed write rolls
    back the files already written), restarts through
    :mod:`hostcheck_service`, waits through :mod:`hostcheck_reaper`.

Zone names: plain path components under the zoneinfo directory naming a
valid TZif regular file, reached without passing through ``/etc`` (on
Debian ``zoneinfo/localtime`` is a symlink to ``/etc/localtime``: pinning
it would make a loop). ``posix/X`` is the same data as ``X`` and is read as
``X`` everywhere; ``right/...`` (leap-second clocks), ``posixrules``,
``Factory`` and ``localtime`` are refused as zones to pin.

Staleness: a time-caching daemon (cron, crond, rsyslogd, atd,
systemd-timedated by default) is stale when its process started before the
last change of ``/etc/localtime`` or ``/etc/timezone``. A process start time
(clock ticks after boot) and a file's mtime/ctime do not share one clock
precisely, so a process counts as stale only when it started more than
:data:`CLOCK_SKEW` seconds before the change: a daemon restarted right after
the files were written is never judged stale.

Runtime dependencies: the Python standard library only.
"""

import os
import re
import stat as stat_mod
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_files
import hostcheck_ident
import hostcheck_proc
import hostcheck_reaper
import hostcheck_service

NAME = "timezone"
REMEDY = "timezone_pinned"
#: systemd-timedated is on the list because it caches the zone it read at
#: start: until it is restarted (or exits idle) ``timedatectl`` - and so
#: Salt's ``timezone.get_zone`` - reports the old zone.
DEFAULT_DAEMONS = ("cron", "crond", "rsyslogd", "atd", "systemd-timedated")
#: Seconds of tolerance between a process start time and a file time.
CLOCK_SKEW = 1.5
#: TZif files are small (the largest in tzdata is a few KiB; with leap
#: seconds under 10 KiB); anything above this is not a zone file.
MAX_TZIF = 256 * 1024
#: size limit of /etc/timezone, /etc/sysconfig/clock, /etc/environment
TEXT_LIMIT = 64 * 1024
MAX_NAME = 255
#: symlinks followed at most while resolving a zone name (as the kernel's 40)
MAX_LINKS = 40

LOCALTIME = "localtime"
SOURCE_LABELS = {
    "localtime": "/etc/localtime",
    "timezone": "/etc/timezone",
    "sysconfig": "/etc/sysconfig/clock",
    "environment": "TZ in /etc/environment",
    "pid1": "TZ of PID 1",
    "timedatectl": "timedatectl",
}
#: the files the remedy may rewrite, in write order, relative to the /etc root
FILES = (("localtime", "localtime"), ("timezone", "timezone"),
         ("sysconfig", os.path.join("sysconfig", "clock")), ("environment", "environment"))
_NAME_COMPONENT = re.compile(r"^[A-Za-z0-9._+-]+$")
_TZ_CHARS = re.compile(r"^[A-Za-z0-9._+\-/:<>,]{1,256}$")
_POSIX_TZ = re.compile(r"^(<[^>]+>|[A-Za-z]{3,})[+-]?[0-9]")


class ZoneError(hostcheck_config.ConfigError):
    """A zone name or zone file that must not be used; the message says why."""


def _why(exc):
    return exc.strerror or str(exc)


def _stamp(st):
    return max(st.st_mtime, st.st_ctime)


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


# --------------------------------------------------------------------------
# zone names (pure) and zone files (read)


def is_tzif(data):
    """True when ``data`` looks like a complete TZif file (RFC 8536 header)."""
    if not isinstance(data, bytes) or len(data) < 44 or data[:4] != b"TZif":
        return False
    if data[4:5] not in (b"\0", b"2", b"3", b"4"):
        return False
    counts = [int.from_bytes(data[20 + 4 * i : 24 + 4 * i], "big") for i in range(6)]
    isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt = counts
    if typecnt == 0 or charcnt == 0:
        return False
    body = timecnt * 5 + typecnt * 6 + charcnt + leapcnt * 8 + isstdcnt + isutcnt
    return len(data) >= 44 + body


def name_error(name):
    """Why ``name`` is not shaped like a zone name (plain path components of
    letters, digits and ``._+-``), or ``None``. Pure."""
    if not isinstance(name, str):
        return "must be a string, got {} {!r}".format(type(name).__name__, name)
    if not name.strip():
        return "is empty"
    if len(name) > MAX_NAME:
        return "is longer than {} characters".format(MAX_NAME)
    if name.startswith("/"):
        return "is an absolute path, not a zone name"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' path component"
        if not _NAME_COMPONENT.match(part):
            return "has characters not allowed in a zone name"
    return None


def normalise(zone):
    """``posix/X`` -> ``X``: tzdata's ``posix/`` tree is the same data. Pure."""
    while zone.startswith("posix/"):
        zone = zone[len("posix/"):]
    return zone


def refusal(zone, pin=True):
    """Why ``zone`` (normalised) is not a zone to pin (``pin``) or to name at
    all, or ``None``. Pure."""
    if zone == LOCALTIME:
        return "is the host's own /etc/localtime, not a zone"
    if not pin:
        return None
    if zone.split("/", 1)[0] == "right":
        return ("is a leap-second zone: its clock counts leap seconds, POSIX time does not "
                "(pin {} instead)".format(zone[len("right/"):] or "a zone"))
    if zone == "posixrules":
        return "is the rule template for POSIX TZ strings, not a zone"
    if zone == "Factory":
        return "is tzdata's placeholder for 'no zone set' (-00), not a zone"
    return None


def _under(path, base):
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _resolve(base, parts):
    """``(real path, [symlinks passed])`` of ``base``/``parts``, resolving one
    component at a time (so every link on the way is seen)."""
    resolved, todo, links = base, list(parts), []
    while todo:
        comp = todo.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            resolved = os.path.dirname(resolved) or os.sep
            continue
        cand = os.path.join(resolved, comp)
        try:
            target = os.readlink(cand)
        except OSError:  # not a symlink, or missing: the final checks say which
            resolved = cand
            continue
        links.append(cand)
        if len(links) > MAX_LINKS:
            raise ZoneError("symlink loop at {}".format(cand))
        todo = target.split("/") + todo
        if target.startswith("/"):
            resolved = os.sep
    return resolved, links


def _zone_file(zone, zoneinfo, etc_root):
    """The real path of ``zone``'s file: inside ``zoneinfo``, never through ``etc_root``."""
    base = os.path.realpath(zoneinfo)
    real, links = _resolve(base, zone.split("/"))
    etc = os.path.realpath(etc_root) if etc_root else None
    for link in links:
        if etc and _under(link, etc) and not _under(link, base):
            raise ZoneError("zone {!r} resolves through {} ({})".format(zone, etc_root, link))
    if real == base:
        raise ZoneError("zone {!r} is a directory in {}".format(zone, zoneinfo))
    if not _under(real, base):
        raise ZoneError("zone {!r} resolves outside {} ({})".format(zone, zoneinfo, real))
    return real


def _zone_bytes(zone, real, zoneinfo):
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        raise ZoneError("unknown zone {!r}: no {}".format(zone, os.path.join(zoneinfo, zone))) from None
    except OSError as exc:
        raise ZoneError("cannot read zone {!r}: {}".format(zone, _why(exc))) from None
    if stat_mod.S_ISDIR(st.st_mode):
        raise ZoneError("zone {!r} is a directory in {}".format(zone, zoneinfo))
    try:
        text = hostcheck_files.read_regular(real, MAX_TZIF, follow=False)
    except OSError as exc:
        raise ZoneError("cannot read zone {!r}: {}".format(zone, _why(exc))) from None
    if text is None or not is_tzif(text.data):
        raise ZoneError("{} is not a valid TZif zone file".format(os.path.join(zoneinfo, zone)))
    return text.data


def validate_zone(name, zoneinfo, etc_root=None, pin=False):
    """``(zone, path, data)`` of the zone ``name`` names; raises :class:`ZoneError`.

    ``zone`` is the normalised name (``posix/`` dropped), ``path`` its file
    under ``zoneinfo`` and ``data`` its bytes: a regular file, valid TZif,
    reached without leaving ``zoneinfo`` or passing through ``etc_root``.
    ``pin``: also refuse what :func:`refusal` refuses.
    """
    why = name_error(name)
    if why:
        raise ZoneError("zone {}{}".format("{!r} ".format(name) if isinstance(name, str) else "", why))
    zone = normalise(name)
    why = refusal(zone, pin)
    if why:
        raise ZoneError("zone {!r} {}".format(name, why))
    real = _zone_file(zone, zoneinfo, etc_root)
    return zone, os.path.join(zoneinfo, zone), _zone_bytes(zone, real, zoneinfo)


class Zones:
    """The zone files of one zoneinfo directory, each read at most once:
    ``data`` maps every zone loaded to its bytes."""

    def __init__(self, zoneinfo, etc_root):
        self.zoneinfo = zoneinfo
        self.etc_root = etc_root
        self.data = {}
        self._seen = {}  # name -> zone or ZoneError

    def load(self, name):
        """The normalised zone ``name`` names (its bytes kept); raises :class:`ZoneError`."""
        if name not in self._seen:
            try:
                zone, _, data = validate_zone(name, self.zoneinfo, self.etc_root)
                self.data[zone] = data
                self._seen[name] = zone
            except ZoneError as exc:
                self._seen[name] = exc
        found = self._seen[name]
        if isinstance(found, ZoneError):
            raise found
        return found


def zone_from_link(target, etc_root="/etc"):
    """The zone a symlink target names (``.../zoneinfo/Asia/Shanghai`` ->
    ``Asia/Shanghai``; ``posix/`` dropped), or ``None``. Pure."""
    norm = os.path.normpath(os.path.join(etc_root, target))
    idx = norm.rfind("/zoneinfo/")
    if idx < 0:
        return None
    return normalise(norm[idx + len("/zoneinfo/"):]) or None


def canonical_zones(zoneinfo):
    """Zone names listed in ``zone1970.tab`` / ``zone.tab`` (canonical, not aliases)."""
    names = {}  # ordered set
    for tab in ("zone1970.tab", "zone.tab"):
        try:
            text = hostcheck_files.read_regular(os.path.join(zoneinfo, tab))
        except OSError:
            text = None
        for line in text.text().splitlines() if text else ():
            fields = line.split("\t", 3)
            if not line.startswith("#") and len(fields) >= 3 and not name_error(fields[2]):
                names.setdefault(fields[2], None)
    for extra in ("Etc/UTC", "UTC"):
        names.setdefault(extra, None)
    return list(names)


def all_zones(zoneinfo):
    """Every zone file name under ``zoneinfo`` (sorted), as Salt's walk sees
    them but without the ``posix/`` and ``right/`` copies."""
    out = []
    for root, dirs, files in os.walk(zoneinfo):
        rel = os.path.relpath(root, zoneinfo)
        if rel == ".":
            dirs[:] = [d for d in dirs if d[:1].isupper()]
            rel = ""
        for name in files:
            if name[:1].isupper():
                out.append(os.path.join(rel, name) if rel else name)
    return sorted(out)


def identical_zones(data, zoneinfo, names):
    """Names among ``names`` whose file has exactly ``data``."""
    out = []
    for name in names:
        path = os.path.join(zoneinfo, name)
        try:
            if os.stat(path).st_size != len(data):
                continue
            text = hostcheck_files.read_regular(path, MAX_TZIF)
        except OSError:
            continue
        if text is not None and text.data == data:
            out.append(name)
    return out


def _prefer(names, canonical):
    """The best single name for a set of identical zones: a canonical one first. Pure."""
    for name in canonical:
        if name in names:
            return name
    return sorted(names, key=lambda n: ("/" not in n, n))[0] if names else None


# --------------------------------------------------------------------------
# parsing the files (pure)


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def parse_etc_timezone(text):
    """``/etc/timezone``: the only non-comment line; ``(value, error)``."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    if not lines:
        return None, "empty"
    if len(lines) > 1 or len(lines[0].split()) > 1:
        return None, "more than one value"
    return lines[0], None


def parse_assignments(text, keys):
    """Last ``KEY=value`` of ``keys`` in a shell-like file (``export`` and quotes allowed)."""
    found = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip() in keys:
            found = _unquote(value.split("#", 1)[0] if not value.strip().startswith(("'", '"')) else value)
    return found


def set_assignment(text, keys, key, value):
    """Replace the value of the last ``key=`` line (one of ``keys``), keeping the
    quoting style; append ``key="value"`` when there is none."""
    lines = text.splitlines(True)
    last = None
    for idx, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        body = stripped[len("export "):].strip() if stripped.startswith("export ") else stripped
        name, sep, _ = body.partition("=")
        if sep and name.strip() in keys:
            last = idx
    if last is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append('{}="{}"\n'.format(key, value))
        return "".join(lines)
    head, _, old = lines[last].partition("=")
    old = old.rstrip("\n")
    quote = old.strip()[:1] if old.strip()[:1] in ("'", '"') else ""
    lines[last] = "{}={}{}{}\n".format(head, quote, value, quote)
    return "".join(lines)


def _tz_value(value, etc_root):
    """Zone name of a ``TZ`` value (``:Area/City`` / ``Area/City`` / a zoneinfo
    path), ``"localtime"`` for ``:/etc/localtime``, else ``None``."""
    value = value[1:] if value.startswith(":") else value
    if value.startswith("/"):
        return LOCALTIME if value == "/etc/localtime" else zone_from_link(value, etc_root)
    return value


# --------------------------------------------------------------------------
# read: every source, the zones they name, the daemons


def _source(which, value=None, zone=None, error=None, **extra):
    src = {"source": SOURCE_LABELS[which], "value": value, "zone": zone, "error": error}
    src.update(extra)
    return src


def _named(which, value, zones, **extra):
    """A source whose ``value`` names a zone; never echoes what is not shaped
    like a zone name."""
    why = name_error(value)
    if why:
        return _source(which, error="does not name a zone ({})".format(why), **extra)
    try:
        return _source(which, value=value, zone=zones.load(value), **extra)
    except ZoneError as exc:
        return _source(which, value=value, error=str(exc), **extra)


def _tz_source(which, value, zones, etc_root):
    """A ``TZ`` value as a source (PID 1's, ``/etc/environment``'s)."""
    if not _TZ_CHARS.match(value):
        return _source(which, error="does not name a zone")
    zone = _tz_value(value, etc_root)
    if zone == LOCALTIME:
        return _source(which, value=value, follows_localtime=True)
    if zone is None:
        return _source(which, value=value, error="a POSIX TZ string, not a zone name")
    src = _named(which, zone, zones, raw=value)
    if src["error"] and _POSIX_TZ.match(zone):
        return _source(which, value=value, error="a POSIX TZ string, not a zone name")
    return src


def _read(path):
    """``(Text or None, reason or None)`` of a small /etc file."""
    try:
        return hostcheck_files.read_regular(path, TEXT_LIMIT), None
    except OSError as exc:
        return None, _why(exc)


class Facts:
    """What :func:`read` collected, plain data: ``sources`` (``{kind: dict}``),
    ``zones`` (bytes of every zone a source names), ``localtime_data``,
    ``changed_at``, ``canonical``, ``texts`` (what the remedy rewrites),
    ``unsafe`` (``{kind: why}`` of files never to be replaced), ``debian``,
    ``paths``, ``running`` and ``units`` (daemons and their units' main PIDs),
    ``notes``."""

    __slots__ = ("sources", "zones", "localtime_data", "changed_at", "canonical", "texts", "unsafe",
                 "debian", "paths", "zoneinfo", "running", "units", "notes")

    def __init__(self, paths, zoneinfo):
        self.paths = paths
        self.zoneinfo = zoneinfo
        self.sources, self.zones, self.texts, self.unsafe = {}, {}, {}, {}
        self.localtime_data = self.changed_at = self.units = None
        self.canonical, self.running, self.notes = [], [], []
        self.debian = False


def _localtime_link(path, zones, etc_root):
    try:
        target = os.readlink(path)
    except OSError as exc:
        return _source("localtime", kind="unreadable", error=_why(exc)), None
    zone = zone_from_link(target, etc_root)
    if zone is None:
        return _source("localtime", value=target, kind="symlink",
                       error="symlink does not point into a zoneinfo directory"), None
    try:
        zone = zones.load(zone)
    except ZoneError as exc:
        return _source("localtime", value=target, kind="symlink", error=str(exc)), None
    return (_source("localtime", value=target, zone=zone, kind="symlink",
                    relative=not target.startswith("/")), zones.data[zone])


def _localtime_copy(facts, path):
    try:
        text = hostcheck_files.read_regular(path, MAX_TZIF, follow=False)
    except OSError as exc:
        facts.unsafe["localtime"] = _why(exc)
        return _source("localtime", kind="copy", error=_why(exc)), None
    if text is None or not is_tzif(text.data):
        return _source("localtime", kind="copy", error="not a valid TZif file"), None
    return _source("localtime", kind="copy", identical_to=[]), text.data


def read_localtime(facts, zones, etc_root):
    """The ``/etc/localtime`` source, its zone bytes and its time."""
    path = facts.paths["localtime"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _source("localtime", kind="missing", error="missing: glibc falls back to UTC"), None, None
    except OSError as exc:
        facts.unsafe["localtime"] = _why(exc)
        return _source("localtime", kind="unreadable", error=_why(exc)), None, None
    if stat_mod.S_ISLNK(st.st_mode):
        return _localtime_link(path, zones, etc_root) + (_stamp(st),)
    if not stat_mod.S_ISREG(st.st_mode):
        facts.unsafe["localtime"] = "is neither a symlink nor a regular file"
        return _source("localtime", kind="other", error="neither a symlink nor a regular file"), None, _stamp(st)
    return _localtime_copy(facts, path) + (_stamp(st),)


def read_etc_timezone(facts, zones):
    """The ``/etc/timezone`` source (or ``None``) and its time. A value is
    shown only when it is shaped like a zone name, and never from a symlink
    to a file not everyone may read (``/etc/timezone -> /etc/shadow``)."""
    text, why = _read(facts.paths["timezone"])
    if why:
        facts.unsafe["timezone"] = why
        return _source("timezone", error="cannot read: " + why), None
    if text is None:
        return None, None
    if text.link is not None and not text.mode & stat_mod.S_IROTH:
        return _source("timezone", error="a symlink to a file not everyone may read: not shown"), text.stamp
    value, error = parse_etc_timezone(text.text())
    if error:
        return _source("timezone", error=error), text.stamp
    return _named("timezone", value, zones), text.stamp


def read_assignment_file(facts, kind, zones, etc_root):
    """The ``/etc/sysconfig/clock`` (``kind="sysconfig"``) or
    ``/etc/environment`` source, or ``None``; its text kept for the remedy."""
    text, why = _read(facts.paths[kind])
    if why:
        facts.unsafe[kind] = why
        return _source(kind, error="cannot read: " + why)
    if text is None:
        return None
    raw = text.data.decode("utf-8", "surrogateescape")
    facts.texts[kind] = raw
    if kind == "environment":
        value = parse_assignments(raw, ("TZ",))
        return None if value is None else _tz_source(kind, value, zones, etc_root)
    value = parse_assignments(raw, ("ZONE", "TIMEZONE"))
    return _source(kind, error="no ZONE= line") if value is None else _named(kind, value, zones)


def read_pid1(facts, zones, proc_root, etc_root):
    """``TZ`` of PID 1 (the only key read from its environment)."""
    raw = hostcheck_proc.read_bytes(os.path.join(proc_root, "1", "environ"))
    if raw is None:
        facts.notes.append("PID 1's environment is not readable here: its TZ was not checked")
        return
    env = hostcheck_proc.extract_environ_keys(raw, keys=(b"TZ",))
    if "TZ" in env:
        facts.sources["pid1"] = _tz_source("pid1", env["TZ"], zones, etc_root)


def read_files(facts, zones, etc_root):
    """Every file source, their times, and whether this is the Debian family."""
    lt, facts.localtime_data, stamp = read_localtime(facts, zones, etc_root)
    facts.sources["localtime"] = lt
    stamps = [stamp]
    src, stamp = read_etc_timezone(facts, zones)
    if src is not None:
        facts.sources["timezone"] = src
        stamps.append(stamp)
    for kind in ("sysconfig", "environment"):
        src = read_assignment_file(facts, kind, zones, etc_root)
        if src is not None:
            facts.sources[kind] = src
    stamps = [s for s in stamps if s is not None]
    facts.changed_at = max(stamps) if stamps else None
    facts.debian = os.path.exists(os.path.join(etc_root, "debian_version")) or os.path.lexists(
        facts.paths["timezone"])


def read_copy(facts, quick):
    """The zones a copied ``/etc/localtime`` is byte-identical to: among the
    named and canonical zones (``quick``), else among every zone."""
    lt = facts.sources["localtime"]
    if lt.get("kind") != "copy" or facts.localtime_data is None:
        return
    facts.canonical = canonical_zones(facts.zoneinfo)
    named = [s["zone"] for s in facts.sources.values() if s.get("zone")]
    names = list(dict.fromkeys(named + facts.canonical)) if quick else all_zones(facts.zoneinfo)
    lt["identical_to"] = identical_zones(facts.localtime_data, facts.zoneinfo, names)


def precise_boot_time(proc_root="/proc"):
    """Boot time from ``/proc/uptime`` (10 ms resolution; ``btime`` is whole seconds)."""
    raw = hostcheck_proc.read_bytes(os.path.join(proc_root, "uptime"))
    try:
        return time.time() - float(raw.split()[0])
    except (AttributeError, ValueError, IndexError):
        return None


def daemon_processes(snap, daemons, boot=None):
    """Running time-caching daemons: ``[{program, pid, starttime, started_at, unit}]``.

    Identified by program (executable and arguments, :mod:`hostcheck_ident`),
    never by comm; a shell script named like a daemon is not that daemon.
    Only the top of each daemon's tree counts (cron's per-job children are
    the job's, not the daemon). A native binary of another name is ruled
    out by its executable alone (no command line read).
    """
    boot = boot if boot is not None else snap.boot_time
    wanted = set(daemons)
    maybe = wanted | {None}  # native_name None: the arguments name it
    programs = {}
    for proc in snap.user_procs:
        if proc.pid == 1 or hostcheck_ident.native_name(proc.exe) not in maybe:
            continue
        prog = proc.program
        if prog is not None and prog.name in wanted and hostcheck_ident.is_daemon(prog, prog.name):
            programs[proc.pid] = prog.name
    out = []
    for pid, prog in sorted(programs.items()):
        proc = snap.procs[pid]
        if programs.get(proc.ppid) == prog:
            continue
        started = boot + proc.starttime / float(snap.clk_tck) if boot is not None else None
        out.append({"program": prog, "pid": pid, "starttime": proc.starttime,
                    "started_at": started, "unit": hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]})
    return out


def read_daemons(facts, host, daemons):
    """The running daemons and, when systemd runs, their units' ``MainPID``."""
    facts.running = daemon_processes(host.snapshot(), daemons, boot=precise_boot_time(host.proc_root))
    names = sorted({d["unit"] for d in facts.running if d["unit"]})
    if names and hostcheck_service.systemd_running(host.run_root):
        facts.units = hostcheck_service.show(names, ("MainPID",), run_root=host.run_root)


def read(host, opts, quick=False):
    """Every source of the zone, the bytes of every zone they name, the texts
    the remedy rewrites and (unless ``quick``) the witness and the daemons."""
    paths = {kind: os.path.join(host.etc_root, rel) for kind, rel in FILES}
    facts = Facts(paths, host.zoneinfo)
    zones = Zones(host.zoneinfo, host.etc_root)
    read_files(facts, zones, host.etc_root)
    read_pid1(facts, zones, host.proc_root, host.etc_root)
    if not quick:
        value = hostcheck_service.timedatectl_zone(host.run_root)
        if value is not None:
            facts.sources["timedatectl"] = _named("timedatectl", value, zones)
        read_daemons(facts, host, opts["daemons"])
    read_copy(facts, quick)
    try:
        zones.load("UTC")  # glibc's fallback, compared when /etc/localtime is unusable
    except ZoneError:
        pass
    facts.zones = dict(zones.data)
    return facts


# --------------------------------------------------------------------------
# analyse (pure)


def public_sources(facts):
    """Copies of the sources, a copied ``/etc/localtime`` given its best name:
    one another source uses, else a canonical one."""
    sources = {kind: dict(src) for kind, src in facts.sources.items()}
    lt = sources["localtime"]
    if lt.get("kind") == "copy" and facts.localtime_data is not None:
        same = list(lt.get("identical_to") or [])
        lt["identical_to"] = same
        named = [s["zone"] for k, s in sources.items() if k != "localtime" and s.get("zone")]
        preferred = [z for z in named if z in same]
        lt["zone"] = preferred[0] if preferred else _prefer(same, facts.canonical)
        if not same:
            lt["error"] = "a TZif file identical to no zone in {}".format(facts.zoneinfo)
    return sources


def _zone_data(sources, facts):
    data = dict(facts.zones)
    zone = sources["localtime"].get("zone")
    if zone and facts.localtime_data is not None:
        data.setdefault(zone, facts.localtime_data)
    return data


def _named_sources(sources):
    """``(named, conflicts)``: ``[(label, zone)]`` of the sources that count and
    the errors of those that cannot."""
    named, conflicts = [], []
    for kind, src in sources.items():
        if src.get("follows_localtime") or kind == "timedatectl":
            continue  # timedatectl is a witness (see witness_note), not a source
        if src.get("kind") == "missing":
            # not a source, but glibc's fallback: a named zone must agree with UTC
            named.append(("/etc/localtime (missing, so UTC)", "UTC"))
        elif src.get("error"):
            conflicts.append("{}: {}".format(src["source"], src["error"]))
        else:
            named.append((src["source"], src["zone"]))
    return named, conflicts


def compare(sources, data):
    """``(zone, consistent, agreement, conflicts)``. ``data``: zone bytes.

    ``zone`` is the effective zone (what glibc uses for a process without
    ``TZ``): ``/etc/localtime``'s, or ``UTC`` when it is missing or unusable.
    Sources agree when they name the same zone or byte-identical zones.
    """
    lt = sources["localtime"]
    effective = lt.get("zone") or "UTC"
    named, conflicts = _named_sources(sources)
    aliases = set()
    base_label, base_zone = named[0] if named else (None, None)
    for label, zone in named[1:]:
        if zone == base_zone:
            continue
        if data.get(zone) is not None and data.get(zone) == data.get(base_zone):
            aliases.update((zone, base_zone))
            continue
        conflicts.append("{} says {} but {} says {}".format(base_label, base_zone, label, zone))
    copy_note = ""
    if lt.get("kind") == "copy" and lt.get("zone"):
        copy_note = " (/etc/localtime is a copy, byte-identical to {})".format(
            ", ".join(lt.get("identical_to") or [lt["zone"]]))
    if conflicts:
        agreement = None
    elif aliases:
        agreement = "all sources agree: {} are byte-identical zones{}".format(" and ".join(sorted(aliases)), copy_note)
    else:
        agreement = "all sources name {}{}".format(base_zone or effective, copy_note)
    return effective, not conflicts, agreement, conflicts


def witness_note(sources, data, zone):
    """A note when ``timedatectl`` names a zone whose data differ from ``zone``'s."""
    wit = sources.get("timedatectl")
    if not wit or not wit.get("zone") or wit["zone"] == zone:
        return None
    if data.get(wit["zone"]) is not None and data.get(wit["zone"]) == data.get(zone):
        return None
    return ("timedatectl says {} but the files say {}: systemd-timedated keeps the zone it read "
            "when it started until it is restarted or exits idle".format(wit["zone"], zone))


def is_main(d, units):
    """False for a process inside a known unit that is not the unit's main
    process (a cron job's child re-parented after a restart, say)."""
    return not units or d["unit"] not in units or units[d["unit"]].get("MainPID") in (0, d["pid"])


def stale_daemons(running, changed_at, skew=CLOCK_SKEW, units=None):
    """The daemons in ``running`` that started more than ``skew`` seconds before
    ``changed_at``. With ``units`` (``{unit: {MainPID...}}``), a process inside
    a unit counts only if it is the unit's main process."""
    if changed_at is None:
        return []
    return [d for d in running
            if d["started_at"] is not None and d["started_at"] < changed_at - skew and is_main(d, units)]


def _public(d):
    return {"program": d["program"], "pid": d["pid"], "started": _iso(d["started_at"]), "unit": d["unit"]}


def _findings(sources, zone, conflicts, stale, changed_at):
    findings = []
    if conflicts:
        findings.append(hostcheck_check.finding(
            NAME, "zone-conflict", "critical", "timezone sources disagree: " + "; ".join(conflicts),
            zone=zone, conflicts=conflicts))
    if sources["localtime"].get("kind") == "missing":
        findings.append(hostcheck_check.finding(
            NAME, "localtime-missing", "warning", "/etc/localtime is missing: programs use UTC"))
    for d in stale:
        findings.append(hostcheck_check.finding(
            NAME, "stale-daemon", "warning",
            "{} (PID {}, started {}) started before the zone files changed at {}: "
            "it still runs with the old zone".format(d["program"], d["pid"], _iso(d["started_at"]), _iso(changed_at)),
            pids=[d["pid"]], program=d["program"], unit=d["unit"], started=_iso(d["started_at"])))
    return findings


def analyse(facts, opts):  # pylint: disable=unused-argument
    """The judgement of :func:`read`'s facts, as a :class:`hostcheck_check.Diagnosis`. Pure."""
    sources = public_sources(facts)
    data = _zone_data(sources, facts)
    zone, consistent, agreement, conflicts = compare(sources, data)
    stale = stale_daemons(facts.running, facts.changed_at, units=facts.units)
    notes = list(facts.notes)
    note = witness_note(sources, data, zone)
    if note:
        notes.append(note)
    details = {"zone": zone, "consistent": consistent, "agreement": agreement, "conflicts": conflicts,
               "sources": sources, "stale": [_public(d) for d in stale], "changed": _iso(facts.changed_at)}
    return hostcheck_check.Diagnosis(NAME, _findings(sources, zone, conflicts, stale, facts.changed_at),
                                     notes, details, facts)


def summarise(diag):
    """The grain entry: ``{zone, consistent}``."""
    return {"zone": diag.details["zone"], "consistent": diag.details["consistent"]}


validate_daemons = hostcheck_config.string_list(
    DEFAULT_DAEMONS, what="a list of program names",
    check=lambda name: "is a path, not a program name" if "/" in name else None)
OPTIONS = {"daemons": validate_daemons}


# --------------------------------------------------------------------------
# the remedy: timezone_pinned (validate, plan: pure)

REMEDY_ARGS = {
    "copy": hostcheck_config.boolean(False),
    "timeout": hostcheck_config.seconds(30),
}
CONFIG_KEYS = ()


def validate_remedy(name, args, host):
    """The zone is the state's ``name``: validated as a zone to pin, stored as
    ``args["zone"]`` (normalised), ``args["zone_data"]`` (its bytes) and
    ``args["zone_link"]`` (the relative symlink target from the /etc root)."""
    zone, path, data = validate_zone(name, host.zoneinfo, host.etc_root, pin=True)
    args["zone"] = zone
    args["zone_data"] = data
    args["zone_link"] = os.path.relpath(path, host.etc_root)


def _old(lt):
    if lt.get("kind") == "symlink":
        return lt.get("value")
    return "copy of {}".format(lt.get("zone")) if lt.get("kind") == "copy" else lt.get("kind")


def _item(facts, kind, old, new, action="write", data=None):
    return {"kind": kind, "path": facts.paths[kind], "action": action, "old": old, "new": new, "data": data}


def _localtime_item(lt, facts, args):
    if args["copy"]:
        if lt.get("kind") == "copy" and facts.localtime_data == args["zone_data"]:
            return None
        return _item(facts, "localtime", _old(lt), "copy of {}".format(args["zone"]), "copy", args["zone_data"])
    if lt.get("kind") == "symlink" and lt.get("zone") == args["zone"] and not lt.get("error"):
        return None  # an absolute link to the same zone is fine: no churn
    return _item(facts, "localtime", _old(lt), args["zone_link"], "symlink")


def _differs(src, zone):
    return src is not None and (src.get("zone") != zone or bool(src.get("error")))


def _timezone_item(src, facts, zone):
    if not facts.debian or (src is not None and not _differs(src, zone)):
        return None
    return _item(facts, "timezone", src.get("value") if src else None, zone, data=(zone + "\n").encode())


def _assignment_item(kind, src, facts, zone):
    if not _differs(src, zone) or src.get("follows_localtime"):
        return None
    text = facts.texts.get(kind)
    if text is None:
        return _item(facts, kind, src.get("value"), zone)  # unreadable: refused by the plan
    if kind == "environment":
        new = set_assignment(text, ("TZ",), "TZ", zone)
    else:
        key = "TIMEZONE" if re.search(r"^\s*TIMEZONE=", text, re.M) else "ZONE"
        new = set_assignment(text, ("ZONE", "TIMEZONE"), key, zone)
    return _item(facts, kind, src.get("value"), zone, data=new.encode("utf-8", "surrogateescape"))


def file_items(diag, args):
    """``(items, refused)``: the file changes that make every source name the
    zone, and why some of them must not be made (a FIFO, an unreadable file)."""
    facts, sources, zone = diag.facts, diag.details["sources"], args["zone"]
    items = [_localtime_item(sources["localtime"], facts, args),
             _timezone_item(sources.get("timezone"), facts, zone),
             _assignment_item("sysconfig", sources.get("sysconfig"), facts, zone),
             _assignment_item("environment", sources.get("environment"), facts, zone)]
    items = [it for it in items if it]
    refused = ["{}: {}".format(it["path"], facts.unsafe[it["kind"]]) for it in items if facts.unsafe.get(it["kind"])]
    return items, refused


def restart_targets(diag, writes):
    """``(by_unit, manual)``: after a write every running daemon holds the old
    zone, else only the stale ones; ``by_unit`` those systemd restarts
    (``{unit: [daemon]}``, each the unit's main process), ``manual`` the rest."""
    facts = diag.facts
    if writes:
        targets = [d for d in facts.running if is_main(d, facts.units)]
    else:
        targets = stale_daemons(facts.running, facts.changed_at, units=facts.units)
    by_unit, manual = {}, []
    for d in targets:
        if facts.units and d["unit"] in facts.units and facts.units[d["unit"]].get("MainPID") == d["pid"]:
            by_unit.setdefault(d["unit"], []).append(d)
        else:
            manual.append(d)
    return by_unit, manual


def _plan_problems(diag, manual, zone):
    problems = []
    if manual:
        problems.append("not restarted (no systemd unit to restart it with; restart by hand): "
                        + ", ".join("{} PID {}".format(d["program"], d["pid"]) for d in manual))
    pid1 = diag.details["sources"].get("pid1")
    if pid1 and not pid1.get("follows_localtime") and pid1.get("zone") != zone:
        problems.append("PID 1 runs with TZ={} (inherited by what it starts); that changes only "
                        "with a reboot".format(pid1.get("value")))
    return problems


def _planned_changes(items, by_unit):
    changes = {}
    if items:
        changes["files"] = {it["path"]: {"old": it["old"], "new": it["new"]} for it in items}
    if by_unit:
        changes["restarted"] = [{"unit": unit, "program": ds[0]["program"], "old_pid": ds[0]["pid"], "new_pid": None}
                                for unit, ds in sorted(by_unit.items())]
    return changes


def plan(diag, args):
    """The files to write and the units to restart, from the diagnosis alone. Pure."""
    zone = args["zone"]
    items, refused = file_items(diag, args)
    if refused:
        return hostcheck_check.Plan(problems=["Timezone {} not pinned, nothing done: cannot replace {}".format(
            zone, "; ".join(refused))])
    by_unit, manual = restart_targets(diag, bool(items))
    problems = _plan_problems(diag, manual, zone)
    changes = _planned_changes(items, by_unit)
    preview = ["Would pin timezone {}".format(zone)]
    preview += ["  {}: {} -> {}".format(it["path"], it["old"], it["new"]) for it in items]
    preview += ["  restart {} (PID {})".format(r["unit"], r["old_pid"]) for r in changes.get("restarted", ())]
    idle = "Timezone {}{}: every source agrees and no daemon is stale".format(zone, "" if problems else " is pinned")
    return hostcheck_check.Plan(changes, {"files": items, "units": by_unit, "failed_units": []},
                                problems, preview=preview, idle=idle)


# --------------------------------------------------------------------------
# the remedy: apply, verify


def write_item(item):
    """Replace one file as planned (atomic, owner and mode kept)."""
    if item["action"] == "symlink":
        hostcheck_files.atomic_symlink(item["new"], item["path"])
    else:
        hostcheck_files.atomic_write(item["path"], item["data"])


def _same(snap):
    """True when ``snap.path`` still holds what ``snap`` saw."""
    try:
        now = hostcheck_files.Snapshot(snap.path)
    except OSError:
        return False
    return (now.kind, now.value) == (snap.kind, snap.value)


def _roll_back(done, res):
    for item, snap in reversed(done):
        try:
            snap.restore()
            res["rolled_back"].append(item)
        except OSError as exc:
            res["unrestored"].append((item, exc))


def write_files(items):
    """Write ``items`` all or none: a snapshot of each first; when a write
    fails, the files already written are restored. Returns ``{"written",
    "rolled_back", "unrestored": [(item, exc)], "failed": (item, exc) or
    None, "skipped", "unsaved": (item, exc) or None}``."""
    res = {"written": [], "rolled_back": [], "unrestored": [], "failed": None, "skipped": [], "unsaved": None}
    snaps = []
    for item in items:
        try:
            snaps.append(hostcheck_files.Snapshot(item["path"]))
        except OSError as exc:
            res["unsaved"] = (item, exc)
            return res
    for idx, (item, snap) in enumerate(zip(items, snaps)):
        try:
            write_item(item)
        except OSError as exc:
            res["failed"], res["skipped"] = (item, exc), items[idx + 1:]
            done = list(zip(items[:idx], snaps[:idx]))
            if not _same(snap):  # replaced, then an fsync failed: undo it too
                done.append((item, snap))
            _roll_back(done, res)
            return res
        res["written"].append(item)
    return res


def _files_report(zone, res):
    """``(changes, lines, problems)`` of :func:`write_files`'s result: exactly
    the files changed at the end, and what happened to each."""
    changed = res["written"] if res["failed"] is None else [it for it, _ in res["unrestored"]]
    changes = {it["path"]: {"old": it["old"], "new": it["new"]} for it in changed}
    if res["unsaved"]:
        item, exc = res["unsaved"]
        return {}, [], ["Timezone {} not pinned, nothing written: cannot keep {} for a rollback: {}".format(
            zone, item["path"], _why(exc))]
    if res["failed"] is None:
        return changes, ["  {}: {} -> {}".format(it["path"], it["old"], it["new"]) for it in changed], []
    item, exc = res["failed"]
    lines = ["Writing {} failed: {}".format(item["path"], _why(exc))]
    lines += ["Wrote, then rolled back: {}".format(it["path"]) for it in res["rolled_back"]]
    if res["skipped"]:
        lines.append("Not written: " + ", ".join(it["path"] for it in res["skipped"]))
    problems = ["Could not roll back {} ({}): it holds {}".format(it["path"], _why(e), it["new"])
                for it, e in res["unrestored"]]
    problems.append("Timezone {} not pinned: {}".format(zone, "no file is changed" if not changes else
                                                        "changed and not rolled back: " + ", ".join(sorted(changes))))
    return changes, lines, problems


def _unit_result(unit, d, error, survived, new_pid):
    """``(line, problem)`` of one unit's restart."""
    if error:
        return None, "systemctl restart {} failed: {}".format(unit, error)
    if survived:
        return None, "{} PID {} survived its restart and still runs with the old zone".format(d["program"], d["pid"])
    if new_pid is None:
        return None, "{} did not come back after its restart".format(unit)
    return "  restarted {}: PID {} -> {}".format(unit, d["pid"], new_pid), None


def restart_daemons(host, by_unit, timeout, failed):
    """Restart the units (one batched call), wait for the old processes to
    exit, read the new main PIDs. ``(restarted, lines, problems)``; the
    units that failed are appended to ``failed``."""
    units = sorted(by_unit)
    if not units:
        return [], [], []
    errors = hostcheck_service.restart_units(units, timeout=timeout)
    old = [(d["pid"], d["starttime"]) for ds in by_unit.values() for d in ds]
    survivors = {pid for pid, _ in hostcheck_reaper.wait_gone(old, timeout, host.proc_root)}
    mains = hostcheck_service.show(units, ("MainPID",), run_root=host.run_root) or {}
    restarted, lines, problems = [], [], []
    for unit in units:
        d = by_unit[unit][0]
        new_pid = (mains.get(unit) or {}).get("MainPID") or None
        restarted.append({"unit": unit, "program": d["program"], "old_pid": d["pid"], "new_pid": new_pid})
        line, problem = _unit_result(unit, d, errors.get(unit), d["pid"] in survivors, new_pid)
        if line:
            lines.append(line)
        if problem:
            problems.append(problem)
            failed.append(unit)
    return restarted, lines, problems


def apply(host, plan_, args):
    """Write the files (all or none), then restart the daemons."""
    zone = args["zone"]
    res = write_files(plan_.actions["files"])
    files, lines, problems = _files_report(zone, res)
    changes = {"files": files} if files else {}
    if res["failed"] or res["unsaved"]:
        if plan_.actions["units"]:
            lines.append("No daemon was restarted: the zone files were not changed as planned")
        return hostcheck_check.Outcome(changes, lines, problems)
    lines.insert(0, "Pinned timezone {}".format(zone))
    restarted, rlines, rproblems = restart_daemons(host, plan_.actions["units"], args["timeout"],
                                                   plan_.actions["failed_units"])
    if restarted:
        changes["restarted"] = restarted
    return hostcheck_check.Outcome(changes, lines + rlines, problems + rproblems)


def verify(plan_, outcome, after, args):  # pylint: disable=unused-argument
    """Problems the new diagnosis shows: sources that still disagree, another
    effective zone, a restarted daemon still stale."""
    d = after.details
    problems = []
    if not d["consistent"]:
        problems.append("sources still disagree: " + "; ".join(d["conflicts"]))
    elif d["zone"] != args["zone"] and after.facts.localtime_data != args["zone_data"]:
        problems.append("the effective zone is {} after the change".format(d["zone"]))
    units, failed = plan_.actions["units"], plan_.actions["failed_units"]
    still = [s for s in d["stale"] if s["unit"] in units and s["unit"] not in failed]
    if still:
        problems.append("still stale: " + ", ".join("{} PID {}".format(s["program"], s["pid"]) for s in still))
    return problems
