"""hostcheck_deleted: read() on fake /proc trees, analyse() and plan() on
synthetic facts (pure), the services_current remedy through the one state
runner with the service manager replaced by recorders. (reboot_required's
tests live here too until it has its own file.)"""
import json
import os

import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_deleted as hd
import hostcheck_proc as hp
import hostcheck_service as hs
from tests.fakes import fake_proc_root, forbid_host_access, make_proc

P = hp.Proc.synthetic
NVME = os.makedev(259, 2)  # printed "103:02" in maps
SDA = os.makedev(8, 1)
BTIME = 1700000000
STARTED = BTIME + 5.0  # starttime 500 ticks at 100 Hz, as make_proc writes
OPTS = hc.options(hd)
ARGS = hcfg.validate(hd.REMEDY_ARGS, {})

MAPS = """\
55d0c8a00000-55d0c8a04000 r--p 00000000 103:02 1311 /usr/sbin/cron
55d0c8a04000-55d0c8a0f000 r-xp 00004000 103:02 1311 /usr/sbin/cron
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000002000 r-xp 00000000 103:02 2222                   /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
7f1000002000-7f1000004000 r-xp 00002000 103:02 2222                   /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
7f2000000000-7f2000001000 r-xs 00000000 00:01 1097                       /memfd:jit (deleted)
7f3000000000-7f3000001000 r-xp 00000000 08:01 3333                       /opt/my app/lib/libx.so
7f4000000000-7f4000001000 r-xp 00000000 08:01 4444                       /srv/odd name (deleted)
7f5000000000-7f5000001000 r--p 00000000 08:01 5555                       /usr/share/locale/data (deleted)
7f6000000000-7f6000001000 r-xp 00000000 00:05 7 /dev/zero (deleted)
7f7000000000-7f7000001000 r-xp 00000000 00:00 0 [vdso]
7f8000000000-7f8000001000 r-xp 00000000 08:01 0 /weird-inode-zero
"""
GONE = "7f-8f r-xp 00000000 08:01 1 /usr/bin/x (deleted)\n"


# ---- synthetic facts ----------------------------------------------------------


def rec(pid, exe, maps="", table=None, argv=None, started=STARTED, cgroup=None, provenance=None):
    """A process record as read() returns it: every executable mapping of
    ``maps`` (a superset of what read() keeps) with its lookup in ``table``."""
    table = table or {}
    parsed = [list(m) for m in hd.parse_maps(maps.encode())]
    files = {p: table.get(p) for _, _, p in parsed}
    argv = list(argv) if argv is not None else [hd._clean(exe)]
    script = hd.script_path(exe, argv)
    if script:
        files[script] = table.get(script)
    return {"pid": pid, "exe": exe, "argv": argv, "maps": parsed, "files": files, "started": started,
            "cgroup": cgroup, "provenance": dict(provenance or {})}


def facts(*recs, ppids=None, tree=None, self_pid=None, systemd=True, **kw):
    """Facts of ``recs``; ``ppids`` ``{pid: ppid}`` (default: init's
    children), ``tree`` extra nodes (supervisord, this process)."""
    ppids = dict(ppids or {})
    nodes = {1: {"ppid": 0}}
    for r in recs:
        nodes[r["pid"]] = {"ppid": ppids.get(r["pid"], 0 if r["pid"] == 1 else 1)}
    for pid, node in (tree or {}).items():
        nodes.setdefault(pid, {"ppid": 1}).update(node)
    return hd.Facts({r["pid"]: r for r in recs}, nodes, self_pid, scanned=len(recs) + 1, systemd=systemd, **kw)


def test_parse_maps_executable_file_mappings_only():
    got = hd.parse_maps(MAPS.encode())
    assert got == [
        (NVME, 1311, "/usr/sbin/cron"),
        (NVME, 2222, "/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)"),
        (os.makedev(0, 1), 1097, "/memfd:jit (deleted)"),
        (SDA, 3333, "/opt/my app/lib/libx.so"),
        (SDA, 4444, "/srv/odd name (deleted)"),
        (os.makedev(0, 5), 7, "/dev/zero (deleted)"),
    ]
    assert os.major(got[0][0]) == 259 and os.minor(got[0][0]) == 2
    assert hd.parse_maps(b"") == [] and hd.parse_maps(None) == []


def test_judge_deleted_replaced_current_and_real_deleted_name():
    started = STARTED
    files = {
        "/usr/sbin/cron": (NVME, 1311, started - 100),
        "/opt/new/libnew.so": (SDA, 9999, started + 100),
        "/opt/old/libold.so": (SDA, 9998, started - 100),
        "/srv/odd name (deleted)": (SDA, 4444, started - 100),
    }
    lookup = files.get
    assert hd.judge("/usr/sbin/cron", NVME, 1311, lookup, started) == (None, "/usr/sbin/cron")
    assert hd.judge("/usr/lib/libc.so.6 (deleted)", NVME, 2222, lookup, started) == (
        "deleted", "/usr/lib/libc.so.6")
    # a real file whose name ends in " (deleted)", still the mapped inode
    assert hd.judge("/srv/odd name (deleted)", SDA, 4444, lookup, started)[0] is None
    # ... but the same name with another inode behind it is a deleted file
    assert hd.judge("/srv/odd name (deleted)", SDA, 1, lookup, started) == ("deleted", "/srv/odd name")
    # replaced but not deleted: other inode at the path, changed after the start
    assert hd.judge("/opt/new/libnew.so", SDA, 1234, lookup, started) == ("replaced", "/opt/new/libnew.so")
    # other inode, older than the process (overlayfs/btrfs view): not stale
    assert hd.judge("/opt/old/libold.so", SDA, 1234, lookup, started)[0] is None
    # gone from its path without the kernel saying so (another mount on top)
    assert hd.judge("/opt/gone.so", SDA, 5, lookup, started) == ("deleted", "/opt/gone.so")


