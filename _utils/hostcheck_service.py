"""Service-manager access: the one home of every ``systemctl``, journal,
``timedatectl`` and supervisord call. Every call has a timeout; none runs a
binary found through a process.

Reading (diagnosis): :func:`systemd_running`, :func:`invocations`,
:func:`running_services`, :func:`show`, :func:`load_states`,
:func:`timedatectl_zone`, :func:`start_limits`.
Acting (remedies): :func:`restart_units`, :func:`daemon_reexec`,
:func:`daemon_reload`, :func:`schedule_restart`,
:func:`supervisor_restart_all`.

supervisord programs are restarted without executing anything found
through a process: the stdlib XML-RPC client talks to the supervisord that
started the program, at the ``SUPERVISOR_SERVER_URL`` supervisord put in
the program's environment. ``unix:///path`` URLs are used only when the
socket belongs to the same user as that supervisord process;
``http://host:port`` URLs only on loopback. Programs whose supervisord gave
no URL fall back to the ``supervisorctl`` on ``PATH``.

Runtime dependencies: the Python standard library only.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
import xmlrpc.client

#: seconds for a reading call (``systemctl show``, ``journalctl``)
READ_TIMEOUT = 10
#: seconds for an acting call (``systemctl restart`` of a set of units)
ACT_TIMEOUT = 120


def run(argv, timeout=READ_TIMEOUT):
    """``(ok, output)`` of a service-manager command; stdout and stderr
    together, decoded. A missing tool, a timeout or a non-zero exit is
    ``ok == False`` with the reason as output; nothing raises."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, "{} timed out after {} s".format(argv[0], timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, "{}: {}".format(argv[0], exc)
    text = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        return False, text or "{} exited {}".format(argv[0], proc.returncode)
    return True, text


# --------------------------------------------------------------------------
# systemd: reading


def systemd_running(run_root="/run"):
    """True when systemd is PID 1 of this system (sd_booted(3)'s test)."""
    return os.path.isdir(os.path.join(run_root, "systemd", "system"))


def has_systemctl(run_root="/run"):
    return systemd_running(run_root) and shutil.which("systemctl") is not None


def parse_show(text):
    """Parse ``systemctl show`` output for several units into ``{Id: {prop: value}}``."""
    units = {}
    current = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                for key in ("MainPID", "ControlPID"):
                    if key in current:
                        try:
                            current[key] = int(current[key] or 0)
                        except ValueError:
                            current[key] = 0
                units[current["Id"]] = current
            current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    return units


def show(names, properties, run_root="/run", timeout=READ_TIMEOUT):
    """``{unit: {prop: value}}`` from one ``systemctl show`` for ``names``
    (``MainPID``/``ControlPID`` as ints). ``None`` when systemd is not
    running, ``systemctl`` is missing or fails."""
    names = sorted({n for n in names if n})
    if not has_systemctl(run_root):
        return None
    if not names:
        return {}
    ok, text = run(["systemctl", "show", "--no-pager", "-p", ",".join(("Id",) + tuple(properties)), "--"]
                   + names, timeout)
    return parse_show(text) if ok else None


def invocations(run_root="/run"):
    """``{unit: invocation id}`` of every running unit, from ``/run/systemd/units``.

    systemd (232 and later) keeps an ``invocation:UNIT`` symlink there while a
    unit runs and removes it when the unit stops or fails; every process the
    run starts carries the same id as ``INVOCATION_ID``. Reading the links
    costs a few dozen readlinks and no subprocess. ``None`` when the
    directory is missing (no systemd, or an older one).
    """
    base = os.path.join(run_root, "systemd", "units")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    out = {}
    for name in names:
        if name.startswith("invocation:"):
            try:
                out[name[11:]] = os.readlink(os.path.join(base, name))
            except OSError:
                pass  # the unit stopped while we looked
    return out


def running_services(names, run_root="/run"):
    """``{unit: {"ActiveState": ..., "InvocationID": ...}}`` for ``names``.

    From the invocation links when systemd keeps them (``ActiveState`` is
    then ``"active"`` for a running unit and ``"inactive"`` for one that is
    not running, failed or stopped), else from one ``systemctl show``.
    ``None`` when systemd is not running or does not answer.
    """
    if not systemd_running(run_root):
        return None
    inv = invocations(run_root)
    if inv is not None:
        return {
            name: {"ActiveState": "active" if name in inv else "inactive", "InvocationID": inv.get(name)}
            for name in names
        }
    states = show(names, ("ActiveState", "InvocationID"), run_root=run_root)
    if states is None:
        return None
    return {
        name: {"ActiveState": st.get("ActiveState"), "InvocationID": st.get("InvocationID") or None}
        for name, st in states.items()
    }


