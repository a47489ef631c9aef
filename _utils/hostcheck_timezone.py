"""Timezone consistency: every source of the zone, compared; stale daemons; the pinning writer.

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

Layers, as in every hostcheck check: :func:`read_sources` is the snapshot
(it takes the ``/etc`` root, the zoneinfo directory and the ``/proc`` root as
parameters, so unit tests use fake trees); :func:`analyse` is pure;
:func:`diagnose` joins them; :func:`plan_files` and :func:`write_plan` are
the state's writer (atomic: temp file in the same directory, fsync, rename;
owner and mode kept).

Staleness: a time-caching daemon (cron, crond, rsyslogd, atd by default) is
stale when its process started before the last change of ``/etc/localtime``
or ``/etc/timezone``. A process start time (clock ticks after boot) and a
file's mtime/ctime do not share one clock precisely, so a process counts as
stale only when it started more than :data:`CLOCK_SKEW` seconds before the
change: a daemon restarted right after the files were written is never
judged stale.
"""

import os
import re
import shutil
import stat as stat_mod
import subprocess
import tempfile
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_orphans
import hostcheck_proc
import hostcheck_systemd

CHECK = "timezone"
ZONEINFO = "/usr/share/zoneinfo"
#: systemd-timedated is on the list because it caches the zone it read at
#: start: until it is restarted (or exits idle) ``timedatectl`` - and so
#: Salt's ``timezone.get_zone`` - reports the old zone.
DEFAULT_DAEMONS = ("cron", "crond", "rsyslogd", "atd", "systemd-timedated")
#: Seconds of tolerance between a process start time and a file time.
CLOCK_SKEW = 1.5
#: TZif files are small (the largest in tzdata is a few KiB; with leap
#: seconds under 10 KiB); anything above this is not a zone file.
MAX_TZIF = 256 * 1024

LOCALTIME = "localtime"
SOURCE_LABELS = {
    "localtime": "/etc/localtime",
    "timezone": "/etc/timezone",
    "sysconfig": "/etc/sysconfig/clock",
    "environment": "TZ in /etc/environment",
    "pid1": "TZ of PID 1",
    "timedatectl": "timedatectl",
}
_NAME_COMPONENT = re.compile(r"^[A-Za-z0-9._+-]+$")
_POSIX_TZ = re.compile(r"^(<[^>]+>|[A-Za-z]{3,})[+-]?[0-9]")


class ZoneError(ValueError):
    """A zone name or zone file that must not be used; the message says why."""


class ConfigError(ValueError):
    """Invalid hostcheck:timezone configuration."""


# --------------------------------------------------------------------------
# zone names and files


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


def _read_limited(path):
    """Bytes of a regular file (following links), at most MAX_TZIF + 1."""
    with open(path, "rb") as fp:
        if not stat_mod.S_ISREG(os.fstat(fp.fileno()).st_mode):
            raise ZoneError("{} is not a regular file".format(path))
        return fp.read(MAX_TZIF + 1)


def validate_zone(name, zoneinfo_dir=ZONEINFO):
    """Check a zone name and return ``(path, data)`` of its TZif file.

    Raises :class:`ZoneError` unless ``name`` is a string of plain path
    components (no ``..``, not absolute) naming, inside ``zoneinfo_dir``
    (symlinks may not lead out of it), a regular file that is valid TZif.
    """
    if not isinstance(name, str):
        raise ZoneError("zone must be a string, got {} {!r}".format(type(name).__name__, name))
    if not name.strip():
        raise ZoneError("zone name is empty")
    if name.startswith("/"):
        raise ZoneError("zone {!r} is an absolute path, not a zone name".format(name))
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ZoneError("zone {!r} has an empty, '.' or '..' path component".format(name))
        if not _NAME_COMPONENT.match(part):
            raise ZoneError("zone {!r} has characters not allowed in a zone name".format(name))
    base = os.path.realpath(zoneinfo_dir)
    path = os.path.join(zoneinfo_dir, *parts)
    real = os.path.realpath(path)
    if not real.startswith(base + os.sep):
        raise ZoneError("zone {!r} resolves outside {} ({})".format(name, zoneinfo_dir, real))
    try:
        data = _read_limited(real)
    except FileNotFoundError:
        raise ZoneError("unknown zone {!r}: no {}".format(name, path)) from None
    except IsADirectoryError:
        raise ZoneError("zone {!r} is a directory in {}".format(name, zoneinfo_dir)) from None
    except OSError as exc:
        raise ZoneError("cannot read zone {!r}: {}".format(name, exc)) from None
    if not is_tzif(data):
        raise ZoneError("{} is not a valid TZif zone file".format(path))
    return path, data


