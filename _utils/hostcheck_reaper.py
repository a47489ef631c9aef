"""Acting on processes safely: the one home of protected PIDs, identity-checked
signals, waiting for processes to exit, the freeze/TERM/KILL reaper, the
detached helper that reaps after the job has returned, and the lock that
keeps two remedies from acting on the same host at once.

A process is named by its identity, ``(pid, starttime)``: the start time in
clock ticks after boot, from ``/proc/PID/stat``. Every signal re-checks the
identity through a pidfd, so a PID that was reused since the diagnosis is
never signalled.

Runtime dependencies: the Python standard library only.
"""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_proc


def protected(snap):
    """PIDs no remedy may signal: PID 1, this process and its ancestors
    (the minion running the job, up to its service manager)."""
    out = {1}
    if snap.self_pid is not None:
        out.add(snap.self_pid)
        out.update(snap.ancestors(snap.self_pid))
    return out


def send(pid, starttime, sig, proc_root="/proc"):
    """Send ``sig`` to ``pid`` only if it still is the process diagnosed.

    Uses a pidfd where the kernel has one, so the identity check and the
    signal refer to the same process even if the PID is reused in between.
    Returns True when the signal was delivered.
    """
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
    try:
        if not hostcheck_proc.still_same(pid, starttime, proc_root):
            return False
        if pidfd is not None and hasattr(signal, "pidfd_send_signal"):
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


class Kernel:
    """What the reaper asks of the system: identity-checked signals, whether
    an identity is alive, and the children of a set of processes. Tests
    drive :func:`reap` with a simulated one."""

    def __init__(self, proc_root="/proc"):
        self.proc_root = proc_root

    def send(self, pid, starttime, sig):
        return send(pid, starttime, sig, self.proc_root)

    def same(self, pid, starttime):
        return hostcheck_proc.still_same(pid, starttime, self.proc_root)

    def children(self):
        """``{ppid: [(pid, starttime), ...]}`` of every process but kernel threads."""
        snap = hostcheck_proc.snapshot(self.proc_root)
        out = {}
        for proc in snap.user_procs:
            out.setdefault(proc.ppid, []).append((proc.pid, proc.starttime))
        return out


def alive(identities, proc_root="/proc", kernel=None):
    """The identities in ``[(pid, starttime)]`` still alive (not zombies)."""
    kernel = kernel or Kernel(proc_root)
    return [(pid, st) for pid, st in identities if kernel.same(pid, st)]


def wait_gone(identities, timeout, proc_root="/proc", poll=0.05, kernel=None):
    """Wait up to ``timeout`` seconds until none of ``identities`` is alive;
    returns the survivors."""
    kernel = kernel or Kernel(proc_root)
    end = time.monotonic() + max(0.0, float(timeout))
    left = alive(identities, kernel=kernel)
    while left and time.monotonic() < end:
        time.sleep(poll)
        left = alive(left, kernel=kernel)
    return left


def _new_children(members, kernel, never):
    """Children forked by tree members since the plan was made (they belong
    to the tree). Only members still alive as diagnosed are expanded: the
    children of a reused PID belong to someone else."""
    children = kernel.children()
    have = {pid for pid, _ in members}
    found = []
    queue = [pid for pid, st in members if kernel.same(pid, st)]
    while queue:
        parent = queue.pop()
        for child, st in children.get(parent, ()):
            if child in have or child in never:
                continue
            have.add(child)
            found.append((child, st))
            queue.append(child)
    return found


