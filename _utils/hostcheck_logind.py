"""Login sessions piling up (``hostcheck.logind``), the ``hostcheck:logind``
grain entry, and the remedy ``hostcheck.logind_clean``.

The incident: crond had ``pam_systemd`` in its PAM stack (RHEL 7's
``password-auth``, which ``crond`` includes), so every cron job registered a
logind session; thousands of them stayed in ``/run/systemd/sessions``,
systemd-logind grew to 6 GB and the host was OOM-killed.

Everything is read from files, never through the bus (a drowning logind
does not answer it): ``/run/systemd/sessions/*`` (the ``*.ref`` FIFOs are
never opened, nor is anything that is not a regular file),
``/run/systemd/users/*``, the session scopes' cgroups, ``/proc`` and the
cron daemon's PAM stack. Rules (finding ``code``):

``session-pileup`` (warning/critical by ``pile_warning``/``pile_critical``)
    The number of session files, by ``STATE`` and ``SERVICE``. logind
    refuses new sessions at 8192 (its built-in ``SessionsMax``).
``closing-leftovers`` (warning; one finding per ``SERVICE``)
    Sessions whose leader is gone while their scope still holds processes
    (what a cron job or ``su`` leaves when it starts a background process):
    they stay ``closing`` for ever. The processes are named.
``stale-session-files`` (warning)
    Session files with no (or an empty) scope cgroup whose leader is gone,
    or whose leader PID was reused (the process started after the session's
    ``REALTIME``), older than :data:`STALE_AGE`. logind drops them when it
    restarts, except those of users it does not track (no
    ``/run/systemd/users/UID``, ``orphaned``): logind 252 skips those at
    start ("User of session ... not known") and never removes them.
``logind-memory`` (warning/critical by ``rss_warning_mb``/``rss_critical_mb``)
    The resident memory of systemd-logind.
``cron-pam-systemd`` (warning; critical when the pile comes from cron)
    ``pam_systemd`` in a cron daemon's PAM stack, followed through
    ``include``, ``substack`` and ``@include``.
``deleted-logind``, ``deleted-dbus``, ``deleted-init`` (warning; dbus critical)
    logind, the system bus or PID 1 run a deleted or replaced binary
    (the deleted-binaries check's verdicts, for these processes only).

Without systemd, or with systemd but no logind, there is a note and no
finding. ``quick`` (the grain) counts the directory entries instead of
parsing every file when there are more than :data:`QUICK_PARSE_MAX`.

The remedy (:func:`plan`, :func:`apply`, :func:`verify`): restart logind
when stale files of tracked users are there (never stop-then-start; not
while a graphical session runs; not when a restart would hit its start
limit; orphaned files are listed for a person), reap the leftovers of
the closing sessions whose ``SERVICE`` matches ``closing`` (identity-checked
freeze/TERM/KILL, never a session with a live leader, never the minion's
own session or ancestors), and with ``cron_pam: remove`` give the cron
daemon's PAM file its own lines without ``pam_systemd`` (atomic, every other
line kept, the shared files untouched). Nothing at all is done when dbus
runs a deleted binary (reboot), or without root.

Speed: the session files are read in batches and parsed with one exact
regex match per file for systemd's usual layouts (learned from the files
themselves, :func:`layout_keys`), each distinct value unescaped once;
anything else goes through :func:`parse_session`, with the same result.

Runtime dependencies: the Python standard library only.
"""

import collections
import difflib
import fnmatch
import functools
import itertools
import math
import operator
import os
import re
import stat
import sys
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_deleted
import hostcheck_files
import hostcheck_proc
import hostcheck_reaper
import hostcheck_service

NAME = "logind"
REMEDY = "logind_clean"

#: logind's built-in maximum number of sessions (logind.conf SessionsMax)
SESSIONS_MAX = 8192
#: the grain parses the session files only when there are at most this many
QUICK_PARSE_MAX = 256
#: a session younger than this (seconds) is never judged stale (it may be
#: opening or closing right now)
STALE_AGE = 30.0
#: seconds of slack when comparing a leader's start with the session's
#: REALTIME (boot time is whole seconds; clocks get stepped)
START_SLACK = 2.0
#: bytes read of one session or user file (they are well under 1 KB)
FILE_LIMIT = 64 * 1024
#: seconds between SIGTERM and SIGKILL when reaping leftovers
REAP_TIMEOUT = 10.0
#: seconds to wait for logind to drop the sessions whose leftovers were reaped
GONE_WAIT = 5.0

LOGIND_UNIT = "systemd-logind.service"
DBUS_UNITS = ("dbus.service", "dbus-broker.service")
#: PAM service names of cron daemons (cronie, Debian's cron, fcron)
CRON_SERVICES = ("crond", "cron", "fcron")
GRAPHICAL = ("x11", "wayland", "mir")
PAM_MAX_DEPTH = 10

NOTE_NO_SYSTEMD = "systemd is not running here: no logind sessions to check"
NOTE_NO_LOGIND = "systemd-logind is not running and /run/systemd/sessions does not exist: nothing to check"
MARK = "# hostcheck logind_clean:"

OPTIONS = {
    "pile_warning": hostcheck_config.number(1024, 0, 10 ** 9, what="a number of session files", integer=True),
    "pile_critical": hostcheck_config.number(SESSIONS_MAX // 2, 0, 10 ** 9, what="a number of session files",
                                             integer=True),
    "rss_warning_mb": hostcheck_config.number(256, 0, 10 ** 7, what="a number of megabytes"),
    "rss_critical_mb": hostcheck_config.number(1024, 0, 10 ** 7, what="a number of megabytes"),
}


# --------------------------------------------------------------------------
# pure helpers: session files

_KV = re.compile(rb"^([A-Z_]+)=([^\n]*)$", re.M)
#: the fields the rules use; a literal "\n" first lets the regex engine skip
#: to line starts (systemd starts every file with a comment line)
_FIELDS = re.compile(rb"\n(UID|USER|STATE|SERVICE|TYPE|LEADER|REALTIME)=([^\n]*)")
_FIRST = re.compile(rb"(UID|USER|STATE|SERVICE|TYPE|LEADER|REALTIME)=([^\n]*)")


#: the fields of a session file the rules use, in the order systemd writes them
_WANTED = (b"UID", b"USER", b"STATE", b"TYPE", b"SERVICE", b"LEADER", b"REALTIME")
_LINES = re.compile(rb"(?:[A-Z_]+=[^\n]*\n)*")
_KEY = re.compile(rb"^([A-Z_]+)=", re.M)
#: what a layout pattern captures: digits only for the numbers (int() cannot fail)
_VALUE = {b"UID": rb"=(\d+)\n", b"LEADER": rb"=(\d+)\n", b"REALTIME": rb"=(\d+)\n", b"USER": rb"=([^\n]*)\n",
          b"STATE": rb"=([^\n]*)\n", b"TYPE": rb"=([^\n]*)\n", b"SERVICE": rb"=([^\n]*)\n"}
#: files sampled to learn layouts from before the first match, and rounds
#: of learning from the first file no layout matched
LAYOUT_SAMPLES = 16
LAYOUT_ROUNDS = 4


def layout_keys(raw):
    """The keys of a session file in systemd's usual layout (a comment line,
    then ``KEY=value`` lines, each key once, the :data:`_WANTED` ones all
    there in systemd's order), or ``None``."""
    first, sep, rest = raw.partition(b"\n")
    if not first.startswith(b"#") or not sep or _LINES.fullmatch(rest) is None:
        return None
    keys = _KEY.findall(rest)
    if len(set(keys)) != len(keys) or tuple(k for k in keys if k in _WANTED) != _WANTED:
        return None
    return keys


def layout_pattern(keys):
    """The exact pattern of one layout: its lines in order, groups for the
    :data:`_WANTED` fields (in that order), any value elsewhere."""
    return re.compile(rb"#[^\n]*\n" + b"".join(re.escape(k) + _VALUE.get(k, rb"=[^\n]*\n") for k in keys))


_SIMPLE = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"v": b"\v",
           b"\\": b"\\", b'"': b'"', b"'": b"'"}


def _unescape_at(raw, i, out):
    """Decode the escape starting after the backslash at ``raw[i]``; returns the next index."""
    c = raw[i:i + 1]
    if c in _SIMPLE:
        out += _SIMPLE[c]
        return i + 1
    if c == b"x" and re.fullmatch(rb"[0-9a-fA-F]{2}", raw[i + 1:i + 3]):
        out.append(int(raw[i + 1:i + 3], 16))
        return i + 3
    if c and c in b"0123" and re.fullmatch(rb"[0-7]{3}", raw[i:i + 3]):
        out.append(int(raw[i:i + 3], 8))
        return i + 3
    if c in (b"u", b"U"):
        n = 4 if c == b"u" else 8
        digits = raw[i + 1:i + 1 + n]
        if re.fullmatch(rb"[0-9a-fA-F]{%d}" % n, digits) and int(digits, 16) <= 0x10FFFF:
            out += chr(int(digits, 16)).encode("utf-8", "surrogatepass")
            return i + 1 + n
    out += c  # unknown escape: the character itself (as systemd's env-file reader does)
    return i + 1


def cunescape(raw):
    """A session file value as systemd wrote it (``cescape``, or a quoted
    env-file value) -> ``str``. Bytes that are not UTF-8 are kept as
    surrogate escapes."""
    if len(raw) >= 2 and raw[:1] == raw[-1:] and raw[:1] in (b'"', b"'"):
        if raw[:1] == b"'":
            return raw[1:-1].decode("utf-8", "surrogateescape")
        raw = raw[1:-1]
    if b"\\" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        j = raw.find(b"\\", i)
        if j < 0 or j == n - 1:
            out += raw[i:]
            break
        out += raw[i:j]
        i = _unescape_at(raw, j + 1, out)
    return bytes(out).decode("utf-8", "surrogateescape")


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(raw, memo):
    """``cunescape`` with a memo: the same few values (states, services,
    users) recur in thousands of files."""
    try:
        return memo[raw]
    except KeyError:
        value = memo[raw] = cunescape(raw)
        return value


def parse_session(name, raw, memo=None):
    """The fields hostcheck uses of one session file (bytes), 219-era and
    252-era alike: ``{"id", "uid", "user", "state", "service", "type",
    "leader", "realtime"}``; missing ones are ``None``. The scope is always
    ``session-<id>.scope`` (:func:`scope_of`)."""
    memo = {} if memo is None else memo
    kv = dict(_FIELDS.findall(raw))
    if raw[:1] != b"#":  # no leading comment: the first line has no "\n" before it
        first = _FIRST.match(raw)
        if first:
            kv.setdefault(first.group(1), first.group(2))
    get = kv.get
    uid, user, state, service, kind = get(b"UID"), get(b"USER"), get(b"STATE"), get(b"SERVICE"), get(b"TYPE")
    return {
        "id": name, "uid": None if uid is None else _int(uid),
        "user": None if user is None else _text(user, memo),
        "state": None if state is None else _text(state, memo),
        "service": None if service is None else _text(service, memo),
        "type": None if kind is None else _text(kind, memo),
        "leader": _int(get(b"LEADER")), "realtime": _int(get(b"REALTIME")), "scope_exists": False, "procs": None,
    }


def scope_of(session):
    """The scope unit logind runs a session in (``session-<id>.scope``, in
    every version)."""
    return "session-" + session["id"] + ".scope"


def leader_state(session, leaders):
    """``alive``, ``gone`` or ``reused`` (the leader PID started after the
    session was created). ``leaders``: ``{pid: start (Unix time) or None}``
    of the leader PIDs that exist."""
    pid = session["leader"]
    if not pid or pid not in leaders:
        return "gone"
    started, realtime = leaders[pid], session["realtime"]
    if started is not None and realtime is not None and started > realtime / 1e6 + START_SLACK:
        return "reused"
    return "alive"


