"""Analysis rules of hostcheck.orphans on synthetic snapshots (and the traps)."""
import os
import signal
import subprocess
import sys
import time

import pytest

import hostcheck_orphans as ho
import hostcheck_proc as hp

P = hp.Proc.synthetic
SUP_ENV = {"SUPERVISOR_ENABLED": "1", "SUPERVISOR_PROCESS_NAME": "salt-minion",
           "SUPERVISOR_GROUP_NAME": "salt-minion", "SUPERVISOR_SERVER_URL": "unix:///run/supervisor.sock",
           "SECRET_TOKEN": "do-not-leak"}
MINION = ["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"]
SUPD = ["/usr/bin/python3", "/usr/bin/supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]


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


def codes(analysis):
    return [(f["code"], f["severity"], f["root"]) for f in analysis.findings]


def test_supervisor_leak_whole_tree_reported_with_provenance():
    s = snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 1))
    a = ho.analyse(s)
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    f = a.findings[0]
    assert f["pids"] == [100, 101, 102]
    assert f["program"] == "salt-minion"
    assert f["provenance"]["supervisor_program"] == "salt-minion"
    assert f["provenance"]["supervisor_group"] == "salt-minion"
    assert f["check"] == "orphans" and "escaped supervisord" in f["summary"]
    assert "do-not-leak" not in repr(a.findings)


def test_healthy_supervised_tree_is_not_a_leak():
    s = snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 50))
    assert ho.analyse(s).findings == []


def test_leak_with_managed_twin_after_supervisord_restart():
    s = snap(init(), P(60, 1, cmdline=SUPD, starttime=9000),
             minion_tree(100, 1), minion_tree(200, 60, start=9100))
    a = ho.analyse(s)
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    assert a.findings[0]["duplicate_of"] == 200
    assert "managed copy at PID 200" in a.findings[0]["summary"]
    plan = ho.plan(a, ho.select(a.findings))
    assert [p for p, _ in plan[0]["pids"]] == [100, 101, 102]  # never the twin


def test_leak_under_a_child_subreaper():
    sub = P(40, 1, comm="tini", cmdline=["/sbin/tini", "--", "run"])
    s = snap(init(), sub, minion_tree(100, 40))
    assert codes(ho.analyse(s)) == [("supervisor-leak", "critical", 100)]


def test_supervisor_env_child_below_leaked_root_reported_once():
    tree = minion_tree(100, 1)
    # a descendant that kept its environ and is its own process group leader
    tree.append(P(103, 102, comm="sh", cmdline=["/bin/sh"], environ=SUP_ENV))
    a = ho.analyse(snap(init(), tree))
    assert codes(a) == [("supervisor-leak", "critical", 100)]
    assert a.findings[0]["pids"] == [100, 101, 102, 103]


def test_double_forked_daemon_adopted_by_init_is_not_a_leak():
    d = P(300, 1, comm="sshd", cmdline=["/usr/sbin/sshd"], environ={"PATH": "/bin"})
    a = ho.analyse(snap(init(), d))
    assert a.findings == []


def test_name_alone_decides_nothing():
    # a process calling itself salt-minion with supervisor provenance but under a live supervisord
    fake = P(70, 1, comm="supervisord", cmdline=["/tmp/x/supervisord"])
    a = ho.analyse(snap(init(), fake, minion_tree(100, 70)))
    assert a.findings == []  # suppressing only: never a reason to kill
    # and a comm that says salt-minion does not make a duplicate
    impostor = P(400, 1, comm="salt-minion", cmdline=["/usr/bin/bash", "/home/u/run.sh"])
    a = ho.analyse(snap(init(), P(50, 1, cmdline=SUPD), minion_tree(100, 50), impostor))
    assert a.findings == []


UNITS = {
    "leaky.service": {"ActiveState": "inactive", "InvocationID": None},
    "cron.service": {"ActiveState": "active", "InvocationID": "c0ffee"},
    "supervisor.service": {"ActiveState": "active", "InvocationID": "5e55"},
}


