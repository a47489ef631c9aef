"""hostcheck_logind on fake /run, /sys/fs/cgroup, /proc and /etc trees (nothing
of this host is read for the verdicts, signalled or restarted): the session
files of systemd 219 and 252, PID reuse, FIFOs, C-escaped values, unreadable
files, 10,000 files, the cron PAM stacks of RHEL and Debian, the purity of
analyse and plan, and the remedy through hostcheck_check.run_remedy with
hostcheck_service and hostcheck_reaper replaced by fakes."""
import collections
import os
import random
import signal
import time

import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_logind as hl
import hostcheck_reaper as hr
import hostcheck_service as hs
from tests.fakes import fake_proc_root, host_access_forbidden, make_proc

BTIME = 1700000000
CLK = os.sysconf("SC_CLK_TCK")
#: a session created 10 s after boot (REALTIME, microseconds)
REALTIME = (BTIME + 10) * 1000000
OPTS = {"pile_warning": 1024, "pile_critical": 4096, "rss_warning_mb": 256, "rss_critical_mb": 1024}

RHEL_CROND = """\
#
# The PAM configuration file for the cron daemon
#
#
# Although no PAM authentication is called, auth modules
# are used for credential setting
auth       include    password-auth
account    required   pam_access.so
account    include    password-auth
session    required   pam_loginuid.so
session    include    password-auth
"""
RHEL_PASSWORD_AUTH = """\
#%PAM-1.0
# This file is auto-generated.
# User changes will be destroyed the next time authconfig is run.
auth        required      pam_env.so
auth        required      pam_faildelay.so delay=2000000
auth        sufficient    pam_unix.so nullok try_first_pass
auth        requisite     pam_succeed_if.so uid >= 1000 quiet_success
auth        required      pam_deny.so

account     required      pam_unix.so
account     sufficient    pam_localuser.so
account     sufficient    pam_succeed_if.so uid < 1000 quiet
account     required      pam_permit.so

password    requisite     pam_pwquality.so try_first_pass local_users_only retry=3 authtok_type=
password    sufficient    pam_unix.so sha512 shadow nullok try_first_pass use_authtok
password    required      pam_deny.so

session     optional      pam_keyinit.so revoke
session     required      pam_limits.so
-session     optional      pam_systemd.so
session     [success=1 default=ignore] pam_succeed_if.so service in crond quiet use_uid
session     required      pam_unix.so
"""
DEBIAN_CRON = """\
# The PAM configuration file for the cron daemon

@include common-auth

# Sets the loginuid process attribute
session    required     pam_loginuid.so

session       required   pam_env.so
session       required   pam_env.so envfile=/etc/default/locale

@include common-account
@include common-session-noninteractive

session    required   pam_limits.so
"""
DEBIAN_NONINTERACTIVE = """\
session	[default=1]			pam_permit.so
session	requisite			pam_deny.so
session	required			pam_permit.so
session	required	pam_unix.so
"""
DEBIAN_COMMON = {
    "common-auth": "auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\tpam_deny.so\n"
                   "auth\trequired\tpam_permit.so\n",
    "common-account": "account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\n"
                      "account\trequisite\tpam_deny.so\naccount\trequired\tpam_permit.so\n",
    "common-session-noninteractive": DEBIAN_NONINTERACTIVE,
}


def session_252(sid, uid=65534, user="nobody", state="closing", service="su-l", leader=53,
                realtime=REALTIME, extra=""):
    return ("# This is private data. Do not parse.\nUID={uid}\nUSER={user}\nACTIVE=1\nIS_DISPLAY=0\n"
            "STATE={state}\nREMOTE=0\nTYPE=unspecified\nORIGINAL_TYPE=unspecified\nCLASS=background\n"
            "SCOPE=session-{sid}.scope\nREMOTE_USER=root\nSERVICE={service}\nPOSITION=0\nLEADER={leader}\n"
            "REALTIME={rt}\nMONOTONIC=4871415870\n{extra}").format(
        uid=uid, user=user, state=state, sid=sid, service=service, leader=leader, rt=realtime, extra=extra)


def session_219(sid, uid=0, user="root", state="closing", service="crond", leader=4567, realtime=REALTIME):
    return ("# This is private data. Do not parse.\nUID={uid}\nUSER={user}\nACTIVE=1\nSTATE={state}\n"
            "REMOTE=0\nKILL_PROCESSES=0\nTYPE=unspecified\nCLASS=user\nSCOPE=session-{sid}.scope\n"
            "SCOPE_JOB=/org/freedesktop/systemd1/job/1234\nFIFO=/run/systemd/sessions/{sid}.ref\n"
            "SERVICE={service}\nLEADER={leader}\nAUDIT={sid}\nREALTIME={rt}\nMONOTONIC=12345678\n").format(
        uid=uid, user=user, state=state, sid=sid, service=service, leader=leader, rt=realtime)


class FakeHost(hc.Host):
    """A Host whose euid is root whoever runs the tests."""

    @staticmethod
    def euid():
        return 0


class Bed:
    """tmp_path/{run,cg,proc,etc}: a systemd host with logind (PID 40) and dbus (PID 41)."""

    def __init__(self, tmp_path, layout="v2", rss_kb=8304):
        self.tmp = tmp_path
        self.run = tmp_path / "run"
        self.sessions = self.run / "systemd" / "sessions"
        self.sessions.mkdir(parents=True)
        (self.run / "systemd" / "system").mkdir()
        (self.run / "systemd" / "users").mkdir()
        self.cg_root = tmp_path / "cg"
        self.cg_root.mkdir()
        if layout == "v2":
            (self.cg_root / "cgroup.controllers").write_text("cpu memory pids\n")
            self.cg = self.cg_root
        else:  # v1 / hybrid: systemd tracks units in the name=systemd hierarchy
            self.cg = self.cg_root / "systemd"
            self.cg.mkdir()
        self.proc = fake_proc_root(tmp_path, btime=BTIME)
        self.etc = tmp_path / "etc"
        (self.etc / "pam.d").mkdir(parents=True)
        make_proc(self.proc, 1, 0, comm="systemd", cmdline=b"/sbin/init\0", exe="/usr/lib/systemd/systemd",
                  starttime=1)
        self.add_proc(40, comm="systemd-logind", exe="/usr/lib/systemd/systemd-logind",
                      cgroup="/system.slice/systemd-logind.service", rss_kb=rss_kb)
        self.add_proc(41, comm="dbus-daemon", exe="/usr/bin/dbus-daemon",
                      cgroup="/system.slice/dbus.service", cmdline=b"/usr/bin/dbus-daemon\0--system\0")
        self.unit_procs("systemd-logind.service", [40])
        self.unit_procs("dbus.service", [41])
        self.user(65534, "nobody")

    def host(self):
        return FakeHost(proc_root=str(self.proc), etc_root=str(self.etc), run_root=str(self.run),
                        cgroup_root=str(self.cg_root))

    def add_proc(self, pid, comm="sleep", exe="/usr/bin/sleep", cgroup="/", starttime=500, cmdline=None,
                 rss_kb=None, uid=0):
        d = make_proc(self.proc, pid, 1, comm=comm, exe=exe, starttime=starttime, uid=uid,
                      cmdline=cmdline or (exe.encode() + b"\0"), cgroup="0::{}\n".format(cgroup).encode())
        if rss_kb is not None:
            (d / "status").write_text("Name:\t{}\nUid:\t0\t0\t0\t0\nVmRSS:\t  {} kB\n".format(comm, rss_kb))
        return d

    def unit_procs(self, unit, pids):
        d = self.cg / "system.slice" / unit
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join("{}\n".format(p) for p in pids))

    def scope(self, uid, sid, pids=()):
        d = self.cg / "user.slice" / "user-{}.slice".format(uid) / "session-{}.scope".format(sid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join("{}\n".format(p) for p in pids))
        return d

    def user(self, uid, name):
        (self.run / "systemd" / "users" / str(uid)).write_text(
            "# This is private data. Do not parse.\nNAME={}\nSTATE=active\n".format(name))

    def session(self, sid, text):
        (self.sessions / sid).write_text(text)

    def closing(self, sid, leftover, service="su-l", uid=65534, leader=9000 + 1):
        """A closing session: leader gone, ``leftover`` (a new process) in its scope."""
        self.add_proc(leftover, cgroup="/user.slice/user-{}.slice/session-{}.scope".format(uid, sid),
                      starttime=700, uid=uid)
        self.scope(uid, sid, [leftover])
        self.session(sid, session_252(sid, uid=uid, service=service, leader=leader))

    def stale(self, sid, leader=9999, service="crond", uid=65534):
        """A stale file of a user logind tracks (``uid`` has a users file)."""
        self.session(sid, session_219(sid, service=service, leader=leader, uid=uid,
                                      user="nobody" if uid == 65534 else "u{}".format(uid)))

    def pam_rhel(self):
        (self.etc / "pam.d" / "crond").write_text(RHEL_CROND)
        (self.etc / "pam.d" / "password-auth-ac").write_text(RHEL_PASSWORD_AUTH)
        os.symlink("password-auth-ac", self.etc / "pam.d" / "password-auth")

    def pam_debian(self, noninteractive=DEBIAN_NONINTERACTIVE + "session\toptional\tpam_systemd.so\n"):
        (self.etc / "pam.d" / "cron").write_text(DEBIAN_CRON)
        for name, text in dict(DEBIAN_COMMON, **{"common-session-noninteractive": noninteractive}).items():
            (self.etc / "pam.d" / name).write_text(text)