def judge(session, leaders, now):
    """What a session is: ``live`` (its leader runs), ``leftovers`` (leader
    gone, the scope holds processes), ``stale`` (leader gone, no or an empty
    scope, older than :data:`STALE_AGE`), ``young`` or ``unknown`` (its
    scope could not be looked at)."""
    if session["leader"] in leaders and leader_state(session, leaders) == "alive":
        return "live"
    if session.get("procs"):
        return "leftovers"
    if session.get("scope_exists") is None:
        return "unknown"
    realtime = session["realtime"]
    if realtime is not None and now - realtime / 1e6 < STALE_AGE:
        return "young"
    return "stale"


def session_age(session, now):
    return None if session["realtime"] is None else max(0.0, now - session["realtime"] / 1e6)


# --------------------------------------------------------------------------
# pure helpers: PAM


def _logical_lines(text):
    """``(lineno, raw, content)``: backslash-continued lines joined; content
    without the comment (PAM ends a line at the first ``#``)."""
    out, buf, start = [], [], None
    for no, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = no
        buf.append(line)
        if line.endswith("\\"):
            continue
        raw = "\n".join(buf)
        content = " ".join(part[:-1] if part.endswith("\\") else part for part in buf).split("#", 1)[0]
        out.append((start, raw, content))
        buf, start = [], None
    if buf:
        out.append((start, "\n".join(buf), " ".join(buf).split("#", 1)[0]))
    return out


def _tokens(content):
    """PAM fields; a ``[...]`` group (which may hold spaces) is one field."""
    out, group = [], None
    for tok in content.split():
        if group is not None:
            group.append(tok)
            if tok.endswith("]"):
                out.append(" ".join(group))
                group = None
        elif tok.startswith("[") and not tok.endswith("]"):
            group = [tok]
        else:
            out.append(tok)
    if group is not None:
        out.append(" ".join(group))
    return out


def parse_pam(text):
    """Entries of a PAM file: ``{"lineno", "raw", "kind": "blank"|"rule"|
    "include"|"substack"|"@include", "type", "dash", "control", "module",
    "args", "target"}``."""
    out = []
    for lineno, raw, content in _logical_lines(text):
        toks = _tokens(content)
        entry = {"lineno": lineno, "raw": raw, "kind": "blank", "type": None, "dash": False,
                 "control": None, "module": None, "args": [], "target": None}
        if toks and toks[0] == "@include":
            entry.update(kind="@include", target=toks[1] if len(toks) > 1 else None)
        elif len(toks) >= 3:
            kind = toks[1] if toks[1] in ("include", "substack") else "rule"
            entry.update(kind=kind, type=toks[0].lstrip("-").lower(), dash=toks[0].startswith("-"),
                         control=toks[1])
            if kind == "rule":
                entry.update(module=toks[2], args=toks[3:])
            else:
                entry["target"] = toks[2]
        out.append(entry)
    return out


def is_pam_systemd(entry):
    return entry["kind"] == "rule" and entry["type"] == "session" and \
        os.path.basename(entry["module"] or "") == "pam_systemd.so"


def _sub_filter(entry, only):
    """The type filter of what an include entry brings in."""
    return entry["type"] if entry["kind"] in ("include", "substack") else only


def expand(name, files, only=None, depth=0):
    """The stack ``name`` expands to: ``[(file, entry), ...]`` of rules, in
    order, includes followed (``only``: the type a typed include keeps).
    Raises ``LookupError`` naming a file that could not be read, and
    ``RecursionError`` for an include loop."""
    if depth > PAM_MAX_DEPTH:
        raise RecursionError("include loop through {}".format(name))
    info = files.get(name)
    if info is None or info.get("text") is None:
        raise LookupError(name)
    out = []
    for entry in parse_pam(info["text"]):
        if entry["kind"] == "blank" or (only and entry["type"] not in (None, only)):
            continue
        if entry["kind"] == "rule":
            out.append((name, entry))
        elif entry["target"]:
            out.extend(expand(entry["target"], files, _sub_filter(entry, only), depth + 1))
    return out


def chains(name, files, only=None, depth=0):
    """Every path from ``name`` to a ``pam_systemd`` session rule:
    ``[[(file, lineno, raw), ...], ...]``. Unreadable files are skipped."""
    info = files.get(name)
    if depth > PAM_MAX_DEPTH or info is None or info.get("text") is None:
        return []
    out = []
    for entry in parse_pam(info["text"]):
        if entry["kind"] == "blank" or (only and entry["type"] not in (None, only)):
            continue
        here = (info["path"], entry["lineno"], entry["raw"].strip())
        if is_pam_systemd(entry):
            out.append([here])
        elif entry["kind"] != "rule" and entry["target"]:
            out.extend([here] + c for c in chains(entry["target"], files, _sub_filter(entry, only), depth + 1))
    return out


def _jumps(entry):
    """The numeric jumps of a ``[value=action ...]`` control."""
    control = entry["control"] or ""
    if not control.startswith("["):
        return []
    return [int(v) for v in re.findall(r"=\s*(\d+)", control)]


def jump_problem(stack):
    """A line whose ``[...=N]`` jump skips over a ``pam_systemd`` rule of the
    same type (taking the rule out would change where it lands), or ``None``."""
    for kind in {e["type"] for _, e in stack}:
        typed = [(f, e) for f, e in stack if e["type"] == kind]
        removed = [i for i, (_, e) in enumerate(typed) if is_pam_systemd(e)]
        for j, (fname, entry) in enumerate(typed):
            for n in _jumps(entry):
                if any(j < r <= j + n for r in removed):
                    return "{} line {} ({}) jumps over pam_systemd".format(fname, entry["lineno"], entry["raw"].strip())
    return None


def _reaches(entry, files, only, depth):
    try:
        return any(is_pam_systemd(e) for _, e in expand(entry["target"], files, _sub_filter(entry, only), depth + 1))
    except (LookupError, RecursionError):
        return False


def _strip(name, files, only, depth, top):
    """Lines of ``name`` without pam_systemd: includes that reach it inlined
    (their other includes kept, typed when ``only`` filters them), the rest
    kept as written. Raises ``ValueError`` for what cannot be inlined."""
    lines = []
    for entry in parse_pam(files[name]["text"]):
        raw = entry["raw"]
        if entry["kind"] == "blank":
            if top:
                lines.append(raw)
            continue
        if only and entry["type"] not in (None, only):
            continue
        if is_pam_systemd(entry):
            lines.append("{} removed: {}".format(MARK, raw.strip()))
        elif entry["kind"] == "rule" or not entry["target"] or not _reaches(entry, files, only, depth):
            if entry["kind"] == "@include" and only:
                raw = "{}\tinclude\t{}".format(only, entry["target"])
            lines.append(raw)
        elif entry["kind"] == "substack":
            raise ValueError("{} reaches pam_systemd through a substack ({}): edit it by hand".format(
                name, raw.strip()))
        else:
            lines.append("{} inlined without pam_systemd: {}".format(MARK, raw.strip()))
            lines.extend(_strip(entry["target"], files, _sub_filter(entry, only), depth + 1, False))
    return lines


def _signature(stack):
    return [(e["type"], e["dash"], e["control"], e["module"], tuple(e["args"])) for _, e in stack]


def strip_pam_systemd(service, files):
    """``(new text, None)`` of the cron service's own PAM file with
    ``pam_systemd`` out of its stack, or ``(None, why)`` when that cannot be
    done safely. Pure. Checked before it is returned: the new stack is the
    old one without the pam_systemd rules, rule for rule."""
    try:
        old = expand(service, files)
    except LookupError as exc:
        return None, "cannot read PAM file {}: not edited".format(exc)
    except RecursionError as exc:
        return None, "{}: not edited".format(exc)
    why = jump_problem(old)
    if why:
        return None, why + ": edit it by hand"
    try:
        lines = _strip(service, files, None, 0, True)
    except ValueError as exc:
        return None, str(exc)
    text = "\n".join(lines) + "\n"
    new_files = dict(files)
    new_files[service] = dict(files[service], text=text)
    if _signature(expand(service, new_files)) != _signature([s for s in old if not is_pam_systemd(s[1])]):
        return None, "the edited stack of {} would differ in more than pam_systemd: not edited".format(service)
    return text, None


# --------------------------------------------------------------------------
# read: the only stage that touches /run, /sys/fs/cgroup, /proc and /etc


class Facts:
    """What :func:`read` collected, as plain data.

    ``systemd``/``present``: systemd runs / logind runs or has its
    directory; ``count``: session files; ``refs``: ``*.ref`` entries
    skipped; ``odd``: ``[[name, why]]`` entries not read (not regular,
    unreadable); ``parsed``: the files were parsed (else only counted);
    ``table``: the parsed session files, by column (:class:`Sessions`:
    which scopes exist, and the scope's PIDs of the sessions whose leader is
    gone); ``sessions``: the same as records (see :func:`parse_session`;
    with ``scope_exists`` and ``procs``), built when first asked for (the
    remedy's plan; :func:`analyse` reads the columns); ``leaders``: ``{pid:
    start}`` of the leader PIDs that run (``led``: what :func:`led` found
    of them, kept); ``procs``: ``{pid:
    {"starttime", "program", "uid"}}`` of those scope processes;
    ``scopes_missing``: sessions without a scope cgroup (quick count);
    ``logind``: ``{"pids", "rss_kb"}``; ``bus``: ``{"init"|"logind"|"dbus":
    {pid: deleted-binaries record}}``; ``pam``: ``{"services": {service:
    path}, "files": {name: {"path", "text", "error"}}, "etc": dir}``;
    ``protected``, ``self_session``, ``now``, ``euid``, ``quick``;
    ``refusals`` (filled by :func:`remedy_facts`)."""

    __slots__ = ("systemd", "present", "count", "refs", "odd", "parsed", "table", "leaders", "led", "procs",
                 "scopes_missing", "logind", "bus", "pam", "protected", "self_session", "users", "now",
                 "euid", "quick", "refusals", "notes")

    def __init__(self, now=0.0, euid=0, quick=False):
        self.systemd = self.present = False
        self.count = self.refs = 0
        self.odd = []
        self.parsed = True
        self.table = Sessions()
        self.leaders = {}
        self.led = None
        self.procs = {}
        self.scopes_missing = None
        self.logind = {"pids": [], "rss_kb": None}
        self.bus = {"init": {}, "logind": {}, "dbus": {}}
        self.pam = {"services": {}, "files": {}, "etc": None}
        self.protected = [1]
        self.self_session = None
        self.users = {}
        self.now = now
        self.euid = euid
        self.quick = quick
        self.refusals = {}
        self.notes = []

    @property
    def sessions(self):
        """The parsed session files as records (:meth:`Sessions.records`)."""
        return self.table.records()


def cgroup_base(root):
    """The hierarchy systemd keeps its units in: cgroup v2 at ``root``, else
    the v1 ``name=systemd`` one (legacy and hybrid), else ``unified``."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return root
    for sub in ("systemd", "unified"):
        if os.path.isdir(os.path.join(root, sub)):
            return os.path.join(root, sub)
    return None


def _read_small(path, limit=FILE_LIMIT):
    """A regular file's bytes, opened non-blocking and without following a
    symlink (a FIFO planted under the name never blocks); ``None`` when it
    cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_regular(entry):
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:  # only where the file system gives no type and lstat fails
        return False