@pytest.mark.parametrize("cg", [
    "/system.slice/{}",  # as read from cgroup v2 0::
    "/system.slice/{}",
])
def test_unit_leftover_of_inactive_unit(cg):
    left = P(500, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup=cg.format("leaky.service"))
    child = P(501, 500, comm="sleep", pgid=500, cmdline=["sleep", "5"], cgroup=cg.format("leaky.service"))
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup=cg.format("cron.service"))
    a = ho.analyse(snap(init(), left, child, cron), units=UNITS)
    assert codes(a) == [("unit-leftover", "critical", 500)]
    f = a.findings[0]
    assert f["pids"] == [500, 501]
    assert f["provenance"] == {"unit": "leaky.service", "unit_state": "inactive"}


def test_v1_and_v2_cgroup_files_give_same_unit(tmp_path):
    v1 = b"12:pids:/system.slice/leaky.service\n1:name=systemd:/system.slice/leaky.service\n0::/\n"
    v2 = b"0::/system.slice/leaky.service\n"
    assert hp.parse_cgroup(v1) == hp.parse_cgroup(v2) == "/system.slice/leaky.service"


def test_unit_rules_skipped_without_service_manager():
    left = P(500, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup="/system.slice/leaky.service")
    a = ho.analyse(snap(init(), left), units=None)
    assert a.findings == []
    assert a.notes == [ho.NOTE_NO_SYSTEMD]


def test_current_run_of_active_unit_is_not_a_leftover():
    """A double-forked helper of the current run (same invocation) is part of the service."""
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    job = P(81, 1, comm="backup", cmdline=["/usr/local/bin/backup", "--daemon"], cgroup="/system.slice/cron.service",
            environ={"INVOCATION_ID": "c0ffee"})
    noenv = P(82, 1, cmdline=["/usr/local/bin/cleaned-env"], cgroup="/system.slice/cron.service")
    assert ho.analyse(snap(init(), cron, job, noenv), units=UNITS).findings == []


def test_leftover_of_previous_run_of_restarted_unit():
    """KillMode=process + restart: the old run's child keeps the old INVOCATION_ID."""
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    old = P(70, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup="/system.slice/cron.service",
            environ={"INVOCATION_ID": "0ld"})
    a = ho.analyse(snap(init(), cron, old), units=UNITS)
    assert codes(a) == [("unit-leftover", "critical", 70)]
    assert a.findings[0]["provenance"] == {"unit": "cron.service", "unit_state": "previous-run"}
    assert "earlier run of cron.service" in a.findings[0]["summary"]


def test_tree_left_in_supervisor_unit_by_earlier_supervisord_is_a_leak():
    supd = P(90, 1, cmdline=SUPD, cgroup="/system.slice/supervisor.service", starttime=9000,
             environ={"INVOCATION_ID": "5e55"})
    old = P(95, 1, comm="worker", cmdline=["/usr/bin/worker"], cgroup="/system.slice/supervisor.service",
            environ=dict(SUP_ENV, INVOCATION_ID="01d"))
    a = ho.analyse(snap(init(), supd, old), units=UNITS)
    assert codes(a) == [("supervisor-leak", "critical", 95)]
    assert a.findings[0]["provenance"]["unit"] == "supervisor.service"


def test_duplicate_cron_one_managed_by_unit():
    cron = P(80, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service",
             environ={"INVOCATION_ID": "c0ffee"})
    cron_child = P(82, 80, comm="cron", pgid=80, cmdline=["/usr/sbin/cron", "-f"], cgroup="/system.slice/cron.service")
    other = P(600, 1, comm="cron", cmdline=["/usr/sbin/cron", "-f"], cgroup="/user.slice/user-0.slice/session-4.scope")
    a = ho.analyse(snap(init(), cron, cron_child, other), units=UNITS)
    assert codes(a) == [("duplicate-daemon", "critical", 600)]
    assert a.findings[0]["duplicate_of"] == 80