@pytest.fixture
def bed(tmp_path):
    return Bed(tmp_path)


def diag(bed, quick=False, opts=None):
    return hc.diagnose(hl, bed.host(), dict(OPTS, **(opts or {})), quick=quick)


def codes(d):
    return sorted((f["code"], f["severity"]) for f in d.findings)


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the run) when something blocks, e.g. on a FIFO."""
    def boom(signum, frame):
        raise TimeoutError("blocked: a FIFO was opened in a blocking way")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ---- session files ----------------------------------------------------------


def test_c_escaped_and_quoted_values():
    assert hl.cunescape(b"cron\\x2djob") == "cron-job"
    assert hl.cunescape(b"caf\\303\\251") == "caf\u00e9"
    assert hl.cunescape(b"a\\tb\\\\c\\nd") == "a\tb\\c\nd"
    assert hl.cunescape(b'"host name \\"x\\""') == 'host name "x"'
    assert hl.cunescape(b"'lit\\eral'") == "lit\\eral"
    assert hl.cunescape(b"\\u00e9\\U0001F600") == "\u00e9\U0001F600"
    assert hl.cunescape(b"trailing\\") == "trailing\\"
    assert hl.cunescape(b"\\q") == "q"
    rec = hl.parse_session("c7", session_252("c7", service="su\\x2dl", user="\\303\\251ric").encode())
    assert (rec["service"], rec["user"], rec["leader"], rec["uid"]) == ("su-l", "\u00e9ric", 53, 65534)


def test_219_and_252_session_files_parse_alike():
    a = hl.parse_session("123", session_219("123").encode())
    b = hl.parse_session("c1", session_252("c1").encode())
    for rec, sid, service in ((a, "123", "crond"), (b, "c1", "su-l")):
        assert rec["id"] == sid and hl.scope_of(rec) == "session-{}.scope".format(sid)
        assert rec["state"] == "closing" and rec["service"] == service and rec["realtime"] == REALTIME
    # a file without SCOPE still names logind's scope
    assert hl.parse_session("9", b"STATE=active\nLEADER=5\n")["state"] == "active"  # no comment line
    assert hl.parse_session("9", b"STATE=active\nLEADER=5\n")["leader"] == 5
    assert hl.parse_session("9", b"LEADER=garbage\n")["leader"] is None


def test_the_fast_parser_gives_what_the_general_one_gives():
    now = REALTIME
    raws = [("c{}".format(i), session_252("c{}".format(i), leader=100 + i, realtime=now + i).encode())
            for i in range(40)]
    raws += [(str(i), session_219(str(i), leader=200 + i, service="crond" if i % 2 else "sshd").encode())
             for i in range(40)]
    raws += [
        ("e1", session_252("e1", service="cron\\x2djob", user='"quoted user"').encode()),  # escapes
        ("n1", session_252("n1").replace("SERVICE=su-l\n", "").encode()),  # no SERVICE: general parser
        ("o1", b"STATE=active\nUID=5\nLEADER=7\n"),  # no comment line, other order
        ("x1", session_252("x1").replace("LEADER=53", "LEADER=").encode()),  # empty number
        ("u1", session_252("u1").replace("LEADER=53", "LEADER=5_3").encode()),  # int() takes it, the layouts do not
        ("u2", session_252("u2").replace("LEADER=53", "LEADER=5x").encode()),  # not a number
        ("v1", session_219("v1").replace("UID=0\n", "UID=065534\n").encode()),  # a leading zero
        ("w1", session_252("w1", uid=0).encode()),  # root
        ("l1", session_252("l1", leader="1" * 5000).encode()),  # more digits than int() converts: None
        ("l2", session_219("l2", realtime=10 ** 19).encode()),  # 20 digits: the general parser
        ("d1", session_252("d1") .encode() + b"STATE=online\n"),  # a repeated key: the last one wins
        ("t1", session_219("t1").encode() + b"EXTRA=1\n"),  # an unknown trailing key
        ("z1", session_252("z1").replace("REMOTE=0", "REMOTE=a\0b").encode()),  # a NUL: no bulk pass
        # other lines are matched by the start of their key: a wanted key in their place is not one of them
        ("r1", session_252("r1").replace("REMOTE=0", "REALTIME=7").encode()),
        ("r2", session_219("r2").replace("ACTIVE=1", "STATE=online").encode()),
        ("r3", session_252("r3").replace("POSITION=0", "LEADER=9").encode()),
        ("r4", session_219("r4").replace("KILL_PROCESSES=0", "USER=mallory").encode()),
        ("r5", session_219("r5").replace("SCOPE=session-r5.scope", "STATE=online").encode()),
        ("r6", session_252("r6").replace("SCOPE=session-r6.scope", "STATE=online").encode()),
        # ... while an unknown key, or no key at all, starting like the learned one is (both parsers skip it)
        ("k1", session_252("k1").replace("REMOTE=0", "REMOTELY=1").encode()),
        ("k2", session_219("k2").replace("ACTIVE=1", "A line without an equals sign").encode()),
    ]
    expected = {name: hl.parse_session(name, raw) for name, raw in raws}
    assert {r["id"]: r for r in hl.parse_sessions(raws)} == expected
    assert expected["e1"]["service"] == "cron-job" and expected["e1"]["user"] == "quoted user"
    assert expected["n1"]["service"] is None and expected["d1"]["state"] == "online"
    assert (expected["r1"]["realtime"], expected["r2"]["state"], expected["r3"]["leader"], expected["r4"]["user"]) == (
        REALTIME, "closing", 53, "mallory")  # the last line of a key wins
    assert expected["r5"]["state"] == expected["r6"]["state"] == "online"
    for odd in ("r1", "r2", "r3", "r4", "r5", "r6", "k1", "k2"):  # alone among files that all fit
        batch = raws[:10] + raws[40:50] + [r for r in raws if r[0] == odd]
        assert {r["id"]: r for r in hl.parse_sessions(batch)} == {name: expected[name] for name, _ in batch}
    # a file without its last newline before one that fits, a NUL in another: every row stays its file's
    for batch in ([("a1", b"#x"), raws[0], ("z2", b"junk\0junk\n"), raws[40]],
                  [raws[1], ("a2", session_219("a2").encode().rstrip(b"\n")), raws[41], ("z3", b"\0")]):
        want = {name: hl.parse_session(name, raw) for name, raw in batch}
        assert {r["id"]: r for r in hl.parse_sessions(batch)} == want
    assert hl.parse_session("a2", session_219("a2").encode().rstrip(b"\n"))["realtime"] == REALTIME
    # an odd number in a batch whose other files all fit a layout: found by the check of the whole column
    assert (expected["l1"]["leader"], expected["l2"]["realtime"]) == (None, 10 ** 19)
    extra = [("v2", session_252("v2", leader=0).encode()), ("v3", session_252("v3", leader="00").encode()),
             ("v4", session_219("v4", leader=100).encode()), ("v5", session_219("v5", leader="0100").encode())]
    known = dict(expected, **{name: hl.parse_session(name, raw) for name, raw in extra})
    assert [known[n]["leader"] for n in ("v2", "v3", "v4", "v5")] == [0, 0, 100, 100]
    for odd in ("u1", "u2", "l1", "l2", "v1", "x1", "v2", "v3", "v4", "v5"):
        batch = raws[:10] + [r for r in raws + extra if r[0] == odd]
        assert {r["id"]: r for r in hl.parse_sessions(batch)} == {name: known[name] for name, _ in batch}
        table = hl.parse_into(hl.Sessions(), [name for name, _ in batch], [raw for _, raw in batch])
        if known[odd]["leader"] is not None:  # its leader PID found by the digits as stored (none with a 0 first)
            assert table.ids.index(odd) in table.matching("leader", [known[odd]["leader"]])
    assert (expected["u1"]["leader"], expected["u2"]["leader"], expected["v1"]["uid"], expected["w1"]["uid"]) == (
        53, None, 65534, 0)
    # in batches, with the layouts learned once
    monkey = hl.BATCH
    try:
        hl.BATCH = 7
        state = ({}, [])
        got = [r for start in range(0, len(raws), 7) for r in hl.parse_sessions(raws[start:start + 7], state)]
    finally:
        hl.BATCH = monkey
    assert {r["id"]: r for r in got} == expected and len(state[1]) >= 2
    # the columns counted as they are added (bulk rows, files parsed one by one, in batches) count what they hold
    table, state = hl.Sessions(), ({}, [])
    for start in range(0, len(raws), 7):
        batch = raws[start:start + 7]
        hl.parse_into(table, [name for name, _ in batch], [raw for _, raw in batch], state)
    for name in hl.COUNTED:
        assert table.tally(name) == collections.Counter(getattr(table, name)), name
        assert table.counts(name) == collections.Counter(r[name] for r in expected.values()), name
    table.tally("state")[b"closing"] = 0  # a copy: the counts kept are not changed by a caller
    assert table.tally("state") == collections.Counter(table.state)


def test_files_of_the_learned_layouts_all_go_through_the_bulk_pass(monkeypatch):
    """systemd 252's and 219's files mixed: where one layout's run of other
    lines starts the other's (ACTIVE; ACTIVE, IS_DISPLAY), the trie takes
    the longer one first, so no file needs the general parser."""
    raws = [("c{}".format(i), session_252("c{}".format(i), leader=100 + i).encode()) if i % 3 else
            (str(i), session_219(str(i), leader=200 + i).encode()) for i in range(60)]
    expected = {name: hl.parse_session(name, raw) for name, raw in raws}
    calls, real = [], hl.parse_session
    monkeypatch.setattr(hl, "parse_session", lambda *args: calls.append(args[0]) or real(*args))
    assert {r["id"]: r for r in hl.parse_sessions(raws)} == expected and calls == []
    bulk = hl.union_pattern((tuple(hl.layout_keys(raws[0][1])), tuple(hl.layout_keys(raws[1][1]))))[0].__self__.pattern
    assert b"A[^\\n]*+\\n(?:I" in bulk or b"A[^\\n]*\\n(?:I" in bulk  # IS_DISPLAY: a branch after the ACTIVE line both have


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_each_kind_is_found_on_252_and_219_trees(tmp_path, layout):
    bed = Bed(tmp_path, layout=layout)
    bed.pam_debian(noninteractive=DEBIAN_NONINTERACTIVE)  # clean
    # a live session: leader 300 started before the session, its scope holds it
    bed.add_proc(300, comm="bash", exe="/usr/bin/bash", cgroup="/user.slice/user-0.slice/session-2.scope")
    bed.scope(0, "2", [300])
    bed.session("2", session_252("2", uid=0, user="root", state="active", service="sshd", leader=300))
    bed.closing("c1", 500)
    bed.closing("c2", 501)
    bed.stale("1001")
    bed.stale("1002", leader=300)  # PID 300 exists, but this session's scope does not... leader alive
    d = diag(bed)
    assert codes(d) == [("closing-leftovers", "warning"), ("stale-session-files", "warning")]
    (left,) = [f for f in d.findings if f["code"] == "closing-leftovers"]
    assert (left["service"], left["sessions"], left["pids"], left["users"]) == ("su-l", 2, [500, 501], ["nobody"])
    assert left["programs"] == {"sleep": 2}
    (stale,) = [f for f in d.findings if f["code"] == "stale-session-files"]
    assert stale["session_ids"] == ["1001"] and stale["reasons"] == {"leader gone": 1}
    assert hl.summarise(d) == {"sessions": 5, "closing": 2, "stale": 1, "rss_mb": 8.1, "count": 2}
    assert d.details["by_state"] == {"closing": 4, "active": 1}


def test_pid_reuse_makes_a_session_stale(bed):
    # leader PID 300 exists but started (starttime 100000 ticks) long after the session
    bed.add_proc(300, comm="nginx", exe="/usr/sbin/nginx", starttime=100000 * CLK // 100)
    bed.stale("77", leader=300)
    # a leader that started before the session is alive: not stale
    bed.add_proc(301, comm="crond", exe="/usr/sbin/crond", starttime=200)
    bed.stale("78", leader=301)
    d = diag(bed)
    (stale,) = [f for f in d.findings if f["code"] == "stale-session-files"]
    assert stale["session_ids"] == ["77"] and stale["reasons"] == {"leader PID reused": 1}


def test_reused_leader_with_processes_in_its_scope_is_closing_not_live(bed):
    bed.add_proc(300, comm="nginx", exe="/usr/sbin/nginx", starttime=100000 * CLK // 100)
    bed.closing("c3", 510, leader=300)
    d = diag(bed)
    assert codes(d) == [("closing-leftovers", "warning")]


def test_stale_files_of_users_logind_does_not_track_are_left_to_a_person(bed, monkeypatch):
    """logind 252 skips them at start ("User of session X not known") and
    never removes their files, so a restart is not planned for them."""
    fakes = Fakes(bed, monkeypatch)
    bed.stale("1001", uid=0)
    bed.stale("1002", uid=0)
    d = diag(bed)
    (f,) = d.findings
    assert (f["stale"], f["orphaned"], f["orphaned_ids"]) == (2, 2, ["1001", "1002"])
    assert "logind does not track (UID 0)" in f["summary"] and "delete them by hand" in f["summary"]
    ret = remedy(bed, {})
    assert ret["result"] is True and ret["changes"] == {} and fakes.restarts == []
    assert "rm /run/systemd/sessions/1001 /run/systemd/sessions/1002" in ret["comment"]
    bed.stale("1003")  # one of a tracked user: the restart is for that one only
    ret = remedy(bed, {})
    assert ret["result"] is True and ret["changes"]["stale_files"] == {"old": 1, "new": 0}, ret
    assert fakes.restarts == [["systemd-logind.service"]]


def test_young_sessions_are_never_stale(bed):
    now = int(time.time() * 1e6)
    bed.session("c9", session_252("c9", leader=9999, realtime=now))
    assert diag(bed).findings == []


def test_after_finds_every_time_after_the_moment_compared_as_bytes():
    table = hl.Sessions()
    cells = [b"1700000000000000", b"9", b"1700000000000001", b"17000000000000000", b"999999999999999"]
    table.add([str(i) for i in range(len(cells))], [[b"0"] * len(cells), [b"u"] * len(cells), [b"closing"] * len(cells),
                                                    [b"tty"] * len(cells), [b"su"] * len(cells),
                                                    [b"1"] * len(cells), cells])
    for moment in (1700000000000000.5, 1700000000000000, 1699999999999999, 17000000000000000, 10 ** 18, 5):
        want = {i for i, c in enumerate(cells) if int(c) > moment}
        for idx in ([0, 1, 2, 3, 4], [0, 1, 4], [1, 4], [0], []):
            got = hl._after(table, idx, moment)  # pylint: disable=protected-access
            assert want.intersection(idx) <= set(got) <= set(idx), (moment, idx, got)
    # the usual case, all older: nothing; a cell parsed one by one (a number, None): all of them
    assert hl._after(table, [0, 2], 1700000000000001) == []  # pylint: disable=protected-access
    table.realtime[1] = None
    assert hl._after(table, [0, 1], 10 ** 18) == [0, 1]  # pylint: disable=protected-access


def test_tally_counts_like_a_counter_whatever_the_sample_sees():
    """tally() counts in the joined cells the values a sample saw; a value
    the sample missed, an empty value or a cell parsed one by one sends it
    to a Counter: the answer is a Counter's either way."""
    rng = random.Random(7)
    values = [b"closing", b"active", b"online", b"su\\x2dl", b"closing2", b"c", b"", b"losing"]
    for n in (0, 1, 64, 65, 200, 1000):
        for kinds in (1, 2, 3, len(values)):
            cells = [rng.choice(values[:kinds]) for _ in range(n)]
            assert hl.tally(cells) == collections.Counter(cells), (n, kinds)
            if n > 64:
                cells[rng.randrange(n)] = b"rare"  # most likely outside the sample
                assert hl.tally(cells) == collections.Counter(cells)
                cells[rng.randrange(n)] = None
                assert hl.tally(cells) == collections.Counter(cells)
    many = [b"v%d" % (i % 40) for i in range(4000)] + [7, None, b""]
    assert hl.tally(many) == collections.Counter(many)
    # a prefix or suffix of another value is not counted as it
    cells = [b"closing"] * 100 + [b"losing"] * 50 + [b"closin"] * 25
    assert hl.tally(cells) == {b"closing": 100, b"losing": 50, b"closin": 25}