def zone_from_link(target):
    """The zone a symlink target names (``.../zoneinfo/Asia/Shanghai`` ->
    ``Asia/Shanghai``; ``posix/`` prefixes dropped), or ``None``."""
    norm = os.path.normpath(os.path.join("/etc", target))
    idx = norm.rfind("/zoneinfo/")
    if idx < 0:
        return None
    zone = norm[idx + len("/zoneinfo/") :]
    if zone.startswith("posix/"):
        zone = zone[len("posix/") :]
    return zone or None


def canonical_zones(zoneinfo_dir=ZONEINFO):
    """Zone names listed in ``zone1970.tab`` / ``zone.tab`` (canonical, not aliases)."""
    names = {}  # ordered set
    for tab in ("zone1970.tab", "zone.tab"):
        raw = hostcheck_proc.read_bytes(os.path.join(zoneinfo_dir, tab))
        if not raw:
            continue
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.startswith("#"):
                continue
            fields = line.split("\t", 3)
            if len(fields) >= 3:
                names.setdefault(fields[2], None)
    for extra in ("Etc/UTC", "UTC"):
        names.setdefault(extra, None)
    return list(names)


def all_zones(zoneinfo_dir=ZONEINFO):
    """Every zone file name under ``zoneinfo_dir`` (sorted), as Salt's walk sees
    them but without the ``posix/`` and ``right/`` copies."""
    out = []
    for root, dirs, files in os.walk(zoneinfo_dir):
        rel = os.path.relpath(root, zoneinfo_dir)
        if rel == ".":
            dirs[:] = [d for d in dirs if d[:1].isupper()]
            rel = ""
        for name in files:
            if name[:1].isupper():
                out.append(os.path.join(rel, name) if rel else name)
    return sorted(out)


def identical_zones(data, zoneinfo_dir=ZONEINFO, names=None):
    """Names among ``names`` (default: every zone) whose file has exactly ``data``."""
    size = len(data)
    out = []
    for name in names if names is not None else all_zones(zoneinfo_dir):
        path = os.path.join(zoneinfo_dir, name)
        try:
            if os.stat(path).st_size != size:
                continue
            if _read_limited(path) == data:
                out.append(name)
        except (OSError, ZoneError):
            continue
    return out


def _prefer(names, canonical):
    """The best single name for a set of identical zones: a canonical one first."""
    for name in canonical:
        if name in names:
            return name
    return sorted(names, key=lambda n: ("/" not in n, n))[0] if names else None


# --------------------------------------------------------------------------
# snapshot: read every source


def _stamp(st):
    return max(st.st_mtime, st.st_ctime)


