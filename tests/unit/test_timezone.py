"""hostcheck.timezone on fake /etc, zoneinfo and /proc trees (no host file is read or written)."""
import itertools
import os
import stat
import time

import pytest

import hostcheck_proc as hp
import hostcheck_timezone as tz

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


@pytest.fixture
def root(tmp_path):
    """tmp_path/etc and tmp_path/usr/share/zoneinfo with a few zones and aliases."""
    zi = tmp_path / "usr/share/zoneinfo"
    for name, data in {"Asia/Shanghai": SHANGHAI, "Asia/Chongqing": SHANGHAI, "Etc/UTC": UTC,
                       "UTC": UTC, "Europe/Paris": PARIS}.items():
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
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "run").mkdir()

    class Root:
        pass

    r = Root()
    r.base, r.etc, r.zi, r.proc, r.run = tmp_path, etc, zi, tmp_path / "proc", tmp_path / "run"
    r.kw = {"etc_root": str(etc), "zoneinfo_dir": str(zi), "proc_root": str(r.proc)}
    return r


def sources(r, **kw):
    return tz.read_sources(str(r.etc), str(r.zi), str(r.proc), str(r.run), **kw)


def analysis(r, running=(), units=None):
    return tz.analyse(sources(r), running=running, units=units)


# --- sources ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["../usr/share/zoneinfo/Asia/Shanghai",
                                    "/usr/share/zoneinfo/Asia/Shanghai",
                                    "/usr/share/zoneinfo/posix/Asia/Shanghai"])
def test_symlink_relative_absolute_posix(root, target):
    (root.etc / "localtime").symlink_to(target)
    lt = sources(root).sources["localtime"]
    assert (lt["kind"], lt["zone"], lt["error"]) == ("symlink", "Asia/Shanghai", None)
    assert lt["relative"] is (not target.startswith("/"))
    a = analysis(root)
    assert (a.zone, a.consistent, a.findings) == ("Asia/Shanghai", True, [])