def _cron_host():
    table = {
        "/usr/sbin/cron": (NVME, 1311, STARTED - 1),
        "/opt/my app/lib/libx.so": (SDA, 3333, STARTED - 1),
        "/usr/lib/systemd/systemd-logind": (SDA, 50, STARTED + 5),
        "/srv/odd name (deleted)": (SDA, 4444, STARTED - 1),
    }
    maps_tmp = "7f-8f r-xp 00000000 08:01 77 /tmp/jna-123/jna456.tmp (deleted)\n"
    recs = [
        rec(1, "/usr/lib/systemd/systemd", cgroup="/init.scope"),
        rec(200, "/usr/sbin/cron", MAPS, table, cgroup="/system.slice/cron.service"),
        rec(201, "/usr/sbin/cron", MAPS, table, cgroup="/system.slice/cron.service"),
        rec(300, "/usr/lib/systemd/systemd-logind (deleted)",
            "7f-8f r-xp 00000000 08:01 49 /usr/lib/systemd/systemd-logind (deleted)\n", table,
            cgroup="/system.slice/systemd-logind.service"),
        rec(400, "/usr/bin/java", maps_tmp, table, cgroup="/system.slice/app.service"),
        rec(500, "/usr/bin/jit", "7f-8f r-xs 00000000 00:01 1097 /memfd:jit (deleted)\n", table,
            cgroup="/system.slice/jit.service"),
    ]
    return facts(*recs, ppids={201: 200})


def test_analyse_groups_by_unit_and_ignores_memfd_tmp_dev():
    diag = hd.analyse(_cron_host(), OPTS)
    findings = diag.findings
    assert diag.details["processes"] == 7
    by = {f["owner"]["name"]: f for f in findings}
    assert set(by) == {"cron.service", "systemd-logind.service"}
    cron = by["cron.service"]
    assert cron["pids"] == [200, 201]
    assert cron["action"] == {"type": "restart-unit", "unit": "cron.service"}
    assert cron["files"] == [{"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "kind": "lib",
                              "why": "deleted", "pids": [200, 201]}]
    assert cron["code"] == "stale-unit" and cron["check"] == "deleted_binaries"
    assert cron["severity"] == "warning"
    logind = by["systemd-logind.service"]
    assert logind["files"][0]["kind"] == "exe" and logind["files"][0]["why"] == "deleted"
    assert "systemctl restart systemd-logind.service" in logind["summary"]
    assert hd.summarise(diag) == {"count": 3, "units": ["cron.service", "systemd-logind.service"],
                                  "programs": ["cron", "systemd-logind"]}
    # the ignore list is configurable: without it the JNA library counts
    diag = hd.analyse(_cron_host(), dict(OPTS, ignore=["/memfd:"]))
    assert "app.service" in {f["owner"]["name"] for f in diag.findings}


def test_diagnosis_keeps_the_output_keys_without_internal_fields():
    out = hd.analyse(_cron_host(), OPTS).as_dict()
    assert set(out) == {"stale", "units", "findings", "processes", "notes"}
    assert out["stale"] == 3 and out["units"] == ["cron.service", "systemd-logind.service"]
    for f in out["findings"]:
        assert set(f) == {"check", "code", "severity", "summary", "pids", "owner", "action", "files", "programs"}
    json.dumps(out)  # plain data
    assert hd.analyse(facts(euid=1000), OPTS).notes == [hd.NOTE_NOT_ROOT]


SUP_ENV = {"SUPERVISOR_PROCESS_NAME": "worker", "SUPERVISOR_GROUP_NAME": "jobs",
           "SUPERVISOR_SERVER_URL": "unix:///run/supervisor.sock"}
SUPERVISORD = {"exe": "/usr/bin/python3.11", "argv": ["/usr/bin/python3", "/usr/bin/supervisord"], "uid": 0}


def _owners_host():
    recs = [
        rec(1, "/usr/lib/systemd/systemd (deleted)", GONE, cgroup="/init.scope"),
        rec(10, "/usr/bin/sshd (deleted)", GONE, cgroup="/user.slice/user-0.slice/session-3.scope"),
        rec(21, "/usr/bin/x (deleted)", GONE, cgroup="/system.slice/supervisor.service", provenance=SUP_ENV),
        rec(30, "/usr/bin/x (deleted)", GONE, cgroup="/system.slice/salt-minion.service"),
        rec(31, "/usr/bin/x (deleted)", GONE, cgroup="/system.slice/salt-minion.service"),
        rec(40, "/usr/bin/x (deleted)", GONE),
        rec(50, "/usr/bin/x (deleted)", GONE,
            cgroup="/user.slice/user-1000.slice/user@1000.service/app.slice/a.service"),
    ]
    return facts(*recs, ppids={21: 20, 31: 30}, self_pid=31,
                 tree={20: SUPERVISORD, 31: {"cgroup": "/system.slice/salt-minion.service"}})


def test_owners_pid1_session_supervisor_minion_unmanaged():
    findings = hd.analyse(_owners_host(), OPTS).findings
    got = {f["code"]: (f["owner"]["name"], f["pids"], f["action"]["type"]) for f in findings}
    assert got["stale-init"] == ("PID 1", [1], "daemon-reexec")
    assert got["stale-supervisor"] == ("jobs:worker", [21], "supervisorctl")
    assert got["stale-minion"] == ("salt-minion.service", [30, 31], "self-restart")
    assert got["stale-unmanaged"] == (None, [40], "manual")
    sup = [f for f in findings if f["code"] == "stale-supervisor"][0]
    assert sup["action"]["server"] == "unix:///run/supervisor.sock" and sup["action"]["uid"] == 0
    scopes = {f["owner"]["name"]: f for f in findings if f["code"] == "stale-scope"}
    # a process in a user session is never mapped to a system service by name
    assert set(scopes) == {"session-3.scope", "user@1000.service"}
    assert all(f["action"]["type"] == "manual" for f in scopes.values())
    assert [f["code"] for f in findings][-1] == "stale-minion"  # the minion last


@pytest.mark.parametrize("node,supervised", [
    (SUPERVISORD, True),
    ({"exe": "/usr/bin/supervisord", "argv": ["/usr/bin/supervisord", "-n"], "uid": 0}, True),
    # exec -a supervisord sleep: argv0 says supervisord, the executable says sleep
    ({"exe": "/usr/bin/sleep", "argv": ["supervisord", "600"], "uid": 0}, False),
    # an init script of that name is not the daemon
    ({"exe": "/bin/sh", "argv": ["/bin/sh", "/etc/init.d/supervisord", "restart"], "uid": 0}, False),
    # unreadable exe: a guess from argv, never trusted
    ({"exe": None, "argv": ["/usr/bin/supervisord"], "uid": 0}, False),
])
def test_supervisord_is_recognised_by_program_identity(node, supervised):
    f = facts(rec(21, "/usr/bin/x (deleted)", GONE, provenance=SUP_ENV), ppids={21: 20}, tree={20: node})
    (finding,) = hd.analyse(f, OPTS).findings
    assert (finding["code"] == "stale-supervisor") is supervised


