"""hostcheck_orphans: the rules on synthetic snapshots (and the traps), read()
on fake /proc trees, the purity of analyse and plan, and the remedy's plan."""
import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_orphans as ho
import hostcheck_proc as hp
from tests.fakes import fake_proc_root, fake_systemd_run, host_access_forbidden, make_proc

P = hp.Proc.synthetic
SUP_ENV = {"SUPERVISOR_ENABLED": "1", "SUPERVISOR_PROCESS_NAME": "salt-minion",
           "SUPERVISOR_GROUP_NAME": "salt-minion", "SUPERVISOR_SERVER_URL": "unix:///run/supervisor.sock",
           "SECRET_TOKEN": "do-not-leak"}
MINION = ["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"]
SUPD = ["/usr/bin/python3", "/usr/bin/supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]
UNITS = {
    "leaky.service": {"ActiveState": "inactive", "InvocationID": None},
    "cron.service": {"ActiveState": "active", "InvocationID": "c0ffee"},
    "supervisor.service": {"ActiveState": "active", "InvocationID": "5e55"},
}


def init():
    return P(1, 0, comm="init", cmdline=["/sbin/init"])


def minion_tree(root, parent, env=SUP_ENV, start=5000):
    """A 3-process salt-minion tree; the children clobbered their environ (setproctitle)."""
    return [
        P(root, parent, comm="salt-minion", cmdline=MINION, environ=env, starttime=start),
        P(root + 1, root, comm="salt-minion", pgid=root,
          cmdline=["/usr/bin/python3 /usr/bin/salt-minion MultiMinionProcessManager"], starttime=start + 1),
        P(root + 2, root + 1, comm="salt-minion", pgid=root,
          cmdline=["/usr/bin/python3 /usr/bin/salt-minion MinionProcessManager"], starttime=start + 2),
    ]


def snap(*groups, self_pid=None):
    procs = []
    for g in groups:
        procs.extend(g if isinstance(g, list) else [g])
    return hp.Snapshot.from_procs(procs, self_pid=self_pid)


def analyse(s, units=None, daemons=None, euid=0, users=None):
    facts = ho.Facts(s, units=units, users=users, euid=euid)
    return ho.analyse(facts, {"daemons": daemons or ho.validate_daemons(None)})


def codes(diag):
    return [(f["code"], f["severity"], f["root"]) for f in diag.findings]


def plan(diag, match=None, exclude=None, timeout=10):
    return ho.plan(diag, {"match": match, "exclude": exclude, "timeout": timeout})


def planned(p):
    """{root: [pids]} of a plan's direct and deferred items."""
    return {it["finding"]["root"]: [pid for pid, _ in it["pids"]]
            for it in p.actions["direct"] + p.actions["deferred"]} if p.actions else {}


# ---- supervisor leaks ------------------------------------------------------

def test_supervisor_leak_whole_tree_reported_with_provenance():
    a = analyse(snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 1)))
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    f = a.findings[0]
    assert f["pids"] == [100, 101, 102]
    assert f["program"] == "salt-minion"
    assert f["provenance"]["supervisor_program"] == "salt-minion"
    assert f["provenance"]["supervisor_group"] == "salt-minion"
    assert f["check"] == "orphans" and "escaped supervisord" in f["summary"]
    assert f["reap"] == "default" and f["held"] is None
    assert "do-not-leak" not in repr(a.findings)
    assert a.details["leaked"] == 1 and a.details["programs"] == ["salt-minion"]


def test_healthy_supervised_tree_is_not_a_leak():
    assert analyse(snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 50))).findings == []


def test_leak_with_managed_twin_after_supervisord_restart():
    a = analyse(snap(init(), P(60, 1, cmdline=SUPD, starttime=9000),
                     minion_tree(100, 1), minion_tree(200, 60, start=9100)))
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    assert a.findings[0]["duplicate_of"] == 200
    assert "managed copy at PID 200" in a.findings[0]["summary"]
    assert planned(plan(a)) == {100: [100, 101, 102]}  # never the twin