def load_states(names, run_root="/run", timeout=READ_TIMEOUT):
    """``{unit: LoadState}`` (``not-found`` for unknown units) from one
    ``systemctl show``; ``None`` without systemd."""
    names = list(names)
    if not has_systemctl(run_root):
        return None
    if not names:
        return {}
    ok, text = run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState", "--"] + names, timeout)
    if not ok and not text.startswith("Id="):
        return None
    # systemctl show prints the blocks in argument order, even for unknown units
    blocks = [b for b in text.split("\n\n") if b.strip()]
    out = {}
    for name, block in zip(names, blocks):
        props = dict(line.partition("=")[::2] for line in block.splitlines())
        out[name] = props.get("LoadState") or "not-found"
    return out


def timedatectl_zone(run_root="/run", timeout=5):
    """Zone ``timedatectl`` reports, or ``None`` when it does not answer."""
    if not systemd_running(run_root) or shutil.which("timedatectl") is None:
        return None
    ok, value = run(["timedatectl", "show", "-p", "Timezone", "--value"], timeout)
    return value if ok and value and value != "n/a" and "\n" not in value else None


# --------------------------------------------------------------------------
# systemd: start limits

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


def _limits(props, units):
    """``(refused, limited)``: units already in start-limit-hit, and
    ``{unit: (burst, interval_usec, shown)}`` of units with a start limit."""
    refused, limited = {}, {}
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
    return refused, limited


