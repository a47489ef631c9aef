"""Snapshot layer on fake /proc trees: parsing, laziness, vanishing processes."""
import os

import pytest

import hostcheck_proc as hp
from tests.fakes import fake_proc_root, make_proc


@pytest.fixture
def fakeproc(tmp_path):
    return fake_proc_root(tmp_path)


def test_parse_stat_comm_with_spaces_and_parens():
    raw = b"42 (we ird) (x)) S 1 42 42 0 -1 4194560 " + b" ".join([b"0"] * 12) + b" 777 0 0\n"
    comm, state, ppid, pgid, sid, flags, start = hp.parse_stat(raw)
    assert comm == "we ird) (x)"
    assert (state, ppid, pgid, sid, start) == ("S", 1, 42, 42, 777)


def test_parse_stat_garbage_is_none():
    assert hp.parse_stat(b"") is None
    assert hp.parse_stat(b"garbage") is None
    assert hp.parse_stat(b"1 (x) S 1 2") is None


def test_cgroup_v1_named_hierarchy_wins_over_unified():
    raw = b"12:memory:/system.slice/a.service\n1:name=systemd:/system.slice/cron.service\n0::/system.slice/other.service\n"
    assert hp.parse_cgroup(raw) == "/system.slice/cron.service"


def test_cgroup_v2_only():
    assert hp.parse_cgroup(b"0::/system.slice/cron.service\n") == "/system.slice/cron.service"
    assert hp.parse_cgroup(b"") is None
    assert hp.parse_cgroup(b"nonsense\n") is None


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/system.slice/cron.service", ("cron.service", None)),
        ("/system.slice/system-getty.slice/getty@tty1.service", ("getty@tty1.service", None)),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", ("user@1000.service", "foo.service")),
        ("/user.slice/user-1000.slice/session-3.scope", ("session-3.scope", None)),
        ("/machine.slice/machine-web.scope/payload/system.slice/cron.service", ("machine-web.scope", "cron.service")),
        ("/", (None, None)),
        ("/docker/abcdef", (None, None)),
        (None, (None, None)),
    ],
)
def test_unit_of_cgroup(path, expected):
    assert hp.unit_of_cgroup(path) == expected


def test_environ_keeps_only_provenance_keys():
    raw = b"PATH=/bin\0SECRET=hunter2\0SUPERVISOR_PROCESS_NAME=salt-minion\0SUPERVISOR_GROUP_NAME=salt\0"
    out = hp.extract_environ_keys(raw)
    assert out == {"SUPERVISOR_PROCESS_NAME": "salt-minion", "SUPERVISOR_GROUP_NAME": "salt"}
    assert "hunter2" not in repr(out)
    # a value that merely contains the key is not the key
    assert hp.extract_environ_keys(b"X=SUPERVISOR_PROCESS_NAME=evil\0") == {}
    assert hp.extract_environ_keys(b"SUPERVISOR_PROCESS_NAME=first") == {"SUPERVISOR_PROCESS_NAME": "first"}


def test_cmdline_setproctitle_single_string():
    assert hp.parse_cmdline(b"/usr/bin/python3 /usr/bin/salt-minion KeepAlive\0\0\0") == [
        "/usr/bin/python3", "/usr/bin/salt-minion", "KeepAlive"]
    assert hp.parse_cmdline(b"/bin/sh\0-c\0echo a b\0") == ["/bin/sh", "-c", "echo a b"]
    assert hp.parse_cmdline(b"") == []


def test_snapshot_reads_fake_tree_and_is_lazy(fakeproc):
    make_proc(fakeproc, 1, 0, comm="init", cmdline=b"/sbin/init\0")
    make_proc(fakeproc, 10, 1, comm="cron", cmdline=b"/usr/sbin/cron\0-f\0",
              cgroup=b"1:name=systemd:/system.slice/cron.service\n", uid=0, exe="/usr/sbin/cron")
    make_proc(fakeproc, 11, 10, comm="sh", pgid=10, cmdline=b"sh\0", uid=1000)
    snap = hp.snapshot(str(fakeproc))
    assert sorted(snap.procs) == [1, 10, 11]
    cron = snap.procs[10]
    assert cron._cmdline is hp._MISSING  # not read yet
    assert cron.cmdline == ["/usr/sbin/cron", "-f"]
    assert cron.cgroup == "/system.slice/cron.service"
    assert cron.exe == "/usr/sbin/cron"
    assert snap.procs[11].uid == 1000
    assert snap.children[10] == [11]
    assert snap.ancestors(11) == [10, 1]
    assert snap.descendants(1) == [10, 11]
    assert snap.started_at(cron) == 1700000000 + 5.0


