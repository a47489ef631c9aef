"""What the benches share: interleaved CPU-time measurement and the inner
side of a bench's PID namespace (filling it with small process trees,
staying its init until the bench lets go)."""
import gc
import os
import select
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
