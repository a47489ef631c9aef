"""hostcheck_timezone on fake /etc, zoneinfo and /proc trees (no host file is read or written):
read on fake roots, the purity of analyse and plan, zone validation, and the
remedy through the one state runner (hostcheck_check.run_remedy)."""
import errno
import inspect
import os
import signal
import stat

import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_files as hf
import hostcheck_ident as hi
import hostcheck_proc as hp
import hostcheck_reaper as hr
import hostcheck_service as hs
import hostcheck_timezone as tz
from tests.fakes import fake_proc_root, forbid_host_access, make_proc

P = hp.Proc.synthetic


def tzif(abbr, offset):
    """A minimal valid TZif (version 2) file: one local time type, no transitions."""
    chars = abbr.encode() + b"\0"
    counts = (0, 0, 0, 0, 1, len(chars))  # isut, isstd, leap, time, type, char

    def block():
        head = b"TZif2" + b"\0" * 15 + b"".join(c.to_bytes(4, "big") for c in counts)
        return head + offset.to_bytes(4, "big", signed=True) + b"\0\0" + chars

    return block() + block() + "\n{}{}\n".format(abbr, -offset // 3600).encode()


SHANGHAI = tzif("CST", 8 * 3600)
UTC = tzif("UTC", 0)
PARIS = tzif("CET", 3600)
NEW_YORK = tzif("EST", -5 * 3600)
RIGHT_UTC = UTC + b"leap"  # stands in for the leap-second data
FACTORY = tzif("-00", 0)


class Root:
    """A fake host: tmp_path/etc, tmp_path/usr/share/zoneinfo, tmp_path/proc, tmp_path/run."""

    def host(self):
        return hc.Host(proc_root=str(self.proc), etc_root=str(self.etc), run_root=str(self.run),
                       zoneinfo=str(self.zi))

    def path(self, rel):
        return str(self.etc / rel)


@pytest.fixture
def root(tmp_path):
    """tmp_path/etc and tmp_path/usr/share/zoneinfo with a few zones and aliases."""
    zi = tmp_path / "usr/share/zoneinfo"
    for name, data in {"Asia/Shanghai": SHANGHAI, "Asia/Chongqing": SHANGHAI, "Etc/UTC": UTC,
                       "UTC": UTC, "Europe/Paris": PARIS, "America/New_York": NEW_YORK,
                       "right/UTC": RIGHT_UTC, "posixrules": NEW_YORK, "Factory": FACTORY}.items():
        (zi / name).parent.mkdir(parents=True, exist_ok=True)
        (zi / name).write_bytes(data)
    (zi / "PRC").symlink_to("Asia/Shanghai")
    (zi / "Bogus").write_text("not a zone file\n")
    (zi / "Evil").symlink_to("../../../etc/passwd")
    (zi / "zone1970.tab").write_text("# tz\nCN\t+3114+12128\tAsia/Shanghai\nFR\t+4852+00220\tEurope/Paris\n")
    (zi / "posix").symlink_to(".")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    proc = fake_proc_root(tmp_path)
    make_proc(proc, 1, 0, comm="init", cmdline=b"/sbin/init\0", exe="/sbin/init")
    (tmp_path / "run").mkdir()
    r = Root()
    r.base, r.etc, r.zi, r.proc, r.run = tmp_path, etc, zi, proc, tmp_path / "run"
    return r


def opts(daemons=None):
    return hc.options(tz, {"daemons": daemons} if daemons else None)


def diag(r, quick=False):
    return hc.diagnose(tz, r.host(), opts(), quick=quick)


def look(r, quick=False):
    return diag(r, quick).as_dict()


def pin(r, zone, test=False, copy=False, timeout=30, daemons=None):
    args = {"copy": copy, "daemons": daemons, "timeout": timeout}
    return hc.run_remedy(tz, zone, args, test=test, host=r.host())


def remedy_args(r, zone, copy=False, timeout=30):
    args = {"copy": copy, "timeout": timeout}
    tz.validate_remedy(zone, args, r.host())
    return args


def debian(r, localtime=None, timezone=None):
    (r.etc / "debian_version").write_text("12.0\n")
    if localtime is not None:
        (r.etc / "localtime").symlink_to("../usr/share/zoneinfo/" + localtime)
    if timezone is not None:
        (r.etc / "timezone").write_text(timezone + "\n")


class FakeServices:
    """systemd for the remedy, faked: ``units`` is ``{unit: (program, main pid)}``;
    the daemons are added to every (non-quick) read, restarts are recorded
    and give each unit a new main PID started after the change (unless
    ``survive``: then the old process stays the main one)."""

    def __init__(self, monkeypatch, units, survive=False, stale=True):
        self.main = dict(units)
        self.survive, self.stale = survive, stale
        self.restarts, self.fresh = [], set()
        real_read = tz.read

        def read(host, opts_, quick=False):
            facts = real_read(host, opts_, quick)
            if not quick:
                facts.running = [self.daemon(u, facts.changed_at) for u in sorted(self.main)]
                facts.units = {u: {"Id": u, "MainPID": pid} for u, (_, pid) in self.main.items()}
            return facts

        monkeypatch.setattr(tz, "read", read)
        monkeypatch.setattr(hs, "restart_units", self.restart_units)
        monkeypatch.setattr(hr, "wait_gone", lambda ids, timeout, proc_root="/proc": list(ids) if survive else [])
        monkeypatch.setattr(hs, "show", lambda names, props, run_root="/run", **kw: {
            u: {"Id": u, "MainPID": self.main[u][1]} for u in names if u in self.main})

    def daemon(self, unit, changed_at):
        program, pid = self.main[unit]
        old = self.stale and unit not in self.fresh
        started = changed_at - 3600 if old else changed_at + 5
        return {"program": program, "pid": pid, "starttime": pid * 100, "started_at": started, "unit": unit}

    def restart_units(self, units, timeout=120):
        self.restarts.append(list(units))
        if not self.survive:
            for unit in units:
                program, pid = self.main[unit]
                self.main[unit] = (program, pid + 46)
                self.fresh.add(unit)
        return dict.fromkeys(units)


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the run) when something blocks, e.g. on a FIFO."""
    def boom(signum, frame):
        raise TimeoutError("blocked: a FIFO was opened in a blocking way")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# --- sources ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["../usr/share/zoneinfo/Asia/Shanghai",
                                    "/usr/share/zoneinfo/Asia/Shanghai",
                                    "/usr/share/zoneinfo/posix/Asia/Shanghai"])
def test_symlink_relative_absolute_posix(root, target):
    (root.etc / "localtime").symlink_to(target)
    a = look(root)
    lt = a["sources"]["localtime"]
    assert (lt["kind"], lt["zone"], lt["error"]) == ("symlink", "Asia/Shanghai", None)
    assert lt["relative"] is (not target.startswith("/"))
    assert (a["zone"], a["consistent"], a["findings"]) == ("Asia/Shanghai", True, [])


def test_copy_equal_to_two_names_prefers_canonical(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    a = look(root)
    lt = a["sources"]["localtime"]
    assert lt["kind"] == "copy"
    assert lt["identical_to"] == ["Asia/Chongqing", "Asia/Shanghai", "PRC"]
    assert lt["zone"] == "Asia/Shanghai"  # zone1970.tab, not the first hash match
    assert a["consistent"] is True


def test_copy_takes_the_name_another_source_uses(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Asia/Chongqing\n")
    a = look(root)
    assert (a["zone"], a["consistent"]) == ("Asia/Chongqing", True)
    assert "copy" in a["agreement"] and "Asia/Shanghai" in a["agreement"]


def test_the_incident_timezone_utc_localtime_copy_of_shanghai(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    a = look(root)
    assert a["zone"] == "Asia/Shanghai"  # what glibc (date, cron) uses
    assert a["consistent"] is False
    assert a["conflicts"] == ["/etc/localtime says Asia/Shanghai but /etc/timezone says Etc/UTC"]
    (f,) = a["findings"]
    assert (f["check"], f["code"], f["severity"], f["pids"]) == ("timezone", "zone-conflict", "critical", [])
    assert set(a) == {"zone", "consistent", "agreement", "conflicts", "sources", "stale", "changed",
                      "findings", "notes"}


def test_alias_names_agree_by_content(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Shanghai")
    (root.etc / "timezone").write_text("PRC\n")
    a = look(root)
    assert a["consistent"] is True
    assert "byte-identical" in a["agreement"] and "PRC" in a["agreement"]


def test_missing_etc_timezone_and_missing_localtime(root):
    a = look(root)
    assert "timezone" not in a["sources"]
    assert (a["zone"], a["consistent"]) == ("UTC", True)
    assert [f["code"] for f in a["findings"]] == ["localtime-missing"]
    (root.etc / "timezone").write_text("Asia/Shanghai\n")
    a = look(root)
    assert a["consistent"] is False
    assert "missing, so UTC" in a["conflicts"][0]
    (root.etc / "timezone").write_text("Etc/UTC\n")  # the fallback's data: agrees
    assert look(root)["consistent"] is True


def test_red_hat_layout(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('# comment\nZONE="Asia/Shanghai"\nUTC=true\n')
    a = look(root)
    assert a["sources"]["sysconfig"]["zone"] == "Asia/Shanghai"
    assert a["conflicts"] == ["/etc/localtime says Europe/Paris but /etc/sysconfig/clock says Asia/Shanghai"]
    ret = pin(root, "Europe/Paris")
    assert ret["result"] is True, ret
    assert list(ret["changes"]["files"]) == [root.path("sysconfig/clock")]  # no /etc/timezone on Red Hat
    assert (root.etc / "sysconfig/clock").read_text() == '# comment\nZONE="Europe/Paris"\nUTC=true\n'
    assert look(root)["consistent"] is True


def test_suse_timezone_key_is_kept(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Shanghai")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('DEFAULT_TIMEZONE="US/Eastern"\nTIMEZONE="Europe/Paris"\n')
    assert look(root)["sources"]["sysconfig"]["zone"] == "Europe/Paris"
    ret = pin(root, "Asia/Shanghai")
    assert ret["result"] is True, ret
    assert (root.etc / "sysconfig/clock").read_text() == 'DEFAULT_TIMEZONE="US/Eastern"\nTIMEZONE="Asia/Shanghai"\n'
    assert pin(root, "Asia/Shanghai")["changes"] == {}


def test_tz_in_environment_and_pid1(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    (root.etc / "environment").write_text('PATH="/usr/bin"\nTZ=":Europe/Paris"\n')
    (root.proc / "1/environ").write_bytes(b"HOME=/\0SECRET=do-not-leak\0TZ=Asia/Shanghai\0")
    d = diag(root)
    a = d.as_dict()
    assert a["sources"]["environment"]["zone"] == "Europe/Paris"
    assert a["sources"]["pid1"]["zone"] == "Asia/Shanghai"
    assert "do-not-leak" not in repr(a)
    assert "do-not-leak" not in repr([getattr(d.facts, s) for s in d.facts.__slots__])
    assert len(a["conflicts"]) == 2
    (root.etc / "environment").write_text("TZ=:/etc/localtime\n")
    (root.proc / "1/environ").write_bytes(b"TZ=UTC\0")
    assert look(root)["consistent"] is True


@pytest.mark.parametrize("fname,content,fragment", [
    ("localtime", b"\x00garbage\xff" * 10, "not a valid TZif"),
    ("localtime", SHANGHAI[:30], "not a valid TZif"),  # truncated
    ("timezone", b"\x7fELF\x00\x01binary", "characters not allowed"),
    ("timezone", b"Asia/Shanghai Europe/Paris\n", "more than one value"),
    ("timezone", b"\n\n", "empty"),
    ("timezone", b"../../etc/shadow\n", "'..'"),
    ("sysconfig/clock", b"UTC=true\n", "no ZONE= line"),
    ("sysconfig/clock", b'ZONE="Asia/Nowhere"\n', "unknown zone"),
    ("environment", b"TZ=CST-8\n", "POSIX TZ string"),
])
def test_garbage_in_each_file(root, fname, content, fragment):
    if fname != "localtime":
        (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    path = root.etc / fname
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    a = look(root)
    assert a["consistent"] is False
    assert any(fragment in c for c in a["conflicts"]), a["conflicts"]


@pytest.mark.parametrize("content", [b"\x7fELF\x00\x01binary\n", b"../../etc/shadow\n",
                                     b"root:$y$j9T$s3cr3t:19700:0:99999:7:::\n"])
def test_what_is_not_a_zone_name_is_never_echoed(root, content):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    (root.etc / "timezone").write_bytes(content)
    src = look(root)["sources"]["timezone"]
    assert src["value"] is None and src["zone"] is None
    assert "does not name a zone" in src["error"]
    assert "ELF" not in repr(src) and "shadow" not in repr(src) and "s3cr3t" not in repr(src)


def test_localtime_symlink_outside_zoneinfo_or_dangling(root):
    (root.etc / "localtime").symlink_to("/etc/passwd")
    assert "zoneinfo" in look(root)["sources"]["localtime"]["error"]
    (root.etc / "localtime").unlink()
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Nowhere")
    a = look(root)
    assert a["zone"] == "UTC" and not a["consistent"]


def test_read_keeps_the_bytes_of_every_named_zone(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("PRC\n")
    (root.etc / "environment").write_text("TZ=Asia/Chongqing\n")
    facts = tz.read(root.host(), opts(), quick=True)
    assert facts.zones == {"PRC": SHANGHAI, "Asia/Chongqing": SHANGHAI, "UTC": UTC}
    assert facts.localtime_data == SHANGHAI
    assert facts.texts == {"environment": "TZ=Asia/Chongqing\n"}


# --- zone validation ------------------------------------------------------


@pytest.mark.parametrize("bad,fragment", [
    ("../../etc/shadow", "'..'"),
    ("/etc/passwd", "absolute"),
    ("Asia/Nowhere", "unknown zone"),
    ("", "empty"),
    ("   ", "empty"),
    (None, "must be a string"),
    (8, "must be a string"),
    (["Asia/Shanghai"], "must be a string"),
    ({"zone": "UTC"}, "must be a string"),
    ("Bogus", "not a valid TZif"),
    ("Evil", "outside"),
    ("Asia", "directory"),
    ("posix", "directory"),
    ("Asia//Shanghai", "empty"),
    ("Asia/Shang hai", "characters"),
])
def test_invalid_zone_names(root, bad, fragment):
    with pytest.raises(tz.ZoneError, match=fragment):
        tz.validate_zone(bad, str(root.zi), str(root.etc), pin=True)


def test_valid_zone_and_alias(root):
    assert tz.validate_zone("PRC", str(root.zi))[2] == SHANGHAI
    assert tz.validate_zone("Asia/Shanghai", str(root.zi))[1] == str(root.zi / "Asia/Shanghai")
    assert tz.validate_zone("posix/Asia/Shanghai", str(root.zi))[:2] == (
        "Asia/Shanghai", str(root.zi / "Asia/Shanghai"))
    assert issubclass(tz.ZoneError, hcfg.ConfigError)  # the runner's "Invalid arguments"


def test_pin_localtime_is_refused_not_a_loop(root):
    """Debian's zoneinfo/localtime -> /etc/localtime: pinning it would write
    /etc/localtime -> ../usr/share/zoneinfo/localtime, a loop."""
    (root.zi / "localtime").symlink_to(root.etc / "localtime")
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    with pytest.raises(tz.ZoneError, match="/etc/localtime"):
        tz.validate_zone("localtime", str(root.zi), str(root.etc), pin=True)
    ret = pin(root, "localtime")
    assert (ret["result"], ret["changes"]) == (False, {})
    assert "nothing done" in ret["comment"]
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Europe/Paris"


def test_zone_resolving_through_etc_is_refused(root):
    """realpath ends inside zoneinfo, but the way there passes through /etc."""
    (root.zi / "Local").mkdir()
    (root.zi / "Local/Mine").symlink_to(root.etc / "localtime")
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    assert os.path.realpath(root.zi / "Local/Mine") == str(root.zi / "Europe/Paris")
    with pytest.raises(tz.ZoneError, match="resolves through"):
        tz.validate_zone("Local/Mine", str(root.zi), str(root.etc))
    ret = pin(root, "Local/Mine")
    assert (ret["result"], ret["changes"]) == (False, {}) and "through" in ret["comment"]
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Europe/Paris"
    (root.etc / "timezone").write_text("Local/Mine\n")  # a source naming it is an error, not followed
    assert "through" in look(root)["sources"]["timezone"]["error"]


def test_symlink_loop_in_zoneinfo_is_an_error(root):
    (root.zi / "Loop").symlink_to("Loop")
    with pytest.raises(tz.ZoneError, match="loop"):
        tz.validate_zone("Loop", str(root.zi), str(root.etc))


@pytest.mark.parametrize("name,fragment", [
    ("right/UTC", "leap-second"),
    ("posix/right/UTC", "leap-second"),
    ("posixrules", "POSIX TZ strings"),
    ("Factory", "placeholder"),
    ("localtime", "/etc/localtime"),
])
def test_pseudo_and_leap_second_zones_are_refused(root, name, fragment):
    with pytest.raises(tz.ZoneError, match=fragment):
        tz.validate_zone(name, str(root.zi), str(root.etc), pin=True)
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    ret = pin(root, name)
    assert (ret["result"], ret["changes"]) == (False, {})
    assert ret["comment"].startswith("Invalid arguments, nothing done") and fragment in ret["comment"]
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Etc/UTC"


def test_posix_prefix_is_the_same_zone_and_a_second_run_is_a_noop(root, monkeypatch):
    debian(root, localtime="Etc/UTC", timezone="Etc/UTC")
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31)}, stale=False)
    ret = pin(root, "posix/Europe/Paris")
    assert ret["result"] is True, ret
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Europe/Paris"
    assert (root.etc / "timezone").read_text() == "Europe/Paris\n"
    assert svc.restarts == [["cron.service"]]
    for zone in ("posix/Europe/Paris", "Europe/Paris"):
        for test in (True, False):
            ret = pin(root, zone, test=test)
            assert (ret["result"], ret["changes"]) == (True, {}), ret
    assert svc.restarts == [["cron.service"]]  # cron is not restarted on every run


def test_a_host_pinned_through_posix_paths_is_not_pinned_again(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/posix/Europe/Paris")
    (root.etc / "timezone").write_text("posix/Europe/Paris\n")
    a = look(root)
    assert (a["zone"], a["consistent"]) == ("Europe/Paris", True)
    assert pin(root, "Europe/Paris")["changes"] == {}


# --- stale daemons ------------------------------------------------------------


def daemon(pid, started_at, program="cron", unit="cron.service"):
    return {"program": program, "pid": pid, "starttime": pid * 100, "started_at": started_at, "unit": unit}


def test_staleness_tolerates_clock_skew(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    facts = tz.read(root.host(), opts())
    changed = facts.changed_at
    facts.running = [daemon(10, changed - 3600), daemon(11, changed - 0.9, "atd", "atd.service"),
                     daemon(12, changed + 0.2, "rsyslogd", "rsyslog.service")]
    a = tz.analyse(facts, opts())
    assert [d["pid"] for d in a.details["stale"]] == [10]  # 0.9 s "before" is clock skew, not staleness
    (f,) = [f for f in a.findings if f["code"] == "stale-daemon"]
    assert f["pids"] == [10] and f["program"] == "cron" and f["severity"] == "warning"


def test_only_the_units_main_process_counts(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    facts = tz.read(root.host(), opts())
    old = facts.changed_at - 3600
    facts.running = [daemon(10, old), daemon(20, old)]  # 20: a job child re-parented after a restart
    facts.units = {"cron.service": {"MainPID": 10}}
    assert [d["pid"] for d in tz.analyse(facts, opts()).details["stale"]] == [10]


def test_daemon_processes_top_of_tree_by_program_not_comm():
    snap = hp.Snapshot.from_procs([
        P(1, 0, cmdline=["/sbin/init"]),
        P(100, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], starttime=500,
          cgroup="/system.slice/cron.service"),
        P(101, 100, comm="cron", cmdline=["/usr/sbin/CRON", "-f"], starttime=900,
          cgroup="/system.slice/cron.service"),
        P(102, 100, comm="cron", cmdline=["/usr/sbin/cron", "-f"], starttime=900),
        P(200, 1, comm="cron", cmdline=["/usr/bin/python3", "/opt/fake.py"]),  # named cron, is not
        P(210, 1, comm="cron", cmdline=["/bin/sh", "/usr/local/sbin/cron"]),  # a shell script named cron
        P(220, 1, comm="cron", cmdline=["cron", "-f"], exe="/usr/bin/sleep"),  # exec -a cron sleep
        P(300, 1, comm="rs:main", cmdline=["/usr/sbin/rsyslogd", "-n"], starttime=600,
          cgroup="/system.slice/rsyslog.service"),
    ])
    found = tz.daemon_processes(snap, tz.DEFAULT_DAEMONS, boot=1000.0)
    assert [(d["program"], d["pid"], d["unit"]) for d in found] == [
        ("cron", 100, "cron.service"), ("rsyslogd", 300, "rsyslog.service")]
    assert found[0]["started_at"] == 1000.0 + 500 / snap.clk_tck


def test_daemon_processes_reads_no_command_line_of_other_native_binaries(monkeypatch):
    snap = hp.Snapshot.from_procs([
        P(1, 0, cmdline=["/sbin/init"]),
        P(100, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"]),
        P(200, 1, comm="sleep", cmdline=["/usr/bin/sleep", "600"]),  # native, not a daemon looked for
        P(300, 1, comm="crond", cmdline=["crond", "-f"], exe="/bin/busybox"),  # busybox: named by argv[0]
        P(400, 1, comm="x", cmdline=["/usr/bin/python3", "/opt/app.py"]),  # interpreter: named by its script
        P(500, 1, comm="cron", cmdline=["cron", "-f"], exe=None),  # unreadable exe: a guess, never trusted
    ])
    asked = []
    real = hi.identify
    monkeypatch.setattr(hi, "identify", lambda exe, argv: asked.append(exe) or real(exe, argv))
    found = tz.daemon_processes(snap, tz.DEFAULT_DAEMONS, boot=1000.0)
    assert [(d["program"], d["pid"]) for d in found] == [("cron", 100), ("crond", 300)]
    assert "/usr/bin/sleep" not in asked
    assert sorted(asked, key=str) == sorted(["/usr/sbin/cron", "/bin/busybox", "/usr/bin/python3", None], key=str)


def test_daemons_config():
    assert tz.validate_daemons(None, "daemons") == list(tz.DEFAULT_DAEMONS)
    assert tz.validate_daemons(["cron", "nscd"], "daemons") == ["cron", "nscd"]
    assert opts()["daemons"] == list(tz.DEFAULT_DAEMONS)
    for bad in (5, [""], ["cron", 3], {"cron": 1}, ["/usr/sbin/cron"]):
        with pytest.raises(hcfg.ConfigError):
            tz.validate_daemons(bad, "daemons")
        with pytest.raises(hcfg.ConfigError, match="daemons"):
            hc.options(tz, {"daemons": bad})


# --- read, then pure analyse and plan -----------------------------------------


def test_read_on_fake_roots_then_pure_analyse_and_plan(root, monkeypatch):
    debian(root)
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('ZONE="PRC"\n')
    (root.etc / "environment").write_text('TZ=":Asia/Chongqing"\n')
    (root.proc / "uptime").write_text("100000.00 0.00\n")
    make_proc(root.proc, 100, 1, comm="cron", cmdline=b"/usr/sbin/cron\0-f\0", exe="/usr/sbin/cron",
              cgroup=b"0::/system.slice/cron.service\n", starttime=500)
    make_proc(root.proc, 110, 1, comm="cron", cmdline=b"/bin/sh\0/usr/local/sbin/cron\0", exe="/bin/dash")
    (root.run / "systemd/system").mkdir(parents=True)
    monkeypatch.setattr(hs, "timedatectl_zone", lambda run_root="/run", timeout=5: "Etc/UTC")
    monkeypatch.setattr(hs, "show", lambda names, props, run_root="/run", **kw: {
        "cron.service": {"Id": "cron.service", "MainPID": 100}})
    host, o = root.host(), opts()
    facts = tz.read(host, o)
    args = remedy_args(root, "Asia/Shanghai")
    assert [d["pid"] for d in facts.running] == [100]  # the shell script named cron is not cron
    forbid_host_access(monkeypatch)
    try:
        a = tz.analyse(facts, o)
        p = tz.plan(a, args)
    finally:
        monkeypatch.undo()  # before any assertion: pytest's report reads files
    assert a.details["zone"] == "PRC"  # the copy takes the name another source uses
    assert a.details["conflicts"] == ["/etc/localtime says PRC but /etc/timezone says Etc/UTC"]
    assert [d["pid"] for d in a.details["stale"]] == [100]
    assert any("systemd-timedated keeps the zone" in n for n in a.notes)
    assert tz.summarise(a) == {"zone": "PRC", "consistent": False}
    assert p.changes["files"] == {
        root.path("localtime"): {"old": "copy of PRC", "new": "../usr/share/zoneinfo/Asia/Shanghai"},
        root.path("timezone"): {"old": "Etc/UTC", "new": "Asia/Shanghai"},
        root.path("sysconfig/clock"): {"old": "PRC", "new": "Asia/Shanghai"},
        root.path("environment"): {"old": "Asia/Chongqing", "new": "Asia/Shanghai"},
    }
    assert p.changes["restarted"] == [{"unit": "cron.service", "program": "cron", "old_pid": 100, "new_pid": None}]
    assert [it["data"] for it in p.actions["files"][1:]] == [
        b"Asia/Shanghai\n", b'ZONE="Asia/Shanghai"\n', b'TZ="Asia/Shanghai"\n']
    assert p.problems == []


# --- the remedy: files ----------------------------------------------------------


def test_plan_write_and_second_plan_empty_keeps_mode(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    os.chmod(root.etc / "timezone", 0o640)
    ret = pin(root, "Asia/Shanghai")
    assert ret["result"] is True, ret
    assert ret["changes"] == {"files": {
        root.path("localtime"): {"old": "copy of Asia/Shanghai", "new": "../usr/share/zoneinfo/Asia/Shanghai"},
        root.path("timezone"): {"old": "Etc/UTC", "new": "Asia/Shanghai"},
    }}
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Asia/Shanghai"
    assert (root.etc / "timezone").read_text() == "Asia/Shanghai\n"
    assert stat.S_IMODE(os.stat(root.etc / "timezone").st_mode) == 0o640
    assert sorted(os.listdir(root.etc)) == ["debian_version", "localtime", "passwd", "timezone"]
    assert (pin(root, "Asia/Shanghai")["result"], pin(root, "Asia/Shanghai")["changes"]) == (True, {})
    a = look(root)
    assert (a["zone"], a["consistent"]) == ("Asia/Shanghai", True)


def test_copy_mode_and_absolute_link_is_accepted(root):
    (root.etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Shanghai")
    assert pin(root, "Asia/Shanghai")["changes"] == {}  # no churn
    ret = pin(root, "Asia/Shanghai", copy=True)
    assert ret["result"] is True, ret
    assert not os.path.islink(root.etc / "localtime")
    assert (root.etc / "localtime").read_bytes() == SHANGHAI
    assert pin(root, "Asia/Shanghai", copy=True)["changes"] == {}
    ret = pin(root, "PRC", copy=True)  # an alias with the same data: no churn, and verified by content
    assert (ret["result"], ret["changes"]) == (True, {}), ret


def test_crash_between_two_writes_leaves_every_file_old(root, monkeypatch):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(PARIS)
    (root.etc / "timezone").write_text("Europe/Paris\n")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('ZONE="Europe/Paris"\n')
    items = tz.plan(diag(root), remedy_args(root, "Asia/Shanghai")).actions["files"]
    assert len(items) == 3
    real_fsync, calls = os.fsync, []

    def crash(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file's data fsync (after the symlink's directory fsync)
            raise OSError(5, "simulated crash")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crash)
    res = tz.write_files(items)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert res["failed"][0]["path"] == root.path("timezone")
    assert [it["path"] for it in res["rolled_back"]] == [root.path("localtime")]
    assert not os.path.islink(root.etc / "localtime")
    assert (root.etc / "localtime").read_bytes() == PARIS  # old again
    assert (root.etc / "timezone").read_text() == "Europe/Paris\n"  # old, not truncated
    assert (root.etc / "sysconfig/clock").read_text() == 'ZONE="Europe/Paris"\n'  # old
    leftovers = [n for n in os.listdir(root.etc) if n.startswith(".hostcheck-")]
    assert leftovers == []


def _three_files(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(PARIS)
    (root.etc / "timezone").write_text("Europe/Paris\n")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('ZONE="Europe/Paris"\n')


def _busy_on_second_write(monkeypatch):
    real, calls = tz.write_item, []

    def write(item):
        calls.append(item["path"])
        if len(calls) == 2:  # /etc/timezone bind-mounted by the container runtime
            raise OSError(errno.EBUSY, "Device or resource busy", item["path"])
        real(item)

    monkeypatch.setattr(tz, "write_item", write)
    return calls


def test_a_failed_write_rolls_back_the_files_already_written(root, monkeypatch):
    _three_files(root)
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31)})
    calls = _busy_on_second_write(monkeypatch)
    ret = pin(root, "Asia/Shanghai")
    assert calls == [root.path("localtime"), root.path("timezone")]
    assert ret["result"] is False and ret["changes"] == {}
    assert (root.etc / "localtime").read_bytes() == PARIS and not os.path.islink(root.etc / "localtime")
    assert (root.etc / "timezone").read_text() == "Europe/Paris\n"
    assert (root.etc / "sysconfig/clock").read_text() == 'ZONE="Europe/Paris"\n'
    comment = ret["comment"]
    assert "Writing {} failed: Device or resource busy".format(root.path("timezone")) in comment
    assert "Wrote, then rolled back: {}".format(root.path("localtime")) in comment
    assert "Not written: {}".format(root.path("sysconfig/clock")) in comment
    assert "no file is changed" in comment and "No daemon was restarted" in comment
    assert "Pinned" not in comment and "either old or new" not in comment
    assert svc.restarts == []


def test_a_rollback_that_fails_is_named_and_its_file_is_in_changes(root, monkeypatch):
    _three_files(root)
    _busy_on_second_write(monkeypatch)

    def refuse(self):
        raise OSError(errno.EROFS, "Read-only file system", self.path)

    monkeypatch.setattr(hf.Snapshot, "restore", refuse)
    ret = pin(root, "Asia/Shanghai")
    assert ret["result"] is False
    assert ret["changes"] == {"files": {root.path("localtime"): {
        "old": "copy of Europe/Paris", "new": "../usr/share/zoneinfo/Asia/Shanghai"}}}
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Asia/Shanghai"
    assert "Could not roll back {} (Read-only file system)".format(root.path("localtime")) in ret["comment"]
    assert "changed and not rolled back: {}".format(root.path("localtime")) in ret["comment"]


def test_etc_timezone_symlink_to_a_secret(root):
    """/etc/timezone -> /etc/shadow: the target's first line never shows, and the
    new /etc/timezone takes owner and mode from the link, not the target."""
    debian(root, localtime="Etc/UTC")
    secret = root.etc / "shadow"
    secret.write_text("root:$y$j9T$s3cr3t:19700:0:99999:7:::\n")
    os.chmod(secret, 0o640)
    group = 42 if os.geteuid() == 0 else secret.stat().st_gid  # root:shadow where we may
    if os.geteuid() == 0:
        os.chown(secret, 0, group)
    (root.etc / "timezone").symlink_to("shadow")
    a = look(root)
    assert a["sources"]["timezone"]["value"] is None
    assert "not shown" in a["sources"]["timezone"]["error"]  # root:shadow 0640: not everyone's to read
    os.chmod(secret, 0o644)
    assert "does not name a zone" in look(root)["sources"]["timezone"]["error"]
    os.chmod(secret, 0o640)
    link = os.lstat(root.etc / "timezone")
    ret = pin(root, "Etc/UTC")
    assert ret["result"] is True, ret
    assert "s3cr3t" not in repr(a) + repr(ret)
    assert ret["changes"]["files"][root.path("timezone")] == {"old": None, "new": "Etc/UTC"}
    st = os.lstat(root.etc / "timezone")
    assert stat.S_ISREG(st.st_mode) and (root.etc / "timezone").read_text() == "Etc/UTC\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, link.st_uid, link.st_gid)
    assert secret.read_text() == "root:$y$j9T$s3cr3t:19700:0:99999:7:::\n"
    assert (stat.S_IMODE(secret.stat().st_mode), secret.stat().st_gid) == (0o640, group)


def test_a_zone_shaped_secret_behind_a_symlink_is_not_shown(root):
    debian(root, localtime="Etc/UTC")
    secret = root.base / "secret"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o600)
    (root.etc / "timezone").symlink_to(secret)
    a = look(root)
    assert "hunter2" not in repr(a)
    assert a["sources"]["timezone"]["value"] is None and "not shown" in a["sources"]["timezone"]["error"]


@pytest.mark.parametrize("rel,kind,fragment", [
    ("timezone", "timezone", "not a regular file"),
    ("environment", "environment", "not a regular file"),
    ("sysconfig/clock", "sysconfig", "not a regular file"),
    ("localtime", "localtime", "neither a symlink nor a regular file"),
])
def test_a_fifo_in_etc_is_a_source_error_never_a_hang(root, no_hang, rel, kind, fragment):
    debian(root, localtime=None if rel == "localtime" else "Etc/UTC")
    path = root.etc / rel
    path.parent.mkdir(exist_ok=True)
    os.mkfifo(path)
    a = look(root)
    assert fragment in a["sources"][kind]["error"]
    assert a["consistent"] is False
    zone = "UTC" if rel == "localtime" else "Etc/UTC"
    assert tz.summarise(diag(root, quick=True)) == {"zone": zone, "consistent": False}  # the grain
    for test in (True, False):
        ret = pin(root, "Etc/UTC", test=test)
        assert (ret["result"], ret["changes"]) == (False, {}), ret
        assert "nothing done" in ret["comment"] and str(path) in ret["comment"]
    assert stat.S_ISFIFO(os.lstat(path).st_mode)  # left for a person to look at


def test_set_assignment_keeps_other_lines():
    text = "# c\nexport ZONE='Europe/Paris'  \nUTC=true"
    assert tz.set_assignment(text, ("ZONE",), "ZONE", "Asia/Shanghai") == "# c\nexport ZONE='Asia/Shanghai'\nUTC=true"
    assert tz.set_assignment("UTC=true", ("ZONE",), "ZONE", "UTC") == 'UTC=true\nZONE="UTC"\n'


# --- the remedy through the state runner ---------------------------------------


@pytest.mark.parametrize("bad", ["../../etc/shadow", "/etc/passwd", "Asia/Nowhere", "", 42, None, "Bogus", "Evil",
                                 "right/UTC", "posixrules", "Factory", "localtime"])
def test_pin_bad_zone_changes_nothing(root, bad):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    before = {n: os.lstat(root.etc / n).st_mtime_ns for n in os.listdir(root.etc)}
    ret = pin(root, bad)
    assert (ret["result"], ret["changes"]) == (False, {})
    assert ret["comment"].startswith("Invalid arguments, nothing done")
    assert {n: os.lstat(root.etc / n).st_mtime_ns for n in os.listdir(root.etc)} == before


@pytest.mark.parametrize("args,fragment", [
    ({"copy": "yes"}, "copy must be true or false"),
    ({"copy": 1}, "copy must be true or false"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": 601}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"timeout": "30"}, "timeout"),
    ({"daemons": 5}, "daemons"),
])
def test_pin_bad_arguments_change_nothing(root, args, fragment):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    given = {"copy": False, "daemons": None, "timeout": 30}
    given.update(args)
    ret = hc.run_remedy(tz, "Etc/UTC", given, host=root.host())
    assert (ret["result"], ret["changes"]) == (False, {})
    assert ret["comment"].startswith("Invalid arguments, nothing done") and fragment in ret["comment"]
    assert (root.etc / "localtime").read_bytes() == SHANGHAI


def test_pin_test_apply_noop(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    ret = pin(root, "Etc/UTC", test=True)
    assert ret["result"] is None and set(ret["changes"]["files"]) == {root.path("localtime")}
    assert (root.etc / "localtime").read_bytes() == SHANGHAI  # test=True wrote nothing
    ret = pin(root, "Etc/UTC")
    assert ret["result"] is True, ret
    assert ret["changes"]["files"][root.path("localtime")]["new"] == "../usr/share/zoneinfo/Etc/UTC"
    assert ret["comment"].startswith("Pinned timezone Etc/UTC")
    ret = pin(root, "Etc/UTC")
    assert (ret["result"], ret["changes"]) == (True, {})
    assert "is pinned" in ret["comment"]
    ret = pin(root, "Etc/UTC", test=True)
    assert (ret["result"], ret["changes"]) == (True, {})


def test_test_mode_changes_have_the_keys_of_a_real_run(root, monkeypatch):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31), "rsyslog.service": ("rsyslogd", 41)})
    t = pin(root, "Etc/UTC", test=True)
    assert t["result"] is None and svc.restarts == []
    r = pin(root, "Etc/UTC")
    assert r["result"] is True, r
    assert set(t["changes"]) == set(r["changes"]) == {"files", "restarted"}
    assert t["changes"]["files"] == r["changes"]["files"]
    assert [set(i) for i in t["changes"]["restarted"]] == [set(i) for i in r["changes"]["restarted"]]
    assert [(i["unit"], i["old_pid"], i["new_pid"]) for i in t["changes"]["restarted"]] == [
        ("cron.service", 31, None), ("rsyslog.service", 41, None)]
    assert [(i["unit"], i["old_pid"], i["new_pid"]) for i in r["changes"]["restarted"]] == [
        ("cron.service", 31, 77), ("rsyslog.service", 41, 87)]
    assert svc.restarts == [["cron.service", "rsyslog.service"]]  # one batched call
    assert "restarted cron.service: PID 31 -> 77" in r["comment"]
    assert pin(root, "Etc/UTC")["changes"] == {} and len(svc.restarts) == 1


def test_stale_daemon_when_files_agree_is_restarted(root, monkeypatch):
    debian(root, localtime="Europe/Paris", timezone="Europe/Paris")
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31)})
    assert [d["pid"] for d in look(root)["stale"]] == [31]
    ret = pin(root, "Europe/Paris")
    assert ret["result"] is True, ret
    assert ret["changes"] == {"restarted": [{"unit": "cron.service", "program": "cron", "old_pid": 31,
                                             "new_pid": 77}]}
    assert look(root)["stale"] == [] and pin(root, "Europe/Paris")["changes"] == {}
    assert svc.restarts == [["cron.service"]]


def test_pin_reports_a_daemon_that_survives_its_restart(root, monkeypatch):
    """The incident's 'service cron stop did not even stop the old cron'."""
    debian(root, localtime="Europe/Paris", timezone="Europe/Paris")
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31)}, survive=True)
    ret = pin(root, "Europe/Paris", test=True)
    assert ret["result"] is None
    assert ret["changes"] == {"restarted": [{"unit": "cron.service", "program": "cron", "old_pid": 31,
                                             "new_pid": None}]}
    assert svc.restarts == []
    ret = pin(root, "Europe/Paris", timeout=1)
    assert svc.restarts == [["cron.service"]]
    assert ret["result"] is False
    assert "cron PID 31 survived its restart" in ret["comment"]
    assert "restarted cron.service" not in ret["comment"]
    assert ret["changes"]["restarted"] == [{"unit": "cron.service", "program": "cron", "old_pid": 31, "new_pid": 31}]


