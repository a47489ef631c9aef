"""hostcheck_service: what it reads of systemd (fake /run trees, fake
runners; systemctl and journalctl never run) and how it reaches supervisord
(where it connects, and that every call times out)."""
import json
import os
import socket
import threading
import time

import pytest

import hostcheck_service as hs
from tests.fakes import fake_systemd_run

# ---- systemd: reading ---------------------------------------------------------


def test_invocations_from_links(tmp_path):
    run = fake_systemd_run(tmp_path, {"cron.service": "abc", "dbus.service": "def"})
    (run / "systemd" / "units" / "unrelated-file").write_text("")
    assert hs.invocations(str(run)) == {"cron.service": "abc", "dbus.service": "def"}
    assert hs.running_services(["cron.service", "leaky.service"], run_root=str(run)) == {
        "cron.service": {"ActiveState": "active", "InvocationID": "abc"},
        "leaky.service": {"ActiveState": "inactive", "InvocationID": None},
    }


def test_no_systemd_means_none(tmp_path, monkeypatch):
    monkeypatch.setattr(hs, "run", lambda *a, **kw: pytest.fail("systemctl must not run without systemd"))
    assert hs.systemd_running(str(tmp_path)) is False
    assert hs.invocations(str(tmp_path)) is None
    assert hs.running_services(["cron.service"], run_root=str(tmp_path)) is None
    assert hs.load_states(["cron.service"], run_root=str(tmp_path)) is None
    assert hs.show(["cron.service"], ("ActiveState",), run_root=str(tmp_path)) is None


def test_parse_show_blocks():
    text = ("Id=a.service\nActiveState=active\nMainPID=12\nInvocationID=x\n\n"
            "Id=b.service\nActiveState=failed\nMainPID=\nControlPID=junk\n\nActiveState=no-id\n")
    assert hs.parse_show(text) == {
        "a.service": {"Id": "a.service", "ActiveState": "active", "MainPID": 12, "InvocationID": "x"},
        "b.service": {"Id": "b.service", "ActiveState": "failed", "MainPID": 0, "ControlPID": 0},
    }
    assert hs.parse_show("") == {}