def test_interpreted_daemon_script_changed_after_start():
    # /usr/bin/just-restarted: replaced, then its daemon restarted at once; the
    # start time (from btime, whole seconds) can read up to ~1 s early
    table = {"/usr/bin/salt-minion": (SDA, 1, STARTED + 60), "/usr/bin/old-tool": (SDA, 2, STARTED - 60),
             "/usr/bin/just-restarted": (SDA, 3, STARTED + 0.6), "/usr/bin/salt-api": (SDA, 4, STARTED + 60)}
    py = "/usr/bin/python3.11"
    recs = [
        rec(1, "/sbin/init"),
        rec(10, py, argv=["/usr/bin/python3", "-u", "/usr/bin/salt-minion"], table=table,
            cgroup="/system.slice/salt-minion.service"),
        rec(11, py, argv=["/usr/bin/python3", "/usr/bin/old-tool"], table=table),
        rec(13, py, argv=["/usr/bin/python3", "/usr/bin/just-restarted"], table=table),
        rec(12, py, argv=["python3", "-m", "http.server"], table=table),
        # python3 -E: the option takes no value; the script is still checked
        rec(14, py, argv=["/usr/bin/python3", "-E", "/usr/bin/salt-api", "-d"], table=table,
            cgroup="/system.slice/salt-api.service"),
    ]
    findings = hd.analyse(facts(*recs), OPTS).findings
    assert [(f["owner"]["name"], f["files"][0]["kind"], f["files"][0]["why"], f["programs"]) for f in findings] == [
        ("salt-api.service", "script", "changed", ["salt-api"]),
        ("salt-minion.service", "script", "changed", ["salt-minion"])]


def test_script_path_uses_the_one_program_parser():
    assert hd.script_path("/usr/bin/perl", ["perl", "-w", "/usr/sbin/x"]) == "/usr/sbin/x"
    assert hd.script_path("/usr/bin/python3.11", ["python3", "relative.py"]) is None
    assert hd.script_path("/usr/bin/python3.11", ["python3", "-E", "/usr/bin/salt-minion"]) == "/usr/bin/salt-minion"
    assert hd.script_path("/usr/bin/python3.11 (deleted)", ["python3", "-W", "ignore", "/x"]) == "/x"
    assert hd.script_path("/usr/bin/ruby3.1", ["ruby", "-r", "bundler/setup", "/srv/app.rb"]) == "/srv/app.rb"
    assert hd.script_path("/usr/bin/python3.11", ["python3", "-m", "salt"]) is None
    assert hd.script_path("/usr/bin/node", ["node", "/srv/app.js"]) is None  # not a checked family
    assert not hasattr(hd, "script_of") and not hasattr(hd, "_interpreter")


def test_analyse_attaches_packages_and_their_note():
    f = _cron_host()
    f.packages = {"/usr/lib/x86_64-linux-gnu/libc.so.6": "libc6"}
    f.package_note = "packages: dpkg-query failed: boom"
    diag = hd.analyse(f, OPTS)
    by = {g["owner"]["name"]: g for g in diag.findings}
    assert by["cron.service"]["files"][0]["package"] == "libc6"
    assert by["systemd-logind.service"]["files"][0]["package"] is None
    assert diag.notes == ["packages: dpkg-query failed: boom"]
    assert "package" not in hd.analyse(_cron_host(), OPTS).findings[0]["files"][0]


def _remedy_host():
    recs = _owners_host().procs.values()
    extra = [rec(60, "/usr/sbin/cron (deleted)", GONE, cgroup="/system.slice/cron.service"),
             rec(61, "/usr/bin/dbus-daemon (deleted)", GONE, cgroup="/system.slice/dbus.service")]
    return facts(*recs, *extra, ppids={21: 20, 31: 30}, self_pid=31,
                 tree={20: SUPERVISORD, 31: {"cgroup": "/system.slice/salt-minion.service"}})


def test_analyse_and_plan_are_pure(monkeypatch):
    f = _remedy_host()
    more = _cron_host().procs
    f.procs.update({pid: r for pid, r in more.items() if pid != 1})
    f.packages = {}
    f.refusals = {"cron.service": "a restart now would hit its start limit"}
    forbid_host_access(monkeypatch)
    diag = hd.analyse(f, OPTS)
    p = hd.plan(diag, ARGS)
    summary = hd.summarise(diag)
    monkeypatch.undo()
    assert len(diag.findings) == 9 and summary["count"] == 12
    assert p.changes == {"reexecuted": ["PID 1"], "restarted": ["systemd-logind.service"],
                         "supervisor_restarted": ["jobs:worker"], "deferred": "salt-minion.service"}
    assert p.problems == ["Refused cron.service: a restart now would hit its start limit (needs attention)"]


# ---- read() on fake /proc trees ----------------------------------------------


def mline(st_or_dev, ino, path):
    dev = st_or_dev
    return "7f-8f r-xp 00000000 {:02x}:{:02x} {} {}\n".format(os.major(dev), os.minor(dev), ino, path).encode()


def fproc(fakeproc, pid, ppid, root, exe, maps=b"", **kw):
    d = make_proc(fakeproc, pid, ppid, exe=exe, **kw)
    (d / "maps").write_bytes(maps)
    os.symlink(root, d / "root")
    return d


@pytest.fixture
def fakeproc(tmp_path):
    return fake_proc_root(tmp_path, btime=BTIME)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    for rel in ("usr/lib/libc.so", "usr/bin/app", "usr/bin/salt-minion"):
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_bytes(rel.encode())
    return r


def host_of(fakeproc, tmp_path):
    return hc.Host(proc_root=str(fakeproc), run_root=str(tmp_path / "run"), etc_root=str(tmp_path / "etc"))


