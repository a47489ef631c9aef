"""What the benches share: interleaved CPU-time measurement, the median's
confidence interval, and a bench's private PID namespace: the host side
(:class:`Namespace`: started, settled, stopped) and the inner side (filling
it with small process trees, staying its init until the bench lets go)."""
import ctypes
import gc
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time


def measure(funcs, repeat, warmup, order=None):
    """``{name: [ms, ...]}``: CPU time of this process (``time.process_time``)
    of each of ``funcs`` (``{name: callable}``), ``warmup`` + ``repeat``
    runs, each run in ``order`` (default: the dict's) rotated by one, after
    ``gc.collect()``; each result is dropped after its timer stops and the
    warm-up runs are not kept."""
    names = list(order or funcs)
    times = {n: [] for n in names}
    for run in range(warmup + repeat):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            t0 = time.process_time()
            result = funcs[name]()
            dt = time.process_time() - t0
            del result
            if run >= warmup:
                times[name].append(dt * 1e3)
    return times


def median_ci(values, level=0.95):
    """``(low, high)``: a distribution-free confidence interval of the median
    of ``values`` (order statistics: the ``r``-th smallest and largest, ``r``
    the largest rank with ``P(Binomial(n, 1/2) < r) <= (1 - level) / 2``).
    With too few values for that (fewer than 6 at 95%): ``None``."""
    xs, n = sorted(values), len(values)
    tail, below, r = (1 - level) / 2, 0.0, 0
    while r < n:
        below += math.comb(n, r) / 2 ** n  # P(Binomial(n, 1/2) <= r)
        if below > tail:
            break
        r += 1
    if r == 0:
        return None
    return xs[r - 1], xs[n - r]


def fill_small_trees(planned, total, spawn, sh, sleep, seconds):
    """Start small trees until ``total`` processes are planned (``planned``
    so far): a shell with 1-4 sleeping children, every fourth a session
    leader (like a daemon); a lone ``sleep`` for the last one.
    ``spawn(argv, session)`` starts one. Returns the new ``planned``."""
    sizes, idx = (3, 2, 4, 1, 3, 2), 0
    while planned < total:
        left = total - planned
        if left == 1:
            spawn([sleep, seconds], False)
            return planned + 1
        kids = min(sizes[idx % len(sizes)], left - 1)
        script = " ".join(["sleep {} &".format(seconds)] * kids) + " wait"
        spawn([sh, "-c", script], idx % 4 == 0)
        planned += 1 + kids
        idx += 1
    return planned


def reap():
    """Collect every exited child (the namespace's init adopts them all)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve_until_eof():
    """Stay the namespace's init, reaping, until the bench closes our stdin
    (or dies): then return 0, and the kernel kills everything in the
    namespace when we exit."""
    while True:
        ready, _, _ = select.select([0], [], [], 0.5)
        reap()
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                return 0


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def _set_pdeathsig():
    """Runs in the forked child before exec of unshare: die with the bench."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def ns_members(ns_id):
    """Host PIDs whose PID namespace is ``ns_id``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _readlink("/proc/{}/ns/pid".format(name)) == ns_id:
            out.append(int(name))
    return out


class Namespace:
    """A bench's private PID namespace: ``unshare --pid --fork --kill-child
    --mount-proc`` running ``script --inner ARGS...`` as its init, which
    prints ``SPAWNED N`` once it has started the ``N`` processes it plans
    (itself included). Everything in it was started by the bench; when the
    bench exits, is interrupted or killed, the init exits (stdin EOF,
    ``--kill-child``, ``PR_SET_PDEATHSIG`` on ``unshare``) and the kernel
    kills the rest. Nothing is signalled by name."""

    def __init__(self, script, inner_args):
        self.script, self.inner_args = script, list(inner_args)
        self.popen = self.init_pid = self.ns_id = self.planned = None

    def start(self, timeout=120.0):
        """Start the namespace and wait until it settles; the number of processes in it."""
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SystemExit("unshare (util-linux) is needed")
        argv = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable,
                os.path.abspath(self.script), "--inner"] + self.inner_args
        self.popen = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_set_pdeathsig)
        line = self.popen.stdout.readline().decode().strip()
        if not line.startswith("SPAWNED "):
            raise SystemExit("bench namespace failed: {!r}".format(line))
        self.planned = int(line.split()[1])
        kids = _read("/proc/{0}/task/{0}/children".format(self.popen.pid)) or b""
        self.init_pid = int(kids.split()[0])
        self.ns_id = _readlink("/proc/{}/ns/pid".format(self.init_pid))
        if self.ns_id is None or self.ns_id == _readlink("/proc/self/ns/pid"):
            raise SystemExit("could not find the bench namespace")
        return self._settle(timeout)

    def ready(self):
        """Whether what the bench needs beyond the count is in place (a hook)."""
        return True

    def _settle(self, timeout):
        """Wait until every planned process runs and :meth:`ready`, three polls in a row."""
        deadline, stable, count = time.monotonic() + timeout, 0, 0
        while time.monotonic() < deadline:
            count = len(ns_members(self.ns_id))
            stable = stable + 1 if count == self.planned and self.ready() else 0
            if stable >= 3:
                return count
            time.sleep(0.2)
        raise SystemExit("namespace has {} processes, expected {}".format(count, self.planned))

    def stop(self):
        """Let the init go (stdin EOF) and wait until the namespace is empty."""
        if self.popen is None:
            return
        try:
            self.popen.stdin.close()  # init sees EOF and exits: the kernel kills the rest
        except OSError:
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # our own unshare; --kill-child takes the init with it
            self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.ns_id and ns_members(self.ns_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.popen = None