def count_starts(journal_json, limited, now):
    """``{unit: starts within its interval}`` from ``journalctl -o json`` lines."""
    counts = dict.fromkeys(limited, 0)
    for line in journal_json.splitlines():
        try:
            entry = json.loads(line)
            unit = entry.get("UNIT")
            when = int(entry["__REALTIME_TIMESTAMP"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if unit in limited and entry.get("MESSAGE_ID") in (SD_MESSAGE_UNIT_STARTED, SD_MESSAGE_UNIT_FAILED) \
                and when >= now * 1e6 - limited[unit][1]:
            counts[unit] += 1
    return counts


def start_limits(units, now=None, runner=None):
    """Which of ``units`` a restart now would push into ``start-limit-hit``.

    systemd (252 too) does not expose a unit's start counter; it exposes
    ``StartLimitBurst``, ``StartLimitIntervalUSec`` and ``Result``. So: one
    ``systemctl show`` for all units, then one ``journalctl`` counting each
    unit's start attempts (``Started``/``Failed to start``, logged by PID 1)
    within its interval. A restart is one more start, so a unit with
    ``count >= burst`` is refused, as is a unit already in
    ``start-limit-hit``. The journal window slides while systemd's is fixed
    from its first start, so this may refuse a restart systemd would still
    allow, never the other way round.

    Returns ``({unit: reason}, notes)``; a unit whose count cannot be read
    (no journal) is not refused, and a note says so.
    """
    runner = runner or run
    units = list(units)
    if not units:
        return {}, []
    ok, text = runner(["systemctl", "show", "--no-pager",
                       "-p", "Id,ActiveState,Result,StartLimitBurst,StartLimitIntervalUSec", "--"] + units)
    if not ok:
        return {}, ["start limits not checked: systemctl show failed: " + text[:200]]
    refused, limited = _limits(parse_show(text), units)
    if not limited:
        return refused, []
    now = time.time() if now is None else now
    since = int(now - max(i for _, i, _ in limited.values()) / 1e6) - 1
    argv = ["journalctl", "--no-pager", "-q", "-b", "-o", "json", "--output-fields=UNIT,MESSAGE_ID",
            "--since=@{}".format(since), "_PID=1",
            "MESSAGE_ID=" + SD_MESSAGE_UNIT_STARTED, "MESSAGE_ID=" + SD_MESSAGE_UNIT_FAILED]
    argv += ["UNIT=" + u for u in sorted(limited)]
    ok, text = runner(argv)
    if not ok:
        return refused, ["start limits not checked for {}: journalctl failed: {}".format(
            ", ".join(sorted(limited)), text[:200])]
    counts = count_starts(text, limited, now)
    for unit, (burst, _interval, shown) in sorted(limited.items()):
        if counts[unit] >= burst:
            refused[unit] = ("a restart now would hit its start limit: started {} time{} in the last {} "
                             "(StartLimitBurst={}, StartLimitIntervalSec={}); not restarted, "
                             "apply again after {}").format(
                counts[unit], "" if counts[unit] == 1 else "s", shown, burst, shown, shown)
    return refused, []


# --------------------------------------------------------------------------
# systemd: acting


def restart_units(units, timeout=ACT_TIMEOUT):
    """``systemctl restart`` ``units`` in one call (never retried, so a
    restart never loops into a start limit). Returns ``{unit: None | error}``:
    when the call fails, each unit's ``ActiveState/Result`` names which."""
    units = list(units)
    if not units:
        return {}
    ok, out = run(["systemctl", "restart", "--"] + units, timeout)
    if ok:
        return dict.fromkeys(units)
    states = show(units, ("ActiveState", "Result")) or {}
    errors = {}
    for unit in units:
        st = states.get(unit) or {}
        if st.get("ActiveState") == "active" and st.get("Result") == "success":
            errors[unit] = None  # this one made it; another unit failed the call
        else:
            errors[unit] = "{} ({}/{})".format(out, st.get("ActiveState", "?"), st.get("Result", "?"))
    return errors


def daemon_reexec(timeout=ACT_TIMEOUT):
    """``(ok, output)`` of ``systemctl daemon-reexec`` (PID 1 onto its new binary)."""
    return run(["systemctl", "daemon-reexec"], timeout)


def daemon_reload(timeout=ACT_TIMEOUT):
    """``(ok, output)`` of ``systemctl daemon-reload``."""
    return run(["systemctl", "daemon-reload"], timeout)


def schedule_restart(unit, delay=10):
    """Restart ``unit`` ``delay`` seconds from now, from a transient systemd
    timer outside the caller's cgroup (``systemd-run --on-active``): how the
    minion restarts itself after its job has returned."""
    return run(["systemd-run", "--no-block", "--collect", "--on-active={}".format(int(delay)),
                "systemctl", "restart", "--", unit], READ_TIMEOUT)


# --------------------------------------------------------------------------
# supervisord

# supervisor's xmlrpc fault codes (supervisor/xmlrpc.py Faults)
NOT_RUNNING = 70
ALREADY_STARTED = 60


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host):
        return _UnixHTTPConnection(self._path, self._timeout)


class _TimeoutTransport(xmlrpc.client.Transport):
    """HTTP transport whose connection has a timeout (xmlrpc's default has none)."""

    def __init__(self, timeout):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def supervisor_proxy(url, owner_uid=None, timeout=60):
    """``(ServerProxy, None)`` for a supervisord ``url`` or ``(None, why)``.
    Every call through the proxy times out after ``timeout`` seconds."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        try:
            st = os.stat(path)
        except OSError as exc:
            return None, "socket {}: {}".format(path, exc.strerror)
        if owner_uid is not None and st.st_uid != owner_uid:
            return None, "socket {} is owned by uid {}, its supervisord runs as uid {}".format(
                path, st.st_uid, owner_uid)
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(path, timeout)), None
    if url.startswith("http://"):
        host = url[len("http://"):].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            return None, "{} is not on loopback".format(url)
        return xmlrpc.client.ServerProxy(url.rstrip("/") + "/RPC2", transport=_TimeoutTransport(timeout)), None
    return None, "unsupported server URL {!r}".format(url)


def supervisor_restart(server, program):
    """``(ok, message)``: stop then start ``group:program`` through ``server``."""
    try:
        try:
            server.supervisor.stopProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != NOT_RUNNING:
                raise
        try:
            server.supervisor.startProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != ALREADY_STARTED:
                raise
    except xmlrpc.client.Fault as exc:
        return False, "{}: {}".format(program, exc.faultString)
    except xmlrpc.client.ProtocolError as exc:
        why = "needs credentials (not available to hostcheck)" if exc.errcode == 401 else exc.errmsg
        return False, "{}: supervisord refused: {} {}".format(program, exc.errcode, why)
    except (OSError, http.client.HTTPException) as exc:
        return False, "{}: {}".format(program, exc)
    return True, program


def supervisor_restart_all(programs, via, timeout=60):
    """Restart ``programs`` (``group:program`` names). ``via`` maps a
    program to ``{"url": ..., "uid": ...}`` of its supervisord, or nothing.
    Returns ``(restarted, errors, methods)``."""
    restarted, errors, methods = [], [], []
    fallback = []
    for program in programs:
        server_info = via.get(program) or {}
        url = server_info.get("url")
        if not url:
            fallback.append(program)
            continue
        server, why = supervisor_proxy(url, server_info.get("uid"), timeout)
        if server is None:
            errors.append("{}: {}".format(program, why))
            continue
        ok, msg = supervisor_restart(server, program)
        (restarted if ok else errors).append(msg)
        if ok:
            methods.append("{}: XML-RPC at {}".format(program, url))
    if fallback:
        ok, out = run(["supervisorctl", "restart"] + fallback, timeout)
        if ok:
            restarted.extend(fallback)
            methods.extend("{}: supervisorctl on PATH".format(p) for p in fallback)
        else:
            errors.append("supervisorctl restart {} failed: {}".format(" ".join(fallback), out))
    return restarted, errors, methods