def test_read_returns_plain_facts_of_suspicious_processes_only(fakeproc, root, tmp_path):
    libc, app = os.stat(root / "usr/lib/libc.so"), os.stat(root / "usr/bin/app")
    current = mline(app.st_dev, app.st_ino, "/usr/bin/app") + mline(libc.st_dev, libc.st_ino, "/usr/lib/libc.so")
    fproc(fakeproc, 1, 0, root, "/sbin/init")
    fproc(fakeproc, 10, 1, root, "/usr/bin/app", current, cgroup=b"0::/system.slice/app.service\n")
    fproc(fakeproc, 11, 10, root, "/usr/bin/app", current, cgroup=b"0::/system.slice/app.service\n")
    fproc(fakeproc, 12, 1, root, "/usr/bin/old (deleted)", mline(libc.st_dev, 99, "/usr/bin/old (deleted)"),
          cgroup=b"0::/system.slice/old.service\n")
    fproc(fakeproc, 13, 1, root, "/usr/bin/app", mline(app.st_dev, app.st_ino, "/usr/bin/app")
          + mline(libc.st_dev, 98, "/usr/lib/libc.so"), cgroup=b"0::/system.slice/app2.service\n")
    fproc(fakeproc, 14, 1, root, "/usr/bin/app", current + mline(libc.st_dev, 97, "/tmp/x.so (deleted)"))
    f = hd.read(host_of(fakeproc, tmp_path), OPTS)
    assert sorted(f.procs) == [12, 13] and f.scanned == 6 and not f.quick
    old, replaced = f.procs[12], f.procs[13]
    assert old["maps"] == [[libc.st_dev, 99, "/usr/bin/old (deleted)"]]
    assert old["files"] == {"/usr/bin/old (deleted)": None}
    assert old["started"] is None  # a deleted file needs no start time
    assert replaced["maps"] == [[libc.st_dev, 98, "/usr/lib/libc.so"]]  # the current mapping is left out
    assert replaced["files"] == {"/usr/lib/libc.so": (libc.st_dev, libc.st_ino, libc.st_ctime)}
    assert replaced["started"] == STARTED  # another inode at the path: the start decides
    assert replaced["cgroup"] == "/system.slice/app2.service" and replaced["provenance"] == {}
    assert f.tree[13] == {"ppid": 1} and f.tree[1] == {"ppid": 0}
    json.dumps({str(k): v for k, v in f.procs.items()})  # plain data
    diag = hd.analyse(f, OPTS)
    assert [(x["owner"]["name"], x["files"][0]["why"]) for x in diag.findings] == [
        ("app2.service", "replaced"), ("old.service", "deleted")]


def test_read_looks_at_a_known_current_process_once(fakeproc, root, monkeypatch):
    libc = os.stat(root / "usr/lib/libc.so")
    maps = mline(libc.st_dev, libc.st_ino, "/usr/lib/libc.so")
    for pid in range(10, 20):
        fproc(fakeproc, pid, 1, root, "/usr/bin/app", maps)
    stats, examined, starts = [], [], []
    scanner = hd.Scanner(str(fakeproc), OPTS["ignore"], hd.FileLookup(stat=lambda p: stats.append(p) or os.stat(p)))
    real_examine = scanner.examine
    monkeypatch.setattr(scanner, "examine", lambda *a: examined.append(a[0]) or real_examine(*a))
    monkeypatch.setattr(scanner, "started", lambda base: starts.append(base))
    assert scanner.run() == ({}, 10)
    assert len(examined) == 1  # the others' mappings were all known current
    assert len(stats) == 2 and starts == []  # its root and the library, no start time


def test_container_processes_are_judged_in_their_own_root(fakeproc, tmp_path):
    host_root = tmp_path / "host"
    ct_root = tmp_path / "ct"
    for r in (host_root, ct_root):
        (r / "usr/lib").mkdir(parents=True)
        (r / "usr/lib/libfoo.so").write_bytes(r.name.encode())
    host_st = os.stat(host_root / "usr/lib/libfoo.so")
    ct_st = os.stat(ct_root / "usr/lib/libfoo.so")
    for pid, r, ino in ((100, host_root, host_st.st_ino), (200, ct_root, ct_st.st_ino),
                        (201, ct_root, ct_st.st_ino), (300, ct_root, ct_st.st_ino + 100000)):
        fproc(fakeproc, pid, 1, r, "/usr/bin/app", mline(ct_st.st_dev, ino, "/usr/lib/libfoo.so"))
    diag = hc.diagnose(hd, host_of(fakeproc, tmp_path), OPTS)
    assert diag.details["processes"] == 4
    # 200/201 map the container's own libfoo: current there (the host's path
    # holds another, newer file). 300 maps an old inode: replaced in its root.
    assert [f["pids"] for f in diag.findings] == [[300]]
    assert diag.findings[0]["files"][0]["why"] == "replaced"


def test_real_file_named_deleted_in_fake_tree(fakeproc, tmp_path):
    r = tmp_path / "r"
    (r / "srv").mkdir(parents=True)
    odd = r / "srv" / "tool (deleted)"
    odd.write_bytes(b"x")
    st = os.stat(odd)
    fproc(fakeproc, 100, 1, r, "/srv/tool (deleted)", mline(st.st_dev, st.st_ino, "/srv/tool (deleted)"))
    assert hc.diagnose(hd, host_of(fakeproc, tmp_path), OPTS).findings == []


def test_read_checks_the_script_of_python3_dash_E(fakeproc, root, tmp_path):
    """``python3 -E /usr/bin/salt-minion``: the script is found by the one
    program parser (the old script_of() gave None and skipped the check)."""
    fproc(fakeproc, 1, 0, root, "/sbin/init")
    fproc(fakeproc, 40, 1, root, "/usr/bin/python3.11", cmdline=b"/usr/bin/python3\0-E\0/usr/bin/salt-minion\0",
          cgroup=b"0::/system.slice/salt-minion.service\n")
    f = hd.read(host_of(fakeproc, tmp_path), OPTS)
    st = os.stat(root / "usr/bin/salt-minion")
    assert f.procs[40]["files"] == {"/usr/bin/salt-minion": (st.st_dev, st.st_ino, st.st_ctime)}
    assert f.procs[40]["started"] == STARTED
    (finding,) = hd.analyse(f, OPTS).findings
    assert finding["owner"]["name"] == "salt-minion.service" and finding["programs"] == ["salt-minion"]
    assert finding["files"] == [{"path": "/usr/bin/salt-minion", "kind": "script", "why": "changed", "pids": [40]}]


