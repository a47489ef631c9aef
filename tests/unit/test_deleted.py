"""hostcheck.deleted_binaries and reboot_required: synthetic maps/exe samples,
fake /proc trees with their own roots, ownership and the kernel verdict."""
import os
import subprocess

import pytest

import hostcheck_deleted as hd
import hostcheck_proc as hp
import hostcheck_reboot as hr
from test_proc import fakeproc, make_proc  # noqa: F401  (fixture)

P = hp.Proc.synthetic
NVME = os.makedev(259, 2)  # printed "103:02" in maps
SDA = os.makedev(8, 1)

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


class FakeFiles:
    """``FileLookup`` stand-in: ``{root: {path: (dev, ino, ctime)}}``; the
    root of a synthetic process is given by ``roots[pid]`` (default "host")."""

    def __init__(self, tree, roots=None):
        self.tree = tree
        self.roots = roots or {}

    def for_proc(self, proc):
        root = self.roots.get(proc.pid, "host")
        return root, self.tree[root].get


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


def _started():
    snap = hp.Snapshot.from_procs([P(1, 0)])
    return snap.started_at(snap.procs[1])


def test_judge_deleted_replaced_current_and_real_deleted_name():
    started = _started()
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


def test_analyse_groups_by_unit_and_ignores_memfd_tmp_dev():
    started = _started()
    host = {
        "/usr/sbin/cron": (NVME, 1311, started - 1),
        "/opt/my app/lib/libx.so": (SDA, 3333, started - 1),
        "/usr/lib/systemd/systemd-logind": (SDA, 50, started + 5),
        "/srv/odd name (deleted)": (SDA, 4444, started - 1),
    }
    maps_tmp = "7f-8f r-xp 00000000 08:01 77 /tmp/jna-123/jna456.tmp (deleted)\n"
    procs = [
        P(1, 0, comm="systemd", exe="/usr/lib/systemd/systemd", cgroup="/init.scope", maps=""),
        P(200, 1, exe="/usr/sbin/cron", cgroup="/system.slice/cron.service", maps=MAPS),
        P(201, 200, exe="/usr/sbin/cron", cgroup="/system.slice/cron.service", maps=MAPS),
        P(300, 1, exe="/usr/lib/systemd/systemd-logind (deleted)", cgroup="/system.slice/systemd-logind.service",
          maps="7f-8f r-xp 00000000 08:01 49 /usr/lib/systemd/systemd-logind (deleted)\n"),
        P(400, 1, exe="/usr/bin/java", cgroup="/system.slice/app.service", maps=maps_tmp),
        P(500, 1, exe="/usr/bin/jit", cgroup="/system.slice/jit.service",
          maps="7f-8f r-xs 00000000 00:01 1097 /memfd:jit (deleted)\n"),
    ]
    snap = hp.Snapshot.from_procs(procs)
    findings, scanned = hd.analyse(snap, files=FakeFiles({"host": host}))
    assert scanned == 6
    by = {f["owner"]["name"]: f for f in findings}
    assert set(by) == {"cron.service", "systemd-logind.service"}
    cron = by["cron.service"]
    assert cron["pids"] == [200, 201]
    assert cron["action"] == {"type": "restart-unit", "unit": "cron.service"}
    assert cron["files"] == [{"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "kind": "lib",
                              "why": "deleted", "pids": [200, 201]}]
    assert cron["code"] == "stale-unit" and cron["check"] == "deleted_binaries"
    logind = by["systemd-logind.service"]
    assert logind["files"][0]["kind"] == "exe" and logind["files"][0]["why"] == "deleted"
    assert "systemctl restart systemd-logind.service" in logind["summary"]
    assert hd.summary(findings) == {"count": 3, "units": ["cron.service", "systemd-logind.service"],
                                    "programs": ["cron", "systemd-logind"]}
    # the ignore list is configurable: without it the JNA library counts
    findings, _ = hd.analyse(snap, ignore=("/memfd:",), files=FakeFiles({"host": host}))
    assert "app.service" in {f["owner"]["name"] for f in findings}