def test_a_daemon_without_a_unit_is_named_not_restarted(root, monkeypatch):
    debian(root, localtime="Europe/Paris", timezone="Europe/Paris")
    svc = FakeServices(monkeypatch, {"cron.service": ("cron", 31)})
    real_read = tz.read

    def read(host, opts_, quick=False):
        facts = real_read(host, opts_, quick)
        facts.units = None  # no systemd
        return facts

    monkeypatch.setattr(tz, "read", read)
    ret = pin(root, "Europe/Paris")
    assert (ret["result"], ret["changes"]) == (False, {})
    assert "not restarted (no systemd unit" in ret["comment"] and "cron PID 31" in ret["comment"]
    assert svc.restarts == []


def test_pid1_tz_is_reported_not_hidden(root):
    debian(root, localtime="Etc/UTC", timezone="Etc/UTC")
    (root.proc / "1/environ").write_bytes(b"TZ=Asia/Shanghai\0")
    ret = pin(root, "Etc/UTC")
    assert ret["result"] is False
    assert "PID 1 runs with TZ=Asia/Shanghai" in ret["comment"] and "reboot" in ret["comment"]


def test_restarts_and_writes_go_through_the_shared_homes():
    for name in ("subprocess", "shutil", "restart_units", "wait_gone", "atomic_write", "atomic_symlink",
                 "_install", "timedatectl_zone", "ConfigError"):
        assert not hasattr(tz, name), name
    source = inspect.getsource(tz)
    assert "import subprocess" not in source and "shutil" not in source and "open(" not in source