def test_copy_equal_to_two_names_prefers_canonical(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    lt = sources(root).sources["localtime"]
    assert lt["kind"] == "copy"
    assert lt["identical_to"] == ["Asia/Chongqing", "Asia/Shanghai", "PRC"]
    assert lt["zone"] == "Asia/Shanghai"  # zone1970.tab, not the first hash match
    assert analysis(root).consistent is True


def test_copy_takes_the_name_another_source_uses(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Asia/Chongqing\n")
    a = analysis(root)
    assert (a.zone, a.consistent) == ("Asia/Chongqing", True)
    assert "copy" in a.agreement and "Asia/Shanghai" in a.agreement


def test_the_incident_timezone_utc_localtime_copy_of_shanghai(root):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    a = analysis(root)
    assert a.zone == "Asia/Shanghai"  # what glibc (date, cron) uses
    assert a.consistent is False
    assert a.conflicts == ["/etc/localtime says Asia/Shanghai but /etc/timezone says Etc/UTC"]
    (f,) = a.findings
    assert (f["check"], f["code"], f["severity"], f["pids"]) == ("timezone", "zone-conflict", "critical", [])


def test_alias_names_agree_by_content(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Shanghai")
    (root.etc / "timezone").write_text("PRC\n")
    a = analysis(root)
    assert a.consistent is True
    assert "byte-identical" in a.agreement and "PRC" in a.agreement


def test_missing_etc_timezone_and_missing_localtime(root):
    a = analysis(root)
    assert "timezone" not in a.sources
    assert (a.zone, a.consistent) == ("UTC", True)
    assert [f["code"] for f in a.findings] == ["localtime-missing"]
    (root.etc / "timezone").write_text("Asia/Shanghai\n")
    a = analysis(root)
    assert a.consistent is False
    assert "missing, so UTC" in a.conflicts[0]


def test_red_hat_layout(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('# comment\nZONE="Asia/Shanghai"\nUTC=true\n')
    a = analysis(root)
    assert a.sources["sysconfig"]["zone"] == "Asia/Shanghai"
    assert a.conflicts == ["/etc/localtime says Europe/Paris but /etc/sysconfig/clock says Asia/Shanghai"]
    plans = tz.plan_files("Europe/Paris", str(root.etc), str(root.zi))
    assert [p["path"] for p in plans] == [str(root.etc / "sysconfig/clock")]  # no /etc/timezone on Red Hat
    tz.write_plan(plans)
    assert (root.etc / "sysconfig/clock").read_text() == '# comment\nZONE="Europe/Paris"\nUTC=true\n'
    assert analysis(root).consistent is True


def test_tz_in_environment_and_pid1(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    (root.etc / "environment").write_text('PATH="/usr/bin"\nTZ=":Europe/Paris"\n')
    (root.proc / "1/environ").write_bytes(b"HOME=/\0SECRET=do-not-leak\0TZ=Asia/Shanghai\0")
    a = analysis(root)
    assert a.sources["environment"]["zone"] == "Europe/Paris"
    assert a.sources["pid1"]["zone"] == "Asia/Shanghai"
    assert "do-not-leak" not in repr(a.as_dict())
    assert len(a.conflicts) == 2
    (root.etc / "environment").write_text("TZ=:/etc/localtime\n")
    (root.proc / "1/environ").write_bytes(b"TZ=UTC\0")
    assert analysis(root).consistent is True


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
    a = analysis(root)
    assert a.consistent is False
    assert any(fragment in c for c in a.conflicts), a.conflicts


def test_localtime_symlink_outside_zoneinfo_or_dangling(root):
    (root.etc / "localtime").symlink_to("/etc/passwd")
    assert "zoneinfo" in sources(root).sources["localtime"]["error"]
    (root.etc / "localtime").unlink()
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Nowhere")
    a = analysis(root)
    assert a.zone == "UTC" and not a.consistent


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
    ("Asia//Shanghai", "empty"),
    ("Asia/Shang hai", "characters"),
])
def test_invalid_zone_names(root, bad, fragment):
    with pytest.raises(tz.ZoneError, match=fragment):
        tz.validate_zone(bad, str(root.zi))


def test_valid_zone_and_alias(root):
    assert tz.validate_zone("PRC", str(root.zi))[1] == SHANGHAI
    assert tz.validate_zone("Asia/Shanghai", str(root.zi))[0] == str(root.zi / "Asia/Shanghai")


# --- stale daemons ------------------------------------------------------------


def daemon(pid, started_at, program="cron", unit="cron.service"):
    return {"program": program, "pid": pid, "starttime": pid * 100, "started_at": started_at, "unit": unit}


def test_staleness_tolerates_clock_skew(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    srcs = sources(root)
    changed = srcs.changed_at
    running = [daemon(10, changed - 3600), daemon(11, changed - 0.9, "atd", "atd.service"),
               daemon(12, changed + 0.2, "rsyslogd", "rsyslog.service")]
    a = tz.analyse(srcs, running)
    assert [d["pid"] for d in a.stale] == [10]  # 0.9 s "before" is clock skew, not staleness
    (f,) = [f for f in a.findings if f["code"] == "stale-daemon"]
    assert f["pids"] == [10] and f["program"] == "cron" and f["severity"] == "warning"


def test_only_the_units_main_process_counts(root):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    srcs = sources(root)
    old = srcs.changed_at - 3600
    running = [daemon(10, old), daemon(20, old)]  # 20: a job child re-parented after a restart
    units = {"cron.service": {"MainPID": 10}}
    assert [d["pid"] for d in tz.analyse(srcs, running, units=units).stale] == [10]


def test_daemon_processes_top_of_tree_by_argv_not_comm():
    snap = hp.Snapshot.from_procs([
        P(1, 0, cmdline=["/sbin/init"]),
        P(100, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], starttime=500,
          cgroup="/system.slice/cron.service"),
        P(101, 100, comm="cron", cmdline=["/usr/sbin/CRON", "-f"], starttime=900,
          cgroup="/system.slice/cron.service"),
        P(102, 100, comm="cron", cmdline=["/usr/sbin/cron", "-f"], starttime=900),
        P(200, 1, comm="cron", cmdline=["/usr/bin/python3", "/opt/fake.py"]),  # named cron, is not
        P(300, 1, comm="rs:main", cmdline=["/usr/sbin/rsyslogd", "-n"], starttime=600,
          cgroup="/system.slice/rsyslog.service"),
    ])
    found = tz.daemon_processes(snap, tz.DEFAULT_DAEMONS, boot=1000.0)
    assert [(d["program"], d["pid"], d["unit"]) for d in found] == [
        ("cron", 100, "cron.service"), ("rsyslogd", 300, "rsyslog.service")]
    assert found[0]["started_at"] == 1000.0 + 500 / snap.clk_tck


def test_daemons_config():
    assert tz.validate_daemons(None) == list(tz.DEFAULT_DAEMONS)
    assert tz.validate_daemons(["cron", "nscd"]) == ["cron", "nscd"]
    for bad in (5, [""], ["cron", 3], {"cron": 1}):
        with pytest.raises(tz.ConfigError):
            tz.validate_daemons(bad)


# --- the writer ------------------------------------------------------------


def test_plan_write_and_second_plan_empty_keeps_mode(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    os.chmod(root.etc / "timezone", 0o640)
    plans = tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi))
    assert tz.describe_plan(plans) == {
        str(root.etc / "localtime"): {"old": "copy of Asia/Shanghai", "new": "../usr/share/zoneinfo/Asia/Shanghai"},
        str(root.etc / "timezone"): {"old": "Etc/UTC", "new": "Asia/Shanghai"},
    }
    tz.write_plan(plans)
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Asia/Shanghai"
    assert (root.etc / "timezone").read_text() == "Asia/Shanghai\n"
    assert stat.S_IMODE(os.stat(root.etc / "timezone").st_mode) == 0o640
    assert sorted(os.listdir(root.etc)) == ["debian_version", "localtime", "passwd", "timezone"]
    assert tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi)) == []
    a = analysis(root)
    assert (a.zone, a.consistent) == ("Asia/Shanghai", True)