class Runner:
    """A fake :func:`hostcheck_service.run`: answers by command name."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout=hs.READ_TIMEOUT):
        self.calls.append((list(argv), timeout))
        answer = self.answers[argv[0] if argv[0] != "systemctl" else argv[1]]
        return answer(argv) if callable(answer) else answer


@pytest.fixture
def systemd(monkeypatch):
    monkeypatch.setattr(hs, "has_systemctl", lambda run_root="/run": True)


def test_load_states_parses_blocks_in_argument_order(systemd, monkeypatch):
    run = Runner(show=(True, "Id=cron.service\nLoadState=loaded\n\nId=nope.service\nLoadState=not-found\n\n"
                             "Id=m.service\nLoadState=masked\n"))
    monkeypatch.setattr(hs, "run", run)
    assert hs.load_states(["cron.service", "nope.service", "m.service"]) == {
        "cron.service": "loaded", "nope.service": "not-found", "m.service": "masked"}
    assert run.calls[0][0] == ["systemctl", "show", "--no-pager", "-p", "Id,LoadState", "--",
                               "cron.service", "nope.service", "m.service"]
    assert run.calls[0][1] == hs.READ_TIMEOUT
    assert hs.load_states([]) == {}
    # systemctl fails without printing properties: no answer, not "all unknown"
    monkeypatch.setattr(hs, "run", Runner(show=(False, "Failed to connect to bus")))
    assert hs.load_states(["cron.service"]) is None
    # it exits non-zero for some unknown names but still prints every block
    monkeypatch.setattr(hs, "run", Runner(show=(False, "Id=x.service\nLoadState=not-found\n")))
    assert hs.load_states(["x.service"]) == {"x.service": "not-found"}


@pytest.mark.parametrize("text,usec", [
    ("1min", 60 * 10**6), ("1min 30s", 90 * 10**6), ("10s", 10 * 10**6), ("500ms", 500 * 10**3),
    ("1.5s", 1_500_000), ("2h", 7200 * 10**6), ("0", 0), ("1500000", 1_500_000),
    ("infinity", None), ("", None), (None, None), ("5 parsecs", None), ("10x", None), ("1min junk", None),
])
def test_parse_timespan(text, usec):
    assert hs.parse_timespan(text) == usec


NOW = 1_000_000.0
SHOW = ("Id=a.service\nActiveState=active\nResult=success\nStartLimitBurst=2\nStartLimitIntervalUSec=1min\n\n"
        "Id=b.service\nActiveState=active\nResult=success\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n\n"
        "Id=c.service\nActiveState=failed\nResult=start-limit-hit\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n\n"
        "Id=d.service\nActiveState=active\nResult=success\nStartLimitBurst=0\nStartLimitIntervalUSec=10s\n")


def entry(unit, ago, mid=hs.SD_MESSAGE_UNIT_STARTED):
    return json.dumps({"UNIT": unit, "MESSAGE_ID": mid, "__REALTIME_TIMESTAMP": str(int((NOW - ago) * 1e6))})


def test_count_starts_within_each_units_interval():
    limited = {"a.service": (2, 60 * 10**6, "1min"), "b.service": (5, 10 * 10**6, "10s")}
    journal = "\n".join([
        entry("a.service", 50), entry("a.service", 5, hs.SD_MESSAGE_UNIT_FAILED), entry("a.service", 70),
        entry("b.service", 5), entry("b.service", 30),  # b: 30 s ago is outside 10s
        entry("b.service", 1, "0" * 32),  # another message: not a start
        entry("x.service", 1), "not json", json.dumps({"UNIT": "a.service"}), json.dumps([1]),
    ])
    assert hs.count_starts(journal, limited, NOW) == {"a.service": 2, "b.service": 1}


def test_start_limits_from_show_and_journal():
    journal = "\n".join([entry("a.service", 50), entry("a.service", 5, hs.SD_MESSAGE_UNIT_FAILED),
                         entry("b.service", 5), entry("b.service", 30)])
    run = Runner(show=(True, SHOW), journalctl=(True, journal))
    refused, notes = hs.start_limits(["a.service", "b.service", "c.service", "d.service"], now=NOW, runner=run)
    assert sorted(refused) == ["a.service", "c.service"] and notes == []
    assert "started 2 times in the last 1min" in refused["a.service"]
    assert "(StartLimitBurst=2, StartLimitIntervalSec=1min)" in refused["a.service"]
    assert "already in start-limit-hit" in refused["c.service"]
    argvs = [argv for argv, _ in run.calls]
    assert [a[0] for a in argvs] == ["systemctl", "journalctl"]  # one call each
    assert "UNIT=d.service" not in argvs[1]  # no limit: not asked
    assert "--since=@{}".format(int(NOW - 60) - 1) in argvs[1] and "_PID=1" in argvs[1]
    assert all(timeout == hs.READ_TIMEOUT for _, timeout in run.calls)


def test_start_limits_that_cannot_be_read_refuse_nothing_and_say_so():
    run = Runner(show=(True, SHOW), journalctl=(False, "No journal files were found."))
    refused, notes = hs.start_limits(["a.service"], now=NOW, runner=run)
    assert refused == {} and "start limits not checked for a.service" in notes[0]
    refused, notes = hs.start_limits(["a.service"], now=NOW, runner=Runner(show=(False, "bus down")))
    assert refused == {} and notes == ["start limits not checked: systemctl show failed: bus down"]
    assert hs.start_limits([], runner=Runner()) == ({}, [])


# ---- systemd: acting (through a fake runner: nothing is restarted) ----------------


def test_restart_units_names_each_failed_unit_with_its_state(systemd, monkeypatch):
    run = Runner(restart=(False, "Job for b.service failed."),
                 show=(True, "Id=a.service\nActiveState=active\nResult=success\n\n"
                             "Id=b.service\nActiveState=failed\nResult=start-limit-hit\n"))
    monkeypatch.setattr(hs, "run", run)
    assert hs.restart_units(["a.service", "b.service"]) == {
        "a.service": None, "b.service": "Job for b.service failed. (failed/start-limit-hit)"}
    assert run.calls[0] == (["systemctl", "restart", "--", "a.service", "b.service"], hs.ACT_TIMEOUT)
    monkeypatch.setattr(hs, "run", Runner(restart=(True, "")))
    assert hs.restart_units(["a.service"]) == {"a.service": None}
    assert hs.restart_units([]) == {}


def test_schedule_restart_is_a_transient_timer(monkeypatch):
    run = Runner(**{"systemd-run": (True, "Running timer as unit: run-1.timer")})
    monkeypatch.setattr(hs, "run", run)
    assert hs.schedule_restart("salt-minion.service") == (True, "Running timer as unit: run-1.timer")
    argv, timeout = run.calls[0]
    assert argv == ["systemd-run", "--no-block", "--collect", "--on-active=10", "systemctl", "restart", "--",
                    "salt-minion.service"]
    assert timeout == hs.READ_TIMEOUT


def test_run_never_raises(tmp_path):
    ok, out = hs.run([str(tmp_path / "no-such-tool")])
    assert ok is False and "no-such-tool" in out
    ok, out = hs.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert ok is False and out == "out\nerr"
    ok, out = hs.run(["sh", "-c", "exit 4"])
    assert (ok, out) == (False, "sh exited 4")
    t0 = time.monotonic()
    ok, out = hs.run(["sleep", "5"], timeout=0.3)
    assert ok is False and out == "sleep timed out after 0.3 s" and time.monotonic() - t0 < 3


# ---- supervisord ------------------------------------------------------------------


def test_supervisor_proxy_checks_where_it_connects(tmp_path):
    assert hs.supervisor_proxy("http://10.0.0.5:9001")[1] == "http://10.0.0.5:9001 is not on loopback"
    assert hs.supervisor_proxy("http://example.org:9001/")[0] is None
    for url in ("http://127.0.0.1:9001", "http://localhost:9001/", "http://[::1]:9001"):
        assert hs.supervisor_proxy(url)[0] is not None, url
    sock = tmp_path / "s.sock"
    sock.write_text("")
    uid = os.stat(sock).st_uid
    server, why = hs.supervisor_proxy("unix://" + str(sock), owner_uid=uid + 1)
    assert server is None and why == "socket {} is owned by uid {}, its supervisord runs as uid {}".format(
        sock, uid, uid + 1)
    assert hs.supervisor_proxy("unix://" + str(sock), owner_uid=uid)[0] is not None
    assert "No such file" in hs.supervisor_proxy("unix:///nonexistent/s.sock")[1]
    assert hs.supervisor_proxy("ftp://x") == (None, "unsupported server URL 'ftp://x'")
    ok, msg = hs.supervisor_restart(hs.supervisor_proxy("unix://" + str(sock))[0], "a:b")
    assert ok is False and msg.startswith("a:b: ")  # a regular file is no socket: an error, not an exception


class Silent:
    """A listening socket that accepts and never answers."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(4)
        self.address = self.sock.getsockname()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        try:
            while True:
                self.conns.append(self.sock.accept()[0])
        except OSError:
            pass

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def _times_out(server):
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        server.supervisor.getState()
    assert isinstance(info.value, (socket.timeout, TimeoutError)), info.value
    return time.monotonic() - t0