def test_duplicates_without_a_manager_are_warnings_not_reaped():
    a1 = P(700, 1, comm="rsyslogd", cmdline=["/usr/sbin/rsyslogd", "-n"])
    a2 = P(701, 1, comm="rsyslogd", cmdline=["/usr/sbin/rsyslogd", "-n"])
    a = ho.analyse(snap(init(), a1, a2))
    assert [(c, s) for c, s, _ in codes(a)] == [("duplicate-daemon", "warning")] * 2
    assert ho.select(a.findings) == []
    assert ho.summary(a.findings) == {"count": 0, "programs": [], "warnings": 2}


def test_different_configuration_is_not_a_duplicate():
    m1 = P(100, 1, cmdline=["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"])
    m2 = P(200, 1, cmdline=["/usr/bin/python3", "/usr/bin/salt-minion", "--config-dir=/etc/salt-b"])
    assert ho.analyse(snap(init(), m1, m2)).findings == []


def test_session_dbus_is_not_a_system_dbus_duplicate():
    sysbus = P(10, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--system", "--address=systemd:"])
    s1 = P(11, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--session", "--fork"])
    s2 = P(12, 1, comm="dbus-daemon", cmdline=["/usr/bin/dbus-daemon", "--session", "--fork"])
    assert ho.analyse(snap(init(), sysbus, s1, s2)).findings == []


def test_extra_daemon_from_config_and_removal():
    d1 = P(800, 1, cmdline=["/usr/sbin/haproxy", "-f", "/etc/haproxy.cfg"])
    d2 = P(801, 1, cmdline=["/usr/sbin/haproxy", "-f", "/etc/haproxy.cfg"])
    merged = ho.validate_daemons({"haproxy": {"options": ["-f"]}, "cron": None})
    assert "cron" not in merged and merged["haproxy"] == {"options": ["-f"], "require": []}
    a = ho.analyse(snap(init(), d1, d2), daemons=merged)
    assert len(a.findings) == 2


@pytest.mark.parametrize("bad", [
    "salt-minion", ["salt-minion"], {"x": "y"}, {"x": {"options": "-c"}}, {"x": {"options": [1]}},
    {"x": {"bogus": []}}, {"a/b": {}}, {"": {}},
])
def test_validate_daemons_rejects_bad_pillar(bad):
    with pytest.raises(ho.ConfigError):
        ho.validate_daemons(bad)


@pytest.mark.parametrize("argv,prog", [
    (["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"], "salt-minion"),
    (["/opt/saltstack/salt/bin/python3.10", "-E", "-s", "/opt/saltstack/salt/salt-minion"], "salt-minion"),
    (["/usr/bin/python3 /usr/bin/salt-minion KeepAlive"], "salt-minion"),
    (["/usr/sbin/cron", "-f"], "cron"),
    (["sshd: root@pts/0"], "sshd"),
    (["-bash"], "bash"),
    (["/usr/bin/python3", "-m", "http.server"], "python3"),
    (["/bin/sh", "-c", "exec salt-minion"], "sh"),
])
def test_program_of(argv, prog):
    assert ho.program_of(P(5, 1, cmdline=argv)) == prog


def test_self_tree_is_marked_and_pid1_never_planned():
    # the job runs inside the leaked minion (pid 102 is us)
    s = snap(init(), minion_tree(100, 1), P(103, 102, cmdline=MINION[:2] + ["ProcessPayload"]), self_pid=103)
    a = ho.analyse(s)
    f = a.findings[0]
    assert f["contains_self"] is True
    plan = ho.plan(a, ho.select(a.findings))
    assert plan[0]["contains_self"] is True
    assert all(pid != 1 for pid, _ in plan[0]["pids"])


def test_select_match_and_exclude():
    s = snap(init(), minion_tree(100, 1),
             P(500, 1, comm="sleep", cmdline=["sleep", "1"], cgroup="/system.slice/leaky.service"))
    a = ho.analyse(s, units=UNITS)
    assert {f["root"] for f in ho.select(a.findings)} == {100, 500}
    assert {f["root"] for f in ho.select(a.findings, match=["leaky.*"])} == {500}
    assert {f["root"] for f in ho.select(a.findings, exclude=["salt-*"])} == {500}


# ---- the act side on real processes (our own children only) ---------------

def _spawn_sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_signal_refuses_pid_reuse():
    child = _spawn_sleeper()
    try:
        st = hp.parse_stat(hp.read_bytes("/proc/{}/stat".format(child.pid)))[6]
        assert not ho._signal(child.pid, st + 1, signal.SIGTERM)  # wrong start time
        time.sleep(0.1)
        assert child.poll() is None
        assert ho._signal(child.pid, st, signal.SIGTERM)
        assert child.wait(5) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_reap_terms_then_kills_stubborn():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        st = hp.parse_stat(hp.read_bytes("/proc/{}/stat".format(child.pid)))[6]
        # reap() waits for the process to be gone; our Popen must reap the zombie
        import threading
        waiter = threading.Thread(target=child.wait)
        waiter.start()
        out = ho.reap([(child.pid, st)], timeout=0.5)
        waiter.join(5)
        assert out["killed"] == [child.pid]
        assert out["survivors"] == []
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_pid_2_in_a_namespace_is_not_a_kernel_thread():
    """Inside a PID namespace PID 2 is an ordinary process (here: supervisord)."""
    s = snap(init(), P(2, 1, cmdline=SUPD), minion_tree(4, 2), minion_tree(10, 1))
    a = ho.analyse(s)
    assert codes(a) == [("supervisor-leak", "critical", 10)]
    assert a.findings[0]["duplicate_of"] == 4
    kt = P(3, 0, comm="kworker/0:1", cmdline=[], flags=hp.PF_KTHREAD)
    assert kt.kernel_thread and not s.procs[2].kernel_thread


def test_duplicate_rule_reads_only_tree_roots():
    """Workers inside a group (not leaders, not adopted by init) are never daemon roots."""
    lead = P(100, 1, cmdline=["/usr/sbin/rsyslogd", "-n"])
    other = P(200, 1, cmdline=["/usr/sbin/rsyslogd", "-n"])  # adopted by init: a root
    worker = P(301, 300, pgid=300, cmdline=["/usr/sbin/rsyslogd", "-n"])  # a shell's child
    shell = P(300, 1, cmdline=["/bin/sh", "run.sh"])
    a = ho.analyse(snap(init(), lead, other, shell, worker))
    assert sorted(f["root"] for f in a.findings) == [100, 200]
    assert worker._cmdline is not hp._MISSING  # synthetic: set, but never consulted
    assert not ho._tree_root_candidate(worker)
    assert ho._tree_root_candidate(P(5, 1, pgid=4))  # double fork, adopted by init


def test_lazy_stat_fields():
    raw = b"42 (my (odd) name) S 1 40 40 0 -1 4194560 " + b" ".join([b"0"] * 12) + b" 777 0 0\n"
    p = hp.Proc.from_stat(42, None, raw)
    assert (p.ppid, p.pgid, p.sid, p.flags) == (1, 40, 40, 4194560)
    assert p.comm == "my (odd) name" and p.starttime == 777 and p.state == "S"
    assert hp.Proc.from_stat(42, None, b"42 (x) S 1") is None
    assert hp.Proc.from_stat(42, None, b"42 (x) S a b c d e f g") is None


def test_unit_rules_read_cgroups_of_adopted_processes_only():
    """Leftovers and strays lost their parent: only init's children are looked at."""
    deep = P(700, 650, pgid=650, cmdline=["/usr/bin/worker"], cgroup="/system.slice/leaky.service")
    shell = P(650, 600, cmdline=["/bin/sh"], cgroup="/system.slice/cron.service")
    left = P(500, 1, comm="sleep", cmdline=["sleep", "1000"], cgroup="/system.slice/leaky.service")
    s = snap(init(), left, shell, deep)
    assert ho.adopted_by_unit(s.procs.values()) == {"leaky.service": [500]}
    a = ho.analyse(s, units=UNITS)
    assert codes(a) == [("unit-leftover", "critical", 500)]