def test_copy_mode_and_absolute_link_is_accepted(root):
    (root.etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Shanghai")
    assert tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi)) == []  # no churn
    plans = tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi), copy=True)
    tz.write_plan(plans)
    assert not os.path.islink(root.etc / "localtime")
    assert (root.etc / "localtime").read_bytes() == SHANGHAI
    assert tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi), copy=True) == []


def test_crash_between_two_writes_leaves_old_or_new(root, monkeypatch):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(PARIS)
    (root.etc / "timezone").write_text("Europe/Paris\n")
    (root.etc / "sysconfig").mkdir()
    (root.etc / "sysconfig/clock").write_text('ZONE="Europe/Paris"\n')
    plans = tz.plan_files("Asia/Shanghai", str(root.etc), str(root.zi))
    assert len(plans) == 3
    real_fsync, calls = os.fsync, []

    def crash(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file's data fsync (the symlink has none): the "power cut"
            raise OSError(5, "simulated crash")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        tz.write_plan(plans)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.readlink(root.etc / "localtime") == "../usr/share/zoneinfo/Asia/Shanghai"  # new
    assert (root.etc / "timezone").read_text() == "Europe/Paris\n"  # old, not truncated
    assert (root.etc / "sysconfig/clock").read_text() == 'ZONE="Europe/Paris"\n'  # old
    leftovers = [n for n in os.listdir(root.etc) if n.startswith(".hostcheck-")]
    assert leftovers == []


def test_set_assignment_keeps_other_lines():
    text = "# c\nexport ZONE='Europe/Paris'  \nUTC=true"
    assert tz.set_assignment(text, ("ZONE",), "ZONE", "Asia/Shanghai") == "# c\nexport ZONE='Asia/Shanghai'\nUTC=true"
    assert tz.set_assignment("UTC=true", ("ZONE",), "ZONE", "UTC") == 'UTC=true\nZONE="UTC"\n'


# --- pin(): the state's pipeline on a fake root (no systemd, no processes) --


@pytest.mark.parametrize("bad", ["../../etc/shadow", "/etc/passwd", "Asia/Nowhere", "", 42, None, "Bogus", "Evil"])
def test_pin_bad_zone_changes_nothing(root, bad):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    before = {n: os.lstat(root.etc / n).st_mtime_ns for n in os.listdir(root.etc)}
    result, changes, comment = tz.pin(bad, run_root=str(root.run), **root.kw)
    assert (result, changes) == (False, {})
    assert comment.startswith("Invalid arguments, nothing done")
    assert {n: os.lstat(root.etc / n).st_mtime_ns for n in os.listdir(root.etc)} == before


def test_pin_test_apply_noop(root):
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    result, changes, comment = tz.pin("Etc/UTC", test=True, run_root=str(root.run), **root.kw)
    assert result is None and set(changes["files"]) == {str(root.etc / "localtime")}
    assert (root.etc / "localtime").read_bytes() == SHANGHAI  # test=True wrote nothing
    result, changes, comment = tz.pin("Etc/UTC", run_root=str(root.run), **root.kw)
    assert result is True, comment
    assert changes["files"][str(root.etc / "localtime")]["new"] == "../usr/share/zoneinfo/Etc/UTC"
    assert tz.pin("Etc/UTC", run_root=str(root.run), **root.kw)[:2] == (True, {})
    assert tz.pin("Etc/UTC", test=True, run_root=str(root.run), **root.kw)[:2] == (True, {})


def test_grain_is_cheap_and_never_walks_zoneinfo(root, monkeypatch):
    (root.etc / "localtime").write_bytes(SHANGHAI)
    (root.etc / "timezone").write_text("Etc/UTC\n")
    monkeypatch.setattr(tz, "all_zones", lambda *a: pytest.fail("grain walked zoneinfo"))
    monkeypatch.setattr(tz, "timedatectl_zone", lambda *a: pytest.fail("grain ran timedatectl"))
    assert tz.grain(**root.kw) == {"zone": "Asia/Shanghai", "consistent": False}
    start = time.perf_counter()
    for _ in range(20):
        tz.grain(**root.kw)
    assert (time.perf_counter() - start) / 20 < 0.005


def test_timedatectl_is_a_witness_not_a_source(root, monkeypatch):
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Asia/Shanghai")
    (root.run / "systemd/system").mkdir(parents=True)
    monkeypatch.setattr(tz, "timedatectl_zone", lambda *a: "Etc/UTC")  # a timedated that cached
    a = analysis(root)
    assert a.consistent is True and a.sources["timedatectl"]["zone"] == "Etc/UTC"
    assert any("systemd-timedated keeps the zone" in n for n in a.notes)
    monkeypatch.setattr(tz, "timedatectl_zone", lambda *a: "PRC")
    assert analysis(root).notes == []


def test_pin_reports_a_daemon_that_survives_its_restart(root, monkeypatch):
    """The incident's 'service cron stop did not even stop the old cron'."""
    (root.etc / "debian_version").write_text("12.0\n")
    (root.etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    (root.etc / "timezone").write_text("Europe/Paris\n")
    srcs = sources(root)
    old_cron = daemon(31, srcs.changed_at - 3600)
    units = {"cron.service": {"MainPID": 31}}
    results = itertools.repeat(tz.analyse(srcs, [old_cron], units=units))
    monkeypatch.setattr(tz, "diagnose", lambda *a, **k: next(results))
    restarted = []
    monkeypatch.setattr(tz, "restart_units", lambda u, timeout: restarted.extend(u) or {x: None for x in u})
    monkeypatch.setattr(tz, "wait_gone", lambda ids, timeout, proc_root: list(ids))  # nothing died

    result, changes, comment = tz.pin("Europe/Paris", test=True, run_root=str(root.run), **root.kw)
    assert result is None and changes == {"restart": [{"unit": "cron.service", "program": "cron", "pid": 31}]}
    assert restarted == []
    result, changes, comment = tz.pin("Europe/Paris", timeout=1, run_root=str(root.run), **root.kw)
    assert restarted == ["cron.service"]
    assert result is False
    assert "cron PID 31 survived its restart" in comment
    assert changes["restarted"] == [{"unit": "cron.service", "program": "cron", "old_pid": 31, "new_pid": 31}]