def test_snapshot_skips_vanished_and_garbage(fakeproc):
    make_proc(fakeproc, 1, 0)
    d = make_proc(fakeproc, 20, 1)
    (d / "stat").unlink()  # vanished between listdir and read
    g = make_proc(fakeproc, 21, 1)
    (g / "stat").write_text("garbage")
    h = make_proc(fakeproc, 22, 1)
    for name in ("cmdline", "cgroup", "environ", "status"):
        (h / name).unlink()  # vanished after its stat was read
    snap = hp.snapshot(str(fakeproc))
    assert sorted(snap.procs) == [1, 22]
    p = snap.procs[22]
    assert p.cmdline == [] and p.cgroup is None and p.exe is None and p.uid is None
    assert p.provenance() == {}


def test_snapshot_missing_root_raises_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot list"):
        hp.snapshot(str(tmp_path / "nope"))


def test_still_same_guards_pid_reuse(fakeproc):
    make_proc(fakeproc, 30, 1, starttime=900)
    assert hp.still_same(30, 900, str(fakeproc))
    assert not hp.still_same(30, 901, str(fakeproc))
    assert not hp.still_same(31, 900, str(fakeproc))


def test_real_proc_snapshot_has_self():
    snap = hp.snapshot(load=True)
    me = snap.procs[os.getpid()]
    assert snap.self_pid == os.getpid()
    assert me.cmdline and me.exe
    assert os.getppid() in snap.ancestors(os.getpid())


def test_tty_loginuid_namespaces_and_program(fakeproc):
    make_proc(fakeproc, 1, 0, comm="init", cmdline=b"/sbin/init\0", exe="/sbin/init")
    make_proc(fakeproc, 40, 1, comm="vim", cmdline=b"vim\0x\0", exe="/usr/bin/vim", tty=34817, loginuid=1000,
              ns={"pid": "pid:[9]", "mnt": "mnt:[8]"})
    make_proc(fakeproc, 41, 1, comm="salt-minion", cmdline=b"salt-minion\0", exe="/usr/bin/sleep")
    snap = hp.snapshot(str(fakeproc))
    vim = snap.procs[40]
    assert vim.tty == 34817 and snap.procs[1].tty == 0
    assert vim.loginuid == 1000 and snap.procs[1].loginuid is None
    assert vim.ns("pid") == "pid:[9]" and vim.ns("mnt") == "mnt:[8]" and vim.ns("net") is None
    assert snap.procs[41].program.name == "sleep"  # exe decides, not argv0
    assert vim.program.name == "vim" and vim.program.trusted


def test_load_reads_named_fields_now(fakeproc):
    make_proc(fakeproc, 10, 1, cmdline=b"/usr/sbin/cron\0", exe="/usr/sbin/cron", environ=b"INVOCATION_ID=ab\0")
    proc = hp.snapshot(str(fakeproc)).procs[10]
    proc.load(("program", "provenance", "ns:pid", "loginuid", "uid"))
    for name in ("cmdline", "exe", "environ", "status", "loginuid"):
        (fakeproc / "10" / name).unlink()
    (fakeproc / "10" / "ns" / "pid").unlink()
    assert proc.program.name == "cron" and proc.provenance() == {"INVOCATION_ID": "ab"}
    assert proc.ns("pid") == "pid:[4026531836]" and proc.uid == 0 and proc.loginuid is None


def test_user_procs_is_the_one_kernel_thread_and_zombie_filter():
    P = hp.Proc.synthetic
    snap = hp.Snapshot.from_procs([P(1, 0), P(2, 0, flags=hp.PF_KTHREAD, cmdline=[]), P(3, 1, state="Z"), P(4, 1)])
    assert [p.pid for p in snap.user_procs] == [1, 4]


def test_synthetic_exe_defaults_to_an_absolute_argv0():
    P = hp.Proc.synthetic
    assert P(5, 1, cmdline=["/usr/sbin/cron", "-f"]).exe == "/usr/sbin/cron"
    assert P(5, 1, cmdline=["cron", "-f"]).exe is None
    assert P(5, 1, cmdline=["salt-minion"], exe="/usr/bin/sleep").program.name == "sleep"
