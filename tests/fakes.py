"""Fakes shared by the unit tests: /proc trees on disk and a guard that
makes every host access fail (to prove a stage is pure)."""
import builtins
import contextlib
import os
import pwd
import subprocess

import pytest


def make_proc(root, pid, ppid, comm="prog", pgid=None, sid=None, starttime=500, flags=0,
              cmdline=b"prog\0", cgroup=b"0::/\n", environ=b"", uid=0, exe=None, tty=0,
              loginuid=None, ns=None):
    """One process directory in a fake ``/proc`` tree at ``root``."""
    d = root / str(pid)
    d.mkdir()
    pgid = pid if pgid is None else pgid
    sid = pid if sid is None else sid
    fields = ["S", ppid, pgid, sid, tty, -1, flags] + [0] * 12 + [starttime] + [0] * 30
    (d / "stat").write_text("{} ({}) {}\n".format(pid, comm, " ".join(map(str, fields))))
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_bytes(cgroup)
    (d / "environ").write_bytes(environ)
    (d / "status").write_text("Name:\t{}\nUid:\t{}\t{}\t{}\t{}\n".format(comm, uid, uid, uid, uid))
    (d / "loginuid").write_text(str(4294967295 if loginuid is None else loginuid))
    if exe:
        os.symlink(exe, d / "exe")
    (d / "ns").mkdir()
    for kind, value in (ns or {"pid": "pid:[4026531836]", "mnt": "mnt:[4026531841]"}).items():
        os.symlink(value, d / "ns" / kind)
    return d


def fake_proc_root(tmp_path, btime=1700000000):
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 1 2 3\nbtime {}\n".format(btime))
    return root


def fake_systemd_run(tmp_path, links):
    """A fake ``/run`` where systemd runs and ``links`` are the running units' invocation ids."""
    run = tmp_path / "run"
    units = run / "systemd" / "units"
    units.mkdir(parents=True)
    (run / "systemd" / "system").mkdir()
    for unit, inv in links.items():
        os.symlink(inv, units / ("invocation:" + unit))
    return run


def _refuse(*args, **kwargs):
    raise RuntimeError("host access during a pure stage: {!r}".format(args[:1]))


def forbid_host_access(monkeypatch):
    """Make file, NSS, process and subprocess access raise RuntimeError (not
    OSError, which readers swallow) for the rest of the test."""
    for mod, name in ((builtins, "open"), (os, "open"), (os, "stat"), (os, "lstat"), (os, "readlink"),
                      (os, "listdir"), (os, "scandir"), (os, "kill"), (os, "sysconf"),
                      (subprocess, "run"), (subprocess, "Popen"), (pwd, "getpwuid"), (pwd, "getpwnam")):
        monkeypatch.setattr(mod, name, _refuse)


@contextlib.contextmanager
def host_access_forbidden():
    """:func:`forbid_host_access` for the ``with`` block only, so a failing
    assertion after it is reported by a pytest that can read files again."""
    with pytest.MonkeyPatch.context() as mp:
        forbid_host_access(mp)
        yield