def open_sessions(run_root):
    """A descriptor of ``run_root``/:data:`SESSIONS` (listed, then its files
    opened relative to it: one path walk); ``None`` when it cannot be opened."""
    try:
        return os.open(os.path.join(run_root, SESSIONS), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def list_sessions(fd):
    """``(names, refs, odd)``: the session files in the directory ``fd``
    (:func:`open_sessions`; regular files by the directory entry's type:
    nothing is opened), the number of ``*.ref`` FIFOs skipped by name, and
    ``[[name, why]]`` of other entries. ``(None, 0, [])`` when it cannot be listed."""
    if fd is None:
        return None, 0, []
    try:
        try:
            names, others = _scan(fd)
        except OSError:  # only where the file system gives no type and stat fails
            names, others = _scan(fd, _is_regular)
    except OSError:
        return None, 0, []
    # logind's temporary files (.#c1XXXXXX) and the *.ref FIFOs' names are not sessions
    # (looked for in all the names at once first: there are usually none)
    joined = "/" + "/".join(names) + "/"
    if "/." in joined or ".ref/" in joined:
        names = [n for n in names if n[:1] != "." and n[-4:] != ".ref"]
    others = [n for n in others if n[:1] != "."]
    refs = [n for n in others if n.endswith(".ref")]
    odd = [[n, "not a regular file: not opened"] for n in others if not n.endswith(".ref")]
    return names, len(refs), odd


def _scan(fd, is_regular=None):
    """``(regular, others)``: the names in the directory ``fd``: regular
    files by the directory entry's type (``d_type``: no stat; a symbolic
    link is not one, whatever it points to), or by ``is_regular`` of each
    entry. One comprehension keeping no entry (a ``DirEntry`` is tracked by
    the garbage collector: 100,000 of them kept cost full collections), the
    entry's methods called unbound (a call with keywords,
    ``follow_symlinks=False``, costs more than the entry)."""
    others = []
    other = others.append
    link, regular_file = os.DirEntry.is_symlink, os.DirEntry.is_file
    with os.scandir(fd) as it:
        if is_regular is None:
            regular = [e.name for e in it if (not link(e) and regular_file(e)) or other(e.name)]
        else:
            regular = [e.name for e in it if is_regular(e) or other(e.name)]
    return regular, others


#: files read, then parsed, at a time (their bytes are not all kept at once)
BATCH = 512
#: the fields of a session file the rules use, as :class:`Sessions` columns
#: (in :data:`_WANTED`'s order: what the layout patterns capture)
COLUMNS = ("uid", "user", "state", "type", "service", "leader", "realtime")
NUMBERS = ("uid", "leader", "realtime")
#: the columns counted over all sessions (by state and service: the pile;
#: by UID: users logind does not track): counted as they are added, while
#: their cells are fresh in the CPU's cache (a pass over 100,000 cells
#: later reads them from memory, one cache miss each)
COUNTED = ("uid", "state", "service")


class Sessions:
    """The parsed session files, by column: ``ids`` (the file names) and
    one list per field of :data:`COLUMNS`, aligned. A cell holds the value
    (``None``: the file has no such line) or, for the files parsed in bulk,
    the bytes of the value as written (:data:`NUMBERS`: decimal digits
    without a leading zero), converted only when asked for (:meth:`cell`,
    :meth:`values`, :meth:`counts`, :meth:`matching`): most sessions are
    only counted. ``scoped``: the indices of the sessions whose scope cgroup
    exists (``None``: there was no hierarchy to look in); ``procs``:
    ``{index: [pid, ...]}`` of the scopes that were read (those whose leader
    is gone). :meth:`records` gives, for each, what :func:`parse_session`
    gives, with ``scope_exists`` and ``procs``."""

    __slots__ = ("ids",) + COLUMNS + ("scoped", "procs", "memo", "_records", "_counted")

    def __init__(self, memo=None):
        self.ids = []
        for name in COLUMNS:
            setattr(self, name, [])
        self.scoped = set()
        self.procs = {}
        self.memo = {} if memo is None else memo  # bytes as written -> str (shared with parse_session)
        self._records = None
        self._counted = {name: collections.Counter() for name in COUNTED}  # {column: {stored: n}} of all

    def __len__(self):
        return len(self.ids)

    def add(self, ids, columns):
        """Append sessions: their ids and one sequence per column."""
        self.ids += ids
        counted = self._counted
        for name, values in zip(COLUMNS, columns):
            if name in counted:
                counted[name].update(tally(values))
            getattr(self, name).extend(values)
        self._records = None

    def add_record(self, rec):
        self.add([rec["id"]], [[rec[name]] for name in COLUMNS])

    def value(self, name, stored):
        """The value of a cell of column ``name`` that holds ``stored``."""
        if type(stored) is not bytes:
            return stored
        if name in NUMBERS:
            return int(stored)
        memo = self.memo
        return memo[stored] if stored in memo else _text(stored, memo)

    def cell(self, name, i):
        return self.value(name, getattr(self, name)[i])

    def values(self, name, idx=None):
        """The values of column ``name`` (of the sessions ``idx``, else all)."""
        column = getattr(self, name)
        stored = column if idx is None else list(map(column.__getitem__, idx))
        if name in NUMBERS:
            try:  # digits as written, or numbers: int() of each at C level
                return list(map(int, stored))
            except TypeError:  # a None (a file without the line)
                pass
        distinct = set(stored)
        conv = {v: self.value(name, v) for v in distinct if type(v) is bytes}
        if len(conv) == len(distinct):  # all as written: each looked up at C level
            return list(map(conv.__getitem__, stored))
        return [conv[v] if type(v) is bytes else v for v in stored] if conv else list(stored)

    def counts(self, name, idx=None):
        """``{value: n}`` of column ``name`` (of the sessions ``idx``, else
        all): counted as stored, each distinct one converted once."""
        out = collections.Counter()
        for value, n in self.tally(name, idx).items():
            out[self.value(name, value)] += n
        return out

    def tally(self, name, idx=None):
        """``{stored: n}`` of column ``name`` (of the sessions ``idx``, else
        all: of :data:`COUNTED`, what was counted as they were added),
        nothing converted (:func:`tally`)."""
        if idx is None and name in self._counted:
            return collections.Counter(self._counted[name])
        column = getattr(self, name)
        return tally(column if idx is None else list(map(column.__getitem__, idx)))

    def matching(self, name, numbers, idx=None):
        """The indices (of ``idx``, else all) whose :data:`NUMBERS` column
        ``name`` holds one of ``numbers``: a set look-up per cell, nothing
        converted."""
        keys = set(numbers)
        keys.update(b"%d" % n for n in numbers)
        column = getattr(self, name)
        if idx is None:
            return list(itertools.compress(range(len(column)), map(keys.__contains__, column)))
        return list(itertools.compress(idx, map(keys.__contains__, map(column.__getitem__, idx))))

    def record(self, i):
        rec = {"id": self.ids[i]}
        for name in COLUMNS:
            rec[name] = self.cell(name, i)
        rec["scope_exists"] = None if self.scoped is None else i in self.scoped
        rec["procs"] = self.procs.get(i)
        return rec

    def records(self):
        """The sessions as dicts (what :func:`parse_session` gives, plus
        ``scope_exists`` and ``procs``), in column order, built once."""
        if self._records is None:
            self._records = [self.record(i) for i in range(len(self.ids))]
        return self._records


#: cells sampled for the values of a column before counting them in bulk
TALLY_SAMPLES = 64


def tally(cells, samples=TALLY_SAMPLES):
    """``{cell: n}`` of ``cells``. A pile has a few distinct states,
    services and UIDs: when the cells are bytes (values as written: a value
    is the rest of its line, so it never holds a newline), the values of a
    sample spread over them are counted in the cells joined, one C-level
    ``count`` each, and that is the answer when it accounts for every cell
    (else, a value outside the sample: a ``Counter``). Each cell sits
    between two newlines of its own, so ``b"\\n" + value + b"\\n"`` occurs
    once per cell holding ``value``. When the sample holds one value, the
    cells are first compared with it (a batch of a pile from one service)."""
    if len(cells) > samples:
        seen = set(cells[::len(cells) // samples])
        if len(seen) == 1:  # the sample holds one value: all may (one C-level pass, no join)
            value = next(iter(seen))
            if cells.count(value) == len(cells):
                return {value: len(cells)}
        try:
            joined = b"\n\n".join([b"", *cells, b""])
        except TypeError:  # a cell parsed one by one (None, a number, text)
            joined = None
        if joined is not None and b"" not in seen:  # (an empty value would look like a separator)
            found = {v: joined.count(b"\n" + v + b"\n") for v in seen}
            if sum(found.values()) == len(cells):
                return found
    return collections.Counter(cells)


#: where logind keeps the session files, under the run root
SESSIONS = os.path.join("systemd", "sessions")


def read_sessions(dir_fd, names):
    """``(sessions, odd)``: the :class:`Sessions` of the session files
    ``names`` in the directory ``dir_fd`` (:func:`open_sessions`), and
    ``[[name, why]]`` of those that could not be read."""
    state = ({}, [])
    table, odd = Sessions(state[0]), []
    for start in range(0, len(names), BATCH):
        batch, raws, bad = _read_files(names[start:start + BATCH], dir_fd)
        parse_into(table, batch, raws, state)
        odd += bad
    return table, odd


#: session files held open at once (read in one C-level pass, then their
#: descriptors closed together): far below any soft limit of open files
OPEN_AT_ONCE = 128
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


def _read_files(names, dir_fd):
    """``(names, raws, odd)``: the names read and their bytes (each file,
    relative to ``dir_fd``, opened non-blocking, without following a
    symlink, read once, bounded), and ``[[name, why]]`` of the files that
    could not be read. A file that vanished meanwhile (logind removed it)
    is in neither. :data:`OPEN_AT_ONCE` files at a time (:func:`_read_window`)."""
    raws, failed = [], []
    for start in range(0, len(names), OPEN_AT_ONCE):
        _read_window(names[start:start + OPEN_AT_ONCE], dir_fd, raws, failed)
    odd = []
    if failed:
        odd = [[name, _unreadable(exc)] for name, exc in failed if not isinstance(exc, FileNotFoundError)]
        gone = {name for name, _ in failed}
        names = [name for name in names if name not in gone]
    if _any_full(raws):
        big = [len(raw) >= FILE_LIMIT for raw in raws]
        odd.extend([name, "larger than {} bytes: not parsed".format(FILE_LIMIT)]
                   for name in itertools.compress(names, big))
        small = list(map(operator.not_, big))
        names, raws = list(itertools.compress(names, small)), list(itertools.compress(raws, small))
    return names, raws, odd


def _any_full(raws, limit=FILE_LIMIT, group=32):
    """True when one of ``raws`` has ``limit`` bytes or more: asked first of
    ``group`` at a time joined (a few C-level joins instead of a length
    object per file; none is that long when their sum is not)."""
    if not any(len(b"".join(raws[k:k + group])) >= limit for k in range(0, len(raws), group)):
        return False
    return max(map(len, raws)) >= limit


def _read_window(names, dir_fd, raws, failed, flags=_FLAGS):
    """Open the files ``names`` (relative to ``dir_fd``), read them, close
    them; their bytes appended to ``raws``, ``(name, exception)`` to
    ``failed`` (``None`` for one that is not a regular file). The reads are
    one C-level pass; when one fails (a directory or a FIFO put there since
    the listing) they are all done again one by one (:func:`_read_each`)."""
    fds = []
    try:
        missed = _open_each(names, dir_fd, flags, fds)
        opened = names
        if missed:
            failed += missed
            skip = {name for name, _ in missed}
            opened = [name for name in names if name not in skip]
        got = _read_once(fds, FILE_LIMIT)
        if got is None or not all(got):  # an empty one: a FIFO or a device put there since it was listed?
            got = _read_each(opened, fds, failed)
        raws += got
    finally:
        _close_all(fds)


def _open_each(names, dir_fd, flags, fds):
    """Open each of ``names`` (relative to ``dir_fd``), the descriptors
    appended to ``fds`` (the caller's, which closes them whatever happens:
    :func:`_close_all`); ``[(name, exception)]`` of those that did not
    open."""
    missed, _open, keep = [], os.open, fds.append
    for name in names:
        try:
            keep(_open(name, flags, dir_fd=dir_fd))
        except OSError as exc:
            missed.append((name, exc))
    return missed


def _read_once(fds, size):
    """One read of ``size`` from each of ``fds``, in one C-level pass;
    ``None`` when one fails (some may have been read)."""
    try:
        return list(map(os.read, fds, itertools.repeat(size, len(fds))))
    except OSError:
        return None


def _read_each(names, fds, failed):
    """The bytes of the open files ``fds`` (named ``names``), each read
    from its start; ``(name, exception)`` added to ``failed`` for those
    that cannot be read or are not regular files (empty, not regular: a
    FIFO or a device), which are then left out."""
    out = []
    for name, fd in zip(names, fds):
        try:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
            except OSError:  # a FIFO: nothing to rewind
                pass
            raw = os.read(fd, FILE_LIMIT)
        except OSError as exc:  # EISDIR, or EAGAIN from a FIFO put there since it was listed
            failed.append((name, exc))
            continue
        if raw or _regular_fd(fd):
            out.append(raw)
        else:
            failed.append((name, None))
    return out


def _close_all(fds):
    """Close the descriptors ``fds`` (all open, so all distinct): each run
    of consecutive numbers among them in one call (no number in such a run
    is another's), the others one by one."""
    if not fds:
        return
    fds = sorted(fds)
    low, high = fds[0], fds[-1]
    if high - low + 1 == len(fds):  # the usual case: the lowest free numbers were taken, one run
        os.closerange(low, high + 1)
        return
    # where a run ends: the next number is not one more
    nexts = map(operator.add, fds, itertools.repeat(1))
    ends = list(itertools.compress(range(len(fds)), map(operator.ne, fds[1:], nexts)))
    start = 0
    for end in ends + [len(fds) - 1]:
        if end > start:
            os.closerange(fds[start], fds[end] + 1)
        else:
            try:
                os.close(fds[start])
            except OSError:
                pass
        start = end + 1


def _unreadable(exc):
    """Why a session file was not read (``exc``: ``None`` for one that is
    not a regular file)."""
    return "not a regular file: not read" if exc is None else "unreadable: {}".format(exc.strerror)


def _regular_fd(fd):
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _sample_layouts(raws, limit=LAYOUT_SAMPLES):
    """The distinct layouts (key tuples) of up to ``limit`` files spread over ``raws``."""
    step = max(1, len(raws) // limit)
    found = []
    for keys in map(layout_keys, raws[::step][:limit]):
        if keys is not None and tuple(keys) not in found:
            found.append(tuple(keys))
    return found


#: ``+`` where ``re`` has possessive repeats (Python 3.11+): a value never
#: needs to give back what it took (it is followed by the newline it cannot hold)
_PLUS = b"+" if sys.version_info >= (3, 11) else b""
#: a value in a pattern of the layouts: as written; numbers without a
#: leading zero (their digits then tell them apart, unconverted:
#: :meth:`Sessions.matching`). In the bulk pattern a number's first
#: character is checked, the rest is taken as any value (cheaper to scan)
#: and checked after, a column at a time (:func:`_digits`). At most 19
#: digits (2**63 has 19; a REALTIME in µs has 16): a longer number goes to
#: :func:`parse_session`, whose ``int()`` may refuse it (Python's limit on
#: the digits of a conversion) without stopping the check.
_NUMBER_KEYS = (b"UID", b"LEADER", b"REALTIME")
_EXACT_VALUE = {k: (rb"=(0|[1-9]\d{0,18}" if k in _NUMBER_KEYS else rb"=([^\n]*") + _PLUS + rb")\n" for k in _WANTED}
_BULK_VALUE = {k: (rb"=([1-9][^\n]{0,18}" + _PLUS + rb"|0)\n" if k in _NUMBER_KEYS else _EXACT_VALUE[k]) for k in _WANTED}


def _other_key(key):
    """The shortest start of the line ``key=...`` (``key`` not a
    :data:`_WANTED` one) that no wanted line can start with: ``b"REM"`` for
    ``REMOTE`` (``REALTIME=`` starts with ``RE``), ``b"A"`` for ``ACTIVE``.
    None is a longer one's start (that one's would then be as short), so
    at most one of those a trie's branches start with fits a line."""
    line = key + b"="
    wanted = [k + b"=" for k in _WANTED]
    return next(line[:n] for n in range(1, len(line) + 1) if not any(w.startswith(line[:n]) for w in wanted))


@functools.lru_cache(maxsize=16)
def union_pattern(layouts):
    """``(bulk, fullmatch)`` for the learned ``layouts`` (key tuples) at once:
    the comment line, the :data:`_WANTED` lines in systemd's order (groups,
    :data:`COLUMNS`), and between two of them one of the runs of other lines
    the layouts have there, as a trie (the runs' lines one at a time, a run
    that goes on before one that ends there: no line matched twice). The
    groups are plain, not atomic (cheaper in ``re``): no two branches can
    start on the same line, and no line a branch starts on can start what
    follows the group, so going back into one never finds another way. An other line is
    matched by the start of its key (:func:`_other_key`: no wanted line can
    start so; the rest of a line is scanned by ``re``'s tight loop, each
    literal character costs a step). A file it matches has each wanted
    key exactly once (on its own line; every other line is one no wanted
    line can be), so its groups are what :func:`parse_session` finds
    (``bulk``'s numbers: once :func:`_digits` says they are). ``bulk`` finds,
    in the files each followed by ``b"\\n\\0"`` (:func:`_bulk_rows`), one
    row of groups per file, in order: empty for a file no layout fits (the
    last alternative takes it whole). Each match ends with the NUL after a
    file, the next starts right after it (no search, no look-ahead); no
    match of the first alternative goes past that NUL (a line of it ends at
    the newline before), so a NUL in a file can only add rows."""
    gaps = [[] for _ in range(len(_WANTED) + 1)]
    for keys in layouts:
        at = [-1] + [keys.index(k) for k in _WANTED] + [len(keys)]
        for gap, (start, end) in enumerate(zip(at, at[1:])):
            run = keys[start + 1:end]
            if run not in gaps[gap]:
                gaps[gap].append(run)

    def one_of(runs):
        # a trie: the line each run goes on with (no two runs' starts alike), then no line
        heads, ends = {}, False
        for run in runs:
            if run:
                heads.setdefault(_other_key(run[0]), []).append(run[1:])
            else:
                ends = True
        branches = [re.escape(head) + rb"[^\n]*" + _PLUS + rb"\n" + one_of(rests)
                    for head, rests in sorted(heads.items())]
        if len(branches) + ends == 1:
            return branches[0] if branches else b""
        return b"(?:" + b"|".join(branches + [b""] * ends) + b")"

    def body(values):
        return rb"#[^\n]*" + _PLUS + rb"\n" + one_of(gaps[0]) + b"".join(
            re.escape(k) + values[k] + one_of(gaps[i + 1]) for i, k in enumerate(_WANTED))

    return (re.compile(rb"(?:" + body(_BULK_VALUE) + rb"\n\0|[^\0]*" + _PLUS + rb"\0)").findall,
            re.compile(body(_EXACT_VALUE)).fullmatch)


def _learn(raws, layouts):
    """Add the layouts of a sample of ``raws`` not known yet to ``layouts``
    (at most :data:`LAYOUT_ROUNDS` * 2 in all); True when there are new ones."""
    more = [k for k in _sample_layouts(raws) if k not in layouts][:max(0, LAYOUT_ROUNDS * 2 - len(layouts))]
    layouts += more
    return bool(more)


def _bulk_rows(raws, layouts):
    """One row of :data:`COLUMNS` (bytes) per file of ``raws``, from one
    pass of :func:`union_pattern` over them all; an empty row for a file no
    layout fits. ``None`` when they cannot be joined: a file holds a NUL
    (there are then more rows than files). Each file is followed by
    ``b"\\n\\0"``: a newline (a last line without one is the same line to
    :func:`parse_session`; with one, an empty line the pattern expects),
    then the NUL no match crosses."""
    rows = union_pattern(tuple(layouts))[0](b"\n\0".join([*raws, b""]))
    return rows if len(rows) == len(raws) else None


#: where the :data:`NUMBERS` are among the :data:`COLUMNS`
_NUMBER_AT = tuple(COLUMNS.index(name) for name in NUMBERS)


def _digits(cells):
    """True when all ``cells`` (bytes) are digits, checked on them all at once."""
    return b"".join(cells).isdigit()


def parse_into(table, names, raws, state=None):
    """Add the session files ``raws`` (bytes, named ``names``) to ``table``
    (:class:`Sessions`), with what :func:`parse_session` gives, fast: the
    files in systemd's usual layouts (learned from the files themselves,
    :func:`layout_keys`) in one regex pass over them all, their values kept
    by column as written; the others through :func:`parse_session`. ``state``: ``(memo, layouts)``
    kept from one batch to the next."""
    memo, layouts = state if state is not None else (table.memo, [])
    if not raws:
        return table
    if not layouts:
        _learn(raws, layouts)
    rows = _bulk_rows(raws, layouts) if layouts else None
    if rows is None:
        rest = list(range(len(raws)))
    else:
        columns = list(zip(*rows))
        # the UID group is empty in a file no layout fits; a number that is not digits: the file does not fit
        if b"" in columns[0] or not all(map(_digits, (columns[i] for i in _NUMBER_AT))):
            fits = list(map(all, zip(*(map(bytes.isdigit, columns[i]) for i in _NUMBER_AT))))
            rest = list(itertools.compress(range(len(raws)), map(operator.not_, fits)))
            columns = [list(itertools.compress(column, fits)) for column in columns]
            table.add(list(itertools.compress(names, fits)), columns)
        else:
            rest = []
            table.add(list(names), columns)
    while rest and len(layouts) < LAYOUT_ROUNDS * 2 and _learn([raws[i] for i in rest[:LAYOUT_SAMPLES]], layouts):
        match = union_pattern(tuple(layouts))[1]
        hits = [(i, m.groups()) for i, m in ((i, match(raws[i])) for i in rest) if m is not None]
        if hits:
            table.add([names[i] for i, _ in hits], list(zip(*(groups for _, groups in hits))))
            done = {i for i, _ in hits}
            rest = [i for i in rest if i not in done]
    for i in rest:
        table.add_record(parse_session(names[i], raws[i], memo))
    return table


def parse_sessions(raws, state=None):
    """:func:`parse_session` of every ``(name, bytes)`` (through
    :func:`parse_into`): same records (the order aside). ``state``:
    ``(memo, layouts)`` kept from one batch to the next."""
    memo = state[0] if state is not None else {}
    return parse_into(Sessions(memo), [name for name, _ in raws], [raw for _, raw in raws], state).records()


#: a session scope's name in a slice's listing (names joined by "/"; a
#: session id is letters and digits, systemd's ``session_id_valid``)
_SCOPE_NAME = re.compile(r"/session-([^/.]+" + _PLUS.decode() + r")\.scope(?=/)")


def _scopes(base):
    """``{session id: the user slice's path}`` of every session scope
    (``session-ID.scope``, :func:`scope_of`) under ``user.slice``."""
    out = {}
    if base is None:
        return out
    top = os.path.join(base, "user.slice")
    try:
        slices = [e.path for e in os.scandir(top) if e.name.endswith(".slice") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return out
    for path in slices:
        try:
            names = os.listdir(path)
        except OSError:
            continue
        # one regex pass over the listing: a slice holds a scope per session
        out.update(dict.fromkeys(_SCOPE_NAME.findall("/" + "/".join(names) + "/"), path))
    return out


def cgroup_pids(path, size=65536, dir_fd=None):
    """PIDs in one cgroup (``cgroup.procs``; ``path`` relative to ``dir_fd``
    when given); ``[]`` when it cannot be read."""
    return _pids(_read_procs(path, dir_fd, size))


def _read_procs(path, dir_fd, size=65536, flags=os.O_RDONLY | os.O_CLOEXEC):
    """The bytes of ``path``/``cgroup.procs``: one read unless it fills the
    buffer (a scope holds a few PIDs); ``b""`` when it cannot be read."""
    try:
        fd = os.open(path + "/cgroup.procs", flags, dir_fd=dir_fd)
    except OSError:
        return b""
    try:
        return _read_rest(fd, size)
    finally:
        os.close(fd)


def read_procs_at(names, dir_fd):
    """The bytes of ``NAME/cgroup.procs`` of each of ``names`` (relative to
    ``dir_fd``), in order; ``b""`` for one that cannot be read (the scope
    is gone). :data:`OPEN_AT_ONCE` at a time: opened, read in one C-level
    pass, closed together (:func:`_close_all`)."""
    out = []
    for start in range(0, len(names), OPEN_AT_ONCE):
        out += _procs_window(names[start:start + OPEN_AT_ONCE], dir_fd)
    return out


def _procs_window(names, dir_fd, size=65536, flags=os.O_RDONLY | os.O_CLOEXEC):
    """:func:`read_procs_at` of a few: a file that fills the buffer is read
    on to its end; when a read fails, all are read again one by one from
    their start (:func:`_read_rest`)."""
    fds = []
    try:
        paths = [name + "/cgroup.procs" for name in names]
        missed = _open_each(paths, dir_fd, flags, fds)
        got = _read_once(fds, size)
        if got is None:
            got = [_read_rest(fd, size, rewind=True) for fd in fds]
        if len(b"".join(got)) >= size:  # (none can have filled the buffer when all together did not)
            got = [_read_rest(fd, size, raw) if len(raw) == size else raw for fd, raw in zip(fds, got)]
    finally:
        _close_all(fds)
    if not missed:
        return got
    skip, read = {path for path, _ in missed}, iter(got)
    return [b"" if path in skip else next(read) for path in paths]


def _read_rest(fd, size, first=None, rewind=False):
    """The bytes of ``fd`` up to its end, read ``size`` at a time: after
    ``first`` (what a first read gave), else from where it is, or from its
    start (``rewind``); ``b""`` when a read fails."""
    try:
        if rewind:
            os.lseek(fd, 0, os.SEEK_SET)
        chunks = [os.read(fd, size) if first is None else first]
        while len(chunks[-1]) == size:
            chunks.append(os.read(fd, size))
        return b"".join(chunks)
    except OSError:
        return b""


def _pids(raw):
    """The PIDs in the bytes of a ``cgroup.procs`` (anything not a number skipped)."""
    if raw.replace(b"\n", b"").isdigit():  # the usual case: one conversion per line, no test each
        return list(map(int, raw.split()))
    return [int(p) for p in raw.split() if p.isdigit()]


def _exe_name(proc_root, pid):
    try:
        exe = os.readlink("{}/{}/exe".format(proc_root, pid))
    except OSError:
        return None
    return os.path.basename(exe[:-len(hostcheck_deleted.DELETED)] if exe.endswith(hostcheck_deleted.DELETED)
                            else exe)


def unit_pids(base, unit, proc_root, programs):
    """PIDs in a system service's cgroup whose executable is one of ``programs``."""
    if base is None:
        return []
    pids = cgroup_pids(os.path.join(base, "system.slice", unit))
    return [p for p in pids if _exe_name(proc_root, p) in programs]


def rss_kb(proc_root, pids):
    """Sum of ``VmRSS`` (kB) of ``pids``; ``None`` when none could be read."""
    total, seen = 0, False
    for pid in pids:
        raw = hostcheck_proc.read_bytes("{}/{}/status".format(proc_root, pid))
        idx = raw.find(b"\nVmRSS:") if raw else -1
        if idx >= 0:
            try:
                total += int(raw[idx + 7:].split(None, 1)[0])
                seen = True
            except (ValueError, IndexError):
                pass
    return total if seen else None


def _quick_record(proc_root, pid):
    try:
        exe = os.readlink("{}/{}/exe".format(proc_root, pid))
    except OSError:
        return None
    return {"pid": pid, "exe": exe, "argv": None, "maps": [], "files": {}, "started": None}


def bus_binaries(proc_root, groups, quick):
    """``{group: {pid: record}}``: the deleted-binaries check's records of
    PID 1, logind and dbus (``hostcheck_deleted.Scanner.examine``; in quick
    mode only the ``exe`` link). A process with nothing stale has no record."""
    out = {name: {} for name in groups}
    scanner = None if quick else hostcheck_deleted.Scanner(proc_root)
    for name, pids in groups.items():
        for pid in pids:
            if quick:
                rec = _quick_record(proc_root, pid)
            else:
                rec = _examine(scanner, proc_root, pid)
            if rec is not None:
                out[name][pid] = rec
    return out


def _examine(scanner, proc_root, pid):
    base = "{}/{}".format(proc_root, pid)
    try:
        exe = os.readlink(base + "/exe")
    except OSError:
        return None
    raw = hostcheck_proc.read_bytes(base + "/maps", 16 << 20, True)
    if raw is None:
        return None
    try:
        return scanner.examine(pid, base, exe, raw, hostcheck_deleted.script_family(exe))
    except LookupError:
        return None


def _pam_path(name, etc_root):
    """Where Linux-PAM finds ``name``: ``/etc/pam.d`` first, then the vendor
    directory ``/usr/lib/pam.d``; absolute names as they are (``/etc/...``
    rebased on ``etc_root``)."""
    if name.startswith("/"):
        if name.startswith("/etc/"):
            return os.path.join(etc_root, name[5:])
        return name
    for directory in (os.path.join(etc_root, "pam.d"),
                      os.path.join(os.path.dirname(etc_root.rstrip("/")) or "/", "usr", "lib", "pam.d")):
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            return path
    return os.path.join(etc_root, "pam.d", name)


def _load_pam(name, files, etc_root, depth=0):
    if name in files or depth > PAM_MAX_DEPTH:
        return
    path = _pam_path(name, etc_root)
    try:
        text = hostcheck_files.read_regular(path, limit=FILE_LIMIT)
        files[name] = {"path": path, "text": None if text is None else text.text(),
                       "error": None if text is not None else "missing"}
    except OSError as exc:
        files[name] = {"path": path, "text": None, "error": exc.strerror or str(exc)}
        return
    for entry in parse_pam(files[name]["text"] or ""):
        if entry["kind"] != "rule" and entry["target"]:
            _load_pam(entry["target"], files, etc_root, depth + 1)


def read_pam(etc_root):
    """The cron daemons' PAM files and everything they include."""
    files, services = {}, {}
    for service in CRON_SERVICES:
        path = _pam_path(service, etc_root)
        if os.path.lexists(path):
            services[service] = path
            _load_pam(service, files, etc_root)
    return {"services": services, "files": files, "etc": os.path.join(etc_root, "pam.d")}


def read_users(run_root):
    """``{uid: name or None}`` of the users logind tracks, from
    ``/run/systemd/users`` (no NSS look-up)."""
    base = os.path.join(run_root, "systemd", "users")
    out = {}
    try:
        names = [n for n in os.listdir(base) if n.isdigit()]
    except OSError:
        return out
    for name in names:
        raw = _read_small(os.path.join(base, name))
        kv = dict(_KV.findall(raw or b""))
        out[int(name)] = cunescape(kv[b"NAME"]) if b"NAME" in kv else None
    return out


def _scan_sessions(facts, host, base, quick):
    """Count (and, unless quick with many, parse) the session files, then
    read what the rules need of the parsed ones."""
    directory = os.path.join(host.run_root, SESSIONS)
    if quick and _count_quick(facts, directory, base):
        return
    fd = open_sessions(host.run_root)
    try:
        names, facts.refs, facts.odd = list_sessions(fd)
        names = names or []
        facts.count = len(names)
        scopes = _scopes(base)
        facts.table, odd = read_sessions(fd, names)
    finally:
        if fd is not None:
            os.close(fd)
    facts.odd.extend(odd)
    facts.count -= len(odd)
    snap, hits, pids = process_view(host, facts.table)
    _find_leaders(facts, snap, hits, pids)
    _read_scopes(facts, scopes, base)
    _name_procs(facts, snap, host.proc_root)


def process_view(host, table):
    """``(snapshot, hits, pids)``: the processes the rules need, the indices
    of the sessions of ``table`` whose leader PID is listed in ``/proc``,
    and those leader PIDs (converted once).
    The run's snapshot when another check already took one; else only the
    leaders that run (found by listing ``/proc``: no process read for the
    others), their ancestry and this process's (:func:`hostcheck_proc.partial_snapshot`;
    the leftovers are read later, :func:`_name_procs`)."""
    snap = host.taken()
    if snap is None:
        try:
            running = [int(name) for name in os.listdir(host.proc_root) if name.isdigit()]
        except OSError:  # the full snapshot says why
            running = None
        if running is not None:
            hits = table.matching("leader", running)
            pids = set(table.values("leader", hits))
            return hostcheck_proc.partial_snapshot(sorted(pids), host.proc_root), hits, pids
        snap = host.snapshot()
    hits = table.matching("leader", snap.procs)
    return snap, hits, set(table.values("leader", hits))


def _find_leaders(facts, snap, hits, pids):
    """``facts.leaders`` (the leader PIDs that run, and when they started)
    and ``facts.led`` (see :func:`led`), from ``hits`` (the indices whose
    ``LEADER`` is listed in ``/proc``) and ``pids`` (their leaders; both
    from :func:`process_view`; one gone from ``snap``, or a zombie, is not
    a leader that runs)."""
    table = facts.table
    for pid in pids:
        proc = snap.procs.get(pid)
        if proc is not None and proc.state not in ("Z", "X", "x"):
            facts.leaders[pid] = snap.started_at(proc)
    if len(facts.leaders) < len(pids):  # a zombie or gone leader: its sessions are not hits
        hits = table.matching("leader", facts.leaders, hits)
    facts.led = (hits, alive_leaders(table, facts.leaders, hits=hits))


def _count_quick(facts, directory, base):
    """The grain's view of a big directory: the names counted (no entry
    type, no file opened) and the sessions without a scope cgroup, when
    there are more than :data:`QUICK_PARSE_MAX`. False when there are fewer
    (then they are parsed)."""
    try:
        names = [n for n in os.listdir(directory) if n[:1] != "."]
    except OSError:
        return False
    sessions = [n for n in names if not n.endswith(".ref")]
    if len(sessions) <= QUICK_PARSE_MAX:
        return False
    facts.parsed = False
    facts.count, facts.refs = len(sessions), len(names) - len(sessions)
    facts.scopes_missing = len(set(sessions).difference(_scopes(base)))
    return True


def _read_scopes(facts, scopes, base):
    """Which sessions' scope cgroups exist (``None``: no hierarchy to look
    in) and, for those whose leader is gone, their PIDs (``scopes``:
    :func:`_scopes`; each slice opened once, its scopes' ``cgroup.procs``
    relative to it)."""
    table = facts.table
    if base is None:
        table.scoped = None
        return
    table.scoped = set(itertools.compress(range(len(table.ids)), map(scopes.__contains__, table.ids)))
    todo = {}
    for i in sorted(table.scoped.difference(led(facts)[1])):
        todo.setdefault(scopes[table.ids[i]], []).append(i)
    procs, ids = table.procs, table.ids
    for where, items in todo.items():
        try:
            dir_fd = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            procs.update((i, []) for i in items)
            continue
        try:
            raws = read_procs_at(["session-" + ids[i] + ".scope" for i in items], dir_fd)
        finally:
            os.close(dir_fd)
        for i, raw in zip(items, raws):
            # the usual leftover: one PID (a line of digits), else the general parse
            procs[i] = [int(raw)] if raw[-1:] == b"\n" and raw[:-1].isdigit() else _pids(raw)


def _name_procs(facts, snap, proc_root):
    """Identity, program and uid of the processes in leader-less scopes, the
    protected PIDs (this process, its ancestors, PID 1) and this process's
    own session."""
    procs = facts.table.procs
    wanted = sorted({p for pids in procs.values() for p in pids})
    missing = [p for p in wanted if p not in snap.procs]
    extra = hostcheck_proc.partial_snapshot(missing, proc_root).procs if missing else {}
    for pid in wanted:
        proc = snap.procs.get(pid) or extra.get(pid)
        if proc is None or proc.state in ("Z", "X", "x"):
            continue
        prog = proc.program
        facts.procs[pid] = {"starttime": proc.starttime, "uid": proc.uid,
                            "program": prog.name if prog is not None else proc.comm}
    for i, pids in procs.items():
        if pids:
            procs[i] = [p for p in pids if p in facts.procs]
    facts.protected = sorted(hostcheck_reaper.protected(snap))
    me = snap.procs.get(snap.self_pid) if snap.self_pid else None
    cgroup = me.cgroup if me is not None else None
    m = re.search(r"/session-([^/]+)\.scope(?:/|$)", cgroup or "")
    facts.self_session = m.group(1) if m else None


def read(host, opts, quick=False):  # pylint: disable=unused-argument
    """The :class:`Facts` of ``host``: sessions, scopes, logind, the bus
    peers' binaries and the cron PAM stack. Never the bus."""
    facts = Facts(now=time.time(), euid=host.euid(), quick=quick)
    facts.systemd = hostcheck_service.systemd_running(host.run_root)
    if not facts.systemd:
        return facts
    base = cgroup_base(getattr(host, "cgroup_root", "/sys/fs/cgroup"))
    logind = unit_pids(base, LOGIND_UNIT, host.proc_root, ("systemd-logind",))
    facts.present = bool(logind) or os.path.isdir(os.path.join(host.run_root, "systemd", "sessions"))
    if not facts.present:
        return facts
    if base is None:
        facts.notes.append("no cgroup hierarchy of systemd found: scopes, logind and dbus not read")
    _scan_sessions(facts, host, base, quick)
    facts.users = read_users(host.run_root)
    facts.logind = {"pids": logind, "rss_kb": rss_kb(host.proc_root, logind)}
    dbus = [p for unit in DBUS_UNITS
            for p in unit_pids(base, unit, host.proc_root, ("dbus-daemon", "dbus-broker", "dbus-broker-launch"))]
    facts.bus = bus_binaries(host.proc_root, {"init": [1], "logind": logind, "dbus": dbus}, quick)
    facts.pam = read_pam(host.etc_root)
    return facts


# --------------------------------------------------------------------------
# analyse (pure)


def _count(items):
    """``{value: n}``, most frequent first (``None`` counted as ``(none)``)."""
    counts = collections.Counter(items)
    if None in counts:
        counts["(none)"] = counts.pop(None) + counts.get("(none)", 0)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _top(counts, n=5):
    items = list(counts.items())
    text = ", ".join("{} ({})".format(k, v) for k, v in items[:n])
    return text + (", ..." if len(items) > n else "")


def led(facts):
    """``(hits, live)``: the indices of the sessions of ``facts.table`` whose
    leader PID runs, and of those whose leader is alive
    (:func:`alive_leaders`); found once, kept in ``facts.led``."""
    if facts.led is None:
        table, leaders = facts.table, facts.leaders
        hits = table.matching("leader", leaders) if leaders else []
        facts.led = (hits, alive_leaders(table, leaders, hits=hits))
    return facts.led


def alive_leaders(table, leaders, idx=None, hits=None):
    """The indices of the sessions of ``table`` (:class:`Sessions`; of
    ``idx``, else all) whose leader runs (:func:`leader_state` ``alive``),
    in order (``hits``: the indices whose leader PID runs, when known). Pure."""
    if not leaders:
        return []
    if hits is None:
        hits = table.matching("leader", leaders, idx)
    pids, times = table.values("leader", hits), table.values("realtime", hits)
    first = {pid: _first_alive(leaders[pid]) for pid in set(pids)}
    if None in first.values() or None in times or 0 in first:  # leader_state() one by one
        return [i for i, pid, rt in zip(hits, pids, times)
                if leader_state({"leader": pid, "realtime": rt}, leaders) == "alive"]
    return list(itertools.compress(hits, map(operator.le, map(first.__getitem__, pids), times)))


def _first_alive(started, steps=64):
    """The least ``REALTIME`` (an integer, µs) of a session whose leader,
    started at ``started``, is not a reused PID (:func:`leader_state`:
    ``started <= realtime / 1e6 + START_SLACK``, which grows with
    ``realtime``): found from the real-number answer, then moved by the
    float arithmetic's own verdict; ``-inf`` when the start is unknown,
    ``None`` when it cannot be found in ``steps``."""
    if started is None:
        return -math.inf
    if not math.isfinite(started) or abs(started) > 1e12:
        return None
    try:
        guess = math.ceil((started - START_SLACK) * 1e6)
        for _ in range(steps):
            if started > guess / 1e6 + START_SLACK:
                guess += 1
            elif started <= (guess - 1) / 1e6 + START_SLACK:
                guess -= 1
            else:
                return guess
    except (OverflowError, ValueError):
        pass
    return None


def _after(table, idx, moment):
    """The indices of ``idx`` whose ``REALTIME`` is after ``moment`` (µs), or
    a superset of them: when all are stored as digits (no leading zero,
    see :class:`Sessions`), compared as bytes, nothing converted: first
    the longest and the greatest (none after: the usual answer), then, when
    all have one length, one comparison per cell; else all of ``idx``."""
    times = list(map(table.realtime.__getitem__, idx))
    threshold = b"%d" % math.floor(moment)  # an integer is after moment if it is after its floor
    try:
        # no cell longer than the threshold, and none greater as bytes: no number greater
        if not times or (len(max(times, key=len)) <= len(threshold) and max(times) <= threshold):
            return []
        lengths = set(map(len, times))
    except TypeError:  # some hold a number or None (files parsed one by one)
        return idx
    if len(lengths) == 1 and len(threshold) in lengths:
        return list(itertools.compress(idx, map(threshold.__lt__, times)))
    return idx


def verdicts(facts):
    """``{verdict: [index, ...]}``: what :func:`judge` says of each session
    of ``facts.table``, in bulk. Pure."""
    return _verdicts(facts)[0]


def _all_but(n, done):
    """``range(n)`` without the indices ``done``, in order (a mask: no set look-up per index)."""
    keep = bytearray(b"\1") * n
    collections.deque(map(keep.__setitem__, done, itertools.repeat(0)), maxlen=0)
    return list(itertools.compress(range(n), keep))


def _verdicts(facts):
    """:func:`verdicts` and the indices whose leader PID runs: set
    operations and C-level passes over the columns, one by one only the few
    whose leader PID runs or that may be young."""
    table, leaders, now = facts.table, facts.leaders, facts.now
    hits, live = led(facts)
    done = set(live)
    procs = table.procs
    leftovers = sorted(set(itertools.compress(procs.keys(), procs.values())).difference(done))  # a scope's PIDs left
    done.update(leftovers)
    rest = _all_but(len(table.ids), done)
    out = {"live": live, "leftovers": leftovers, "stale": rest, "young": [], "unknown": []}
    if table.scoped is None:
        out["stale"], out["unknown"] = [], rest
        return out, hits
    old = (now - STALE_AGE) * 1e6
    # judge()'s own arithmetic for those that may be young: after ``old``, or a leader PID that runs
    maybe = set(_after(table, rest, old)).union(itertools.filterfalse(done.__contains__, hits))
    young = []
    for i in sorted(maybe):
        rt = table.cell("realtime", i)
        if rt is not None and now - rt / 1e6 < STALE_AGE and (rt > old or table.cell("leader", i) in leaders):
            young.append(i)
    if young:
        out["young"] = young
        out["stale"] = list(itertools.filterfalse(set(young).__contains__, rest))
    return out, hits


def classify(facts):
    """``{verdict: [session, ...]}`` (see :func:`judge`): the records of
    :func:`verdicts`. Pure."""
    records = facts.sessions
    return {verdict: [records[i] for i in idx] for verdict, idx in verdicts(facts).items()}


def _pile_finding(facts, opts, by_state, by_service):
    n = facts.count
    if n >= opts["pile_critical"]:
        severity = "critical"
    elif n >= opts["pile_warning"]:
        severity = "warning"
    else:
        return None
    parts = "; by state: {}; by service: {}".format(_top(by_state), _top(by_service)) if facts.parsed else ""
    return hostcheck_check.finding(
        NAME, "session-pileup", severity,
        "{} session files in /run/systemd/sessions{} (logind refuses new sessions at {})".format(
            n, parts, SESSIONS_MAX),
        sessions=n, by_state=by_state, by_service=by_service, limit=SESSIONS_MAX)


def _user(s, facts):
    return s["user"] or facts.users.get(s["uid"]) or (str(s["uid"]) if s["uid"] is not None else None)


def _user_of(user, uid, facts):
    return user or facts.users.get(uid) or (str(uid) if uid is not None else None)


def _leftover_findings(facts, kept):
    """The ``closing-leftovers`` findings of the sessions ``kept`` (indices)."""
    table, now = facts.table, facts.now
    services, groups = table.values("service", kept), {}
    if len(set(services)) == 1:  # the usual case: one service leaves them behind
        groups[services[0] or "(none)"] = list(kept)
    else:
        for i, service in zip(kept, services):
            groups.setdefault(service or "(none)", []).append(i)
    out = []
    for service, members in sorted(groups.items()):
        pids = sorted(itertools.chain.from_iterable(map(table.procs.__getitem__, members)))
        programs = _count(map(operator.itemgetter("program"), map(facts.procs.__getitem__, pids)))
        pairs = set(zip(map(table.user.__getitem__, members), map(table.uid.__getitem__, members)))
        users = sorted({u for u in (_user_of(table.value("user", user), table.value("uid", uid), facts)
                                    for user, uid in pairs) if u})
        times = [rt for rt in table.values("realtime", members) if rt is not None]
        oldest = max(0.0, now - min(times) / 1e6) if times else None  # the age of the oldest
        summary = ("{} closing session{} of service {} ({}) kept alive by {} leftover process{}: {}; "
                   "the leader is gone; logind keeps them until these exit. logind_clean reaps them "
                   "only when closing names the service").format(
            len(members), "" if len(members) == 1 else "s", service, ", ".join(users) or "?", len(pids),
            "" if len(pids) == 1 else "es", _top(programs))
        out.append(hostcheck_check.finding(
            NAME, "closing-leftovers", "warning", summary, pids, service=service, sessions=len(members),
            session_ids=first_ids(table, members), users=users, programs=programs,
            oldest_age=int(oldest) if oldest is not None else None))
    return out


def orphaned(stale, users):
    """The stale sessions of users logind does not track (no
    ``/run/systemd/users/UID``): logind skips them when it starts ("User of
    session ... not known") and never removes their files."""
    return [s for s in stale if s["uid"] not in users]


def _orphaned_at(table, stale, users):
    """:func:`orphaned` of the sessions ``stale`` (indices): ``(indices, UIDs)``
    (the UIDs of all sessions looked at first: usually all are tracked)."""
    column = table.uid
    if all(table.value("uid", raw) in users for raw in table.tally("uid")):
        return [], set()
    raws = list(map(column.__getitem__, stale))
    lost = {raw: uid for raw, uid in ((raw, table.value("uid", raw)) for raw in set(raws)) if uid not in users}
    return ([i for i, raw in zip(stale, raws) if raw in lost] if lost else []), set(lost.values())


def _counts_of(table, name, idx, total=None, others=None):
    """:meth:`Sessions.counts` of column ``name`` of the sessions ``idx``
    (``total``: the counts of all, and ``others``: the indices of all the
    other sessions, when known: then, if ``idx`` is the bigger part, as a
    pile of stale files is, the total minus the others' counts, fewer
    cells read)."""
    if total is not None and others is not None and len(others) < len(idx):
        return total - table.counts(name, others)
    return table.counts(name, idx)


def first_ids(table, idx, n=50):
    """The ``n`` first ids (in sorted order) of the sessions ``idx`` of
    ``table``. Sorted whole: they come in the listing's order, on a tmpfs the
    newest first, and session ids grow, so the sort finds one run (a heap
    of ``n`` would replace its top at every id)."""
    return sorted(map(table.ids.__getitem__, idx))[:n]


def _stale_finding(facts, stale, lost, lost_uids, hits, services=None, others=None):
    """The ``stale-session-files`` finding of the sessions ``stale``
    (indices; ``lost``: those of users logind does not track; ``hits``: the
    indices whose leader PID runs; ``services`` and ``others``: see
    :func:`_counts_of`; ``others`` is then every session not in ``stale``)."""
    if not stale:
        return None
    table = facts.table
    stale_hits = set(stale).intersection(hits) if others is None else itertools.filterfalse(set(others).__contains__,
                                                                                            hits)
    # a stale session's leader is not alive (verdicts): one whose PID runs was reused (leader_state())
    reused = len(list(stale_hits))
    why = _count({k: n for k, n in (("leader gone", len(stale) - reused), ("leader PID reused", reused)) if n})
    by_service = _count(_counts_of(table, "service", stale, services, others))
    text = "{} stale session file{} (no live scope, {}; by service: {})".format(
        len(stale), "" if len(stale) == 1 else "s", _top(why), _top(by_service))
    if len(lost) < len(stale):
        text += ": logind drops {} when it restarts (hostcheck.logind_clean)".format(len(stale) - len(lost))
    if lost:
        text += ("; {} belong to users logind does not track (UID {}): it never loads them and a restart does "
                 "not remove them: delete them by hand").format(
            len(lost), ", ".join(sorted({str(uid) for uid in lost_uids})))
    return hostcheck_check.finding(
        NAME, "stale-session-files", "warning", text, stale=len(stale), orphaned=len(lost), reasons=why,
        by_service=by_service, session_ids=first_ids(table, stale), orphaned_ids=first_ids(table, lost))


def _rss_finding(facts, opts):
    kb = facts.logind["rss_kb"]
    if kb is None:
        return None
    mb = kb / 1024.0
    if mb >= opts["rss_critical_mb"]:
        severity = "critical"
    elif mb >= opts["rss_warning_mb"]:
        severity = "warning"
    else:
        return None
    return hostcheck_check.finding(
        NAME, "logind-memory", severity,
        "systemd-logind uses {:.0f} MB of memory (warning at {} MB, critical at {} MB); it grows with the "
        "session files it keeps".format(mb, opts["rss_warning_mb"], opts["rss_critical_mb"]),
        facts.logind["pids"], rss_mb=round(mb, 1))


def pam_status(facts):
    """``{service: {"path", "chains"}}`` of the cron services whose stack has
    pam_systemd. Pure."""
    out = {}
    for service, path in sorted(facts.pam["services"].items()):
        found = chains(service, facts.pam["files"])
        if found:
            out[service] = {"path": path, "chains": found}
    return out


def _pam_findings(facts, opts, by_service):
    out = []
    for service, info in pam_status(facts).items():
        from_cron = sum(by_service.get(c, 0) for c in CRON_SERVICES)
        severity = "critical" if from_cron >= opts["pile_warning"] or (
            not facts.parsed and facts.count >= opts["pile_warning"]) else "warning"
        via = " -> ".join("{}:{}".format(p, n) for p, n, _ in info["chains"][0])
        out.append(hostcheck_check.finding(
            NAME, "cron-pam-systemd", severity,
            "pam_systemd is in the PAM stack of {} ({}): every cron job opens a logind session, and each "
            "job that leaves a process behind leaves a closing session{}".format(
                service, via, "; {} sessions come from cron".format(from_cron) if from_cron else ""),
            service=service, path=info["path"],
            chains=[["{}:{}: {}".format(p, n, raw) for p, n, raw in c] for c in info["chains"]],
            cron_sessions=from_cron))
    return out


_BUS_TEXT = {
    "dbus": ("critical", "the system bus (dbus) runs {}: logind talks to everything through it, so the bus "
                         "is suspect; dbus cannot be restarted safely: reboot"),
    "logind": ("warning", "systemd-logind runs {}: systemctl restart systemd-logind "
                          "(hostcheck.services_current) or reboot"),
    "init": ("warning", "PID 1 runs {}: systemctl daemon-reexec or reboot"),
}


def bus_verdicts(facts):
    """``{group: {pid: [stale file, ...]}}`` by the deleted-binaries rules. Pure."""
    ignored = hostcheck_deleted._matcher(hostcheck_deleted.DEFAULT_IGNORE)  # pylint: disable=protected-access
    out = {}
    for group, recs in facts.bus.items():
        for pid, rec in recs.items():
            found = hostcheck_deleted.stale_files(rec, ignored, facts.quick)
            if found:
                out.setdefault(group, {})[pid] = found
    return out


def _bus_findings(facts):
    out = []
    for group, procs in sorted(bus_verdicts(facts).items()):
        severity, text = _BUS_TEXT[group]
        files = sorted({"{} {} {}".format(f["why"], f["kind"], f["path"]) for fs in procs.values() for f in fs})
        out.append(hostcheck_check.finding(
            NAME, "deleted-" + group, severity, text.format("old code ({})".format("; ".join(files[:3]))),
            sorted(procs), files=files))
    return out


def graphical(facts, classes):
    """Ids of graphical sessions whose leader runs."""
    return sorted(s["id"] for s in classes["live"] if (s["type"] or "") in GRAPHICAL)


def analyse(facts, opts):
    """Judge the :class:`Facts`. Pure."""
    if not facts.systemd or not facts.present:
        return hostcheck_check.Diagnosis(NAME, [], [NOTE_NO_SYSTEMD if not facts.systemd else NOTE_NO_LOGIND],
                                         {"sessions": 0, "closing": 0, "stale": 0, "orphaned": 0,
                                          "rss_mb": None}, facts)
    classes, hits = _verdicts(facts)
    table = facts.table
    by_state = _count(table.counts("state"))
    services = table.counts("service")
    by_service = _count(services)
    lost, lost_uids = _orphaned_at(table, classes["stale"], facts.users)
    findings = [f for f in (_pile_finding(facts, opts, by_state, by_service),) if f]
    findings += _leftover_findings(facts, classes["leftovers"])
    others = [i for verdict, idx in classes.items() if verdict != "stale" for i in idx]
    findings += [f for f in (_stale_finding(facts, classes["stale"], lost, lost_uids, hits, services, others),
                             _rss_finding(facts, opts)) if f]
    findings += _pam_findings(facts, opts, by_service) + _bus_findings(facts)
    rss = facts.logind["rss_kb"]
    details = {
        "sessions": facts.count,
        "closing": len(classes["leftovers"]) if facts.parsed else None,
        "stale": len(classes["stale"]) if facts.parsed else facts.scopes_missing,
        "orphaned": len(lost) if facts.parsed else None,
        "leftovers": sum(map(len, map(table.procs.__getitem__, classes["leftovers"]))) if facts.parsed else None,
        "rss_mb": round(rss / 1024.0, 1) if rss is not None else None,
        "by_state": by_state, "by_service": by_service,
        "graphical": sorted(itertools.compress(map(table.ids.__getitem__, classes["live"]),
                                               map(frozenset(GRAPHICAL).__contains__, table.values("type", classes["live"])))),
    }
    return hostcheck_check.Diagnosis(NAME, hostcheck_check.by_severity(findings), _notes(facts, classes), details,
                                     facts)


def _notes(facts, classes):
    notes = list(facts.notes)
    if facts.odd:
        notes.append("{} entr{} in /run/systemd/sessions not read: {}".format(
            len(facts.odd), "y" if len(facts.odd) == 1 else "ies",
            "; ".join("{} ({})".format(n, why) for n, why in facts.odd[:5])))
    if not facts.parsed:
        notes.append("{} session files: only counted (quick view); 'stale' counts the files without a scope "
                     "cgroup".format(facts.count))
    if classes["unknown"]:
        notes.append("{} session(s) whose leader is gone were not judged: their scope cgroups could not be "
                     "looked at".format(len(classes["unknown"])))
    if not facts.logind["pids"]:
        notes.append("systemd-logind was not found in its unit's cgroup: its memory was not read")
    if not facts.pam["services"]:
        notes.append("no cron PAM file (crond, cron, fcron) under {}".format(facts.pam["etc"]))
    return notes


def summarise(diag):
    """The grain entry: ``{sessions, closing, stale, rss_mb, count}``."""
    d = diag.details
    return {"sessions": d["sessions"], "closing": d["closing"], "stale": d["stale"], "rss_mb": d["rss_mb"],
            "count": len(diag.findings)}


# --------------------------------------------------------------------------
# the remedy: logind_clean


def _older_than(value, name):
    return hostcheck_config.number(None, 0, 10 * 365 * 86400)(value, name)


REMEDY_ARGS = {
    "closing": hostcheck_config.globs(),
    "older_than": _older_than,
    "cron_pam": hostcheck_config.choice("keep", ("keep", "remove")),
}
CONFIG_KEYS = ()


def _restart_wanted(diag):
    d = diag.details
    return diag.facts.systemd and diag.facts.parsed and bool(d.get("stale")) and d["stale"] > d["orphaned"]


def remedy_facts(host, diag, args):  # pylint: disable=unused-argument
    """What only the remedy reads, before the plan (test mode too): whether
    a restart of logind now would hit its start limit."""
    if not _restart_wanted(diag):
        return
    refused, notes = hostcheck_service.start_limits([LOGIND_UNIT])
    diag.facts.refusals = dict(refused)
    diag.facts.notes.extend(notes)


def _match(service, globs):
    return any(fnmatch.fnmatchcase(service or "", g) for g in globs)


def _reap_items(diag, args):
    """``(items, held)``: the closing sessions to reap (``{"session",
    "service", "user", "pids": [[pid, starttime]]}``) and the notes about
    those left alone."""
    facts = diag.facts
    protected = set(facts.protected)
    items, held, young = [], {}, 0
    for s in sorted(classify(facts)["leftovers"], key=lambda s: s["id"]):
        if not args["closing"] or not _match(s["service"], args["closing"]):
            held[s["service"] or "(none)"] = held.get(s["service"] or "(none)", 0) + 1
            continue
        age = session_age(s, facts.now)
        if args["older_than"] is not None and (age is None or age < args["older_than"]):
            young += 1
            continue
        if s["id"] == facts.self_session or protected.intersection(s["procs"]):
            held["{} (holds this minion)".format(s["service"])] = 1
            continue
        ids = [[p, facts.procs[p]["starttime"]] for p in s["procs"]]
        items.append({"session": s["id"], "service": s["service"], "user": _user(s, facts), "pids": ids})
    notes = ["Left alone: {} closing session(s) of {} (name the service in closing to reap their leftovers)".format(
        n, svc) for svc, n in sorted(held.items())]
    if young:
        notes.append("Left alone: {} matching closing session(s) younger than older_than={} s".format(
            young, args["older_than"]))
    return items, notes


def _orphan_notes(diag):
    facts = diag.facts
    lost = sorted(s["id"] for s in orphaned(classify(facts)["stale"], facts.users)) if facts.parsed else []
    if not lost:
        return []
    directory = os.path.join("/run", "systemd", "sessions")
    return ["Left alone: {} stale session file(s) of users logind does not track; a restart does not remove "
            "them (logind never loads them). Delete them by hand: rm {}{}".format(
                len(lost), " ".join(os.path.join(directory, i) for i in lost[:10]), " ..." if len(lost) > 10 else "")]


def _restart_item(diag):
    """``(stale ids, problems)`` of the logind restart: the stale files of
    users logind tracks."""
    facts = diag.facts
    if not _restart_wanted(diag):
        return [], []
    classes = classify(facts)
    lost = {s["id"] for s in orphaned(classes["stale"], facts.users)}
    stale = sorted(s["id"] for s in classes["stale"] if s["id"] not in lost)
    gui = diag.details["graphical"]
    if gui:
        return [], ["Not restarting systemd-logind: graphical session(s) {} are in use; {} stale session "
                    "file(s) stay until they end".format(", ".join(gui), len(stale))]
    if LOGIND_UNIT in facts.refusals:
        return [], ["Not restarting systemd-logind: " + facts.refusals[LOGIND_UNIT]]
    return stale, []


def _pam_items(diag, args):
    """``(items, problems, notes)`` of the cron PAM edits."""
    status = pam_status(diag.facts)
    if not status:
        return [], [], []
    if args["cron_pam"] == "keep":
        return [], [], ["pam_systemd is in the PAM stack of {} (kept: cron_pam=remove takes it out)".format(
            ", ".join(sorted(status)))]
    items, problems = [], []
    files = diag.facts.pam["files"]
    for service in sorted(status):
        new, why = strip_pam_systemd(service, files)
        if new is None:
            problems.append("PAM stack of {} not edited: {}".format(service, why))
            continue
        path = os.path.join(diag.facts.pam["etc"], service)
        old = files[service]["text"] if files[service]["path"] == path else ""
        diff = "\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), path, path, lineterm=""))
        items.append({"service": service, "path": path, "read_from": files[service]["path"],
                      "old": files[service]["text"], "new": new, "diff": diff})
    return items, problems, []


def _refusal(diag):
    """Why nothing may be done at all, or ``None``."""
    facts = diag.facts
    dbus = bus_verdicts(facts).get("dbus")
    if dbus:
        return ("Nothing done: the system bus (dbus, PID {}) runs a deleted binary; logind talks to everything "
                "through it and dbus cannot be restarted safely (systemd #2488): reboot this host").format(
            ", ".join(map(str, sorted(dbus))))
    if facts.euid != 0:
        return "Nothing done: the minion runs as uid {}; logind_clean needs root".format(facts.euid)
    return None


def _changes(pam, reap, stale):
    changes = {}
    if pam:
        changes["pam"] = {it["path"]: {"diff": it["diff"]} for it in pam}
    if reap:
        changes["reaped"] = [{"session": it["session"], "service": it["service"], "user": it["user"],
                              "pids": [p for p, _ in it["pids"]]} for it in reap]
    if stale:
        changes["restarted"] = [LOGIND_UNIT]
        changes["stale_files"] = {"old": len(stale), "new": 0}
    return changes


def _preview(pam, reap, stale, rss):
    lines = []
    lines.extend("Would remove pam_systemd from the PAM stack of {} ({})".format(it["service"], it["path"])
                 for it in pam)
    if reap:
        lines.append("Would reap the leftovers of {} closing session(s): {} process(es)".format(
            len(reap), sum(len(it["pids"]) for it in reap)))
    if stale:
        lines.append("Would restart systemd-logind (RSS {} MB) to drop {} stale session file(s)".format(rss, len(stale)))
    return lines


def plan(diag, args):
    """What ``logind_clean`` would do. Pure."""
    facts = diag.facts
    if not facts.systemd or not facts.present:
        return hostcheck_check.Plan(idle=diag.notes[0] if diag.notes else "Nothing to do")
    pam, problems, notes = _pam_items(diag, args)
    reap, reap_notes = _reap_items(diag, args)
    stale, restart_problems = _restart_item(diag)
    problems += restart_problems
    notes += reap_notes + _orphan_notes(diag) + [n for n in facts.notes if n.startswith("start limits")]
    if pam or reap or stale:
        why = _refusal(diag)
        if why:
            return hostcheck_check.Plan(problems=[why] + problems, notes=notes)
    rss = diag.details["rss_mb"]
    actions = {"pam": pam, "reap": reap, "stale": stale, "rss_mb": rss, "sessions": facts.count,
               "never": list(facts.protected),
               "rss_alarm": any(f["code"] == "logind-memory" for f in diag.findings)}
    return hostcheck_check.Plan(_changes(pam, reap, stale), actions, problems, notes,
                                _preview(pam, reap, stale, rss), idle="Nothing to clean in logind's sessions")


def _unchanged(path, old):
    """True when ``path`` still holds ``old`` (the text the plan was made from)."""
    try:
        now = hostcheck_files.read_regular(path, limit=FILE_LIMIT)
    except OSError:
        return False
    return now is not None and now.text() == old


def _write_pam(items, out):
    """Write the PAM edits, each only if its source is unchanged since the
    diagnosis; when one fails, the ones written are rolled back."""
    done = []
    for it in items:
        if not _unchanged(it["read_from"], it["old"]):
            out.problems.append("{} changed since it was read: not edited".format(it["read_from"]))
            continue
        try:
            snap = hostcheck_files.Snapshot(it["path"])
            hostcheck_files.atomic_write(it["path"], it["new"].encode("utf-8", "surrogateescape"))
        except OSError as exc:
            out.problems.append("Writing {} failed: {}".format(it["path"], exc.strerror or exc))
            for prev, prev_snap in reversed(done):
                try:
                    prev_snap.restore()
                    out.lines.append("Rolled back {}".format(prev["path"]))
                except OSError as exc2:
                    out.problems.append("Could not roll back {}: {}".format(prev["path"], exc2))
            return
        done.append((it, snap))
    for it, _ in done:
        out.changes.setdefault("pam", {})[it["path"]] = {"diff": it["diff"]}
        out.lines.append("Removed pam_systemd from the PAM stack of {} ({})".format(it["service"], it["path"]))


def _wait_sessions_gone(run_root, ids, timeout=GONE_WAIT):
    base = os.path.join(run_root, "systemd", "sessions")
    end = time.monotonic() + timeout
    left = list(ids)
    while left:
        left = [i for i in left if os.path.lexists(os.path.join(base, i))]
        if not left or time.monotonic() >= end:
            break
        time.sleep(0.1)
    return left


def _reap(host, items, never, out):
    members = [tuple(m) for it in items for m in it["pids"]]
    res = hostcheck_reaper.reap(members, timeout=REAP_TIMEOUT, proc_root=host.proc_root,
                                never=set(never) | {os.getpid()})
    ended = set(res["terminated"] + res["killed"] + res["gone"])
    reaped = []
    for it in items:
        pids = [p for p, _ in it["pids"] if p in ended]
        if pids:
            reaped.append({"session": it["session"], "service": it["service"], "user": it["user"], "pids": pids})
    if reaped:
        out.changes["reaped"] = reaped
        out.lines.append("Reaped the leftovers of {} closing session(s): {} terminated, {} killed, "
                         "{} had already exited".format(len(reaped), len(res["terminated"]), len(res["killed"]),
                                                        len(res["gone"])))
    if res["survivors"]:
        out.problems.append("Leftovers still alive after SIGKILL: PIDs {}".format(
            ", ".join(map(str, res["survivors"]))))
    left = _wait_sessions_gone(host.run_root, [it["session"] for it in reaped])
    if left:
        out.notes.append("{} reaped session(s) still listed by logind after {:.0f} s".format(len(left), GONE_WAIT))


def _restart(host, stale, rss, out):
    errors = hostcheck_service.restart_units([LOGIND_UNIT])
    if errors.get(LOGIND_UNIT):
        out.problems.append("systemctl restart {} failed: {}".format(LOGIND_UNIT, errors[LOGIND_UNIT]))
        return
    left = _wait_sessions_gone(host.run_root, stale)
    out.changes["restarted"] = [LOGIND_UNIT]
    out.changes["stale_files"] = {"old": len(stale), "new": len(left)}
    out.lines.append("Restarted systemd-logind (systemctl restart; RSS before: {} MB): {} of {} stale session "
                     "file(s) dropped".format(rss, len(stale) - len(left), len(stale)))


def apply(host, plan_, args):  # pylint: disable=unused-argument
    """Edit cron's PAM file (the inflow first), reap the named leftovers,
    then restart logind (through hostcheck_files, hostcheck_reaper and
    hostcheck_service only)."""
    act = plan_.actions
    out = hostcheck_check.Outcome()
    if act["pam"]:
        _write_pam(act["pam"], out)
    if act["reap"]:
        _reap(host, act["reap"], act.get("never", ()), out)
    if act["stale"]:
        _restart(host, act["stale"], act["rss_mb"], out)
    return out


def verify(plan_, outcome, after, args):  # pylint: disable=unused-argument
    """Problems the new diagnosis shows: cron's stack still has pam_systemd,
    reaped sessions still hold processes, stale files still there, logind's
    memory did not drop."""
    act = plan_.actions
    problems = []
    facts = after.facts
    edited = {it["service"] for it in act["pam"] if it["path"] in outcome.changes.get("pam", {})}
    still = sorted(edited & set(pam_status(facts)))
    if still:
        problems.append("pam_systemd is still in the PAM stack of " + ", ".join(still))
    by_id = {s["id"]: s for s in facts.sessions}
    reaped = [it["session"] for it in outcome.changes.get("reaped", [])]
    busy = [i for i in reaped if i in by_id and by_id[i].get("procs")]
    if busy:
        problems.append("Closing session(s) still hold processes after reaping: " + ", ".join(busy[:20]))
    if "restarted" in outcome.changes:
        problems.extend(_verify_restart(act, after))
    return problems


def _verify_restart(act, after):
    problems = []
    stale_now = {s["id"] for s in classify(after.facts)["stale"]}
    left = [i for i in act["stale"] if i in stale_now]
    if left:
        problems.append("{} stale session file(s) still there after the restart (e.g. {})".format(
            len(left), ", ".join(left[:5])))
    if after.details["sessions"] >= act["sessions"]:
        problems.append("the session pile did not shrink: {} files before, {} after".format(
            act["sessions"], after.details["sessions"]))
    before, now = act["rss_mb"], after.details["rss_mb"]
    if now is None:
        problems.append("systemd-logind is not running after its restart")
    elif act["rss_alarm"] and before is not None and now >= before:
        problems.append("systemd-logind's memory did not drop: {} MB before, {} MB after".format(before, now))
    return problems