def test_alive_leaders_agree_with_leader_state_at_the_boundary():
    """The bulk test (a least REALTIME per leader, compared at C level)
    gives what leader_state() gives one by one, also within a microsecond
    of the boundary, for starts unknown, whole, fractional and huge."""
    starts = [None, 1700000000.0, 1700000000.123456, 1700000000.9999999, 1e-7, 0.0, 1795842801.578495]
    leaders = {100 + k: started for k, started in enumerate(starts)}
    pids, times = [], []
    for pid, started in leaders.items():
        base = int(((started or 0.0) - hl.START_SLACK) * 1e6)
        for rt in list(range(base - 3, base + 4)) + [0, 1, 10 ** 17]:
            pids.append(pid)
            times.append(rt)
    n = len(pids)
    for stored in (lambda v: v, lambda v: b"%d" % v):  # parsed one by one (ints), in bulk (digits)
        table = hl.Sessions()
        table.add([str(i) for i in range(n)], [[b"0"] * n, [b"u"] * n, [b"closing"] * n, [b"tty"] * n, [b"su"] * n,
                                               [stored(p) for p in pids], [stored(t) for t in times]])
        want = [i for i in range(n) if hl.leader_state({"leader": pids[i], "realtime": times[i]}, leaders) == "alive"]
        assert hl.alive_leaders(table, leaders) == want
        assert 0 < len(want) < n
    # a file without REALTIME, or a start no integer fits: one by one, same answer
    table.realtime[0] = None
    assert hl.alive_leaders(table, leaders)[:1] == [0]
    assert hl._first_alive(float("nan")) is None  # pylint: disable=protected-access