def _read_text(path, limit=65536):
    """``(text, stamp)`` of a small text file; ``(None, None)`` if missing,
    ``(OSError, None)`` if unreadable."""
    try:
        with open(path, "rb") as fp:
            st = os.fstat(fp.fileno())
            raw = fp.read(limit)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return exc, None
    return raw.decode("utf-8", "replace"), _stamp(st)


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def parse_etc_timezone(text):
    """``/etc/timezone``: the first non-comment line; ``(value, error)``."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    if not lines:
        return None, "empty"
    if len(lines) > 1 or len(lines[0].split()) > 1:
        return lines[0], "more than one value"
    return lines[0], None


def parse_assignments(text, keys):
    """Last ``KEY=value`` of ``keys`` in a shell-like file (``export`` and quotes allowed)."""
    found = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip() in keys:
            found = _unquote(value.split("#", 1)[0] if not value.strip().startswith(("'", '"')) else value)
    return found


def _tz_value(value):
    """Zone name of a ``TZ`` value (``:Area/City`` / ``Area/City`` / a zoneinfo
    path), ``"localtime"`` for ``:/etc/localtime``, else ``None`` (POSIX string)."""
    value = value[1:] if value.startswith(":") else value
    if value.startswith("/"):
        if value == "/etc/localtime":
            return LOCALTIME
        return zone_from_link(value)
    return value


def _source(which, value=None, zone=None, error=None, **extra):
    src = {"source": SOURCE_LABELS[which], "value": value, "zone": zone, "error": error}
    src.update(extra)
    return src


def _named_source(which, value, error, zoneinfo_dir, **extra):
    """A source that names a zone: validated against zoneinfo."""
    if error is None and value is not None:
        try:
            validate_zone(value, zoneinfo_dir)
        except ZoneError as exc:
            error = str(exc)
    return _source(which, value=value, zone=value if error is None else None, error=error, **extra)


def read_localtime(etc_root="/etc", zoneinfo_dir=ZONEINFO):
    """The ``/etc/localtime`` source plus ``(data, mtime)`` for comparisons."""
    path = os.path.join(etc_root, "localtime")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _source("localtime", kind="missing", error="missing: glibc falls back to UTC"), None, None
    except OSError as exc:
        return _source("localtime", kind="unreadable", error=str(exc)), None, None
    stamp = _stamp(st)
    if stat_mod.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        zone = zone_from_link(target)
        if zone is None:
            return _source("localtime", value=target, kind="symlink",
                           error="symlink does not point into a zoneinfo directory"), None, stamp
        try:
            _, data = validate_zone(zone, zoneinfo_dir)
        except ZoneError as exc:
            return _source("localtime", value=target, kind="symlink", error=str(exc)), None, stamp
        return (_source("localtime", value=target, zone=zone, kind="symlink",
                        relative=not target.startswith("/")), data, stamp)
    if not stat_mod.S_ISREG(st.st_mode):
        return _source("localtime", kind="other", error="neither a symlink nor a regular file"), None, stamp
    try:
        data = _read_limited(path)
    except (OSError, ZoneError) as exc:
        return _source("localtime", kind="copy", error=str(exc)), None, stamp
    if not is_tzif(data):
        return _source("localtime", kind="copy", error="not a valid TZif file"), None, stamp
    return _source("localtime", kind="copy", identical_to=[]), data, stamp


def timedatectl_zone(run_root="/run", timeout=5):
    """Zone ``timedatectl`` reports, or ``None`` when it does not answer."""
    if not hostcheck_systemd.systemd_running(run_root):
        return None
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "show", "-p", "Timezone", "--value"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = proc.stdout.decode("utf-8", "replace").strip()
    return value if proc.returncode == 0 and value and value != "n/a" else None


class Sources:
    """What :func:`read_sources` found: plain data plus the bytes needed to compare."""

    def __init__(self, sources, localtime_data, changed_at, zoneinfo_dir, canonical):
        self.sources = sources  # {kind: source dict}
        self.localtime_data = localtime_data
        self.changed_at = changed_at  # latest mtime/ctime of /etc/localtime, /etc/timezone
        self.zoneinfo_dir = zoneinfo_dir
        self.canonical = canonical


def read_sources(etc_root="/etc", zoneinfo_dir=ZONEINFO, proc_root="/proc", run_root="/run",
                 quick=False, witness=True):
    """Snapshot of every zone source. ``quick`` (the grain): a copied
    ``/etc/localtime`` is matched against the named sources and the
    canonical zones only, never the whole zoneinfo tree; no subprocess."""
    sources = {}
    lt, data, lt_stamp = read_localtime(etc_root, zoneinfo_dir)
    sources["localtime"] = lt
    stamps = [lt_stamp]

    text, stamp = _read_text(os.path.join(etc_root, "timezone"))
    if isinstance(text, OSError):
        sources["timezone"] = _source("timezone", error=str(text))
    elif text is not None:
        value, error = parse_etc_timezone(text)
        sources["timezone"] = _named_source("timezone", value, error, zoneinfo_dir)
        stamps.append(stamp)

    text, _ = _read_text(os.path.join(etc_root, "sysconfig", "clock"))
    if isinstance(text, str):
        value = parse_assignments(text, ("ZONE", "TIMEZONE"))
        sources["sysconfig"] = _named_source(
            "sysconfig", value, "no ZONE= line" if value is None else None, zoneinfo_dir)

    text, _ = _read_text(os.path.join(etc_root, "environment"))
    if isinstance(text, str):
        value = parse_assignments(text, ("TZ",))
        if value is not None:
            sources["environment"] = _tz_source("environment", value, zoneinfo_dir)

    env = hostcheck_proc.extract_environ_keys(
        hostcheck_proc.read_bytes(os.path.join(proc_root, "1", "environ")), keys=(b"TZ",))
    if "TZ" in env:
        sources["pid1"] = _tz_source("pid1", env["TZ"], zoneinfo_dir)

    if witness and not quick:
        value = timedatectl_zone(run_root)
        if value is not None:
            sources["timedatectl"] = _named_source("timedatectl", value, None, zoneinfo_dir)

    canonical = []
    if data is not None and lt["kind"] == "copy":
        canonical = canonical_zones(zoneinfo_dir)
        named = [s["zone"] for s in sources.values() if s.get("zone")]
        if quick:
            same = identical_zones(data, zoneinfo_dir, names=list(dict.fromkeys(named + canonical)))
        else:
            same = identical_zones(data, zoneinfo_dir)
        lt["identical_to"] = same
        preferred = [z for z in named if z in same]
        lt["zone"] = preferred[0] if preferred else _prefer(same, canonical)
        if not same:
            lt["error"] = "a TZif file identical to no zone in {}".format(zoneinfo_dir)
    stamps = [s for s in stamps if s is not None]
    return Sources(sources, data, max(stamps) if stamps else None, zoneinfo_dir, canonical)


def _tz_source(which, value, zoneinfo_dir):
    zone = _tz_value(value)
    if zone == LOCALTIME:
        return _source(which, value=value, zone=None, error=None, follows_localtime=True)
    if zone is None or (_POSIX_TZ.match(zone) and not os.path.isfile(os.path.join(zoneinfo_dir, zone))):
        return _source(which, value=value, error="a POSIX TZ string, not a zone name")
    return _named_source(which, zone, None, zoneinfo_dir, raw=value)


# --------------------------------------------------------------------------
# analysis (pure on the snapshot)


def _zone_bytes(zone, zoneinfo_dir, cache):
    if zone not in cache:
        try:
            cache[zone] = validate_zone(zone, zoneinfo_dir)[1]
        except ZoneError:
            cache[zone] = None
    return cache[zone]


def compare(srcs):
    """``(zone, consistent, agreement, conflicts)`` from a :class:`Sources`.

    ``zone`` is the effective zone (what glibc uses for a process without
    ``TZ``): ``/etc/localtime``'s, or ``UTC`` when it is missing or unusable.
    Sources agree when they name the same zone or byte-identical zones.
    """
    lt = srcs.sources["localtime"]
    effective = lt.get("zone") or "UTC"
    cache = {}
    if srcs.localtime_data is not None and lt.get("zone"):
        cache[lt["zone"]] = srcs.localtime_data
    conflicts = []
    named = []
    for kind, src in srcs.sources.items():
        label = src["source"]
        if src.get("follows_localtime") or kind == "timedatectl":
            continue  # timedatectl is a witness (see witness_note), not a source
        if src.get("kind") == "missing":
            # not a source, but glibc's fallback: a named zone must agree with UTC
            named.append(("/etc/localtime (missing, so UTC)", "UTC"))
            continue
        if src.get("error"):
            conflicts.append("{}: {}".format(label, src["error"]))
            continue
        named.append((label, src["zone"]))
    aliases = set()
    base_label, base_zone = named[0] if named else (None, None)
    for label, zone in named[1:]:
        if zone == base_zone:
            continue
        a = _zone_bytes(zone, srcs.zoneinfo_dir, cache)
        b = _zone_bytes(base_zone, srcs.zoneinfo_dir, cache)
        if a is not None and a == b:
            aliases.add(zone)
            aliases.add(base_zone)
            continue
        conflicts.append("{} says {} but {} says {}".format(base_label, base_zone, label, zone))
    copy_note = ""
    if lt.get("kind") == "copy" and lt.get("zone"):
        copy_note = " (/etc/localtime is a copy, byte-identical to {})".format(
            ", ".join(lt.get("identical_to") or [lt["zone"]]))
    if conflicts:
        agreement = None
    elif aliases:
        agreement = "all sources agree: {} are byte-identical zones{}".format(
            " and ".join(sorted(aliases)), copy_note)
    else:
        agreement = "all sources name {}{}".format(base_zone or effective, copy_note)
    return effective, not conflicts, agreement, conflicts


def witness_note(srcs, zone):
    """A note when ``timedatectl`` names a zone whose data differ from ``zone``'s."""
    wit = srcs.sources.get("timedatectl")
    if not wit or not wit.get("zone") or wit["zone"] == zone:
        return None
    cache = {}
    if _zone_bytes(wit["zone"], srcs.zoneinfo_dir, cache) == _zone_bytes(zone, srcs.zoneinfo_dir, cache):
        return None
    return ("timedatectl says {} but the files say {}: systemd-timedated keeps the zone it read "
            "when it started until it is restarted or exits idle".format(wit["zone"], zone))