def test_second_leak_path_grandchild_adopted_while_supervisord_lives():
    """supervisord lives; the program's top process was SIGKILLed, its child
    exited, the grandchild was adopted by init with the dead top's group;
    supervisord started the program again."""
    env = dict(SUP_ENV, SUPERVISOR_PROCESS_NAME="sleeper", SUPERVISOR_GROUP_NAME="sleeper")
    supd = P(50, 1, cmdline=SUPD)
    live = P(130, 50, cmdline=["/bin/sh", "-c", "x"], exe="/usr/bin/dash", environ=env)
    live_sleep = P(131, 130, pgid=130, cmdline=["sleep", "902"], exe="/usr/bin/sleep", environ=env)
    orphan = P(112, 1, pgid=110, sid=110, cmdline=["sleep", "901"], exe="/usr/bin/sleep", environ=env)
    a = analyse(snap(init(), supd, live, live_sleep, orphan))
    assert codes(a) == [("supervisor-leak", "critical", 112)]
    f = a.findings[0]
    assert f["pids"] == [112] and f["provenance"]["supervisor_program"] == "sleeper"
    assert planned(plan(a)) == {112: [112]}  # never the live program, never supervisord


def test_leak_under_a_child_subreaper():
    sub = P(40, 1, comm="tini", cmdline=["/sbin/tini", "--", "run"])
    assert codes(analyse(snap(init(), sub, minion_tree(100, 40)))) == [("supervisor-leak", "critical", 100)]


def test_supervisor_env_child_below_leaked_root_reported_once():
    tree = minion_tree(100, 1)
    tree.append(P(103, 102, comm="sh", cmdline=["/bin/sh"], environ=SUP_ENV))
    a = analyse(snap(init(), tree))
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    assert a.findings[0]["pids"] == [100, 101, 102, 103]


def test_double_forked_daemon_adopted_by_init_is_not_a_leak():
    d = P(300, 1, comm="sshd", cmdline=["/usr/sbin/sshd"], environ={"PATH": "/bin"})
    assert analyse(snap(init(), d)).findings == []


def test_name_alone_decides_nothing():
    # a binary named supervisord only suppresses findings: never a reason to kill
    fake = P(70, 1, comm="supervisord", cmdline=["/tmp/x/supervisord"])
    assert analyse(snap(init(), fake, minion_tree(100, 70))).findings == []
    # a comm that says salt-minion does not make a duplicate
    impostor = P(400, 1, comm="salt-minion", cmdline=["/usr/bin/bash", "/home/u/run.sh"])
    assert analyse(snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 50), impostor)).findings == []


@pytest.mark.parametrize("decoy", [
    # exec -a salt-minion sleep 5000: argv0 says salt-minion, exe is sleep
    P(300, 1, comm="sleep", cmdline=["salt-minion", "5000"], exe="/usr/bin/sleep"),
    P(300, 1, comm="salt-minion", cmdline=["/usr/bin/salt-minion", "-c", "/etc/salt"], exe="/usr/bin/sleep"),
    # an init script is not the daemon it controls
    P(300, 1, comm="salt-minion", cmdline=["/bin/sh", "/etc/init.d/salt-minion", "status"], exe="/usr/bin/dash"),
])
def test_decoys_are_not_duplicates_of_a_supervised_minion(decoy):
    a = analyse(snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 50), decoy))
    assert a.findings == []


def test_init_script_reload_is_not_a_cron_duplicate():
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    script = P(90, 1, comm="sh", cmdline=["sh", "/etc/init.d/cron", "reload"], exe="/usr/bin/dash")
    assert analyse(snap(init(), cron, script), units=UNITS).findings == []


def test_pid_2_in_a_namespace_is_not_a_kernel_thread():
    """Inside a PID namespace PID 2 is an ordinary process (here: supervisord)."""
    s = snap(init(), P(2, 1, cmdline=SUPD), minion_tree(4, 2), minion_tree(10, 1))
    a = analyse(s)
    assert codes(a) == [("supervisor-leak", "critical", 10)]
    assert a.findings[0]["duplicate_of"] == 4
    kt = P(3, 0, comm="kworker/0:1", cmdline=[], flags=hp.PF_KTHREAD)
    assert kt.kernel_thread and not s.procs[2].kernel_thread


def test_duplicate_rule_reads_only_tree_roots():
    """Workers inside a group (not leaders, not adopted by init) are never daemon roots."""
    lead = P(100, 1, cmdline=["/usr/sbin/rsyslogd", "-n"])
    other = P(200, 1, cmdline=["/usr/sbin/rsyslogd", "-n"])
    worker = P(301, 300, pgid=300, cmdline=["/usr/sbin/rsyslogd", "-n"])
    shell = P(300, 1, cmdline=["/bin/sh", "run.sh"])
    s = snap(init(), lead, other, shell, worker)
    assert sorted(f["root"] for f in analyse(s).findings) == [100, 200]
    assert [p.pid for p in ho.candidate_roots(s)] == [100, 200, 300]