def test_owners_pid1_session_supervisor_minion_unmanaged():
    gone = "7f-8f r-xp 00000000 08:01 1 /usr/bin/x (deleted)\n"
    sup_env = {"SUPERVISOR_PROCESS_NAME": "worker", "SUPERVISOR_GROUP_NAME": "jobs"}
    procs = [
        P(1, 0, exe="/usr/lib/systemd/systemd (deleted)", cgroup="/init.scope", maps=gone),
        P(10, 1, exe="/usr/bin/sshd (deleted)", comm="sshd", cgroup="/user.slice/user-0.slice/session-3.scope",
          maps=gone),
        P(20, 1, cmdline=["/usr/bin/python3", "/usr/bin/supervisord"], exe="/usr/bin/python3.11",
          cgroup="/system.slice/supervisor.service", maps=""),
        P(21, 20, exe="/usr/bin/x (deleted)", cgroup="/system.slice/supervisor.service", environ=sup_env,
          maps=gone),
        P(30, 1, exe="/usr/bin/x (deleted)", cgroup="/system.slice/salt-minion.service", maps=gone),
        P(31, 30, exe="/usr/bin/x (deleted)", cgroup="/system.slice/salt-minion.service", maps=gone),
        P(40, 1, exe="/usr/bin/x (deleted)", cgroup=None, maps=gone),
        P(50, 1, exe="/usr/bin/x (deleted)", cgroup="/user.slice/user-1000.slice/user@1000.service/app.slice/a.service",
          maps=gone),
    ]
    snap = hp.Snapshot.from_procs(procs, self_pid=31)
    findings, _ = hd.analyse(snap, files=FakeFiles({"host": {}}))
    got = {f["code"]: (f["owner"]["name"], f["pids"], f["action"]["type"]) for f in findings}
    assert got["stale-init"] == ("PID 1", [1], "daemon-reexec")
    assert got["stale-supervisor"] == ("jobs:worker", [21], "supervisorctl")
    assert got["stale-minion"] == ("salt-minion.service", [30, 31], "self-restart")
    assert got["stale-unmanaged"] == (None, [40], "manual")
    scopes = {f["owner"]["name"]: f for f in findings if f["code"] == "stale-scope"}
    # a process in a user session is never mapped to a system service by name
    assert set(scopes) == {"session-3.scope", "user@1000.service"}
    assert all(f["action"]["type"] == "manual" for f in scopes.values())
    assert [f["code"] for f in findings][-1] == "stale-minion"  # the minion last


def test_container_processes_are_judged_in_their_own_root(fakeproc, tmp_path):
    host_root = tmp_path / "host"
    ct_root = tmp_path / "ct"
    for root in (host_root, ct_root):
        (root / "usr/lib").mkdir(parents=True)
        (root / "usr/lib/libfoo.so").write_bytes(root.name.encode())
    host_st = os.stat(host_root / "usr/lib/libfoo.so")
    ct_st = os.stat(ct_root / "usr/lib/libfoo.so")
    dev = "{:02x}:{:02x}".format(os.major(ct_st.st_dev), os.minor(ct_st.st_dev))

    def mapped(st):
        return "7f-8f r-xp 00000000 {} {} /usr/lib/libfoo.so\n".format(dev, st.st_ino).encode()

    for pid, root, st in ((100, host_root, host_st), (200, ct_root, ct_st), (201, ct_root, ct_st),
                          (300, ct_root, host_st)):
        d = make_proc(fakeproc, pid, 1, exe="/usr/bin/app")
        (d / "maps").write_bytes(mapped(st))
        os.symlink(root, d / "root")
    snap = hp.snapshot(str(fakeproc))
    findings, scanned = hd.analyse(snap)
    assert scanned == 4
    # 200/201 map the container's own libfoo: current. 300 sits in the
    # container but maps the host's inode: replaced there.
    assert [f["pids"] for f in findings] == [[300]]
    assert findings[0]["files"][0]["why"] == "replaced"