def validate_daemons(value):
    """The list of time-caching daemon programs (default :data:`DEFAULT_DAEMONS`)."""
    if value is None:
        return list(DEFAULT_DAEMONS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            "hostcheck:timezone:daemons must be a list of program names, got {!r}".format(value))
    return [v.strip() for v in value]


def precise_boot_time(proc_root="/proc"):
    """Boot time from ``/proc/uptime`` (10 ms resolution; ``btime`` is whole seconds)."""
    raw = hostcheck_proc.read_bytes(os.path.join(proc_root, "uptime"))
    try:
        return time.time() - float(raw.split()[0])
    except (AttributeError, ValueError, IndexError):
        return None


def daemon_processes(snap, daemons, boot=None):
    """Running time-caching daemons: ``[{program, pid, starttime, started, unit}]``.

    Only the top of each daemon's tree counts (cron's per-job children are
    the job's, not the daemon).
    """
    boot = boot if boot is not None else snap.boot_time
    wanted = set(daemons)
    out = []
    kthread = hostcheck_proc.PF_KTHREAD
    programs = {}
    for proc in snap.procs.values():
        if proc.flags & kthread or proc.pid == 1:
            continue
        prog = hostcheck_orphans.program_of(proc)
        if prog in wanted:
            programs[proc.pid] = prog
    for pid, prog in sorted(programs.items()):
        proc = snap.procs[pid]
        if programs.get(proc.ppid) == prog:
            continue
        started = boot + proc.starttime / float(snap.clk_tck) if boot is not None else None
        unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
        out.append({"program": prog, "pid": pid, "starttime": proc.starttime,
                    "started_at": started, "unit": unit})
    return out


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
    out = []
    for d in running:
        if d["started_at"] is None or d["started_at"] >= changed_at - skew:
            continue
        if not is_main(d, units):
            continue
        out.append(d)
    return out


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