def reap(members, timeout=10.0, proc_root="/proc", never=(1,), poll=0.05, kernel=None):
    """Terminate one tree: freeze it, SIGTERM every member, thaw, wait, SIGKILL the rest.

    ``members`` is ``[(pid, starttime), ...]``. Freezing first (SIGSTOP)
    keeps a parent from re-spawning children between the signals; children
    forked before the freeze join the tree. Every signal re-checks identity.
    Returns ``{"terminated": [...], "killed": [...], "survivors": [...],
    "gone": [...]}`` (pids): ``gone`` were no longer there when the reaper
    came (they exited by themselves), ``terminated`` exited after SIGTERM,
    ``killed`` needed SIGKILL.
    """
    kernel = kernel or Kernel(proc_root)
    never = set(never) | {1}
    members = [(int(p), int(s)) for p, s in members if int(p) not in never]
    stopped = [m for m in members if kernel.send(m[0], m[1], signal.SIGSTOP)]
    extra = [m for m in _new_children(members, kernel, never) if kernel.send(m[0], m[1], signal.SIGSTOP)]
    stopped += extra
    gone = sorted(pid for pid, st in members if (pid, st) not in stopped and not kernel.same(pid, st))
    members = [m for m in members if m[0] not in gone] + extra
    termed = [m for m in members if kernel.send(m[0], m[1], signal.SIGTERM)]
    for pid, st in stopped:
        kernel.send(pid, st, signal.SIGCONT)
    deadline = time.monotonic() + max(0.0, float(timeout))
    left = alive(members, kernel=kernel)
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        for pid, st in _new_children(left, kernel, never):
            if kernel.send(pid, st, signal.SIGTERM):
                members.append((pid, st))
                termed.append((pid, st))
        left = alive(members, kernel=kernel)
    killed = sorted(pid for pid, st in left if kernel.send(pid, st, signal.SIGKILL))
    survivors = wait_gone(left, 2.0, poll=poll, kernel=kernel)
    return {
        "terminated": sorted(p for p, _ in termed if p not in killed),
        "killed": killed,
        "survivors": sorted(p for p, _ in survivors),
        "gone": gone,
    }


def spawn_deferred(plans, timeout, proc_root="/proc", grace=2.0, wait_limit=120.0):
    """Reap trees that contain this very process after this job has returned.

    Used when the job runs inside the leaked copy of a duplicated minion:
    killing the tree now would kill the job before it answers the master.
    A detached helper (own session, so it is not part of the tree once this
    process exits) waits until this process is gone, then reaps the planned
    identities exactly as :func:`reap` does. ``plans`` is a list of
    ``{"pids": [[pid, starttime], ...], "never": [pid, ...]}``. Returns the
    helper's PID.
    """
    me = os.getpid()
    stat = hostcheck_proc.parse_stat(hostcheck_proc.read_bytes("{}/{}/stat".format(proc_root, me)))
    payload = {
        "plans": [{"pids": p["pids"], "never": sorted(p.get("never", ()))} for p in plans],
        "timeout": timeout,
        "proc_root": proc_root,
        "grace": grace,
        "wait": [me, stat[6] if stat else 0],
        "wait_limit": wait_limit,
    }
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); "
        "import hostcheck_reaper; hostcheck_reaper.deferred_main(json.loads(sys.argv[2]))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", code, here, json.dumps(payload)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )
    return proc.pid


def deferred_main(payload):
    """Entry point of the detached helper started by :func:`spawn_deferred`."""
    proc_root = payload["proc_root"]
    wait_gone([payload["wait"]], payload["wait_limit"], proc_root, poll=0.1)
    time.sleep(payload["grace"])
    me = os.getpid()
    for item in payload["plans"]:
        reap(item["pids"], timeout=payload["timeout"], proc_root=proc_root,
             never=set(item.get("never", ())) | {1, me})


class Busy(Exception):
    """Another hostcheck remedy holds the lock."""


class HostLock:
    """An exclusive ``flock`` on ``<run_root>/hostcheck/<name>.lock`` (a
    directory only root can write: ``/run/lock`` is world-writable, and any
    user could hold a lock there; ``flock`` dies with its holder, so a
    crashed run leaves no stale lock).

    Two remedies of the same kind (two ``orphans_reaped`` runs from two
    minions on one host, or a highstate and a reactor) take turns: the
    second waits up to ``wait`` seconds, then diagnoses what the first left,
    so both never claim the same trees. Raises :class:`Busy` after
    ``wait``. The lock directory is created when ``run_root`` exists;
    where it cannot be (a non-root minion) the lock is skipped: such a
    minion cannot signal other users' processes anyway.
    """

    def __init__(self, name, run_root="/run", wait=120.0):
        self.path = os.path.join(run_root, "hostcheck", "{}.lock".format(name))
        self.wait = wait
        self.fd = None

    def __enter__(self):
        try:
            if os.path.isdir(os.path.dirname(os.path.dirname(self.path))):
                os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return self
        end = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= end:
                    os.close(self.fd)
                    self.fd = None
                    raise Busy("another hostcheck remedy holds {} (waited {:.0f} s)".format(
                        self.path, self.wait)) from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False