# --- the grain and the witness --------------------------------------------------


def test_grain_is_cheap_and_never_walks_zoneinfo(root, monkeypatch):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    monkeypatch.setattr(tz, "all_zones", lambda *a: pytest.fail("grain walked zoneinfo"))
    monkeypatch.setattr(hs, "timedatectl_zone", lambda *a, **k: pytest.fail("grain ran timedatectl"))
    monkeypatch.setattr(hs, "run", lambda *a, **k: pytest.fail("grain ran a subprocess"))
    monkeypatch.setattr(hc.Host, "snapshot", lambda self: pytest.fail("grain scanned processes"))
    o = opts()

    def grain():
        return tz.summarise(hc.diagnose(tz, root.host(), o, quick=True))

    assert grain() == {"zone": "Asia/Shanghai", "consistent": False}
    # how cheap it is in time is measured in bench/ (orphans_bench: the whole grain)


def test_timedatectl_is_a_witness_not_a_source(root, monkeypatch):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Shanghai")
    (root.run / "systemd/system").mkdir(parents=True)
    monkeypatch.setattr(hs, "timedatectl_zone", lambda *a, **k: "Etc/UTC")  # a timedated that cached
    a = look(root)
    assert a["consistent"] is True and a["sources"]["timedatectl"]["zone"] == "Etc/UTC"
    assert any("systemd-timedated keeps the zone" in n for n in a["notes"])
    monkeypatch.setattr(hs, "timedatectl_zone", lambda *a, **k: "PRC")
    assert look(root)["notes"] == []