# ---- systemd units -----------------------------------------------------------

def test_unit_leftover_of_inactive_unit():
    left = P(500, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup="/system.slice/leaky.service")
    child = P(501, 500, comm="sleep", pgid=500, cmdline=["sleep", "5"], cgroup="/system.slice/leaky.service")
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service")
    a = analyse(snap(init(), left, child, cron), units=UNITS)
    assert codes(a) == [("unit-leftover", "critical", 500)]
    f = a.findings[0]
    assert f["pids"] == [500, 501]
    assert f["provenance"]["unit"] == "leaky.service" and f["provenance"]["unit_state"] == "inactive"
    assert f["reap"] == "default"  # leftovers of a stopped unit stay reapable


def test_v1_and_v2_cgroup_files_give_same_unit():
    v1 = b"12:pids:/system.slice/leaky.service\n1:name=systemd:/system.slice/leaky.service\n0::/\n"
    v2 = b"0::/system.slice/leaky.service\n"
    assert hp.parse_cgroup(v1) == hp.parse_cgroup(v2) == "/system.slice/leaky.service"


def test_unit_rules_skipped_without_service_manager():
    left = P(500, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup="/system.slice/leaky.service")
    a = analyse(snap(init(), left), units=None)
    assert a.findings == []
    assert a.notes == [ho.NOTE_NO_SYSTEMD]


def test_current_run_of_active_unit_is_not_a_leftover():
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    job = P(81, 1, comm="backup", cmdline=["/usr/local/bin/backup", "--daemon"],
            cgroup="/system.slice/cron.service", environ={"INVOCATION_ID": "c0ffee"})
    noenv = P(82, 1, cmdline=["/usr/local/bin/cleaned-env"], cgroup="/system.slice/cron.service")
    assert analyse(snap(init(), cron, job, noenv), units=UNITS).findings == []


def test_cron_job_left_by_restarted_cron_is_held_not_reaped():
    """KillMode=process + restart (timezone_pinned restarts cron): the running
    job keeps the old INVOCATION_ID. Reported as a warning, reaped only when named."""
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    job = P(70, 1, comm="sh", cmdline=["/bin/sh", "-c", "backup"], cgroup="/system.slice/cron.service",
            environ={"INVOCATION_ID": "0ld"})
    a = analyse(snap(init(), cron, job), units=UNITS)
    assert codes(a) == [("unit-leftover", "warning", 70)]
    f = a.findings[0]
    assert f["provenance"]["unit"] == "cron.service" and f["provenance"]["unit_state"] == "previous-run"
    assert f["reap"] == "when-named" and "earlier run" in f["held"]
    assert "earlier run of cron.service" in f["summary"]
    p = plan(a)
    assert p.changes == {} and "No leaked process trees" in p.idle
    assert any("Left alone" in n and "root 70" in n for n in p.notes)
    assert planned(plan(a, match=["cron.service"])) == {70: [70]}
    assert plan(a, match=["cron.service"]).changes["reaped"][0]["root"] == 70


@pytest.mark.parametrize("kw,why", [({"tty": 34817}, "controlling terminal"), ({"loginuid": 1000}, "login uid 1000")])
def test_tree_of_a_person_is_held(kw, why):
    """A leftover of a stopped unit with a terminal or a login uid: reported, reaped only when named."""
    left = P(500, 1, cmdline=["/usr/bin/vim"], cgroup="/system.slice/leaky.service", **kw)
    a = analyse(snap(init(), left), units=UNITS)
    assert codes(a) == [("unit-leftover", "critical", 500)]
    assert a.findings[0]["reap"] == "when-named" and why in a.findings[0]["held"]
    assert planned(plan(a)) == {}
    assert planned(plan(a, match=["vim"])) == {500: [500]}


def test_tree_left_in_supervisor_unit_by_earlier_supervisord_is_a_leak():
    supd = P(90, 1, cmdline=SUPD, cgroup="/system.slice/supervisor.service", starttime=9000,
             environ={"INVOCATION_ID": "5e55"})
    old = P(95, 1, comm="worker", cmdline=["/usr/bin/worker"], cgroup="/system.slice/supervisor.service",
            environ=dict(SUP_ENV, INVOCATION_ID="01d"))
    a = analyse(snap(init(), supd, old), units=UNITS)
    assert codes(a) == [("supervisor-leak", "critical", 95)]
    assert a.findings[0]["provenance"]["unit"] == "supervisor.service"