class Analysis:
    def __init__(self, zone, consistent, agreement, conflicts, sources, stale, running,
                 changed_at, findings, notes, units=None):
        self.units = units
        self.zone = zone
        self.consistent = consistent
        self.agreement = agreement
        self.conflicts = conflicts
        self.sources = sources
        self.stale = stale
        self.running = running
        self.changed_at = changed_at
        self.findings = findings
        self.notes = notes

    def as_dict(self):
        return {
            "zone": self.zone,
            "consistent": self.consistent,
            "agreement": self.agreement,
            "conflicts": self.conflicts,
            "sources": self.sources,
            "stale": [_public(d) for d in self.stale],
            "changed": _iso(self.changed_at),
            "findings": self.findings,
            "notes": self.notes,
        }


def _public(d):
    return {"program": d["program"], "pid": d["pid"], "started": _iso(d["started_at"]),
            "unit": d["unit"]}


def analyse(srcs, running=(), units=None, skew=CLOCK_SKEW, notes=()):
    """Pure judgement of a :class:`Sources` and the running daemons."""
    zone, consistent, agreement, conflicts = compare(srcs)
    findings = []
    if not consistent:
        findings.append({
            "check": CHECK, "code": "zone-conflict", "severity": "critical",
            "summary": "timezone sources disagree: " + "; ".join(conflicts),
            "pids": [], "zone": zone, "conflicts": conflicts,
        })
    lt = srcs.sources["localtime"]
    if lt.get("kind") == "missing":
        findings.append({
            "check": CHECK, "code": "localtime-missing", "severity": "warning",
            "summary": "/etc/localtime is missing: programs use UTC", "pids": [],
        })
    notes = list(notes)
    note = witness_note(srcs, zone)
    if note:
        notes.append(note)
    stale = stale_daemons(list(running), srcs.changed_at, skew=skew, units=units)
    for d in stale:
        findings.append({
            "check": CHECK, "code": "stale-daemon", "severity": "warning",
            "summary": "{} (PID {}, started {}) started before the zone files changed at {}: "
                       "it still runs with the old zone".format(
                           d["program"], d["pid"], _iso(d["started_at"]), _iso(srcs.changed_at)),
            "pids": [d["pid"]], "program": d["program"], "unit": d["unit"],
            "started": _iso(d["started_at"]),
        })
    return Analysis(zone, consistent, agreement, conflicts, srcs.sources, stale, list(running),
                    srcs.changed_at, findings, notes, units=units)