def test_stale_counts_by_service_leave_the_other_sessions_out(bed):
    """The stale finding's counts by service (the pile's total minus the
    other sessions', when the stale files are the bigger part) hold only
    the stale files."""
    for n, service in enumerate(("crond", "crond", "crond", "sshd")):
        bed.stale(str(1001 + n), service=service)
    bed.closing("c1", 500, service="crond")
    got = diag(bed)
    (stale,) = [f for f in got.findings if f["code"] == "stale-session-files"]
    assert stale["by_service"] == {"crond": 3, "sshd": 1}
    assert got.details["by_service"] == {"crond": 4, "sshd": 1}
    bed.closing("c2", 501, service="sshd")  # now fewer stale files than others: counted directly
    bed.closing("c3", 502, service="sshd")
    bed.closing("c4", 503, service="sshd")
    got = diag(bed)
    (stale,) = [f for f in got.findings if f["code"] == "stale-session-files"]
    assert stale["by_service"] == {"crond": 3, "sshd": 1}


def test_a_zombie_leader_is_a_gone_leader(bed):
    """A leader that exited but was not reaped yet (state Z) leads nothing:
    its closing session's leftovers are found, its scope-less file is stale."""
    d = bed.add_proc(400, comm="su", exe="/usr/bin/su")
    stat = (d / "stat").read_text().replace(" S 1 ", " Z 1 ", 1)
    (d / "stat").write_text(stat)
    bed.closing("c1", 500, leader=400)
    bed.stale("1001", leader=400)
    bed.add_proc(300, comm="bash", exe="/usr/bin/bash", cgroup="/user.slice/user-0.slice/session-2.scope")
    bed.scope(0, "2", [300])
    bed.session("2", session_252("2", uid=0, user="root", state="active", service="sshd", leader=300))
    got = diag(bed)
    assert (got.details["closing"], got.details["stale"], got.details["leftovers"]) == (1, 1, 1)
    assert got.facts.leaders == {300: got.facts.leaders[300]} and 400 not in got.facts.leaders