def test_http_transport_really_times_out():
    silent = Silent(socket.AF_INET, ("127.0.0.1", 0))
    try:
        server, why = hs.supervisor_proxy("http://127.0.0.1:{}".format(silent.address[1]), timeout=0.5)
        assert why is None
        assert _times_out(server) < 5
    finally:
        silent.close()


def test_unix_transport_really_times_out(tmp_path):
    silent = Silent(socket.AF_UNIX, str(tmp_path / "s.sock"))
    try:
        server, why = hs.supervisor_proxy("unix://" + str(tmp_path / "s.sock"), owner_uid=os.geteuid(), timeout=0.5)
        assert why is None
        assert _times_out(server) < 5
        ok, msg = hs.supervisor_restart(server, "svc:svc")
        assert ok is False and msg.startswith("svc:svc: ")  # the timeout is an error, not an exception
    finally:
        silent.close()


def test_supervisor_restart_all_falls_back_to_supervisorctl_on_path(monkeypatch, tmp_path):
    run = Runner(supervisorctl=(True, "svc:svc: stopped\nsvc:svc: started"))
    monkeypatch.setattr(hs, "run", run)
    restarted, errors, methods = hs.supervisor_restart_all(
        ["svc:svc", "far:away"], {"far:away": {"url": "http://10.1.1.1:9001", "uid": 0}})
    assert restarted == ["svc:svc"] and methods == ["svc:svc: supervisorctl on PATH"]
    assert errors == ["far:away: http://10.1.1.1:9001 is not on loopback"]
    assert run.calls == [(["supervisorctl", "restart", "svc:svc"], 60)]