def diagnose(daemons=None, etc_root="/etc", zoneinfo_dir=ZONEINFO, proc_root="/proc",
             run_root="/run", witness=True):
    """Sources + running daemons + unit main PIDs + analysis (module and state)."""
    daemons = validate_daemons(daemons)
    srcs = read_sources(etc_root, zoneinfo_dir, proc_root, run_root, witness=witness)
    snap = hostcheck_proc.snapshot(proc_root)
    running = daemon_processes(snap, daemons, boot=precise_boot_time(proc_root))
    notes = []
    units = None
    if hostcheck_systemd.systemd_running(run_root):
        units = hostcheck_systemd.unit_states([d["unit"] for d in running if d["unit"]],
                                              run_root=run_root)
    if "pid1" not in srcs.sources and hostcheck_proc.read_bytes(
            os.path.join(proc_root, "1", "environ")) is None:
        notes.append("PID 1's environment is not readable here: its TZ was not checked")
    return analyse(srcs, running, units=units, notes=notes)


def grain(etc_root="/etc", zoneinfo_dir=ZONEINFO, proc_root="/proc"):
    """``{zone, consistent}``: a few file reads, no process scan, no subprocess."""
    srcs = read_sources(etc_root, zoneinfo_dir, proc_root, quick=True, witness=False)
    zone, consistent, _, _ = compare(srcs)
    return {"zone": zone, "consistent": consistent}


# --------------------------------------------------------------------------
# the writer (hostcheck.timezone_pinned)


def uses_etc_timezone(etc_root="/etc"):
    """Debian family (``/etc/debian_version``) or an existing ``/etc/timezone``."""
    return os.path.exists(os.path.join(etc_root, "debian_version")) or os.path.lexists(
        os.path.join(etc_root, "timezone"))


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
    line = lines[last]
    head, _, old = line.partition("=")
    old = old.rstrip("\n")
    quote = old.strip()[:1] if old.strip()[:1] in ("'", '"') else ""
    lines[last] = "{}={}{}{}\n".format(head, quote, value, quote)
    return "".join(lines)


def plan_files(zone, etc_root="/etc", zoneinfo_dir=ZONEINFO, copy=False, srcs=None):
    """The file changes that make every source name ``zone``.

    Returns ``[{path, action, old, new, ...}]``; empty when nothing is to do.
    ``zone`` must already be validated (:func:`validate_zone`).
    """
    zpath, data = validate_zone(zone, zoneinfo_dir)
    srcs = srcs or read_sources(etc_root, zoneinfo_dir, quick=True, witness=False)
    plans = []
    lt = srcs.sources["localtime"]
    lt_path = os.path.join(etc_root, "localtime")
    old_desc = lt.get("value") if lt.get("kind") == "symlink" else (
        "copy of {}".format(lt.get("zone")) if lt.get("kind") == "copy" else lt.get("kind"))
    if copy:
        if not (lt.get("kind") == "copy" and srcs.localtime_data == data):
            plans.append({"path": lt_path, "action": "copy", "old": old_desc,
                          "new": "copy of {}".format(zone), "data": data})
    elif not (lt.get("kind") == "symlink" and lt.get("zone") == zone and not lt.get("error")):
        target = os.path.relpath(zpath, etc_root)
        plans.append({"path": lt_path, "action": "symlink", "old": old_desc, "new": target})
    tz_src = srcs.sources.get("timezone")
    if uses_etc_timezone(etc_root) and (tz_src is None or tz_src.get("zone") != zone
                                        or tz_src.get("error")):
        plans.append({"path": os.path.join(etc_root, "timezone"), "action": "write",
                      "old": tz_src.get("value") if tz_src else None, "new": zone,
                      "text": zone + "\n"})
    clock = os.path.join(etc_root, "sysconfig", "clock")
    sc_src = srcs.sources.get("sysconfig")
    if sc_src is not None and (sc_src.get("zone") != zone or sc_src.get("error")):
        with open(clock, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
        key = "TIMEZONE" if re.search(r"^\s*TIMEZONE=", text, re.M) else "ZONE"
        plans.append({"path": clock, "action": "write", "old": sc_src.get("value"), "new": zone,
                      "text": set_assignment(text, ("ZONE", "TIMEZONE"), key, zone)})
    env_src = srcs.sources.get("environment")
    if env_src is not None and not env_src.get("follows_localtime") and (
            env_src.get("zone") != zone or env_src.get("error")):
        env_path = os.path.join(etc_root, "environment")
        with open(env_path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
        plans.append({"path": env_path, "action": "write", "old": env_src.get("value"),
                      "new": zone, "text": set_assignment(text, ("TZ",), "TZ", zone)})
    return plans


def _owner_mode(path, default_mode=0o644):
    try:
        st = os.stat(path)
        return st.st_uid, st.st_gid, stat_mod.S_IMODE(st.st_mode)
    except OSError:
        return None, None, default_mode


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(tmp, path, fill=None):
    """Fill ``tmp`` (a new file beside ``path``), rename it over ``path`` and
    fsync the directory; on any failure ``tmp`` is removed and ``path`` untouched."""
    try:
        if fill is not None:
            fill()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def atomic_write(path, data):
    """Replace ``path`` with ``data``: temp file in the same directory, owner
    and mode of the old file kept, fsync, rename, fsync of the directory. A
    crash leaves the old file or the new one, never a truncated one."""
    uid, gid, mode = _owner_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=".hostcheck-", dir=os.path.dirname(path) or ".")

    def fill():
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fchmod(fp.fileno(), mode)
            if uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fp.fileno(), uid, gid)
            os.fsync(fp.fileno())

    _install(tmp, path, fill)