def test_read_collects_supervisord_identity_for_supervised_processes(fakeproc, root, tmp_path):
    env = b"SECRET=x\0" + b"".join(k.encode() + b"=" + v.encode() + b"\0" for k, v in SUP_ENV.items())
    fproc(fakeproc, 1, 0, root, "/sbin/init")
    fproc(fakeproc, 20, 1, root, "/usr/bin/python3.11", cmdline=b"/usr/bin/python3\0/usr/bin/supervisord\0",
          uid=0)
    fproc(fakeproc, 21, 20, root, "/usr/bin/x (deleted)", mline(SDA, 5, "/usr/bin/x (deleted)"), environ=env)
    # argv0 says supervisord, the executable is sleep: never a supervisor
    fproc(fakeproc, 30, 1, root, "/usr/bin/sleep", cmdline=b"supervisord\0")
    fproc(fakeproc, 31, 30, root, "/usr/bin/y (deleted)", mline(SDA, 6, "/usr/bin/y (deleted)"), environ=env)
    f = hd.read(host_of(fakeproc, tmp_path), OPTS)
    assert f.tree[20] == {"ppid": 1, "exe": "/usr/bin/python3.11", "argv": ["/usr/bin/python3", "/usr/bin/supervisord"],
                          "uid": 0}
    assert "SECRET" not in f.procs[21]["provenance"]
    codes = {x["pids"][0]: x["code"] for x in hd.analyse(f, OPTS).findings}
    assert codes == {21: "stale-supervisor", 31: "stale-unmanaged"}


