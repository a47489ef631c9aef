"""hostcheck_reaper on real processes (our own children only): identity-checked
signals, the freeze/TERM/KILL reaper, waiting, the lock."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import hostcheck_proc as hp
import hostcheck_reaper as hr


def _spawn(code="import time; time.sleep(60)"):
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    return child


def _start(pid):
    return hp.parse_stat(hp.read_bytes("/proc/{}/stat".format(pid)))[6]


@pytest.fixture
def children():
    procs = []
    yield procs
    for child in procs:
        if child.poll() is None:
            child.kill()
            child.wait()


def _waiter(child):
    t = threading.Thread(target=child.wait)  # reap the zombie as the reaper waits
    t.start()
    return t


def test_send_refuses_pid_reuse(children):
    child = _spawn()
    children.append(child)
    st = _start(child.pid)
    assert not hr.send(child.pid, st + 1, signal.SIGTERM)  # wrong start time
    time.sleep(0.1)
    assert child.poll() is None
    assert hr.send(child.pid, st, signal.SIGTERM)
    assert child.wait(5) == -signal.SIGTERM


def test_reap_terms_then_kills_stubborn(children):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"
    child = _spawn(code)
    children.append(child)
    child.stdout.readline()
    waiter = _waiter(child)
    out = hr.reap([(child.pid, _start(child.pid))], timeout=0.5)
    waiter.join(5)
    assert out["killed"] == [child.pid] and out["survivors"] == [] and out["gone"] == []
    assert child.returncode == -signal.SIGKILL


def test_reap_of_a_tree_that_already_exited_signals_nothing(children):
    child = _spawn("pass")
    children.append(child)
    st = _start(child.pid) if os.path.exists("/proc/{}/stat".format(child.pid)) else 1
    child.wait(5)
    out = hr.reap([(child.pid, st)], timeout=0.5)
    assert out == {"terminated": [], "killed": [], "survivors": [], "gone": [child.pid]}


def test_reap_never_signals_protected(children):
    child = _spawn()
    children.append(child)
    out = hr.reap([(child.pid, _start(child.pid))], timeout=0.2, never=(1, child.pid))
    assert out["terminated"] == [] and child.poll() is None


def test_wait_gone_and_alive(children):
    child = _spawn()
    children.append(child)
    ident = (child.pid, _start(child.pid))
    assert hr.alive([ident]) == [ident]
    assert hr.wait_gone([ident], 0.2) == [ident]
    child.kill()
    waiter = _waiter(child)
    assert hr.wait_gone([ident], 5) == []
    waiter.join(5)


def test_protected_is_pid1_self_and_ancestors():
    snap = hp.snapshot()
    prot = hr.protected(snap)
    assert {1, os.getpid(), os.getppid()} <= prot


def test_host_lock_takes_turns(tmp_path):
    with hr.HostLock("orphans", str(tmp_path), wait=0.2):
        with pytest.raises(hr.Busy, match="another hostcheck remedy"):
            with hr.HostLock("orphans", str(tmp_path), wait=0.2):
                pass
        with hr.HostLock("timezone", str(tmp_path), wait=0.2):
            pass  # another remedy's lock
    with hr.HostLock("orphans", str(tmp_path), wait=0.2):
        pass  # released


def test_host_lock_creates_its_directory_or_is_skipped(tmp_path):
    with hr.HostLock("orphans", str(tmp_path), wait=0.1) as lock:
        assert lock.fd is not None and (tmp_path / "hostcheck" / "orphans.lock").exists()
    with hr.HostLock("orphans", str(tmp_path / "nope"), wait=0.1) as lock:
        assert lock.fd is None