def atomic_symlink(target, path):
    """Point ``path`` at ``target`` by renaming a new symlink over it."""
    tmp = os.path.join(os.path.dirname(path) or ".",
                       ".hostcheck-{}-{}".format(os.getpid(), time.monotonic_ns()))
    os.symlink(target, tmp)
    _install(tmp, path)


def write_plan(plans):
    """Carry out :func:`plan_files`'s plan, one atomic replacement per file."""
    done = []
    for p in plans:
        if p["action"] == "symlink":
            atomic_symlink(p["new"], p["path"])
        elif p["action"] == "copy":
            atomic_write(p["path"], p["data"])
        else:
            atomic_write(p["path"], p["text"].encode("utf-8", "surrogateescape"))
        done.append(p["path"])
    return done


def describe_plan(plans):
    """Plain-data changes for a state's ``changes``: ``{path: {old, new}}``."""
    return {p["path"]: {"old": p["old"], "new": p["new"]} for p in plans}


def restart_units(units, timeout=60):
    """``systemctl restart`` each unit; ``{unit: None | error text}``."""
    out = {}
    systemctl = shutil.which("systemctl")
    for unit in units:
        if systemctl is None:
            out[unit] = "systemctl not found"
            continue
        try:
            proc = subprocess.run([systemctl, "restart", "--", unit], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            out[unit] = str(exc)
            continue
        out[unit] = None if proc.returncode == 0 else (
            proc.stdout.decode("utf-8", "replace").strip() or "exit {}".format(proc.returncode))
    return out


def wait_gone(identities, timeout, proc_root="/proc", poll=0.05):
    """Wait until none of ``[(pid, starttime)]`` is alive; the survivors."""
    end = time.monotonic() + timeout
    alive = list(identities)
    while True:
        alive = [i for i in alive if hostcheck_proc.still_same(i[0], i[1], proc_root)]
        if not alive or time.monotonic() >= end:
            return alive
        time.sleep(poll)


# --------------------------------------------------------------------------
# the state's whole pipeline: validate, diagnose, plan, (apply, verify)


def _restartable(daemons, units):
    """Split daemons into ``{unit: [daemon]}`` (systemd restarts them) and the rest."""
    by_unit, manual = {}, []
    for d in daemons:
        if units and d["unit"] in units and units[d["unit"]].get("MainPID") == d["pid"]:
            by_unit.setdefault(d["unit"], []).append(d)
        else:
            manual.append(d)
    return by_unit, manual


def pin(zone, copy=False, daemons=None, test=False, timeout=30, etc_root="/etc",
        zoneinfo_dir=ZONEINFO, proc_root="/proc", run_root="/run", witness=True):
    """Make every source name ``zone`` and restart the daemons that cached the old one.

    Returns ``(result, changes, comment)`` for a state. Nothing is written
    unless every argument is valid.
    """
    try:
        validate_zone(zone, zoneinfo_dir)
        daemons = validate_daemons(daemons)
        if not isinstance(copy, bool):
            raise ZoneError("copy must be true or false, got {!r}".format(copy))
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise ZoneError("timeout must be a number of seconds between 0 and 600, got {!r}".format(timeout))
    except (ZoneError, ConfigError) as exc:
        return False, {}, "Invalid arguments, nothing done: {}".format(exc)

    def look():
        return diagnose(daemons, etc_root, zoneinfo_dir, proc_root, run_root, witness=witness)

    before = look()
    plans = plan_files(zone, etc_root, zoneinfo_dir, copy=copy)
    # after a write every running time-caching daemon holds the old zone
    targets = [d for d in before.running if is_main(d, before.units)] if plans else before.stale
    by_unit, manual = _restartable(targets, before.units)
    pid1 = before.sources.get("pid1")
    pid1_conflict = bool(pid1 and not pid1.get("follows_localtime") and pid1.get("zone") != zone)
    problems = []
    if manual:
        problems.append("not restarted (no systemd unit to restart it with; restart by hand): "
                        + ", ".join("{} PID {}".format(d["program"], d["pid"]) for d in manual))
    if pid1_conflict:
        problems.append("PID 1 runs with TZ={} (inherited by what it starts); that changes only "
                        "with a reboot".format(pid1.get("value")))

    if not plans and not by_unit:
        if problems:
            return False, {}, "Timezone {}: files agree, but {}".format(zone, "; ".join(problems))
        return True, {}, "Timezone {} is pinned: every source agrees and no daemon is stale".format(zone)

    restart_desc = [{"unit": u, "program": ds[0]["program"], "pid": ds[0]["pid"]}
                    for u, ds in sorted(by_unit.items())]
    if test:
        changes = {}
        if plans:
            changes["files"] = describe_plan(plans)
        if restart_desc:
            changes["restart"] = restart_desc
        lines = ["Would pin timezone {}".format(zone)]
        lines += ["  {}: {} -> {}".format(p["path"], p["old"], p["new"]) for p in plans]
        lines += ["  restart {} (PID {})".format(r["unit"], r["pid"]) for r in restart_desc]
        lines += ["  " + p for p in problems]
        return None, changes, "\n".join(lines)

    changes = {}
    try:
        write_plan(plans)
    except OSError as exc:
        return False, {}, "Writing the zone files failed (every file is either old or new): {}".format(exc)
    if plans:
        changes["files"] = describe_plan(plans)
    errors = restart_units(sorted(by_unit), timeout=timeout)
    old = [(d["pid"], d["starttime"]) for ds in by_unit.values() for d in ds]
    survivors = {pid for pid, _ in wait_gone(old, timeout, proc_root)}
    after = look()
    new_main = {d["unit"]: d for d in after.running if d["unit"]}
    restarted = []
    for unit, ds in sorted(by_unit.items()):
        item = {"unit": unit, "program": ds[0]["program"], "old_pid": ds[0]["pid"],
                "new_pid": new_main[unit]["pid"] if unit in new_main else None}
        if errors.get(unit):
            problems.append("systemctl restart {} failed: {}".format(unit, errors[unit]))
        elif ds[0]["pid"] in survivors:
            problems.append("{} PID {} survived its restart and still runs with the old zone".format(
                ds[0]["program"], ds[0]["pid"]))
        elif item["new_pid"] is None:
            problems.append("{} did not come back after its restart".format(unit))
        restarted.append(item)
    if restarted:
        changes["restarted"] = restarted
    if not after.consistent:
        problems.append("sources still disagree: " + "; ".join(after.conflicts))
    elif after.zone != zone:
        problems.append("the effective zone is {} after the change".format(after.zone))
    still = [d for d in after.stale if d["unit"] in by_unit]
    if still:
        problems.append("still stale: " + ", ".join("{} PID {}".format(d["program"], d["pid"]) for d in still))
    lines = ["Pinned timezone {}".format(zone)]
    lines += ["  {}: {} -> {}".format(p["path"], p["old"], p["new"]) for p in plans]
    lines += ["  restarted {}: PID {} -> {}".format(r["unit"], r["old_pid"], r["new_pid"]) for r in restarted]
    lines += ["  " + p for p in problems]
    return not problems, changes, "\n".join(lines)
