"""hostcheck.orphans_reaped called directly (Salt's dunders injected), on synthetic snapshots.

Only decisions are tested here: nothing is signalled (the reaper is replaced
by a recorder). The real signalling is tested in tests/functional and
tests/scenarios.
"""
import importlib.util
import os

import pytest

import hostcheck_orphans as ho
import hostcheck_proc as hp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
P = hp.Proc.synthetic
ENV = {"SUPERVISOR_PROCESS_NAME": "worker", "SUPERVISOR_GROUP_NAME": "worker"}


@pytest.fixture
def state(monkeypatch):
    spec = importlib.util.spec_from_file_location("hc_state", os.path.join(REPO, "_states", "hostcheck.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {"test": False}
    mod.__salt__ = {"config.get": lambda key, default=None: default}
    calls = []

    def fake_reap(members, timeout=10, never=(), **kw):
        calls.append([p for p, _ in members])
        return {"terminated": [p for p, _ in members], "killed": [], "survivors": []}

    monkeypatch.setattr(ho, "reap", fake_reap)
    mod.calls = calls
    return mod


def leaked_host(uid=0):
    procs = [P(1, 0, cmdline=["/sbin/init"]),
             P(50, 1, cmdline=["/usr/bin/worker"], environ=ENV, uid=uid),
             P(51, 50, pgid=50, cmdline=["/usr/bin/worker"], uid=uid)]
    return ho.analyse(hp.Snapshot.from_procs(procs, self_pid=None))


def clean_host():
    return ho.analyse(hp.Snapshot.from_procs([P(1, 0, cmdline=["/sbin/init"])]))


def test_reaps_then_verifies(state, monkeypatch):
    results = iter([leaked_host(), clean_host()])
    monkeypatch.setattr(ho, "diagnose", lambda **kw: next(results))
    ret = state.orphans_reaped("x")
    assert ret["result"] is True
    assert state.calls == [[50, 51]]
    assert ret["changes"]["reaped"][0]["root"] == 50


def test_verification_failure_is_result_false(state, monkeypatch):
    monkeypatch.setattr(ho, "diagnose", lambda **kw: leaked_host())
    ret = state.orphans_reaped("x")
    assert ret["result"] is False and "still alive" in ret["comment"]


def test_test_mode_reaps_nothing(state, monkeypatch):
    monkeypatch.setattr(ho, "diagnose", lambda **kw: leaked_host())
    state.__opts__["test"] = True
    ret = state.orphans_reaped("x")
    assert ret["result"] is None and state.calls == []
    assert ret["changes"]["would_reap"][0]["pids"] == [50, 51]


def test_non_root_minion_refuses_other_users_processes(state, monkeypatch):
    monkeypatch.setattr(ho, "diagnose", lambda **kw: leaked_host(uid=0))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ret = state.orphans_reaped("x")
    assert ret["result"] is False and "cannot signal processes of other users" in ret["comment"]
    assert state.calls == [] and ret["changes"] == {}


@pytest.mark.parametrize("kwargs,needle", [
    ({"match": 5}, "match must be"),
    ({"match": ["ok", ""]}, "match must be"),
    ({"exclude": {"a": 1}}, "exclude must be"),
    ({"timeout": 0}, "timeout must be"),
    ({"timeout": True}, "timeout must be"),
    ({"timeout": "10"}, "timeout must be"),
    ({"timeout": 601}, "timeout must be"),
    ({"daemons": {"x": {"options": "-c"}}}, "must be a list of strings"),
])
def test_bad_arguments_touch_nothing(state, monkeypatch, kwargs, needle):
    def boom(**kw):
        raise AssertionError("must not even diagnose")
    monkeypatch.setattr(ho, "diagnose", boom)
    ret = state.orphans_reaped("x", **kwargs)
    assert ret["result"] is False and needle in ret["comment"]
    assert ret["changes"] == {} and state.calls == []


def test_match_and_exclude_strings_are_globs(state, monkeypatch):
    monkeypatch.setattr(ho, "diagnose", lambda **kw: leaked_host())
    state.__opts__["test"] = True
    assert state.orphans_reaped("x", exclude="work*")["changes"] == {}
    assert state.orphans_reaped("x", match="nomatch")["changes"] == {}
    assert state.orphans_reaped("x", match="worker")["result"] is None
