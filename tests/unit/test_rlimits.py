"""hostcheck_rlimits on fake /proc, /etc, /usr/lib and /run trees (nothing on this host is read
for the rules, written or restarted): the five rules (cgroup v1 and v2, unlimited, drop-ins,
the DefaultLimit cascade, missing files), the purity of analyse and plan, the grain entry, and
the service_limits remedy through the one state runner (hostcheck_check.run_remedy) with
systemctl and the reaper replaced by fakes that act on the fake trees."""
import os
import shutil
import stat

import pytest

import hostcheck_check as hc
import hostcheck_reaper as hr
import hostcheck_rlimits as rl
import hostcheck_service as hs
from tests.fakes import fake_proc_root, fake_systemd_run, host_access_forbidden, make_proc

INF = rl.INF
CAP_ALL = "000001ffffffffff"
CAP_NO_RESOURCE = "00000000fcecbfff"  # a systemd-nspawn container's PID 1

NETSVC = """\
[Unit]
Description=a network service whose init set no limit

[Service]
ExecStart=/usr/local/bin/netsvc --port 8080
"""


def limits_text(nofile=(1024, 524288), nproc=(63000, 63000), core=(0, INF), memlock=(8388608, 8388608)):
    """/proc/PID/limits as the kernel prints it."""
    def val(v):
        return "unlimited" if v == INF else str(v)

    rows = [("Limit", "Soft Limit", "Hard Limit", "Units"),
            ("Max cpu time", "unlimited", "unlimited", "seconds"),
            ("Max file size", "unlimited", "unlimited", "bytes"),
            ("Max core file size", val(core[0]), val(core[1]), "bytes"),
            ("Max processes", val(nproc[0]), val(nproc[1]), "processes"),
            ("Max open files", val(nofile[0]), val(nofile[1]), "files"),
            ("Max locked memory", val(memlock[0]), val(memlock[1]), "bytes"),
            ("Max nice priority", "0", "0", "")]
    return "".join("{:<25} {:<20} {:<20} {:<10}\n".format(*r) for r in rows)


class FakeHost(hc.Host):
    EUID = 0

    def euid(self):  # pylint: disable=arguments-differ
        return self.EUID


