"""A tiny PID 1 for a test PID namespace.

Run as ``unshare --pid --fork --mount-proc --kill-child python nsinit.py CONTROL_DIR``.

It does what an init must do and nothing else:

* reaps every child, including orphans re-parented to it (a leaked process
  tree whose parent was SIGKILLed lands here, exactly as on a host where it
  lands on PID 1);
* starts programs on request: a test writes one JSON object per line to the
  FIFO ``CONTROL_DIR/control`` (``{"argv": [...], "env": {...}, "cwd": ...,
  "output": path, "tag": str}``) and the init forks and execs it (in a new
  session), so the program's parent is the namespace's PID 1, as for a daemon
  started from an init script;
* logs every spawn and every reaped child, with a monotonic time stamp, to
  ``CONTROL_DIR/init.log`` (one JSON object a line), so a test can read the
  timeline afterwards;
* exits on SIGTERM or SIGINT. When PID 1 of a PID namespace exits the kernel
  SIGKILLs every other process in the namespace, so the bed cleans itself up.

Standard library only; it must not import anything from the project.
"""
import json
import os
import select
import signal
import sys
import time


def _log(fp, **record):
    record["t"] = round(time.monotonic(), 3)
    fp.write(json.dumps(record, sort_keys=True) + "\n")
    fp.flush()


def _spawn(request, log_fp):
    argv = request["argv"]
    env = request.get("env")
    cwd = request.get("cwd") or "/"
    output = request.get("output") or os.devnull
    pid = os.fork()
    if pid == 0:  # child
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.setsid()
            fd_in = os.open(os.devnull, os.O_RDONLY)
            fd_out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd_in, 0)
            os.dup2(fd_out, 1)
            os.dup2(fd_out, 2)
            os.closerange(3, 65536)
            os.chdir(cwd)
            if env is None:
                os.execv(argv[0], argv)
            else:
                os.execve(argv[0], argv, env)
        except BaseException as exc:  # noqa: BLE001 - report and die, never return into init
            try:
                os.write(2, f"nsinit: exec {argv!r} failed: {exc!r}\n".encode())
            finally:
                os._exit(127)
    _log(log_fp, event="spawn", pid=pid, argv=argv, tag=request.get("tag"))
    return pid


def _reap(log_fp):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):
            _log(log_fp, event="reap", pid=pid, signal=os.WTERMSIG(status))
        else:
            _log(log_fp, event="reap", pid=pid, exitcode=os.WEXITSTATUS(status))


def main(control_dir):
    stop = []

    def _stop(signum, frame):  # noqa: ARG001
        stop.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # A SIGCHLD handler (rather than SIG_DFL) makes select() return early.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    fifo = os.path.join(control_dir, "control")
    log_fp = open(os.path.join(control_dir, "init.log"), "a", encoding="utf-8")  # noqa: SIM115
    # O_RDWR keeps the FIFO open for reading even when no writer is connected,
    # so select() never spins on EOF.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    _log(log_fp, event="ready", pid=os.getpid())
    buf = b""
    while not stop:
        try:
            readable, _, _ = select.select([fd], [], [], 0.5)
        except InterruptedError:
            readable = []
        if readable:
            try:
                buf += os.read(fd, 65536)
            except BlockingIOError:
                pass
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    _spawn(json.loads(line), log_fp)
                except Exception as exc:  # noqa: BLE001 - a bad request must not kill init
                    _log(log_fp, event="error", error=repr(exc))
        _reap(log_fp)
    _log(log_fp, event="exit", signal=stop[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