# ---- duplicates ---------------------------------------------------------------

def test_duplicate_cron_one_managed_by_unit():
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    cron_child = P(82, 80, comm="cron", pgid=80, cmdline=["/usr/sbin/cron", "-f"],
                   cgroup="/system.slice/cron.service")
    other = P(600, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"],
              cgroup="/user.slice/user-0.slice/session-4.scope")
    a = analyse(snap(init(), cron, cron_child, other), units=UNITS)
    assert codes(a) == [("duplicate-daemon", "critical", 600)]
    assert a.findings[0]["duplicate_of"] == 80


def test_duplicates_without_a_manager_are_warnings_not_reaped():
    a1 = P(700, 1, comm="rsyslogd", cmdline=["/usr/sbin/rsyslogd", "-n"])
    a2 = P(701, 1, comm="rsyslogd", cmdline=["/usr/sbin/rsyslogd", "-n"])
    a = analyse(snap(init(), a1, a2))
    assert [(c, s) for c, s, _ in codes(a)] == [("duplicate-daemon", "warning")] * 2
    assert all(f["reap"] == "no" for f in a.findings)
    assert ho.select(a.findings) == [] and ho.select(a.findings, match=["*"]) == []
    assert ho.summarise(a) == {"count": 0, "programs": [], "warnings": 2}


def test_duplicates_in_other_namespaces_are_not_duplicates():
    a1 = P(700, 1, cmdline=["/usr/sbin/rsyslogd", "-n"], ns={"pid": "pid:[1]", "mnt": "mnt:[1]"})
    a2 = P(701, 1, cmdline=["/usr/sbin/rsyslogd", "-n"], ns={"pid": "pid:[2]", "mnt": "mnt:[2]"})
    assert analyse(snap(init(), a1, a2)).findings == []


def test_different_configuration_is_not_a_duplicate():
    m1 = P(100, 1, cmdline=["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"])
    m2 = P(200, 1, cmdline=["/usr/bin/python3", "/usr/bin/salt-minion", "--config-dir=/etc/salt-b"])
    assert analyse(snap(init(), m1, m2)).findings == []