class World:
    """A fake host: tmp/proc, tmp/etc, tmp/usr/lib/systemd/system, tmp/lib/systemd/system, tmp/run."""

    def __init__(self, tmp_path, systemd=True, cap=True, pid1_nofile=(1048576, 1048576), nr_open=1048576):
        self.base = tmp_path
        self.procdir = fake_proc_root(tmp_path)
        self.etc = tmp_path / "etc"
        (self.etc / "systemd" / "system").mkdir(parents=True)
        self.vendor = tmp_path / "usr" / "lib" / "systemd" / "system"
        self.vendor.mkdir(parents=True)
        (tmp_path / "lib" / "systemd" / "system").mkdir(parents=True)
        self.run = fake_systemd_run(tmp_path, {}) if systemd else tmp_path / "run"
        self.run.mkdir(exist_ok=True)
        (self.procdir / "sys" / "fs").mkdir(parents=True)
        (self.procdir / "sys" / "fs" / "nr_open").write_text("{}\n".format(nr_open))
        d = make_proc(self.procdir, 1, 0, comm="systemd", cmdline=b"/sbin/init\0",
                      exe="/usr/lib/systemd/systemd", cgroup=b"0::/init.scope\n")
        (d / "status").write_text("Name:\tsystemd\nUid:\t0\t0\t0\t0\nCapEff:\t{}\n".format(
            CAP_ALL if cap else CAP_NO_RESOURCE))
        (d / "limits").write_text(limits_text(nofile=pid1_nofile))
        (d / "task" / "1").mkdir(parents=True)
        (d / "task" / "1" / "children").write_text("")
        self.euid = 0

    def unit(self, name, text, where="vendor"):
        base = self.vendor if where == "vendor" else self.etc / "systemd" / "system" if where == "etc" else \
            self.base / "run" / "systemd" / where
        base.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
        return base / name

    def dropin(self, unit, fname, text, where="etc"):
        base = {"etc": self.etc / "systemd" / "system", "vendor": self.vendor,
                "run": self.run / "systemd" / "system"}[where] / (unit + ".d")
        base.mkdir(parents=True, exist_ok=True)
        (base / fname).write_text(text)
        return base / fname

    def invocation(self, unit, inv):
        os.symlink(inv, self.run / "systemd" / "units" / ("invocation:" + unit))

    def process(self, pid, ppid=1, unit=None, cgroup=None, exe="/usr/sbin/daemon", cmdline=None,
                nofile=(1024, 524288), nproc=(63000, 63000), fds=3, v1=False, limits=True, **kw):
        if cgroup is None:
            path = "/system.slice/" + unit if unit else "/"
            cgroup = ("1:name=systemd:{}\n0::/\n".format(path) if v1 else "0::{}\n".format(path)).encode()
        cmdline = cmdline if cmdline is not None else exe.encode() + b"\0"
        d = make_proc(self.procdir, pid, ppid, comm=os.path.basename(exe)[:15], cmdline=cmdline, exe=exe,
                      cgroup=cgroup, **kw)
        if limits:
            (d / "limits").write_text(limits_text(nofile=nofile, nproc=nproc))
        (d / "fd").mkdir()
        for i in range(fds):
            (d / "fd" / str(i)).write_text("")
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "task" / str(pid) / "children").write_text("")
        self._children(ppid, lambda kids: kids + [pid])
        return d

    def _children(self, ppid, change):
        """Keep /proc/PPID/task/PPID/children as the kernel would."""
        path = self.procdir / str(ppid) / "task" / str(ppid) / "children"
        if path.exists():
            kids = change([int(k) for k in path.read_text().split()])
            path.write_text("".join("{} ".format(k) for k in kids))

    def gone(self, pid):
        ppid = int((self.procdir / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        shutil.rmtree(self.procdir / str(pid))
        self._children(ppid, lambda kids: [k for k in kids if k != pid])

    def no_children_files(self):
        """A kernel without CONFIG_PROC_CHILDREN: every read takes the full snapshot."""
        for d in self.procdir.iterdir():
            if (d / "task").is_dir():
                shutil.rmtree(d / "task")

    def host(self):
        h = FakeHost(proc_root=str(self.procdir), etc_root=str(self.etc), run_root=str(self.run))
        h.EUID = self.euid
        return h


@pytest.fixture(autouse=True)
def no_real_service_manager(monkeypatch):
    """Nothing here may run systemctl (or anything) on this host."""
    def refuse(argv, timeout=None):
        raise AssertionError("service manager called: {}".format(argv))

    monkeypatch.setattr(hs, "run", refuse)
    monkeypatch.setattr(hs, "show", lambda *a, **kw: None)


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def diag(w, quick=False, **opts):
    return hc.diagnose(rl, w.host(), hc.options(rl, opts), quick=quick)


def codes(d):
    return sorted((f["code"], f["severity"]) for f in d.findings)


# --------------------------------------------------------------------------
# parsers


def test_proc_limits_parse_numbers_and_unlimited():
    raw = limits_text(nofile=(1024, 4096), core=(0, INF)).encode()
    got = rl.parse_proc_limits(raw)
    assert got["nofile"] == (1024, 4096) and got["core"] == (0, INF) and got["nproc"] == (63000, 63000)
    assert rl.parse_proc_limits(b"") == {} and rl.parse_proc_limits(None) == {}
    assert rl.parse_proc_limits(b"Max open files  garbage\n") == {}


@pytest.mark.parametrize("text,res,want", [
    ("1024", "nofile", (1024, 1024)), ("1024:524288", "nofile", (1024, 524288)),
    ("infinity", "core", (INF, INF)), ("0:infinity", "core", (0, INF)), ("64M", "memlock", (64 << 20, 64 << 20)),
    ("1.5K", "memlock", (1536, 1536)), ("4096:1024", "nofile", None), ("unlimited", "nofile", None),
    ("", "nofile", None), ("12ab", "nproc", None), ("64M", "nofile", None),
])
def test_systemd_limit_values_as_systemd_reads_them(text, res, want):
    assert rl.parse_rlimit(text, res) == want


def test_ini_items_comments_sections_and_continuations():
    text = "# c\n[Service]\n; c\nExecStart=/bin/x \\\n  --flag\nLimitNOFILE = 4096\n[Install]\nWantedBy=x\n"
    assert rl.ini_items(text) == [("Service", "ExecStart", "/bin/x  --flag"), ("Service", "LimitNOFILE", "4096"),
                                  ("Install", "WantedBy", "x")]


def test_dropin_names_prefixes_templates_and_type():
    assert rl.dropin_names("foo-bar-baz.service") == [
        "foo-bar-baz.service", "foo-bar-.service", "foo-.service", "service"]
    assert rl.dropin_names("getty@tty1.service") == ["getty@tty1.service", "getty@.service", "service"]


# --------------------------------------------------------------------------
# unit files: precedence, drop-ins, the DefaultLimit cascade


def test_unit_file_precedence_and_dropins_sorted_across_directories(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=2048\n")
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=3072\n", where="etc")
    world.dropin("app.service", "10-a.conf", "[Service]\nLimitNOFILE=4096\n", where="vendor")
    world.dropin("app.service", "20-b.conf", "[Service]\nLimitNOFILE=5000:6000\n", where="run")
    world.dropin("app.service", "10-a.conf", "[Service]\nLimitNPROC=77\n", where="etc")  # hides vendor's 10-a
    conf = rl.load_unit(rl.UnitFiles(world.host()), "app.service")
    assert conf["path"] == str(world.etc / "systemd/system/app.service")
    assert [b for b, _ in conf["dropins"]] == ["10-a.conf", "20-b.conf"]
    assert conf["limits"]["nofile"][:2] == (5000, 6000) and conf["limits"]["nproc"][:2] == (77, 77)
    assert conf["exec"] == ["app"]


def test_masked_dropin_prefix_and_type_dropins(world):
    world.unit("a-b.service", "[Service]\nExecStart=/usr/sbin/ab\n")
    world.dropin("a-.service", "50-x.conf", "[Service]\nLimitNOFILE=100\n", where="vendor")
    world.dropin("service", "60-all.conf", "[Service]\nLimitNPROC=5000\n", where="vendor")
    world.dropin("a-b.service", "70-y.conf", "[Service]\nLimitNOFILE=9000\n", where="vendor")
    d = world.etc / "systemd/system/a-b.service.d"
    d.mkdir()
    os.symlink("/dev/null", d / "70-y.conf")  # masks the vendor drop-in of the same name
    conf = rl.load_unit(rl.UnitFiles(world.host()), "a-b.service")
    assert conf["limits"]["nofile"][:2] == (100, 100) and conf["limits"]["nproc"][:2] == (5000, 5000)


def test_alias_symlink_absolute_target_is_taken_under_the_fake_root(world):
    world.unit("ssh.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n")
    os.symlink("/usr/lib/systemd/system/ssh.service", world.etc / "systemd/system/sshd.service")
    found = rl.UnitFiles(world.host()).find("sshd.service")
    assert found["name"] == "ssh.service" and found["path"] == str(world.vendor / "ssh.service")
    os.symlink("/dev/null", world.etc / "systemd/system/gone.service")
    assert rl.UnitFiles(world.host()).find("gone.service")["masked"] is True


def test_default_limit_cascade(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(1024, 524288))
    f = rl.configured(diag(world).facts, "app.service", "nofile")
    assert f == (1024, 524288, "systemd's default")  # no system.conf at all
    (world.etc / "systemd/system.conf").write_text("[Manager]\n#DefaultLimitNOFILE=1:2\nDefaultLimitNOFILE=2048:8192\n")
    facts = diag(world).facts
    assert facts.defaults["nofile"][:2] == (2048, 8192)
    confd = world.vendor.parent / "system.conf.d"
    confd.mkdir()
    (confd / "50-x.conf").write_text("[Manager]\nDefaultLimitNOFILE=4096:16384\n")
    assert rl.configured(diag(world).facts, "app.service", "nofile")[:2] == (4096, 16384)
    world.dropin("app.service", "limits.conf", "[Service]\nLimitNOFILE=100:200\n")
    assert rl.configured(diag(world).facts, "app.service", "nofile")[:2] == (100, 200)
    # nproc: nothing set anywhere -> what PID 1 itself has
    assert rl.configured(diag(world).facts, "app.service", "nproc")[2].startswith("PID 1's own")


def test_builtin_nofile_default_is_capped_at_nr_open(tmp_path):
    w = World(tmp_path, nr_open=65536)
    w.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    w.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(1024, 65536))
    assert rl.configured(diag(w).facts, "app.service", "nofile")[:2] == (1024, 65536)
    assert diag(w).findings == []


# --------------------------------------------------------------------------
# rule 1: limits-differ


@pytest.mark.parametrize("v1", [False, True])
def test_unit_main_with_other_limits_than_its_unit(world, v1):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=1024:524288\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(4096, 4096), v1=v1)
    d = diag(world)
    (f,) = d.findings
    assert (f["code"], f["severity"], f["unit"], f["resource"]) == ("limits-differ", "warning", "app.service", "nofile")
    assert f["live"] == {"soft": 4096, "hard": 4096} and f["expected"] == {"soft": 1024, "hard": 524288}
    assert f["configured"]["source"].endswith("app.service") and f["outside"] is False
    assert "runs with nofile 4096:4096 but its unit gives 1024:524288" in f["summary"]


def test_unlimited_values_on_both_sides(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitCORE=infinity\nLimitMEMLOCK=infinity\n")
    d = world.process(100, unit="app.service", exe="/usr/sbin/app")
    (d / "limits").write_text(limits_text(core=(0, INF), memlock=(INF, INF)))
    (f,) = diag(world, limits="core,memlock").findings
    assert (f["resource"], f["live"], f["expected"]) == (
        "core", {"soft": 0, "hard": "unlimited"}, {"soft": "unlimited", "hard": "unlimited"})
    assert "runs with core 0:unlimited but its unit gives unlimited:unlimited" in f["summary"]


def test_program_raising_its_own_soft_limit_is_fine(world):
    world.unit("dbus.service", "[Service]\nExecStart=/usr/bin/dbus-daemon --system\n")
    world.process(100, unit="dbus.service", exe="/usr/bin/dbus-daemon", nofile=(524288, 524288))
    assert diag(world).findings == []


def test_holding_more_than_the_unit_would_give_is_critical(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=64\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(4096, 4096), fds=100)
    (f,) = diag(world).findings
    assert (f["code"], f["severity"], f["in_use"]) == ("limits-differ", "critical", 100)
    assert "holds 100 descriptors now" in f["summary"]


def test_container_pid1_without_cap_sys_resource_caps_the_expectation(tmp_path):
    w = World(tmp_path, cap=False, pid1_nofile=(20000, 20000))
    w.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\n")
    w.process(100, unit="cron.service", exe="/usr/sbin/cron", nofile=(1024, 20000))
    d = diag(w)
    assert d.findings == []
    assert any("CAP_SYS_RESOURCE" in n for n in d.notes)
    # a copy started by hand with `ulimit -n 16384` is not what the unit gives
    w.unit("netsvc.service", NETSVC)
    w.process(200, cgroup=b"0::/user.slice/user-0.slice/session-c1.scope\n", exe="/usr/local/bin/netsvc",
              nofile=(16384, 16384))
    (f,) = diag(w).findings
    assert f["expected"] == {"soft": 1024, "hard": 20000} and f["configured"]["hard"] == 524288
    assert "capped at PID 1's hard limit 20000" in f["summary"]


def test_the_incident_a_copy_started_from_a_login_shell(world):
    world.unit("netsvc.service", NETSVC)
    sessions = world.run / "systemd" / "sessions"
    sessions.mkdir()
    (sessions / "c1").write_text("# This is private data. Do not parse.\nUID=0\nUSER=root\nSTATE=closing\n"
                                 "SERVICE=su-l\nLEADER=61\nREMOTE_HOST=secret.example\n")
    os.mkfifo(sessions / "c1.ref")  # opening it would block: never opened
    world.process(71, cgroup=b"1:name=systemd:/user.slice/user-0.slice/session-c1.scope\n0::/\n",
                  exe="/usr/bin/python3.11", cmdline=b"/usr/bin/python3\0/usr/local/bin/netsvc\0--port\0008080\0",
                  nofile=(65536, 65536))
    d = diag(world)
    (f,) = d.findings
    assert (f["code"], f["unit"], f["program"], f["outside"], f["started_by_hand"]) == (
        "limits-differ", "netsvc.service", "netsvc", True, True)
    assert f["live"] == {"soft": 65536, "hard": 65536} and f["expected"] == {"soft": 1024, "hard": 524288}
    assert f["session"] == {"id": "c1", "service": "su-l", "user": "root"}
    assert "started outside systemd, from login session c1 (su-l, user root)" in f["summary"]
    assert "secret" not in str(d.as_dict())
    assert rl.summarise(d) == {"count": 1, "units": ["netsvc.service"], "lowest_nofile": 65536}


def test_a_program_two_units_run_is_attributed_to_neither_and_an_alias_is_one_unit(world):
    world.unit("a.service", "[Service]\nExecStart=/usr/sbin/twin -a\n")
    os.symlink("/usr/lib/systemd/system/a.service", world.etc / "systemd/system/alias.service")
    world.process(100, cgroup=b"0::/user.slice/user-0.slice/session-2.scope\n", exe="/usr/sbin/twin",
                  nofile=(4096, 4096))
    (f,) = diag(world).findings
    assert (f["code"], f["unit"], f["outside"]) == ("limits-differ", "a.service", True)
    world.unit("b.service", "[Service]\nExecStart=/usr/sbin/twin -b\n")
    (f,) = diag(world).findings
    assert (f["code"], f["unit"], f["severity"]) == ("login-session", None, "info")


def test_a_generated_sysv_unit_is_info_only(world):
    world.unit("legacy.service", "[Service]\nExecStart=/etc/init.d/legacy start\n", where="generator.late")
    world.process(100, unit="legacy.service", exe="/usr/sbin/legacyd", nofile=(8192, 8192))
    assert codes(diag(world)) == [("limits-differ", "info")]


def test_pamname_units_and_unknown_units(world):
    world.unit("login-ish.service", "[Service]\nExecStart=/usr/sbin/x\nPAMName=login\n")
    world.process(100, unit="login-ish.service", exe="/usr/sbin/x", nofile=(9999, 9999))
    assert diag(world).findings == []
    # a unit without a file (gone from disk) is compared with the defaults
    world.process(101, unit="ghost.service", exe="/usr/sbin/ghost", nofile=(9999, 9999))
    assert [f["unit"] for f in diag(world).findings] == ["ghost.service"]


def test_leftover_of_an_earlier_run_is_not_the_main_process(world):
    world.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\n")
    world.invocation("cron.service", "b" * 32)
    world.process(100, unit="cron.service", exe="/usr/sbin/cron", environ=b"INVOCATION_ID=" + b"a" * 32 + b"\0",
                  starttime=100, nofile=(4096, 4096))
    world.process(200, unit="cron.service", exe="/usr/sbin/cron", environ=b"INVOCATION_ID=" + b"b" * 32 + b"\0",
                  starttime=900)
    d = diag(world)
    assert [s.pid for s in d.facts.services] == [200] and d.findings == []


def test_systemds_main_pid_wins_over_the_guess(world, monkeypatch):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", starttime=100)
    world.process(101, unit="app.service", exe="/usr/sbin/app", starttime=200, nofile=(4096, 4096))
    monkeypatch.setattr(hs, "show", lambda names, props, run_root="/run", **kw: {
        "app.service": {"Id": "app.service", "MainPID": 101, "LimitNOFILE": "524288", "LimitNOFILESoft": "1024"}})
    d = diag(world)
    assert [s.pid for s in d.facts.services] == [101] and codes(d) == [("limits-differ", "warning")]
    assert [s.pid for s in diag(world, quick=True).facts.services] == [100]  # no systemctl in quick mode


def test_witness_shows_a_pending_daemon_reload(world, monkeypatch):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=8192\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(8192, 8192))
    monkeypatch.setattr(hs, "show", lambda names, props, run_root="/run", **kw: {
        "app.service": {"Id": "app.service", "MainPID": 100, "LimitNOFILE": "524288", "LimitNOFILESoft": "1024"}})
    d = diag(world)
    assert d.findings == []
    assert any("daemon-reload pending" in n and "nofile 1024:524288 loaded, 8192:8192 in its files" in n
               for n in d.notes)


# --------------------------------------------------------------------------
# rule 2: login-session


def test_daemon_with_a_login_uid_on_a_host_without_systemd(tmp_path):
    w = World(tmp_path, systemd=False)
    w.process(100, exe="/usr/local/bin/worker", loginuid=1000)
    w.process(101, exe="/usr/local/bin/shell", loginuid=1000, tty=34817)  # a console login: not a daemon
    w.process(102, exe="/usr/sbin/sshd", nofile=(4096, 4096))  # started at boot: no finding without units
    d = diag(w)
    (f,) = d.findings
    assert (f["code"], f["pids"], f["loginuid"], f["severity"]) == ("login-session", [100], 1000, "warning")
    assert "from a login (login uid 1000)" in f["summary"]
    assert rl.NOTE_NO_SYSTEMD in d.notes


def test_a_units_program_run_by_hand_with_the_same_limits_is_still_a_warning(world):
    world.unit("netsvc.service", NETSVC)
    world.process(71, cgroup=b"0::/user.slice/user-0.slice/session-5.scope\n", exe="/usr/local/bin/netsvc",
                  nofile=(1024, 524288))
    (f,) = diag(world).findings
    assert (f["code"], f["severity"], f["unit"]) == ("login-session", "warning", "netsvc.service")
    assert "start it with systemctl instead" in f["summary"]


def test_session_scope_daemon_without_a_unit(world):
    world.process(100, cgroup=b"0::/user.slice/user-1000.slice/session-3.scope\n", exe="/opt/bin/tool")
    (f,) = diag(world).findings
    assert f["code"] == "login-session" and f["session"] == {"id": "3"} and f["unit"] is None
    assert f["severity"] == "info"  # a person's tool (tmux, an agent) as often as not


# --------------------------------------------------------------------------
# rule 3: fds-near-limit


@pytest.mark.parametrize("fds,sev", [(700, None), (900, "warning"), (980, "critical")])
def test_open_files_near_the_soft_limit(world, fds, sev):
    world.unit("fdhog.service", "[Service]\nExecStart=/usr/local/bin/fdhog\n")
    world.process(100, unit="fdhog.service", exe="/usr/local/bin/fdhog", fds=fds)
    found = [(f["code"], f["severity"]) for f in diag(world).findings]
    assert found == ([("fds-near-limit", sev)] if sev else [])


def test_hard_limit_below_what_it_holds(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=10:20\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(10, 20), fds=25)
    (f,) = diag(world).findings
    assert f["code"] == "fds-near-limit" and f["severity"] == "critical"
    assert "hard limit is below what it already holds" in f["summary"]


def test_workers_count_in_full_mode_only_and_sessions_below_sshd_are_not_sshd(world):
    world.unit("web.service", "[Service]\nExecStart=/usr/sbin/web\n")
    world.unit("ssh.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n")
    world.process(100, unit="web.service", exe="/usr/sbin/web")
    world.process(101, ppid=100, unit="web.service", exe="/usr/sbin/web", fds=950)
    world.process(200, unit="ssh.service", exe="/usr/sbin/sshd")
    world.process(201, ppid=200, cgroup=b"0::/user.slice/user-0.slice/session-4.scope\n",
                  exe="/usr/bin/bash", fds=1000)
    full = diag(world)
    assert [(f["code"], f["unit"], f["pids"]) for f in full.findings] == [("fds-near-limit", "web.service", [101])]
    assert diag(world, quick=True).findings == []


def _busy_world(w):
    w.unit("web.service", "[Service]\nExecStart=/usr/sbin/web\n")
    w.unit("netsvc.service", NETSVC)
    w.process(100, unit="web.service", exe="/usr/sbin/web")
    w.process(101, ppid=100, unit="web.service", exe="/usr/sbin/web", fds=950)
    w.process(102, ppid=101, unit="web.service", exe="/usr/sbin/web", fds=990)
    for pid in range(110, 130):
        w.process(pid, ppid=100, unit="web.service", exe="/usr/sbin/web", fds=5)
    w.process(71, cgroup=b"0::/user.slice/user-0.slice/session-c1.scope\n", exe="/usr/local/bin/netsvc",
              nofile=(65536, 65536))


def _view(d):
    return [(f["code"], f["severity"], f.get("unit"), f["pids"], f.get("processes")) for f in d.findings]


def test_partial_and_full_snapshot_paths_agree(tmp_path, monkeypatch):
    w = World(tmp_path)
    _busy_world(w)
    stats = []
    real = rl.hostcheck_proc.partial_snapshot
    monkeypatch.setattr(rl.hostcheck_proc, "partial_snapshot",
                        lambda pids, proc_root="/proc": stats.append(sorted(pids)) or real(pids, proc_root))
    partial = diag(w)
    assert partial.facts.full is False and stats[0] == [71, 100]  # init's children only
    assert sorted(partial.facts.snap.procs) == [1, 71, 100, 101, 102]  # + those near their limit
    assert len(partial.facts.limits) == 24  # every process's limits were read all the same
    w.no_children_files()
    full = diag(w)
    assert full.facts.full is True and _view(full) == _view(partial)
    (f,) = [f for f in full.findings if f["code"] == "fds-near-limit"]
    assert f["severity"] == "critical" and f["pids"] == [102, 101]
    assert [(p["pid"], p["fds"], p["severity"]) for p in f["processes"]] == [(102, 990, "critical"),
                                                                             (101, 950, "warning")]


def test_a_snapshot_another_check_took_is_reused(world):
    _busy_world(world)
    host = world.host()
    snap = host.snapshot()
    d = hc.diagnose(rl, host, hc.options(rl))
    assert d.facts.snap is snap and d.facts.full is True


def test_fd_count_by_st_size_or_by_listing(tmp_path, monkeypatch):
    d = tmp_path / "p"
    (d / "fd").mkdir(parents=True)
    for i in range(7):
        (d / "fd" / str(i)).write_text("")
    assert rl.count_fds(str(d), False) == 7
    assert rl.count_fds(str(tmp_path / "nope"), True) is None
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **kw: os.stat_result((0,) * 6 + (0,) * 4)
                        if str(p).endswith("/fd") else real(p, *a, **kw))
    assert rl.count_fds(str(d), True) == 0  # where st_size counts (checked on this process), 0 is 0
    monkeypatch.setattr(os, "stat", lambda p, *a, **kw: os.stat_result((0,) * 6 + (42, 0, 0, 0))
                        if str(p).endswith("/fd") else real(p, *a, **kw))
    assert rl.count_fds(str(d), True) == 42
    assert rl.fd_size_counts(str(tmp_path)) is False  # a fake tree: always list