def test_read_names_packages_in_one_call(fakeproc, root, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(hd, "owning_packages", lambda paths: calls.append(sorted(paths)) or (
        {"/usr/bin/old": "oldpkg"}, None))
    fproc(fakeproc, 12, 1, root, "/usr/bin/old (deleted)", mline(SDA, 99, "/usr/bin/old (deleted)"))
    fproc(fakeproc, 13, 1, root, "/usr/bin/old (deleted)", mline(SDA, 99, "/usr/bin/old (deleted)"))
    diag = hc.diagnose(hd, host_of(fakeproc, tmp_path), dict(OPTS, packages=True))
    assert calls == [["/usr/bin/old", "/usr/bin/old"]]
    assert diag.findings[0]["files"][0]["package"] == "oldpkg"
    calls.clear()
    hc.diagnose(hd, host_of(fakeproc, tmp_path), OPTS)
    assert calls == []  # never without packages=True


# ---- quick (the grain) --------------------------------------------------------


def _grain_procs():
    return [
        P(1, 0, exe="/sbin/init"),
        P(2, 1, exe="/usr/sbin/cron (deleted)", cgroup="/system.slice/cron.service"),
        P(3, 1, exe="/memfd:x (deleted)"),
        P(4, 1, exe="/tmp/t (deleted)"),
        P(5, 2, pgid=2, exe="/usr/sbin/cron (deleted)", cgroup="/system.slice/cron.service"),  # a worker
        P(6, 1, exe="/usr/sbin/rsyslogd (deleted)", flags=hp.PF_KTHREAD),
    ]


class SnapHost(hc.Host):
    """A host whose shared snapshot another check already took."""

    def __init__(self, snap, tmp_path):
        super().__init__(proc_root=str(tmp_path / "no-proc"), run_root=str(tmp_path / "run"))
        self.snap = snap
        self.taken_calls = 0

    def snapshot(self):
        self.taken_calls += 1
        return self.snap

    def taken(self):
        return self.snap


def test_quick_reads_only_exe_links_of_daemon_roots(tmp_path):
    host = SnapHost(hp.Snapshot.from_procs(_grain_procs()), tmp_path)
    diag = hc.diagnose(hd, host, OPTS, quick=True)
    assert hd.summarise(diag) == {"count": 1, "units": ["cron.service"], "programs": ["cron"]}
    assert diag.facts.quick and host.taken_calls == 1


def test_quick_reuses_the_snapshot_another_check_took(fakeproc, tmp_path, monkeypatch):
    make_proc(fakeproc, 1, 0, exe="/sbin/init")
    make_proc(fakeproc, 2, 1, exe="/usr/sbin/cron (deleted)", cgroup=b"0::/system.slice/cron.service\n")
    taken = []
    real = hp.snapshot
    monkeypatch.setattr(hp, "snapshot", lambda *a, **kw: taken.append(a) or real(*a, **kw))
    host = host_of(fakeproc, tmp_path)
    snap = host.snapshot()  # the orphans check took it
    assert hd.summarise(hc.diagnose(hd, host, OPTS, quick=True))["units"] == ["cron.service"]
    assert len(taken) == 1 and host.taken() is snap


def test_quick_honours_the_ignore_option(tmp_path):
    """The grain's options come from the minion config: ignore applies to it too."""
    host = SnapHost(hp.Snapshot.from_procs(_grain_procs()), tmp_path)
    opts = hc.options(hd, {"ignore": ["/usr/sbin/", "/memfd:", "/tmp/"]})
    assert hd.summarise(hc.diagnose(hd, host, opts, quick=True)) == {"count": 0, "units": [], "programs": []}
    # the option replaces the defaults, as in the full read
    opts = hc.options(hd, {"ignore": ["/usr/sbin/"]})
    assert hd.summarise(hc.diagnose(hd, host, opts, quick=True))["programs"] == ["memfd:x", "t"]


def test_grain_takes_ignore_from_the_minion_config(tmp_path):
    try:
        import hostcheck_registry as registry  # noqa: PLC0415
    except Exception as exc:  # pylint: disable=broad-except
        pytest.skip("hostcheck_registry does not import yet: {}".format(exc))
    host = SnapHost(hp.Snapshot.from_procs(_grain_procs()), tmp_path)
    host.etc_root = host.zoneinfo = host.boot = host.modules = str(tmp_path / "none")
    grain = registry.grain(host=host, config={"deleted_binaries": {"ignore": ["/usr/sbin/", "/memfd:", "/tmp/"]}})
    assert grain["deleted_binaries"] == {"count": 0, "units": [], "programs": []}
    grain = registry.grain(host=host, config={})
    assert grain["deleted_binaries"] == {"count": 1, "units": ["cron.service"], "programs": ["cron"]}


# ---- options ------------------------------------------------------------------


def test_options_ignore_and_packages():
    assert hc.options(hd)["ignore"] == list(hd.DEFAULT_IGNORE)
    assert hc.options(hd, {"ignore": "/opt/"})["ignore"] == ["/opt/"]
    assert hc.options(hd, {"ignore": []})["ignore"] == []  # report everything
    assert hc.options(hd, None, lambda key: ["/srv/"] if key == "hostcheck:deleted_binaries:ignore" else None)[
        "ignore"] == ["/srv/"]
    for bad in (7, [1], [""], {"a": 1}):
        with pytest.raises(hcfg.ConfigError):
            hc.options(hd, {"ignore": bad})
    assert hc.options(hd, {"packages": True})["packages"] is True
    for bad in ("yes", "True", 1, "false"):
        with pytest.raises(hcfg.ConfigError, match="packages must be true or false"):
            hc.options(hd, {"packages": bad})
    assert not hasattr(hd, "ConfigError") and not hasattr(hd, "validate_patterns")


# ---- packages -------------------------------------------------------------------


def test_owning_packages_batched_parse(monkeypatch):
    calls = []

    def run(cmd, timeout):
        calls.append(cmd)
        return True, "libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6\ncron: /usr/sbin/cron"

    monkeypatch.setattr(hd.shutil, "which", lambda name: "/usr/bin/" + name if name == "dpkg-query" else None)
    got = hd.owning_packages(["/usr/sbin/cron", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/sbin/cron"], runner=run)
    assert got == ({"/usr/sbin/cron": "cron", "/usr/lib/x86_64-linux-gnu/libc.so.6": "libc6"}, None)
    assert len(calls) == 1
    # merged /usr: both names asked in the same call
    assert "/lib/x86_64-linux-gnu/libc.so.6" in calls[0] and "/sbin/cron" in calls[0]


def test_owning_packages_merged_usr_alias_and_diversions():
    calls = []

    def run(cmd, timeout):
        calls.append(cmd)
        # exit 1 (some path owned by nothing): its stderr lines are merged in
        return False, ("diversion by x from: /lib/systemd/systemd-logind\n"
                       "dpkg-query: no path found matching pattern /opt/x\n"
                       "systemd: /lib/systemd/systemd-logind\n"
                       "dpkg-query: no path found matching pattern /usr/lib/systemd/systemd-logind")

    got = hd.owning_packages(["/usr/lib/systemd/systemd-logind", "/opt/x"], runner=run,
                             which=lambda name: "/usr/bin/dpkg-query" if name == "dpkg-query" else None)
    assert got == ({"/usr/lib/systemd/systemd-logind": "systemd"}, None)
    assert len(calls) == 1


def test_owning_packages_without_tool_or_failing_is_a_note():
    got, note = hd.owning_packages(["/usr/sbin/cron"], which=lambda name: None)
    assert got == {} and "neither dpkg-query nor rpm" in note
    dpkg = lambda name: "/usr/bin/" + name  # noqa: E731
    got, note = hd.owning_packages(["/usr/sbin/cron"], runner=lambda cmd, timeout: (
        False, "dpkg-query: [Errno 8] Exec format error"), which=dpkg)
    assert got == {} and "dpkg-query failed" in note and "not looked up" in note
    got, note = hd.owning_packages(["/usr/sbin/cron"], runner=lambda cmd, timeout: (
        False, "dpkg-query timed out after 60 s"), which=dpkg)
    assert got == {} and "timed out after 60 s" in note
    assert hd.owning_packages([]) == ({}, None)


def test_owning_packages_rpm_matches_names_to_paths_whatever_the_stream_order():
    rpm = lambda name: "/usr/bin/rpm" if name == "rpm" else None  # noqa: E731
    calls = []

    def run(cmd, timeout):
        calls.append(cmd)
        # stderr (unbuffered) may come first: the lines carry their path
        return False, ("error: file /usr/lib/gone.so: No such file or directory\n"
                       "systemd\nfile /opt/own is not owned by any package\ncronie")

    got = hd.owning_packages(["/usr/sbin/crond", "/usr/lib/gone.so", "/opt/own", "/usr/lib/systemd/systemd-logind"],
                             runner=run, which=rpm)
    assert got == ({"/usr/lib/systemd/systemd-logind": "systemd", "/usr/sbin/crond": "cronie"}, None)
    assert calls[0][:4] == ["rpm", "-qf", "--queryformat", "%{NAME}\n"] and len(calls) == 1
    got, note = hd.owning_packages(["/a", "/b"], runner=lambda cmd, timeout: (True, "one"), which=rpm)
    assert got == {} and "owners not matched" in note
    got, note = hd.owning_packages(["/a"], runner=lambda cmd, timeout: (False, "rpm timed out after 60 s"), which=rpm)
    assert got == {} and "timed out" in note


# ---- the restart plan ---------------------------------------------------------


def _finding(kind, name, action, pids=(5,)):
    return {"owner": {"kind": kind, "name": name}, "action": action, "pids": list(pids)}


PLAN_INPUT = [
    _finding("init", "PID 1", {"type": "daemon-reexec"}, [1]),
    _finding("unit", "cron.service", {"type": "restart-unit", "unit": "cron.service"}),
    _finding("unit", "systemd-logind.service", {"type": "restart-unit", "unit": "systemd-logind.service"}),
    _finding("unit", "dbus.service", {"type": "restart-unit", "unit": "dbus.service"}),
    _finding("unit", "getty@tty1.service", {"type": "restart-unit", "unit": "getty@tty1.service"}),
    _finding("supervisor", "jobs:worker", {"type": "supervisorctl", "program": "jobs:worker",
                                           "server": "unix:///run/s.sock", "uid": 0}),
    _finding("scope", "session-3.scope", {"type": "manual", "reason": "session"}),
    _finding("minion", "salt-minion.service", {"type": "self-restart", "unit": "salt-minion.service"}),
]


def test_plan_refuses_unsafe_units_and_orders_actions():
    p = hd.select(PLAN_INPUT)
    assert p["units"] == ["cron.service", "systemd-logind.service"]
    assert p["reexec"] is True and p["supervisor"] == ["jobs:worker"] and p["self"] == "salt-minion.service"
    assert p["supervisor_via"] == {"jobs:worker": {"url": "unix:///run/s.sock", "uid": 0}}
    assert [r["name"] for r in p["refused"]] == ["dbus.service", "getty@tty1.service"]
    assert [m["name"] for m in p["manual"]] == ["session-3.scope"]
    # the refuse list is overridable
    assert "dbus.service" in hd.select(PLAN_INPUT, refuse=())["units"]


def test_plan_only_exclude_and_no_systemd():
    p = hd.select(PLAN_INPUT, only=["cron", "init"])
    assert p["units"] == ["cron.service"] and p["reexec"] is True and p["self"] is None
    assert p["skipped"] == 6
    p = hd.select(PLAN_INPUT, exclude=["*logind*", "minion"])
    assert p["units"] == ["cron.service"] and p["self"] is None
    p = hd.select(PLAN_INPUT[:1], systemd=False)
    assert p["reexec"] is False and p["manual"][0]["reason"] == "PID 1 is not systemd: reboot"
    p = hd.select(PLAN_INPUT, systemd=False)
    assert p["units"] == [] and p["self"] is None and p["supervisor"] == ["jobs:worker"]
    assert hd.unit_names_to_check(["cron", "x*.service", "init", "jobs:worker", "a.service"]) == [
        "cron.service", "a.service"]


def test_plan_changes_preview_and_notes():
    diag = hd.analyse(_remedy_host(), OPTS)
    p = hd.plan(diag, ARGS)
    assert p.changes == {"reexecuted": ["PID 1"], "restarted": ["cron.service"],
                         "supervisor_restarted": ["jobs:worker"], "deferred": "salt-minion.service"}
    assert p.actions["units"] == ["cron.service"] and p.problems == []
    assert p.preview[0] == "Would restart:" and "  cron.service: systemctl restart" in p.preview
    assert "Refused dbus.service: unsafe to restart (refuse list): reboot to update it" in p.notes
    assert any(n.startswith("Manual session-3.scope (pids 10)") for n in p.notes)
    p = hd.plan(diag, dict(ARGS, only=["nothing*"]))
    assert p.changes == {} and p.idle.startswith(hd.IDLE) and "8 owner(s) left alone" in p.idle


# ---- services_current through the one state runner -----------------------------


class Service:
    """Records every service-manager call the remedy makes (nothing runs)."""

    def __init__(self, monkeypatch, systemd=True, limits=None, restart=None, loaded=None):
        self.calls = []
        self.limits = limits or {}
        self.restart = restart or {}
        self.loaded = loaded or {}
        m = monkeypatch
        m.setattr(hs, "systemd_running", lambda run_root="/run": systemd)
        m.setattr(hs, "load_states", self._load_states)
        m.setattr(hs, "start_limits", self._start_limits)
        m.setattr(hs, "restart_units", self._restart_units)
        m.setattr(hs, "daemon_reexec", lambda timeout=120: self._call("daemon-reexec") or (True, ""))
        m.setattr(hs, "supervisor_restart_all", self._supervisor)
        m.setattr(hs, "schedule_restart", lambda unit, delay=10: self._call("schedule", unit) or (True, ""))
        m.setattr(hs, "run", lambda *a, **kw: pytest.fail("unexpected subprocess {}".format(a)))

    def _call(self, *what):
        self.calls.append(what)

    def _load_states(self, names, run_root="/run", timeout=10):
        self._call("load_states", tuple(names))
        return {n: self.loaded.get(n, "loaded") for n in names}

    def _start_limits(self, units, now=None, runner=None):
        self._call("start_limits", tuple(units))
        return {u: r for u, r in self.limits.items() if u in units}, []

    def _restart_units(self, units, timeout=120):
        self._call("restart", tuple(units))
        return {u: self.restart.get(u) for u in units}

    def _supervisor(self, programs, via, timeout=60):
        self._call("supervisor", tuple(programs))
        return list(programs), [], ["{}: XML-RPC at {}".format(p, via[p]["url"]) for p in programs]

    def acted(self):
        return [c for c in self.calls if c[0] not in ("load_states", "start_limits")]


def run_state(monkeypatch, tmp_path, before, after=None, test=False, config=None, **args):
    """``services_current`` through hostcheck_check.run_remedy; ``before``
    and ``after`` make the facts read() returns (fresh each time)."""
    reads = []

    def read(host, opts, quick=False):
        reads.append(opts)
        return (before if len(reads) == 1 or after is None else after)()

    monkeypatch.setattr(hd, "read", read)
    host = hc.Host(proc_root=str(tmp_path / "proc"), run_root=str(tmp_path / "run"))
    ret = hc.run_remedy(hd, "current", dict(dict.fromkeys(("only", "exclude", "refuse", "ignore")), **args),
                        test=test, get=(config or {}).get, host=host)
    ret["reads"] = reads
    return ret


def _units_host(*units):
    return lambda: facts(*[rec(60 + i, "/usr/sbin/{} (deleted)".format(u.split(".")[0]), GONE,
                               cgroup="/system.slice/" + u) for i, u in enumerate(units)])


def test_test_mode_predicts_the_real_changes_under_the_same_keys(monkeypatch, tmp_path):
    svc = Service(monkeypatch)
    test = run_state(monkeypatch, tmp_path, _remedy_host, test=True)
    assert test["result"] is None and svc.acted() == []
    real = run_state(monkeypatch, tmp_path, _remedy_host, after=lambda: facts())
    assert real["result"] is True, real
    assert real["changes"] == test["changes"] == {
        "reexecuted": ["PID 1"], "restarted": ["cron.service"], "supervisor_restarted": ["jobs:worker"],
        "deferred": "salt-minion.service"}
    assert svc.acted() == [("daemon-reexec",), ("restart", ("cron.service",)), ("supervisor", ("jobs:worker",)),
                           ("schedule", "salt-minion.service")]
    assert "Restarted cron.service (systemctl restart)" in real["comment"]
    assert "supervisor program jobs:worker: XML-RPC at unix:///run/supervisor.sock" in real["comment"]
    assert "salt-minion.service is restarted about 10 s after this job returns" in real["comment"]
    assert "Refused dbus.service: unsafe to restart" in test["comment"] and "Refused dbus.service" in real["comment"]


def test_start_limit_refusals_give_the_same_result_in_test_mode(monkeypatch, tmp_path):
    reason = "a restart now would hit its start limit: started 2 times in the last 1min"
    svc = Service(monkeypatch, limits={"lim.service": reason})
    test = run_state(monkeypatch, tmp_path, _units_host("lim.service"), test=True)
    real = run_state(monkeypatch, tmp_path, _units_host("lim.service"))
    assert test["result"] is False and real["result"] is False
    assert test["changes"] == real["changes"] == {}
    assert test["comment"] == real["comment"]
    assert "Refused lim.service: {} (needs attention)".format(reason) in real["comment"]
    assert svc.acted() == []
    # with another unit to restart: test mode predicts it, the real run restarts only that one
    test = run_state(monkeypatch, tmp_path, _units_host("cron.service", "lim.service"), test=True)
    assert test["result"] is None and test["changes"] == {"restarted": ["cron.service"]}
    real = run_state(monkeypatch, tmp_path, _units_host("cron.service", "lim.service"),
                     after=_units_host("lim.service"))
    assert real["result"] is False and real["changes"] == {"restarted": ["cron.service"]}
    assert svc.acted() == [("restart", ("cron.service",))]


def test_units_systemd_cannot_restart_are_refused_before_acting(monkeypatch, tmp_path):
    svc = Service(monkeypatch, loaded={"gone.service": "not-found"})
    ret = run_state(monkeypatch, tmp_path, _units_host("gone.service", "cron.service"),
                    after=_units_host("gone.service"))
    assert ret["result"] is False and ret["changes"] == {"restarted": ["cron.service"]}
    assert "Refused gone.service: its unit is not-found (LoadState=not-found)" in ret["comment"]
    assert ("start_limits", ("cron.service",)) in svc.calls


def test_a_failed_restart_is_reported_as_failed_not_restarted(monkeypatch, tmp_path):
    err = "Job for cron.service failed. (failed/start-limit-hit)"
    svc = Service(monkeypatch, restart={"cron.service": err})
    ret = run_state(monkeypatch, tmp_path, _units_host("cron.service", "atd.service"),
                    after=_units_host("cron.service"))
    assert ret["result"] is False
    assert ret["changes"] == {"restarted": ["atd.service"]}
    assert "Restarted atd.service (systemctl restart)" in ret["comment"]
    assert "Restarted cron.service" not in ret["comment"] and "Restarted:" not in ret["comment"]
    assert "Restarting cron.service failed: " + err in ret["comment"]
    assert svc.acted() == [("restart", ("atd.service", "cron.service"))]


def test_verify_a_restarted_unit_still_running_old_code_is_false(monkeypatch, tmp_path):
    Service(monkeypatch)
    ret = run_state(monkeypatch, tmp_path, _units_host("cron.service"), after=_units_host("cron.service"))
    assert ret["result"] is False and ret["changes"] == {"restarted": ["cron.service"]}
    assert "Still running old code after the restart: cron.service" in ret["comment"]
    # verify itself: only what was restarted counts, not the deferred minion
    p = hd.plan(hd.analyse(_remedy_host(), OPTS), ARGS)
    out = hc.Outcome({"restarted": ["cron.service"], "deferred": "salt-minion.service"})
    assert hd.verify(p, out, hd.analyse(_remedy_host(), OPTS), ARGS) == [
        "Still running old code after the restart: cron.service"]


def test_second_run_is_a_no_op(monkeypatch, tmp_path):
    svc = Service(monkeypatch)
    ret = run_state(monkeypatch, tmp_path, lambda: facts(rec(1, "/sbin/init")))
    assert ret["result"] is True and ret["changes"] == {} and ret["comment"] == hd.IDLE
    assert svc.calls == []


def test_invalid_arguments_change_nothing(monkeypatch, tmp_path):
    svc = Service(monkeypatch, loaded={"no-such-thing.service": "not-found"})
    for args, text in (({"exclude": 7}, "exclude must be"), ({"only": "no-such-thing.service"}, "unknown unit"),
                       ({"refuse": [""]}, "refuse must be"), ({"ignore": 5}, "ignore must be"),
                       ({"nope": 1}, "unknown argument")):
        ret = run_state(monkeypatch, tmp_path, _units_host("cron.service"), **args)
        assert ret["result"] is False and text in ret["comment"] and ret["changes"] == {}, ret
        assert ret["comment"].startswith("Invalid arguments, nothing done") and ret["reads"] == []
    assert svc.acted() == []
    Service(monkeypatch, systemd=False)
    monkeypatch.setattr(hs, "load_states", lambda names, run_root="/run": None)
    with pytest.raises(hcfg.ConfigError, match=r"unknown unit\(s\): x.service \(systemd is not running\)"):
        hd.validate_remedy("n", dict(ARGS, only=["x"]), hc.Host(run_root=str(tmp_path)))


def test_refuse_and_ignore_come_from_config_when_unset(monkeypatch, tmp_path):
    Service(monkeypatch)
    config = {"hostcheck:deleted_binaries:refuse": ["cron*"], "hostcheck:deleted_binaries:ignore": ["/srv/"]}
    ret = run_state(monkeypatch, tmp_path, _units_host("cron.service"), test=True, config=config)
    assert ret["result"] is True and ret["changes"] == {}
    assert "Refused cron.service: unsafe to restart" in ret["comment"]
    assert ret["reads"][0]["ignore"] == ["/srv/"]
    # the state's own arguments win over the config
    ret = run_state(monkeypatch, tmp_path, _units_host("cron.service"), test=True, config=config, ignore="/x/",
                    refuse=[])
    assert ret["reads"][0]["ignore"] == ["/x/"] and ret["changes"] == {"restarted": ["cron.service"]}


def test_without_systemd_only_supervisor_programs_are_restarted(monkeypatch, tmp_path):
    svc = Service(monkeypatch, systemd=False)
    host = lambda: hd.Facts(_remedy_host().procs, _remedy_host().tree, 31, systemd=False)  # noqa: E731
    ret = run_state(monkeypatch, tmp_path, host, after=lambda: facts(systemd=False))
    assert ret["result"] is True and ret["changes"] == {"supervisor_restarted": ["jobs:worker"]}
    assert hd.NOTE_NO_SYSTEMD in ret["comment"] and "Manual cron.service" in ret["comment"]
    assert "Manual PID 1 (pids 1): PID 1 is not systemd: reboot" in ret["comment"]
    assert svc.acted() == [("supervisor", ("jobs:worker",))]
    assert not any(c[0] == "start_limits" for c in svc.calls)


def test_module_has_no_service_manager_or_validation_code_of_its_own():
    for name in ("run_command", "unit_results", "load_states", "start_limits", "parse_timespan",
                 "schedule_self_restart", "SD_MESSAGE_UNIT_STARTED", "diagnose", "grain_summary", "summary"):
        assert not hasattr(hd, name), name
    assert not hasattr(hd, "subprocess")
    assert hd.NAME == "deleted_binaries" and hd.REMEDY == "services_current" and hd.CONFIG_KEYS == ("refuse",)
    assert set(hd.REMEDY_ARGS) == {"only", "exclude", "refuse"} and set(hd.OPTIONS) == {"ignore", "packages"}


def test_owning_packages_defaults_to_the_service_runner(monkeypatch):
    calls = []
    monkeypatch.setattr(hs, "run", lambda argv, timeout=10: calls.append((argv[0], timeout)) or (True, ""))
    assert hd.owning_packages(["/x"], which=lambda n: "/usr/bin/" + n) == ({}, None)
    assert calls == [("dpkg-query", 60)]