def test_real_file_named_deleted_in_fake_tree(fakeproc, tmp_path):
    root = tmp_path / "r"
    (root / "srv").mkdir(parents=True)
    odd = root / "srv" / "tool (deleted)"
    odd.write_bytes(b"x")
    st = os.stat(odd)
    d = make_proc(fakeproc, 100, 1, exe="/srv/tool (deleted)")
    (d / "maps").write_text("7f-8f r-xp 00000000 {:02x}:{:02x} {} /srv/tool (deleted)\n".format(
        os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    os.symlink(root, d / "root")
    assert hd.analyse(hp.snapshot(str(fakeproc)))[0] == []


def test_interpreted_daemon_script_changed_after_start():
    started = _started()
    # /usr/bin/just-restarted: replaced, then its daemon restarted at once; the
    # start time (from btime, whole seconds) can read up to ~1 s early
    lookup = {"/usr/bin/salt-minion": (SDA, 1, started + 60), "/usr/bin/old-tool": (SDA, 2, started - 60),
              "/usr/bin/just-restarted": (SDA, 3, started + 0.6)}
    procs = [
        P(1, 0, exe="/sbin/init", maps=""),
        P(10, 1, exe="/usr/bin/python3.11", cmdline=["/usr/bin/python3", "-u", "/usr/bin/salt-minion"],
          cgroup="/system.slice/salt-minion.service", maps=""),
        P(11, 1, exe="/usr/bin/python3.11", cmdline=["/usr/bin/python3", "/usr/bin/old-tool"], maps=""),
        P(13, 1, exe="/usr/bin/python3.11", cmdline=["/usr/bin/python3", "/usr/bin/just-restarted"], maps=""),
        P(12, 1, exe="/usr/bin/python3.11", cmdline=["python3", "-m", "http.server"], maps=""),
    ]
    findings, _ = hd.analyse(hp.Snapshot.from_procs(procs), files=FakeFiles({"host": lookup}))
    assert [(f["owner"]["name"], f["files"][0]["kind"], f["files"][0]["why"]) for f in findings] == [
        ("salt-minion.service", "script", "changed")]
    assert hd.script_of(["perl", "-w", "/usr/sbin/x"]) == "/usr/sbin/x"
    assert hd.script_of(["python3", "relative.py"]) is None


def test_grain_summary_reads_only_exe_links():
    procs = [
        P(1, 0, exe="/sbin/init"),
        P(2, 1, exe="/usr/sbin/cron (deleted)", cgroup="/system.slice/cron.service"),
        P(3, 1, exe="/memfd:x (deleted)"),
        P(4, 1, exe="/tmp/t (deleted)"),
    ]
    assert hd.grain_summary(hp.Snapshot.from_procs(procs)) == {
        "count": 1, "units": ["cron.service"], "programs": ["cron"]}


def test_validate_patterns():
    assert hd.validate_ignore(None) == hd.DEFAULT_IGNORE
    assert hd.validate_ignore("/opt/") == ("/opt/",)
    for bad in (7, [1], [""], {"a": 1}):
        with pytest.raises(hd.ConfigError):
            hd.validate_ignore(bad)


def test_owning_packages_batched_parse(monkeypatch):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, b"libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6\n"
                                                   b"cron: /usr/sbin/cron\n")

    monkeypatch.setattr(hd.shutil, "which", lambda name: "/usr/bin/" + name if name == "dpkg-query" else None)
    got = hd.owning_packages(["/usr/sbin/cron", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/sbin/cron"], run=run)
    assert got == ({"/usr/sbin/cron": "cron", "/usr/lib/x86_64-linux-gnu/libc.so.6": "libc6"}, None)
    assert len(calls) == 1
    # merged /usr: both names asked in the same call
    assert "/lib/x86_64-linux-gnu/libc.so.6" in calls[0] and "/sbin/cron" in calls[0]


def test_owning_packages_merged_usr_alias_and_diversions():
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, b"diversion by x from: /lib/systemd/systemd-logind\n"
                                                   b"systemd: /lib/systemd/systemd-logind\n")

    got = hd.owning_packages(["/usr/lib/systemd/systemd-logind", "/opt/x"], run=run,
                             which=lambda name: "/usr/bin/dpkg-query" if name == "dpkg-query" else None)
    assert got == ({"/usr/lib/systemd/systemd-logind": "systemd"}, None)
    assert len(calls) == 1


def test_owning_packages_without_tool_or_failing_is_a_note():
    got, note = hd.owning_packages(["/usr/sbin/cron"], which=lambda name: None)
    assert got == {} and "neither dpkg-query nor rpm" in note

    def boom(cmd, **kw):
        raise OSError("exec format error")

    got, note = hd.owning_packages(["/usr/sbin/cron"], run=boom, which=lambda name: "/usr/bin/" + name)
    assert got == {} and "dpkg-query failed" in note
    assert hd.owning_packages([]) == ({}, None)


# ---- reboot_required --------------------------------------------------------


def test_kernel_version_ordering():
    order = ["5.10.0-9-amd64", "5.10.0-28-amd64", "6.1.0-9-amd64", "6.1.0-30-amd64", "6.9.0", "6.10.0"]
    assert sorted(reversed(order), key=hr.version_key) == order
    assert hr.version_key("5.14.0-427.el9.x86_64") < hr.version_key("5.14.0-503.11.1.el9_5.x86_64")


def test_installed_kernels_and_verdict(tmp_path):
    boot = tmp_path / "boot"
    mods = tmp_path / "modules"
    boot.mkdir()
    for rel in ("6.1.0-28-amd64", "6.1.0-30-amd64"):
        (boot / ("vmlinuz-" + rel)).write_text("")
        (mods / rel).mkdir(parents=True)
    (mods / "6.1.0-10-amd64").mkdir()  # leftover of a removed kernel
    run = tmp_path / "run"
    run.mkdir()
    installed = hr.installed_kernels(str(boot), str(mods))
    assert installed == ["6.1.0-28-amd64", "6.1.0-30-amd64"]
    v = hr.judge("6.1.0-28-amd64", installed, *hr.read_flag(str(run)))
    assert v["required"] is True and v["newest"] == "6.1.0-30-amd64"
    assert "older than the newest installed 6.1.0-30-amd64" in v["reasons"][0]
    assert hr.judge("6.1.0-30-amd64", installed, False, [])["required"] is False
    (run / "reboot-required").write_text("*** System restart required ***\n")
    (run / "reboot-required.pkgs").write_text("libc6\nlibc6\ndbus\n")
    v = hr.judge("6.1.0-30-amd64", installed, *hr.read_flag(str(run)))
    assert v["required"] is True and v["reasons"] == ["the distribution's reboot-required flag is set (by dbus, libc6)"]
    # a container: no kernels in /boot, only the flag counts
    assert hr.judge("6.1.0-30-amd64", [], False, [])["required"] is False


# ---- the restart plan ---------------------------------------------------------


def _finding(kind, name, action, pids=(5,)):
    return {"owner": {"kind": kind, "name": name}, "action": action, "pids": list(pids)}


PLAN_INPUT = [
    _finding("init", "PID 1", {"type": "daemon-reexec"}, [1]),
    _finding("unit", "cron.service", {"type": "restart-unit", "unit": "cron.service"}),
    _finding("unit", "systemd-logind.service", {"type": "restart-unit", "unit": "systemd-logind.service"}),
    _finding("unit", "dbus.service", {"type": "restart-unit", "unit": "dbus.service"}),
    _finding("unit", "getty@tty1.service", {"type": "restart-unit", "unit": "getty@tty1.service"}),
    _finding("supervisor", "jobs:worker", {"type": "supervisorctl", "program": "jobs:worker"}),
    _finding("scope", "session-3.scope", {"type": "manual", "reason": "session"}),
    _finding("minion", "salt-minion.service", {"type": "self-restart", "unit": "salt-minion.service"}),
]


def test_plan_refuses_unsafe_units_and_orders_actions():
    p = hd.plan(PLAN_INPUT)
    assert p["units"] == ["cron.service", "systemd-logind.service"]
    assert p["reexec"] is True and p["supervisor"] == ["jobs:worker"] and p["self"] == "salt-minion.service"
    assert [r["name"] for r in p["refused"]] == ["dbus.service", "getty@tty1.service"]
    assert [m["name"] for m in p["manual"]] == ["session-3.scope"]
    # the refuse list is overridable
    assert "dbus.service" in hd.plan(PLAN_INPUT, refuse=())["units"]


def test_plan_only_exclude_and_no_systemd():
    p = hd.plan(PLAN_INPUT, only=["cron", "init"])
    assert p["units"] == ["cron.service"] and p["reexec"] is True and p["self"] is None
    assert p["skipped"] == 6
    p = hd.plan(PLAN_INPUT, exclude=["*logind*", "minion"])
    assert p["units"] == ["cron.service"] and p["self"] is None
    p = hd.plan(PLAN_INPUT[:1], systemd=False)
    assert p["reexec"] is False and p["manual"][0]["reason"] == "PID 1 is not systemd: reboot"
    assert hd.unit_names_to_check(["cron", "x*.service", "init", "jobs:worker", "a.service"]) == [
        "cron.service", "a.service"]


def test_start_limits_from_show_and_journal():
    import json as _json

    now = 1_000_000.0
    show = ("Id=a.service\nActiveState=active\nResult=success\nStartLimitBurst=2\nStartLimitIntervalUSec=1min\n\n"
            "Id=b.service\nActiveState=active\nResult=success\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n\n"
            "Id=c.service\nActiveState=failed\nResult=start-limit-hit\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n\n"
            "Id=d.service\nActiveState=active\nResult=success\nStartLimitBurst=0\nStartLimitIntervalUSec=10s\n")

    def entry(unit, ago, mid=hd.SD_MESSAGE_UNIT_STARTED):
        return _json.dumps({"UNIT": unit, "MESSAGE_ID": mid, "__REALTIME_TIMESTAMP": str(int((now - ago) * 1e6))})

    journal = "\n".join([entry("a.service", 50), entry("a.service", 5, hd.SD_MESSAGE_UNIT_FAILED),
                         entry("b.service", 5), entry("b.service", 30)])  # b: 30 s ago is outside 10s
    calls = []

    def run(argv):
        calls.append(argv)
        return True, show if argv[0] == "systemctl" else journal

    refused, notes = hd.start_limits(["a.service", "b.service", "c.service", "d.service"], now=now, run=run)
    assert sorted(refused) == ["a.service", "c.service"] and notes == []
    assert "started 2 times in the last 1min" in refused["a.service"]
    assert "already in start-limit-hit" in refused["c.service"]
    assert [a[0] for a in calls] == ["systemctl", "journalctl"]  # one call each
    assert "UNIT=d.service" not in calls[1]  # no limit: not asked

    refused, notes = hd.start_limits(["a.service"], now=now,
                                     run=lambda argv: (argv[0] == "systemctl", show if argv[0] == "systemctl" else "no journal"))
    assert refused == {} and "start limits not checked for a.service" in notes[0]


def test_supervisor_proxy_checks_where_it_connects(tmp_path):
    import hostcheck_supervisor as hs  # noqa: PLC0415

    assert hs.proxy("http://10.0.0.5:9001")[1] == "http://10.0.0.5:9001 is not on loopback"
    assert hs.proxy("http://127.0.0.1:9001")[0] is not None
    sock = tmp_path / "s.sock"
    sock.write_text("")
    server, why = hs.proxy("unix://" + str(sock), owner_uid=os.stat(sock).st_uid + 1)
    assert server is None and "is owned by uid" in why
    assert hs.proxy("unix://" + str(sock), owner_uid=os.stat(sock).st_uid)[0] is not None
    assert "No such file" in hs.proxy("unix:///nonexistent/s.sock")[1]
    assert hs.proxy("ftp://x")[0] is None
    ok, msg = hs.restart(hs.proxy("unix://" + str(sock))[0], "a:b")
    assert ok is False and msg.startswith("a:b: ")  # a regular file is no socket: an error, not an exception