def test_missing_limits_and_fd_give_notes_not_errors(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    d = world.process(100, unit="app.service", exe="/usr/sbin/app", limits=False)
    shutil.rmtree(d / "fd")
    out = diag(world)
    assert out.findings == [] and any("unreadable limits" in n for n in out.notes)
    assert out.details["lowest_nofile"] is None


# --------------------------------------------------------------------------
# rule 4: limits-conf-unused


def _limits_conf(w, text, name=None):
    sec = w.etc / "security"
    (sec / "limits.d").mkdir(parents=True, exist_ok=True)
    (sec / ("limits.d/" + name if name else "limits.conf")).write_text(text)


def test_limits_conf_star_line_never_reaches_services(world):
    world.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\n")
    world.process(100, unit="cron.service", exe="/usr/sbin/cron")
    _limits_conf(world, "# comment\n*  soft  nofile  65536\n* hard core 0\nbogus line\nroot - nproc lots\n")
    (f,) = diag(world).findings
    assert (f["code"], f["severity"], f["line"], f["units"], f["value"]) == (
        "limits-conf-unused", "info", 2, ["cron.service"], 65536)
    assert "'* soft nofile 65536' never reaches services" in f["summary"] and "LimitNOFILE=" in f["summary"]
    assert diag(world, limits="core").findings == []


def test_limits_conf_line_a_service_does_get_is_no_finding(world):
    world.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\nLimitNOFILE=65536\n")
    world.process(100, unit="cron.service", exe="/usr/sbin/cron", nofile=(65536, 65536))
    _limits_conf(world, "root hard nofile 65536\n", name="90-root.conf")
    _limits_conf(world, "nobody - nofile 4096\n@wheel soft nproc 10\n")  # other users: no service
    assert diag(world).findings == []


def test_limits_conf_group_domains(world, monkeypatch):
    world.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\n")
    world.process(100, unit="cron.service", exe="/usr/sbin/cron")
    _limits_conf(world, "@adm soft nofile 4096\n")
    monkeypatch.setattr(os, "getgrouplist", lambda name, gid: [0, 4])
    monkeypatch.setattr(rl.grp, "getgrgid", lambda gid: type("G", (), {"gr_name": {0: "root", 4: "adm"}[gid]}))
    (f,) = diag(world).findings
    assert f["domain"] == "@adm"
    assert rl.domain_matches("1000:", "bob", 1001, []) and not rl.domain_matches("1000:", "root", 0, [])


# --------------------------------------------------------------------------
# rule 5: supervisord


def _supervisord(w, minfds="4096", tasks_uid=1000, prog_fds=3800):
    conf = w.etc / "supervisor"
    conf.mkdir(parents=True)
    (conf / "supervisord.conf").write_text(
        "[unix_http_server]\nfile=/run/supervisor.sock\n[supervisord]\nminfds={}   ; fds\nminprocs=50\n".format(minfds))
    w.unit("supervisor.service", "[Service]\nExecStart=/usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf\n")
    w.process(50, unit="supervisor.service", exe="/usr/bin/python3.11",
              cmdline=b"/usr/bin/python3\0/usr/bin/supervisord\0-n\0-c\0/etc/supervisor/supervisord.conf\0",
              nofile=(4096, 524288))
    w.process(51, ppid=50, unit="supervisor.service", exe="/usr/local/bin/worker", uid=tasks_uid,
              environ=b"SUPERVISOR_ENABLED=1\0SUPERVISOR_PROCESS_NAME=celery\0", nofile=(4096, 524288),
              nproc=(60, 60), fds=prog_fds)
    for pid in range(52, 52 + 49):
        w.process(pid, ppid=51, unit="supervisor.service", exe="/usr/local/bin/worker", uid=tasks_uid,
                  nofile=(4096, 524288), nproc=(60, 60))


def test_supervisord_program_near_the_limits_it_inherited(world):
    _supervisord(world)
    d = diag(world)
    got = sorted((f["code"], f["resource"], f["severity"]) for f in d.findings)
    assert got == [("supervisor-limits", "nofile", "warning"), ("supervisor-limits", "nproc", "warning")]
    f = next(f for f in d.findings if f["resource"] == "nofile")
    assert (f["program"], f["supervisord"], f["minfds"], f["config"]) == (
        "celery", 50, 4096, "/etc/supervisor/supervisord.conf")
    assert f["supervisord_limits"] == {"soft": 4096, "hard": 524288}
    assert "programs inherit supervisord's limits (minfds=4096" in f["summary"]
    # supervisord itself raised its soft limit to minfds: not a finding
    assert not any(f["code"] == "limits-differ" for f in d.findings)


def test_supervisor_settings_parse():
    assert rl.supervisor_settings("[supervisord]\nminfds = 8192 ; x\nminprocs=x\n[program:a]\nminfds=1\n") == {
        "minfds": 8192}
    assert rl.supervisor_settings(None) == {}


# --------------------------------------------------------------------------
# options, grain, purity


def test_unit_option_details_and_scope(world):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\nLimitNOFILE=4096\n")
    world.unit("idle.service", "[Service]\nExecStart=/usr/sbin/idle\nLimitCORE=infinity\n")
    world.dropin("idle.service", "x.conf", "[Service]\nLimitNPROC=100:200\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app", nofile=(1024, 1024))
    d = diag(world, unit="idle")
    assert d.findings == []  # the app finding is out of scope
    (det,) = d.details["detail"]
    assert det["unit"] == "idle.service" and det["processes"] == [] and len(det["dropins"]) == 1
    assert det["configured"]["nproc"]["soft"] == 100 and det["configured"]["core"]["hard"] == "unlimited"
    d = diag(world, unit="app*")
    assert [f["unit"] for f in d.findings] == ["app.service"]
    assert d.details["detail"][0]["processes"][0]["live"]["nofile"] == {"soft": 1024, "hard": 1024}


@pytest.mark.parametrize("opts,fragment", [
    ({"limits": ["nofile", "cpu"]}, "is not one of"), ({"limits": 3}, "must be a list"),
    ({"unit": "../etc"}, "is not a unit name"), ({"unit": ""}, "must be a unit name"),
])
def test_bad_options_are_clear_errors(opts, fragment):
    with pytest.raises(hc.hostcheck_config.ConfigError, match=fragment):
        hc.options(rl, opts)


def test_limits_option_accepts_a_comma_list():
    assert hc.options(rl, {"limits": "core,nofile"})["limits"] == ["nofile", "core"]
    assert hc.options(rl)["limits"] == ["nofile", "nproc"]


def test_grain_is_quick_runs_no_subprocess_and_reads_no_members(world, monkeypatch):
    world.unit("web.service", "[Service]\nExecStart=/usr/sbin/web\n")
    world.process(100, unit="web.service", exe="/usr/sbin/web", nofile=(1024, 524288), fds=10)
    world.process(101, ppid=100, unit="web.service", exe="/usr/sbin/web", fds=1000)

    def boom(*a, **kw):
        raise AssertionError("subprocess in quick mode")

    monkeypatch.setattr(hs, "show", boom)
    monkeypatch.setattr(rl, "read_witness", boom)
    d = diag(world, quick=True)
    assert rl.summarise(d) == {"count": 0, "units": [], "lowest_nofile": 1024}
    assert 101 not in d.facts.limits and 101 not in d.facts.fds


def test_read_on_fake_roots_then_pure_analyse_and_plan(world):
    world.unit("netsvc.service", NETSVC)
    world.process(71, cgroup=b"0::/user.slice/user-0.slice/session-c1.scope\n", exe="/usr/local/bin/netsvc",
                  nofile=(65536, 65536))
    world.unit("cron.service", "[Service]\nExecStart=/usr/sbin/cron -f\n")
    world.process(100, unit="cron.service", exe="/usr/sbin/cron")
    _limits_conf(world, "* soft nofile 65536\n")
    host = world.host()
    opts = hc.options(rl)
    facts = rl.read(host, opts)
    args = remedy_args(world, "netsvc", nofile=16384)
    rl.remedy_facts(host, hc.Diagnosis(rl.NAME, facts=facts), args)
    with host_access_forbidden():
        d = rl.analyse(facts, opts)
        p = rl.plan(d, args)
        summary = rl.summarise(d)
    assert codes(d) == [("limits-conf-unused", "info"), ("limits-differ", "warning")]
    assert summary["count"] == 2 and set(p.changes) == {"dropin", "stopped", "restarted"}


def test_not_root_notes_it(world):
    world.euid = 1000
    world.process(100, unit="x.service", exe="/usr/sbin/x")
    assert rl.NOTE_NOT_ROOT in diag(world).notes


# --------------------------------------------------------------------------
# the remedy: validation


def remedy_args(w, name, **given):
    args = hc.hostcheck_config.validate(rl.REMEDY_ARGS, given)
    rl.validate_remedy(name, args, w.host())
    return args


def limits(w, name, test=False, **args):
    return hc.run_remedy(rl, name, args, test=test, host=w.host())


@pytest.mark.parametrize("name,args,fragment", [
    ("../x", {"nofile": 4096}, "is not a unit name"),
    ("nosuch", {"nofile": 4096}, "does not exist"),
    ("cron.socket", {"nofile": 4096}, "is not a service"),
    ("getty@.service", {"nofile": 4096}, "is a template"),
    ("masked", {"nofile": 4096}, "is masked"),
    ("app", {}, "no limit given"),
    ("app", {"nofile": "2048:1024"}, "soft limit 2048 is above the hard limit 1024"),
    ("app", {"nofile": "unlimited"}, "cannot be unlimited"),
    ("app", {"nofile": 2 ** 21}, "above fs.nr_open"),
    ("app", {"nofile": True}, "is not a limit"),
    ("app", {"nofile": "lots"}, "is not a limit"),
    ("app", {"nofile": -1}, "out of range"),
    ("app", {"nproc": {"soft": 1}}, "exactly the keys soft and hard"),
    ("app", {"nproc": {"soft": 1, "hard": 2, "x": 3}}, "exactly the keys soft and hard"),
    ("app", {"nofile": 4096, "restart": "no"}, "restart must be true or false"),
    ("app", {"nofile": 4096, "bogus": 1}, "unknown argument bogus"),
])
def test_bad_names_and_values_change_nothing(world, name, args, fragment):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    os.symlink("/dev/null", world.etc / "systemd/system/masked.service")
    world.process(100, unit="app.service", exe="/usr/sbin/app")
    ret = limits(world, name, **args)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("Invalid arguments, nothing done") and fragment in ret["comment"], ret
    assert not (world.etc / "systemd/system/app.service.d").exists()


def test_values_systemd_cannot_give_in_a_container_are_refused(tmp_path):
    w = World(tmp_path, cap=False, pid1_nofile=(20000, 20000))
    w.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    ret = limits(w, "app", nofile=65536)
    assert ret["result"] is False and "PID 1's own hard limit is 20000" in ret["comment"]
    assert limits(w, "app", nofile="1024:16384", test=True)["result"] is None


@pytest.mark.parametrize("value,want", [
    (4096, (4096, 4096)), ("4096", (4096, 4096)), ("1024:4096", (1024, 4096)),
    ({"soft": 1024, "hard": "4096"}, (1024, 4096)), ("unlimited", (INF, INF)), ("0:infinity", (0, INF)),
])
def test_limit_value_forms(value, want):
    assert rl.limit_value("core")(value, "core") == want


# --------------------------------------------------------------------------
# the remedy: plan, apply, verify through run_remedy


class FakeSystemd:
    """systemctl for the remedy, acting on the fake trees: a restart replaces
    the unit's main process with a new one whose limits come from the unit's
    files as they are on disk (so the drop-in really has to be right)."""

    def __init__(self, monkeypatch, w, unit, exe, new_pid=500, honour=True):
        self.w, self.unit, self.exe, self.new_pid, self.honour = w, unit, exe, new_pid, honour
        self.calls, self.main = [], None
        monkeypatch.setattr(hs, "daemon_reload", lambda timeout=None: self.calls.append("daemon-reload") or (True, ""))
        monkeypatch.setattr(hs, "restart_units", self.restart)
        monkeypatch.setattr(hs, "show", self.show)
        monkeypatch.setattr(hr, "wait_gone", lambda ids, timeout, proc_root="/proc", **kw: [])
        monkeypatch.setattr(hr, "reap", self.reap)
        monkeypatch.setattr(rl, "_own_units", lambda host: set())

    def reap(self, members, timeout=10, proc_root="/proc", never=(), **kw):
        pids = sorted(int(p) for p, _ in members)
        self.calls.append(("reap", pids))
        for pid in pids:
            self.w.gone(pid)
        return {"terminated": pids, "killed": [], "survivors": [], "gone": []}

    def restart(self, units, timeout=None):
        self.calls.append(("restart", list(units)))
        if self.main and (self.w.procdir / str(self.main)).exists():
            self.w.gone(self.main)
        conf = rl.load_unit(rl.UnitFiles(self.w.host()), self.unit)
        lim = conf["limits"].get("nofile", (1024, 524288))[:2] if self.honour else (1024, 524288)
        self.w.process(self.new_pid, unit=self.unit, exe=self.exe, nofile=lim, starttime=9000)
        self.main, self.new_pid = self.new_pid, self.new_pid + 1
        return dict.fromkeys(units)

    def show(self, names, props, run_root="/run", **kw):
        out = {}
        for name in names:
            conf = rl.load_unit(rl.UnitFiles(self.w.host()), name)
            lim = conf["limits"].get("nofile", (1024, 524288))
            out[name] = {"Id": name, "MainPID": self.main if name == self.unit else 0,
                         "LimitNOFILE": str(lim[1]), "LimitNOFILESoft": str(lim[0])}
        return out


@pytest.fixture
def incident(world, monkeypatch):
    """netsvc.service stopped, its daemon started by hand from session c1 with 65536 open files."""
    world.unit("netsvc.service", NETSVC)
    world.process(71, cgroup=b"0::/user.slice/user-0.slice/session-c1.scope\n", exe="/usr/local/bin/netsvc",
                  nofile=(65536, 65536), fds=40)
    world.process(72, ppid=71, cgroup=b"0::/user.slice/user-0.slice/session-c1.scope\n",
                  exe="/usr/local/bin/netsvc", nofile=(65536, 65536))
    world.systemd = FakeSystemd(monkeypatch, world, "netsvc.service", "/usr/local/bin/netsvc")
    return world


def test_test_mode_then_apply_then_noop(incident):
    w, sd = incident, incident.systemd
    dropin = w.etc / "systemd/system/netsvc.service.d/hostcheck-limits.conf"
    dry = limits(w, "netsvc", test=True, nofile=16384)
    assert dry["result"] is None and not dropin.exists() and sd.calls == []
    assert set(dry["changes"]) == {"dropin", "stopped", "restarted"}
    assert dry["changes"]["dropin"]["new"].endswith("[Service]\nLimitNOFILE=16384\n")
    assert dry["changes"]["stopped"] == [{"pid": 71, "program": "netsvc", "session": "c1"}]
    assert dry["changes"]["restarted"] == {"unit": "netsvc.service", "old_pid": None, "new_pid": None}
    assert "write {}".format(dropin) in dry["comment"] and "LimitNOFILE=16384" in dry["comment"]

    real = limits(w, "netsvc", nofile=16384)
    assert real["result"] is True, real
    assert set(real["changes"]) == set(dry["changes"])
    assert real["changes"]["restarted"] == {"unit": "netsvc.service", "old_pid": None, "new_pid": 500}
    assert sd.calls == ["daemon-reload", ("reap", [71, 72]), ("restart", ["netsvc.service"])]
    st = dropin.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    assert stat.S_IMODE(dropin.parent.stat().st_mode) == 0o755
    assert "Started netsvc.service through systemd: PID 500" in real["comment"]
    after = diag(w)
    assert after.findings == [] and rl.summarise(after)["lowest_nofile"] == 16384

    again = limits(w, "netsvc", nofile=16384)
    assert again["result"] is True and again["changes"] == {}
    assert again["comment"] == "netsvc.service has nofile 16384:16384 as declared in {}".format(dropin)
    assert len(sd.calls) == 3


def test_restart_false_writes_and_reports_the_restart_pending(incident):
    w, sd = incident, incident.systemd
    ret = limits(w, "netsvc.service", nofile="1024:16384", restart=False)
    assert ret["result"] is True and set(ret["changes"]) == {"dropin", "restart_pending"}
    assert ret["changes"]["restart_pending"] == {"unit": "netsvc.service", "pids": [71]}
    assert sd.calls == ["daemon-reload"] and (w.procdir / "71").exists()
    assert "restart pending" in ret["comment"]
    again = limits(w, "netsvc.service", nofile="1024:16384", restart=False)
    assert again["result"] is True and again["changes"] == {} and "restart pending" in again["comment"]
    assert again["comment"].startswith("{} declares nofile 1024:16384 for netsvc.service".format(
        w.etc / "systemd/system/netsvc.service.d/hostcheck-limits.conf"))


def test_verify_fails_when_the_new_process_lacks_the_limits(incident):
    incident.systemd.honour = False
    ret = limits(incident, "netsvc", nofile=16384)
    assert ret["result"] is False
    assert "netsvc.service PID 500 runs with nofile 1024:524288, not 16384:16384" in ret["comment"]


def test_running_unit_is_restarted_and_a_second_run_is_a_noop(world, monkeypatch):
    world.unit("fdhog.service", "[Service]\nExecStart=/usr/local/bin/fdhog\n")
    world.process(300, unit="fdhog.service", exe="/usr/local/bin/fdhog", fds=900)
    sd = FakeSystemd(monkeypatch, world, "fdhog.service", "/usr/local/bin/fdhog")
    sd.main = 300
    assert codes(diag(world)) == [("fds-near-limit", "warning")]
    ret = limits(world, "fdhog", nofile="4096:8192")
    assert ret["result"] is True and ret["changes"]["restarted"] == {
        "unit": "fdhog.service", "old_pid": 300, "new_pid": 500}
    assert not (world.procdir / "300").exists()
    assert limits(world, "fdhog", nofile="4096:8192")["changes"] == {}


def test_lowering_below_what_is_in_use_needs_force(world, monkeypatch):
    world.unit("fdhog.service", "[Service]\nExecStart=/usr/local/bin/fdhog\n")
    world.process(300, unit="fdhog.service", exe="/usr/local/bin/fdhog", fds=900)
    sd = FakeSystemd(monkeypatch, world, "fdhog.service", "/usr/local/bin/fdhog")
    sd.main = 300
    ret = limits(world, "fdhog", nofile=512)
    assert ret["result"] is False and ret["changes"] == {} and sd.calls == []
    assert "nofile 512:512 is below the 900 descriptors PID 300 holds; force: True" in ret["comment"]
    ret = limits(world, "fdhog", nofile=512, force=True)
    assert ret["result"] is True and "restarted" in ret["changes"]


def test_never_restarts_dbus_but_may_write_its_dropin(world, monkeypatch):
    world.unit("dbus.service", "[Service]\nExecStart=/usr/bin/dbus-daemon --system\n")
    world.process(40, unit="dbus.service", exe="/usr/bin/dbus-daemon")
    sd = FakeSystemd(monkeypatch, world, "dbus.service", "/usr/bin/dbus-daemon")
    ret = limits(world, "dbus", nofile=4096)
    assert ret["result"] is False and ret["changes"] == {} and sd.calls == []
    assert "never restarted by hostcheck (the system bus" in ret["comment"]
    ret = limits(world, "dbus", nofile=4096, restart=False)
    assert ret["result"] is True and set(ret["changes"]) == {"dropin", "restart_pending"}


def test_a_later_dropin_that_overrides_ours_is_refused(world, monkeypatch):
    world.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    world.dropin("app.service", "override.conf", "[Service]\nLimitNOFILE=2048\n")
    world.process(100, unit="app.service", exe="/usr/sbin/app")
    sd = FakeSystemd(monkeypatch, world, "app.service", "/usr/sbin/app")
    ret = limits(world, "app", nofile=4096)
    assert ret["result"] is False and sd.calls == []
    assert "LimitNOFILE= in {} would override the drop-in".format(
        world.etc / "systemd/system/app.service.d/override.conf") in ret["comment"]


def test_stopped_unit_gets_the_dropin_and_is_not_started(world, monkeypatch):
    world.unit("idle.service", "[Service]\nExecStart=/usr/sbin/idle\n")
    sd = FakeSystemd(monkeypatch, world, "idle.service", "/usr/sbin/idle")
    ret = limits(world, "idle", core="unlimited", memlock="64:128")
    assert ret["result"] is True and set(ret["changes"]) == {"dropin"}
    assert "LimitCORE=infinity\nLimitMEMLOCK=64:128\n" in ret["changes"]["dropin"]["new"]
    assert "is not running: the limits apply when it starts" in ret["comment"]
    assert sd.calls == ["daemon-reload"]


def test_not_root_and_no_systemd_change_nothing(tmp_path, monkeypatch):
    w = World(tmp_path)
    w.unit("app.service", "[Service]\nExecStart=/usr/sbin/app\n")
    w.euid = 1000
    FakeSystemd(monkeypatch, w, "app.service", "/usr/sbin/app")
    ret = limits(w, "app", nofile=4096)
    assert ret["result"] is False and "need root; nothing done" in ret["comment"]
    w.euid = 0
    shutil.rmtree(w.run / "systemd" / "system")
    ret = limits(w, "app", nofile=4096)
    assert ret["result"] is False and "systemd is not running here" in ret["comment"]
    assert not (w.etc / "systemd/system/app.service.d").exists()


def test_a_failed_write_is_reported_and_nothing_restarts(incident, monkeypatch):
    def fail(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rl.hostcheck_files, "atomic_write", fail)
    ret = limits(incident, "netsvc", nofile=16384)
    assert ret["result"] is False and ret["changes"] == {}
    assert "Permission denied; nothing changed" in ret["comment"] and incident.systemd.calls == []


def test_service_manager_calls_go_through_the_shared_homes():
    import inspect
    src = inspect.getsource(rl)
    assert "import subprocess" not in src and "os.kill" not in src
    assert "hostcheck_service.restart_units" in src and "hostcheck_files.atomic_write" in src