def test_session_dbus_is_not_a_system_dbus_duplicate():
    sysbus = P(10, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--system", "--address=systemd:"])
    s1 = P(11, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--session", "--fork"])
    s2 = P(12, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--session", "--fork"])
    assert analyse(snap(init(), sysbus, s1, s2)).findings == []


def test_extra_daemon_from_config_and_removal():
    d1 = P(800, 1, cmdline=["/usr/sbin/haproxy", "-f", "/etc/haproxy.cfg"])
    d2 = P(801, 1, cmdline=["/usr/sbin/haproxy", "-f", "/etc/haproxy.cfg"])
    merged = ho.validate_daemons({"haproxy": {"options": ["-f"]}, "cron": None})
    assert "cron" not in merged and merged["haproxy"] == {"options": ["-f"], "require": []}
    assert len(analyse(snap(init(), d1, d2), daemons=merged).findings) == 2


@pytest.mark.parametrize("bad", [
    "salt-minion", ["salt-minion"], {"x": "y"}, {"x": {"options": "-c"}}, {"x": {"options": [1]}},
    {"x": {"bogus": []}}, {"a/b": {}}, {"": {}},
])
def test_validate_daemons_rejects_bad_pillar(bad):
    with pytest.raises(hcfg.ConfigError):
        ho.validate_daemons(bad)


# ---- the remedy's plan ----------------------------------------------------------

def test_self_tree_is_deferred_and_pid1_never_planned():
    # the job runs inside the leaked minion (pid 103 is us)
    s = snap(init(), minion_tree(100, 1), P(103, 102, cmdline=MINION[:2] + ["ProcessPayload"]), self_pid=103)
    a = analyse(s)
    assert a.findings[0]["contains_self"] is True
    p = plan(a)
    assert p.actions["direct"] == [] and len(p.actions["deferred"]) == 1
    assert all(pid != 1 for pid, _ in p.actions["deferred"][0]["pids"])
    assert set(p.changes) == {"deferred"} and p.changes["deferred"][0]["helper_pid"] is None


def test_direct_plan_never_holds_protected_pids():
    """The minion's ancestors are never in a direct plan, even inside a reported tree."""
    tree = minion_tree(100, 1)
    s = snap(init(), tree, P(200, 1, cmdline=["/usr/bin/python3", "/usr/bin/salt-call"]), self_pid=200)
    p = plan(analyse(s))
    assert planned(p) == {100: [100, 101, 102]}
    assert all(200 not in [pid for pid, _ in it["pids"]] for it in p.actions["direct"])


def test_select_match_and_exclude():
    s = snap(init(), minion_tree(100, 1),
             P(500, 1, comm="sleep", cmdline=["sleep", "1"], cgroup="/system.slice/leaky.service"))
    a = analyse(s, units=UNITS)
    assert {f["root"] for f in ho.select(a.findings)} == {100, 500}
    assert {f["root"] for f in ho.select(a.findings, match=["leaky.*"])} == {500}
    assert {f["root"] for f in ho.select(a.findings, exclude=["salt-*"])} == {500}


def test_plan_changes_have_the_keys_of_a_real_run():
    a = analyse(snap(init(), minion_tree(100, 1)))
    p = plan(a)
    assert set(p.changes) == {"reaped"}
    assert set(p.changes["reaped"][0]) == {"root", "program", "code", "pids"}
    assert p.preview[0] == "Would reap 1 leaked tree(s)"


def test_non_root_minion_refuses_other_users_processes():
    tree = minion_tree(100, 1)
    for proc in tree:
        proc._uid = 0
    p = plan(analyse(snap(init(), tree), euid=1000))
    assert p.changes == {} and "cannot signal processes of other users" in p.problems[0]


# ---- read() on a fake /proc, and purity ----------------------------------------

def _fake_host(tmp_path, systemd=False):
    root = fake_proc_root(tmp_path)
    env = b"\0".join(b"%s=%s" % (k.encode(), v.encode()) for k, v in SUP_ENV.items()) + b"\0"
    make_proc(root, 1, 0, comm="init", cmdline=b"/sbin/init\0", exe="/sbin/init")
    make_proc(root, 100, 1, comm="salt-minion", cmdline=b"/usr/bin/python3\0/usr/bin/salt-minion\0",
              environ=env, exe="/usr/bin/python3.11", uid=0)
    make_proc(root, 101, 100, pgid=100, comm="salt-minion",
              cmdline=b"/usr/bin/python3 /usr/bin/salt-minion MultiMinionProcessManager\0\0",
              exe="/usr/bin/python3.11")
    make_proc(root, 500, 1, comm="sleep", cmdline=b"sleep\0999\0", exe="/usr/bin/sleep",
              cgroup=b"0::/system.slice/leaky.service\n", environ=b"INVOCATION_ID=0ld\0")
    run = fake_systemd_run(tmp_path, {"cron.service": "c0ffee"}) if systemd else tmp_path / "norun"
    return hc.Host(proc_root=str(root), run_root=str(run))


def test_read_on_fake_proc_then_pure_analyse_and_plan(tmp_path):
    host = _fake_host(tmp_path, systemd=True)
    opts = hc.options(ho)
    facts = ho.read(host, opts)
    assert facts.units["leaky.service"]["ActiveState"] == "inactive"
    assert set(facts.hits) == {100, 500}
    facts.hits = None  # judge again, every rule, with the host out of reach
    with host_access_forbidden():
        a = ho.analyse(facts, opts)
        p = plan(a)
    assert codes(a) == [("supervisor-leak", "critical", 100), ("unit-leftover", "critical", 500)]
    assert a.findings[0]["user"] == "root"
    assert planned(p) == {100: [100, 101], 500: [500]}
    assert ho.summarise(a) == {"count": 2, "programs": ["salt-minion", "sleep"], "warnings": 0}


def test_read_without_systemd_notes_it(tmp_path):
    host = _fake_host(tmp_path, systemd=False)
    a = hc.diagnose(ho, host)
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    assert ho.NOTE_NO_SYSTEMD in a.notes


def test_process_vanishing_mid_scan_is_not_an_error(tmp_path):
    host = _fake_host(tmp_path)
    snap_ = host.snapshot()
    for name in ("cmdline", "environ", "exe", "cgroup", "status"):
        p = tmp_path / "proc" / "100" / name
        if p.exists() or p.is_symlink():
            p.unlink()
    assert 100 in snap_.procs
    a = hc.diagnose(ho, host)
    assert [f["root"] for f in a.findings] == []