def test_only_the_leaders_that_run_are_read_from_proc(bed, monkeypatch):
    """Without a snapshot taken by another check, ``/proc`` is listed and
    only the leaders found there (and the ancestries) are read; the verdicts
    are those of a full snapshot. A leader listed but gone before its
    ``stat`` is read leads nothing."""
    bed.add_proc(301, comm="crond", exe="/usr/sbin/crond", starttime=200)
    bed.stale("78", leader=301)  # alive: not stale
    bed.add_proc(300, comm="nginx", exe="/usr/sbin/nginx", starttime=100000 * CLK // 100)
    bed.stale("77", leader=300)  # reused
    bed.closing("c1", 500)
    (bed.proc / "302").mkdir()  # listed, but gone before its stat is read
    bed.stale("79", leader=302)
    for pid in range(600, 640):  # processes no session names
        bed.add_proc(pid)
    real_open, stats = os.open, []

    def counting(path, *args, **kwargs):
        if str(path).endswith("/stat"):
            stats.append(os.path.basename(os.path.dirname(str(path))))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    got = diag(bed)
    read = set(stats)
    assert {"300", "301", "500"} <= read and not read & {str(p) for p in range(600, 640)} and "40" not in read
    host = bed.host()
    host.snapshot()  # another check took the full one first
    full = hc.diagnose(hl, host, dict(OPTS))
    assert got.facts.leaders == full.facts.leaders and set(got.facts.leaders) == {300, 301}
    assert got.findings == full.findings and got.details == full.details
    (stale,) = [f for f in got.findings if f["code"] == "stale-session-files"]
    assert stale["session_ids"] == ["77", "79"]
    assert stale["reasons"] == {"leader gone": 1, "leader PID reused": 1}


def test_fifos_are_never_opened(bed, no_hang, monkeypatch):
    bed.closing("c1", 500)
    os.mkfifo(bed.sessions / "c1.ref")
    os.mkfifo(bed.sessions / "1001.ref")
    os.mkfifo(bed.sessions / "55")  # a FIFO named like a session
    os.symlink("/etc/shadow", bed.sessions / "56")  # never followed
    (bed.sessions / ".#c1AbCdEf").write_text("half written")  # logind's temporary file
    real_open = os.open

    def guarded(path, *args, **kwargs):
        name = os.path.basename(str(path))
        assert not name.endswith(".ref") and name not in ("55", "56"), "opened " + str(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    for quick in (False, True):
        d = diag(bed, quick=quick)
        assert d.details["sessions"] == 1 and d.facts.refs == 2
        assert sorted(n for n, _ in d.facts.odd) == ["55", "56"]
        assert any("55 (not a regular file" in n for n in d.notes)


def _open_fds():
    return set(map(int, os.listdir("/proc/self/fd")))


def test_files_read_a_window_at_a_time_whatever_replaces_them_after_the_listing(tmp_path):
    """Files read in windows of OPEN_AT_ONCE: a directory, a FIFO, an empty
    file and a vanished name among them (put there after the listing) send
    their window to one-by-one reads from each file's start; the others'
    bytes line up with their names, and no descriptor is left open."""
    names = ["s{:03d}".format(i) for i in range(hl.OPEN_AT_ONCE * 2 + 7)]
    for name in names:
        (tmp_path / name).write_bytes(b"UID=0\nLEADER=" + name.encode() + b"\n")
    odd_at = {3: "dir", hl.OPEN_AT_ONCE + 5: "fifo", hl.OPEN_AT_ONCE + 9: "empty", 2 * hl.OPEN_AT_ONCE + 1: "gone"}
    for i, kind in odd_at.items():
        path = tmp_path / names[i]
        path.unlink()
        if kind == "dir":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "empty":
            path.write_bytes(b"")
    before = _open_fds()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got, raws, odd = hl._read_files(names, fd)
    finally:
        os.close(fd)
    assert _open_fds() == before
    gone = {names[i] for i, kind in odd_at.items() if kind in ("dir", "fifo", "gone")}
    assert got == [n for n in names if n not in gone]
    assert raws == [b"" if n == names[hl.OPEN_AT_ONCE + 9] else b"UID=0\nLEADER=" + n.encode() + b"\n" for n in got]
    why = dict(odd)
    assert sorted(why) == sorted([names[3], names[hl.OPEN_AT_ONCE + 5]])
    assert why[names[3]].startswith("unreadable") and why[names[hl.OPEN_AT_ONCE + 5]].startswith("not a regular")


def test_descriptors_are_closed_together_only_when_nothing_else_is_between(monkeypatch):
    calls, real = [], os.closerange
    monkeypatch.setattr(os, "closerange", lambda low, high: calls.append((low, high)) or real(low, high))
    base = next(n for n in range(600, 1000, 8) if not _open_fds() & set(range(n, n + 6)))
    src = os.open(os.devnull, os.O_RDONLY)
    try:
        fds = [os.dup2(src, base + i) for i in range(6)]
        # base + 2 and base + 4 are another's: a run closed at once, the lone ones one by one
        hl._close_all([base + 5, base + 3, base + 1, base])
        assert calls == [(base, base + 2)] and {base + 2, base + 4} <= _open_fds()
        assert not {base, base + 1, base + 3, base + 5} & _open_fds()
        for i in (0, 1, 3, 5):
            os.dup2(src, base + i)
        hl._close_all([base + 1, base, base + 3, base + 2])  # every number from base to base + 3: at once
        assert calls[1:] == [(base, base + 4)] and not set(range(base, base + 4)) & _open_fds()
        assert {base + 4, base + 5} <= _open_fds()  # the next ones are not in the range
    finally:
        for fd in [src] + list(range(base, base + 6)):
            try:
                os.close(fd)
            except OSError:
                pass
    assert fds == list(range(base, base + 6))


def test_scopes_pids_read_a_window_at_a_time_gone_empty_big_or_unreadable(tmp_path):
    """read_procs_at: the cgroup.procs of many scopes in order, b"" for a
    scope that is gone or whose cgroup.procs cannot be read (a directory:
    its window read again one by one), an empty one, one of 70,000 bytes
    read to its end; no descriptor left open."""
    n = hl.OPEN_AT_ONCE + 20
    names = ["session-{}.scope".format(i) for i in range(n)]
    want = []
    for i, name in enumerate(names):
        if i == 5:  # gone
            want.append(b"")
            continue
        (tmp_path / name).mkdir()
        if i == 7:
            (tmp_path / name / "cgroup.procs").mkdir()  # EISDIR on read
            want.append(b"")
            continue
        raw = b"" if i == 9 else (b"".join(b"%d\n" % p for p in range(100000, 110000)) if i == n - 3 else b"%d\n" % i)
        (tmp_path / name / "cgroup.procs").write_bytes(raw)
        want.append(raw)
    assert len(want[n - 3]) > 65536
    before = _open_fds()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = hl.read_procs_at(names, fd)
    finally:
        os.close(fd)
    assert _open_fds() == before
    assert got == want
    assert hl._pids(got[n - 3]) == list(range(100000, 110000))


def test_any_full_asks_the_groups_then_each():
    limit = hl.FILE_LIMIT
    assert not hl._any_full([]) and not hl._any_full([b"x" * (limit - 1)])
    assert hl._any_full([b"x" * limit]) and hl._any_full([b"a"] * 100 + [b"x" * limit] + [b"b"] * 40)
    assert not hl._any_full([b"x" * (limit // 8)] * 40)  # the groups' sums reach the limit, no file does


def test_unreadable_and_oversized_files_are_noted_not_fatal(bed, monkeypatch):
    bed.closing("c1", 500)
    bed.stale("1001")
    bed.session("1002", "X" * (hl.FILE_LIMIT + 10))
    real_open = os.open

    def denied(path, *args, **kwargs):
        if os.path.basename(str(path)) == "1001":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    d = diag(bed)
    odd = dict(d.facts.odd)
    assert odd["1001"].startswith("unreadable") and "larger than" in odd["1002"]
    assert codes(d) == [("closing-leftovers", "warning")] and d.details["sessions"] == 1


def test_no_systemd_or_no_logind_is_a_note_without_findings(tmp_path):
    bed = Bed(tmp_path)
    bed.closing("c1", 500)
    (bed.run / "systemd" / "system").rmdir()
    d = diag(bed)
    assert d.findings == [] and d.notes == [hl.NOTE_NO_SYSTEMD]
    assert hl.summarise(d) == {"sessions": 0, "closing": 0, "stale": 0, "rss_mb": None, "count": 0}
    (bed.run / "systemd" / "system").mkdir()
    for f in bed.sessions.iterdir():
        f.unlink()
    bed.sessions.rmdir()
    bed.unit_procs("systemd-logind.service", [])
    d = diag(bed)
    assert d.findings == [] and d.notes == [hl.NOTE_NO_LOGIND]
    ret = hc.run_remedy(hl, "x", {"cron_pam": "remove"}, host=bed.host())
    assert ret["result"] is True and ret["changes"] == {} and hl.NOTE_NO_LOGIND in ret["comment"]


def test_pileup_thresholds_and_logind_memory(bed):
    for i in range(30):
        bed.stale(str(2000 + i), service="crond" if i % 3 else "sshd")
    (bed.proc / "40" / "status").write_text("Name:\tsystemd-logind\nVmRSS:\t6291456 kB\n")
    d = diag(bed, opts={"pile_warning": 10, "pile_critical": 25, "rss_warning_mb": 100, "rss_critical_mb": 5000})
    assert codes(d) == [("logind-memory", "critical"), ("session-pileup", "critical"),
                        ("stale-session-files", "warning")]
    pile = d.findings[0] if d.findings[0]["code"] == "session-pileup" else d.findings[1]
    assert pile["by_service"] == {"crond": 20, "sshd": 10} and pile["by_state"] == {"closing": 30}
    assert "logind refuses new sessions at 8192" in pile["summary"]
    assert hl.summarise(d)["rss_mb"] == 6144.0
    d = diag(bed, opts={"pile_warning": 10, "pile_critical": 100})
    assert ("session-pileup", "warning") in codes(d)


def test_options_are_validated():
    assert hc.options(hl)["pile_critical"] == 4096
    with pytest.raises(hcfg.ConfigError, match="pile_warning"):
        hc.options(hl, {"pile_warning": "many"})
    with pytest.raises(hcfg.ConfigError, match="rss_critical_mb"):
        hc.options(hl, {"rss_critical_mb": -1})
    assert hc.options(hl, get=lambda key: 50 if key == "hostcheck:logind:pile_warning" else None)[
        "pile_warning"] == 50


def test_ten_thousand_files(bed):
    bed.pam_rhel()
    for i in range(10000):
        bed.stale(str(100000 + i))
    for i in range(20):
        bed.closing("c{}".format(i), 600 + i)
    t = time.process_time()
    d = diag(bed)
    spent = time.process_time() - t
    assert d.details["sessions"] == 10020 and d.details["stale"] == 10000 and d.details["closing"] == 20
    assert ("session-pileup", "critical") in codes(d)
    (pam,) = [f for f in d.findings if f["code"] == "cron-pam-systemd"]
    assert pam["severity"] == "critical" and pam["cron_sessions"] == 10000  # the pile comes from cron
    assert spent < 5, spent
    # the grain only counts: no session file is parsed
    q = diag(bed, quick=True)
    assert hl.summarise(q) == {"sessions": 10020, "closing": None, "stale": 10000, "rss_mb": 8.1,
                               "count": len(q.findings)}
    assert q.facts.parsed is False and q.facts.sessions == []


def test_grain_parses_a_few_files(bed):
    bed.closing("c1", 500)
    bed.stale("1001")
    assert hl.summarise(diag(bed, quick=True)) == {"sessions": 2, "closing": 1, "stale": 1, "rss_mb": 8.1,
                                                   "count": 2}


# ---- rule 6: logind, dbus, PID 1 on deleted binaries -------------------------


def _maps(path):
    return "55d4a0000000-55d4a0010000 r-xp 00000000 08:01 1234 {}\n".format(path)


def test_deleted_binaries_of_the_bus_peers(bed):
    os.unlink(bed.proc / "41" / "exe")
    os.symlink("/usr/bin/dbus-daemon (deleted)", bed.proc / "41" / "exe")
    (bed.proc / "41" / "maps").write_text(_maps("/usr/bin/dbus-daemon (deleted)"))
    os.symlink(str(bed.tmp / "rootfs"), bed.proc / "41" / "root")
    (bed.tmp / "rootfs").mkdir()
    (bed.proc / "40" / "maps").write_text(_maps("/usr/lib/systemd/systemd-logind"))  # current: no root link
    d = diag(bed)
    (f,) = d.findings
    assert (f["code"], f["severity"], f["pids"]) == ("deleted-dbus", "critical", [41])
    assert "reboot" in f["summary"] and f["files"] == ["deleted exe /usr/bin/dbus-daemon"]
    q = diag(bed, quick=True)
    assert [x["code"] for x in q.findings] == ["deleted-dbus"]
    # the remedy refuses to act and says reboot
    bed.stale("1001")
    ret = hc.run_remedy(hl, "x", {}, host=bed.host())
    assert ret["result"] is False and ret["changes"] == {} and "reboot" in ret["comment"]
    assert (bed.sessions / "1001").exists()


def test_quick_rule6_for_logind_and_init(bed):
    for pid, exe in ((40, "/usr/lib/systemd/systemd-logind (deleted)"), (1, "/usr/lib/systemd/systemd (deleted)")):
        os.unlink(bed.proc / str(pid) / "exe")
        os.symlink(exe, bed.proc / str(pid) / "exe")
    d = diag(bed, quick=True)
    assert codes(d) == [("deleted-init", "warning"), ("deleted-logind", "warning")]


# ---- rule 5: cron's PAM stack ------------------------------------------------


def test_rhel_crond_through_password_auth(bed):
    bed.pam_rhel()
    d = diag(bed)
    (f,) = d.findings
    assert (f["code"], f["severity"], f["service"]) == ("cron-pam-systemd", "warning", "crond")
    pam = str(bed.etc / "pam.d")
    assert f["chains"] == [["{}/crond:11: session    include    password-auth".format(pam),
                            "{}/password-auth:21: -session     optional      pam_systemd.so".format(pam)]]


def test_debian_cron_through_at_include(bed):
    bed.pam_debian()
    (f,) = diag(bed).findings
    assert f["service"] == "cron" and f["chains"][0][0].endswith("cron:12: @include common-session-noninteractive")


def test_debian_default_cron_is_clean(bed):
    bed.pam_debian(noninteractive=DEBIAN_NONINTERACTIVE)
    assert diag(bed).findings == []


def test_auth_include_does_not_bring_session_lines(bed):
    (bed.etc / "pam.d" / "crond").write_text("auth include password-auth\naccount include password-auth\n")
    (bed.etc / "pam.d" / "password-auth").write_text(RHEL_PASSWORD_AUTH)
    assert diag(bed).findings == []


def _files(bed):
    return hl.read_pam(str(bed.etc))["files"]


def test_strip_rhel_inlines_session_lines_and_keeps_password_auth(bed):
    bed.pam_rhel()
    files = _files(bed)
    new, why = hl.strip_pam_systemd("crond", files)
    assert why is None
    assert new.splitlines()[:10] == RHEL_CROND.splitlines()[:10]
    assert new.splitlines()[10:] == [
        "# hostcheck logind_clean: inlined without pam_systemd: session    include    password-auth",
        "session     optional      pam_keyinit.so revoke",
        "session     required      pam_limits.so",
        "# hostcheck logind_clean: removed: -session     optional      pam_systemd.so",
        "session     [success=1 default=ignore] pam_succeed_if.so service in crond quiet use_uid",
        "session     required      pam_unix.so",
    ]
    old = hl.expand("crond", files)
    files["crond"] = dict(files["crond"], text=new)
    assert hl.chains("crond", files) == []
    assert [e["raw"] for _, e in hl.expand("crond", files)] == [e["raw"] for _, e in old if not hl.is_pam_systemd(e)]


def test_strip_debian_inlines_the_included_file(bed):
    bed.pam_debian()
    new, why = hl.strip_pam_systemd("cron", _files(bed))
    assert why is None
    lines = new.splitlines()
    i = lines.index("# hostcheck logind_clean: inlined without pam_systemd: @include common-session-noninteractive")
    assert lines[i + 1:i + 6] == DEBIAN_NONINTERACTIVE.splitlines() + [
        "# hostcheck logind_clean: removed: session\toptional\tpam_systemd.so"]
    assert "@include common-auth" in lines and "@include common-account" in lines


def test_strip_keeps_types_of_a_nested_at_include(bed):
    (bed.etc / "pam.d" / "crond").write_text("session include system-auth\n")
    (bed.etc / "pam.d" / "system-auth").write_text(
        "auth required pam_env.so\n@include common-x\nsession optional pam_systemd.so\n")
    (bed.etc / "pam.d" / "common-x").write_text("auth required pam_unix.so\nsession required pam_unix.so\n")
    new, why = hl.strip_pam_systemd("crond", _files(bed))
    assert why is None and "session\tinclude\tcommon-x" in new.splitlines()
    assert not [line for line in new.splitlines() if line.startswith("auth")]


@pytest.mark.parametrize("text, fragment", [
    ("session [success=3 default=ignore] pam_succeed_if.so quiet\nsession required pam_limits.so\n"
     "session optional pam_systemd.so\nsession required pam_unix.so\n", "jumps over pam_systemd"),
    ("session substack password-auth\n", "substack"),
    ("session include missing-file\nsession optional pam_systemd.so\n", "cannot read PAM file missing-file"),
])
def test_strip_refuses_what_it_cannot_edit_safely(bed, text, fragment):
    (bed.etc / "pam.d" / "crond").write_text(text)
    (bed.etc / "pam.d" / "password-auth").write_text(RHEL_PASSWORD_AUTH)
    new, why = hl.strip_pam_systemd("crond", _files(bed))
    assert new is None and fragment in why


def test_pam_parsing_continuations_comments_brackets():
    text = "session [success=1 \\\n  default=ignore] pam_x.so a # trailing\n# comment\n-session optional pam_systemd.so\n"
    entries = [e for e in hl.parse_pam(text) if e["kind"] != "blank"]
    assert entries[0]["control"] == "[success=1 default=ignore]" and entries[0]["args"] == ["a"]
    assert entries[1]["dash"] and hl.is_pam_systemd(entries[1])
    assert hl.parse_pam("session optional /lib/security/pam_systemd.so\n")[0]["module"].endswith("pam_systemd.so")


def test_include_loop_is_not_fatal(bed):
    (bed.etc / "pam.d" / "crond").write_text("session include a\n")
    (bed.etc / "pam.d" / "a").write_text("session include crond\n")
    assert diag(bed).findings == []


# ---- purity ------------------------------------------------------------------


def _incident(bed):
    bed.pam_rhel()
    for i in range(5):
        bed.closing("c{}".format(i), 500 + i)
    bed.closing("c9", 520, service="crond", uid=0)
    for i in range(8):
        bed.stale(str(1000 + i))


def test_read_then_pure_analyse_and_plan(bed):
    _incident(bed)
    facts = hl.read(bed.host(), OPTS)
    with host_access_forbidden():
        d = hl.analyse(facts, OPTS)
        p = hl.plan(d, {"closing": ["su*"], "older_than": None, "cron_pam": "remove"})
        hl.summarise(d)
    assert codes(d) == [("closing-leftovers", "warning"), ("closing-leftovers", "warning"),
                        ("cron-pam-systemd", "warning"), ("stale-session-files", "warning")]
    assert sorted(p.changes) == ["pam", "reaped", "restarted", "stale_files"]
    assert [it["session"] for it in p.changes["reaped"]] == ["c0", "c1", "c2", "c3", "c4"]
    assert p.changes["stale_files"] == {"old": 8, "new": 0}
    assert any("crond" in n and "closing" in n for n in p.notes)


# ---- the remedy, through the one state runner --------------------------------


class Fakes:
    """hostcheck_service and hostcheck_reaper replaced: restarting logind
    drops the stale files (those without a scope) and shrinks its memory;
    reaping removes the processes from the fake /proc and their scopes."""

    def __init__(self, bed, monkeypatch):
        self.bed = bed
        self.restarts = []
        self.reaped = []
        monkeypatch.setattr(hs, "restart_units", self.restart_units)
        monkeypatch.setattr(hs, "start_limits", lambda units, **kw: ({}, []))
        monkeypatch.setattr(hr, "reap", self.reap)
        monkeypatch.setattr(hl, "GONE_WAIT", 0.2)
        monkeypatch.setattr(os, "kill", self.forbidden)
        if hasattr(signal, "pidfd_send_signal"):
            monkeypatch.setattr(signal, "pidfd_send_signal", self.forbidden)

    @staticmethod
    def forbidden(*args):
        raise AssertionError("a real signal was sent: {!r}".format(args))

    def restart_units(self, units, timeout=120):
        self.restarts.append(list(units))
        scopes = {p.name for p in self.bed.cg.glob("user.slice/*/session-*.scope")}
        users = {p.name for p in (self.bed.run / "systemd" / "users").iterdir()}
        for f in list(self.bed.sessions.iterdir()):
            uid = hl.parse_session(f.name, f.read_bytes())["uid"]
            if "session-{}.scope".format(f.name) not in scopes and str(uid) in users:
                f.unlink()  # as logind 252 does: files of users it does not track stay
        (self.bed.proc / "40" / "status").write_text("Name:\tsystemd-logind\nVmRSS:\t8000 kB\n")
        return dict.fromkeys(units)

    def reap(self, members, timeout=10.0, proc_root="/proc", never=(1,), **kw):
        members = [tuple(m) for m in members]
        assert not {p for p, _ in members} & set(never)
        self.reaped.extend(members)
        for pid, _ in members:
            cg = (self.bed.proc / str(pid) / "cgroup").read_text().split("::", 1)[1].strip()
            for f in sorted((self.bed.proc / str(pid)).rglob("*"), reverse=True):
                f.unlink() if not f.is_dir() or f.is_symlink() else f.rmdir()
            (self.bed.proc / str(pid)).rmdir()
            scope = self.bed.cg / cg.lstrip("/")
            (scope / "cgroup.procs").unlink()
            scope.rmdir()
            (self.bed.sessions / scope.name[len("session-"):-len(".scope")]).unlink()  # logind drops it
        return {"terminated": sorted(p for p, _ in members), "killed": [], "survivors": [], "gone": []}


def remedy(bed, args, test=False):
    return hc.run_remedy(hl, "logind", args, test=test, host=bed.host())


def test_test_mode_then_real_run_then_noop(bed, monkeypatch):
    _incident(bed)
    fakes = Fakes(bed, monkeypatch)
    args = {"closing": ["su*"], "cron_pam": "remove"}
    before = {p.name: p.read_bytes() for p in bed.etc.joinpath("pam.d").iterdir()}
    dry = remedy(bed, args, test=True)
    assert dry["result"] is None, dry
    assert (fakes.restarts, fakes.reaped) == ([], [])
    assert {p.name: p.read_bytes() for p in bed.etc.joinpath("pam.d").iterdir()} == before
    assert len(list(bed.sessions.iterdir())) == 14

    ret = remedy(bed, args)
    assert ret["result"] is True, ret
    assert sorted(ret["changes"]) == sorted(dry["changes"])
    assert ret["changes"]["stale_files"] == {"old": 8, "new": 0}
    assert fakes.restarts == [["systemd-logind.service"]]
    assert sorted(p for p, _ in fakes.reaped) == [500, 501, 502, 503, 504]
    assert (bed.proc / "520").exists() and (bed.sessions / "c9").exists()  # crond's: not named
    crond = (bed.etc / "pam.d" / "crond").read_text()
    assert not [line for line in crond.splitlines() if "pam_systemd" in line and not line.startswith("#")]
    assert (bed.etc / "pam.d" / "password-auth-ac").read_text() == RHEL_PASSWORD_AUTH
    assert os.path.islink(bed.etc / "pam.d" / "password-auth")
    assert "+session     optional      pam_keyinit.so revoke" in ret["changes"]["pam"][str(bed.etc / "pam.d" / "crond")]["diff"]
    assert "Restarted systemd-logind" in ret["comment"] and "Reaped the leftovers of 5" in ret["comment"]

    again = remedy(bed, args)
    assert again["result"] is True and again["changes"] == {}, again
    assert fakes.restarts == [["systemd-logind.service"]] and len(fakes.reaped) == 5
    assert "Left alone: 1 closing session(s) of crond" in again["comment"]


def test_test_mode_keys_equal_real_keys_for_each_part(bed, monkeypatch):
    Fakes(bed, monkeypatch)
    bed.stale("1001")
    dry = remedy(bed, {}, test=True)
    real = remedy(bed, {})
    assert dry["result"] is None and real["result"] is True
    assert sorted(dry["changes"]) == sorted(real["changes"]) == ["restarted", "stale_files"]


def test_cron_pam_keep_only_reports(bed, monkeypatch):
    Fakes(bed, monkeypatch)
    bed.pam_debian()
    ret = remedy(bed, {})
    assert ret["result"] is True and ret["changes"] == {}
    assert "cron_pam=remove takes it out" in ret["comment"]
    ret = remedy(bed, {"cron_pam": "remove"})
    assert ret["result"] is True and list(ret["changes"]["pam"]) == [str(bed.etc / "pam.d" / "cron")]
    assert (bed.etc / "pam.d" / "common-session-noninteractive").read_text().endswith("pam_systemd.so\n")
    assert remedy(bed, {"cron_pam": "remove"})["changes"] == {}


def test_closing_sessions_left_alone_without_closing_or_when_young(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    bed.closing("c1", 500)
    ret = remedy(bed, {})
    assert ret["result"] is True and ret["changes"] == {} and "Left alone: 1 closing session(s) of su-l" in ret["comment"]
    ret = remedy(bed, {"closing": "su*", "older_than": 10 ** 8})
    assert ret["changes"] == {} and "younger than older_than" in ret["comment"]
    assert fakes.reaped == []


def test_the_minions_own_session_is_never_reaped(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    bed.closing("c1", 500)
    bed.closing("c2", 501)
    os.symlink("501", bed.proc / "self")  # this job runs inside session c2
    ret = remedy(bed, {"closing": ["su*"]})
    assert ret["result"] is True, ret
    assert [p for p, _ in fakes.reaped] == [500] and (bed.proc / "501").exists()
    assert "holds this minion" in ret["comment"]


def test_no_restart_while_a_graphical_session_runs(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    bed.add_proc(300, comm="gdm-session-wor", exe="/usr/libexec/gdm-session-worker",
                 cgroup="/user.slice/user-1000.slice/session-3.scope")
    bed.scope(1000, "3", [300])
    bed.session("3", session_252("3", uid=1000, user="ann", state="active", service="gdm-password",
                                 leader=300).replace("TYPE=unspecified", "TYPE=wayland"))
    bed.stale("1001")
    for test in (True, False):
        ret = remedy(bed, {}, test=test)
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert "graphical session(s) 3 are in use" in ret["comment"]
    assert fakes.restarts == []


def test_a_restart_that_leaves_the_stale_files_is_result_false(bed, monkeypatch):
    Fakes(bed, monkeypatch)
    monkeypatch.setattr(hs, "restart_units", lambda units, timeout=120: dict.fromkeys(units))
    bed.stale("1001")
    ret = remedy(bed, {})
    assert ret["result"] is False and ret["changes"]["stale_files"] == {"old": 1, "new": 1}
    assert "still there after the restart" in ret["comment"]


def test_a_failed_restart_is_result_false(bed, monkeypatch):
    Fakes(bed, monkeypatch)
    monkeypatch.setattr(hs, "restart_units", lambda units, timeout=120: {u: "Job failed" for u in units})
    bed.stale("1001")
    ret = remedy(bed, {})
    assert ret["result"] is False and ret["changes"] == {} and "Job failed" in ret["comment"]


def test_start_limit_refuses_the_restart(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    monkeypatch.setattr(hs, "start_limits", lambda units, **kw: ({"systemd-logind.service": "would hit it"}, []))
    bed.stale("1001")
    for test in (True, False):
        ret = remedy(bed, {}, test=test)
        assert ret["result"] is False and ret["changes"] == {} and "would hit it" in ret["comment"]
    assert fakes.restarts == []


def test_rss_that_does_not_drop_is_result_false(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    (bed.proc / "40" / "status").write_text("Name:\tsystemd-logind\nVmRSS:\t4194304 kB\n")
    real = fakes.restart_units

    def restart(units, timeout=120):
        out = real(units)
        (bed.proc / "40" / "status").write_text("Name:\tsystemd-logind\nVmRSS:\t4194304 kB\n")
        return out

    monkeypatch.setattr(hs, "restart_units", restart)
    bed.stale("1001")
    ret = remedy(bed, {})
    assert ret["result"] is False and "memory did not drop" in ret["comment"]


def test_a_pam_file_changed_since_the_diagnosis_is_not_written(bed, monkeypatch):
    Fakes(bed, monkeypatch)
    bed.pam_rhel()
    real_plan = hl.plan

    def plan_then_change(d, args):
        p = real_plan(d, args)
        (bed.etc / "pam.d" / "crond").write_text(RHEL_CROND + "# edited meanwhile\n")
        return p

    monkeypatch.setattr(hl, "plan", plan_then_change)
    ret = remedy(bed, {"cron_pam": "remove"})
    assert ret["result"] is False and ret["changes"] == {} and "changed since it was read" in ret["comment"]
    assert (bed.etc / "pam.d" / "crond").read_text().endswith("# edited meanwhile\n")


@pytest.mark.parametrize("args, fragment", [
    ({"cron_pam": "yes"}, "cron_pam must be one of keep, remove"),
    ({"closing": [""]}, "closing must be"),
    ({"older_than": -5}, "older_than must be"),
    ({"older_than": True}, "older_than must be"),
    ({"bogus": 1}, "unknown argument bogus"),
])
def test_bad_arguments_change_nothing(bed, monkeypatch, args, fragment):
    fakes = Fakes(bed, monkeypatch)
    bed.pam_rhel()
    bed.stale("1001")
    bed.closing("c1", 500)
    ret = remedy(bed, args)
    assert ret["result"] is False and ret["changes"] == {} and fragment in ret["comment"], ret
    assert (fakes.restarts, fakes.reaped) == ([], [])
    assert (bed.etc / "pam.d" / "crond").read_text() == RHEL_CROND


def test_non_root_minion_changes_nothing(bed, monkeypatch):
    fakes = Fakes(bed, monkeypatch)
    monkeypatch.setattr(FakeHost, "euid", staticmethod(lambda: 1000))
    bed.stale("1001")
    ret = remedy(bed, {})
    assert ret["result"] is False and "needs root" in ret["comment"] and fakes.restarts == []


def test_acting_goes_through_the_shared_homes():
    import inspect
    src = inspect.getsource(hl)
    assert "subprocess" not in src and "os.kill" not in src and "signal." not in src
    assert "hostcheck_service.restart_units" in src and "hostcheck_reaper.reap" in src
    assert "hostcheck_files.atomic_write" in src
