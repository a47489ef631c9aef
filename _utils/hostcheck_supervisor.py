"""Restart supervisord programs without executing anything found through a
process: the stdlib XML-RPC client talks to the supervisord that started the
program, at the ``SUPERVISOR_SERVER_URL`` supervisord put in the program's
environment (a provenance key, see ``hostcheck_proc.PROVENANCE_KEYS``).

``unix:///path`` URLs are used only when the socket belongs to the same
user as that supervisord process; ``http://host:port`` URLs only on
loopback. Programs whose supervisord gave no URL fall back to the
``supervisorctl`` on ``PATH`` with its default configuration.

A restart is what ``supervisorctl restart`` does: ``stopProcess`` (a program
that is not running is fine) then ``startProcess``, both waiting for the
result. Runtime dependencies: the Python standard library only.
"""

import http.client
import os
import socket
import subprocess
import xmlrpc.client

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


def proxy(url, owner_uid=None, timeout=60):
    """``(ServerProxy, None)`` for a supervisord ``url`` or ``(None, why)``."""
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
        transport = xmlrpc.client.Transport()
        transport.timeout = timeout
        return xmlrpc.client.ServerProxy(url.rstrip("/") + "/RPC2"), None
    return None, "unsupported server URL {!r}".format(url)


def restart(server, program):
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


def restart_all(programs, via, timeout=60):
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
        server, why = proxy(url, server_info.get("uid"), timeout)
        if server is None:
            errors.append("{}: {}".format(program, why))
            continue
        ok, msg = restart(server, program)
        (restarted if ok else errors).append(msg)
        if ok:
            methods.append("{}: XML-RPC at {}".format(program, url))
    if fallback:
        try:
            proc = subprocess.run(["supervisorctl", "restart"] + fallback, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            ok, out = proc.returncode == 0, proc.stdout.decode("utf-8", "replace").strip()
        except (OSError, subprocess.SubprocessError) as exc:
            ok, out = False, str(exc)
        if ok:
            restarted.extend(fallback)
            methods.extend("{}: supervisorctl on PATH".format(p) for p in fallback)
        else:
            errors.append("supervisorctl restart {} failed: {}".format(" ".join(fallback), out))
    return restarted, errors, methods
