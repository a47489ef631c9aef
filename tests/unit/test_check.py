"""hostcheck_check: the shared finding schema, the Diagnosis type and the one
state runner, driven with a fake check (the real checks are tested through
it in test_states.py and the scenarios)."""
import types

import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_reaper as hr


class FakeHost(hc.Host):
    def __init__(self, tmp_path, broken=("a",), refused=(), fail_apply=(), stays_broken=False):
        super().__init__(run_root=str(tmp_path))
        self.state = {"broken": list(broken), "refused": list(refused)}
        self.fail_apply = set(fail_apply)
        self.stays_broken = stays_broken
        self.applied = 0

    def fresh(self):
        return self  # the fake's state lives on the object


def _read(host, opts, quick=False):
    return dict(host.state, level=opts["level"])


def _analyse(facts, opts):
    findings = [hc.finding("fake", "broken", "warning", "{} is broken".format(x), item=x) for x in facts["broken"]]
    return hc.Diagnosis("fake", findings, [], {"count": len(findings)}, facts)


def _plan(diag, args):
    todo = [f["item"] for f in diag.findings if f["item"] not in diag.facts["refused"]]
    problems = ["Refused {}".format(x) for x in diag.facts["refused"]]
    changes = {"fixed": todo} if todo else {}
    return hc.Plan(changes, todo, problems, preview=["Would fix " + ", ".join(todo)], idle="Nothing to fix")


def _apply(host, plan, args):
    host.applied += 1
    done = [x for x in plan.actions if x not in host.fail_apply]
    if not host.stays_broken:
        host.state["broken"] = [x for x in host.state["broken"] if x not in done]
    problems = ["Fixing {} failed".format(x) for x in plan.actions if x in host.fail_apply]
    return hc.Outcome({"fixed": done} if done else {}, ["Fixed " + x for x in done], problems)


def _verify(plan, outcome, after, args):
    return ["{} still broken".format(f["item"]) for f in after.findings if f["item"] in outcome.changes.get("fixed", [])]


FAKE = types.SimpleNamespace(
    NAME="fake", OPTIONS={"level": hcfg.number(1, 0, 10, integer=True)}, REMEDY="fake_fixed",
    REMEDY_ARGS={"force": hcfg.boolean()}, CONFIG_KEYS=(), read=_read, analyse=_analyse,
    summarise=lambda d: {"count": d.details["count"]}, plan=_plan, apply=_apply, verify=_verify)


def run(host, test=False, **args):
    return hc.run_remedy(FAKE, "x", args, test=test, host=host)


def test_finding_schema_and_order():
    f = hc.finding("c", "code", "critical", "text", [3, 4], extra=1)
    assert f == {"check": "c", "code": "code", "severity": "critical", "summary": "text", "pids": [3, 4], "extra": 1}
    with pytest.raises(ValueError):
        hc.finding("c", "x", "ok", "")
    fs = [hc.finding("c", "a", s, "") for s in ("info", "critical", "warning")]
    assert [f["severity"] for f in hc.by_severity(fs)] == ["critical", "warning", "info"]
    assert hc.worst(fs) == "critical" and hc.worst([]) == "ok"


def test_diagnosis_as_dict():
    d = hc.Diagnosis("c", [{"x": 1}], ["n"], {"count": 1}, facts=object())
    assert d.as_dict() == {"count": 1, "findings": [{"x": 1}], "notes": ["n"]}


def test_invalid_arguments_change_nothing(tmp_path):
    host = FakeHost(tmp_path)
    for args in ({"level": 11}, {"force": "yes"}, {"bogus": 1}):
        ret = run(host, **args)
        assert ret["result"] is False and ret["comment"].startswith("Invalid arguments, nothing done")
        assert ret["changes"] == {}
    assert host.applied == 0 and host.state["broken"] == ["a"]


def test_test_mode_returns_the_keys_of_a_real_run(tmp_path):
    host = FakeHost(tmp_path, broken=("a", "b"))
    dry = run(host, test=True)
    assert dry["result"] is None and dry["changes"] == {"fixed": ["a", "b"]}
    assert dry["comment"] == "Would fix a, b" and host.applied == 0
    real = run(host)
    assert real["result"] is True and set(real["changes"]) == set(dry["changes"])
    assert real["changes"] == {"fixed": ["a", "b"]} and real["comment"] == "Fixed a\nFixed b"
    again = run(host)
    assert again == {"name": "x", "changes": {}, "result": True, "comment": "Nothing to fix"}


def test_refusals_alone_are_false_in_test_mode_and_real_run(tmp_path):
    host = FakeHost(tmp_path, broken=("a",), refused=("a",))
    for test in (True, False):
        ret = run(host, test=test)
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"].startswith("Refused a")
    assert host.applied == 0


def test_comment_says_what_happened_when_apply_fails(tmp_path):
    host = FakeHost(tmp_path, broken=("a", "b"), fail_apply=("b",))
    ret = run(host)
    assert ret["result"] is False
    assert ret["changes"] == {"fixed": ["a"]}
    assert ret["comment"] == "Fixed a\nFixing b failed"
    assert "Would" not in ret["comment"]


def test_verification_failure_is_result_false(tmp_path):
    host = FakeHost(tmp_path, broken=("a",), stays_broken=True)
    ret = run(host)
    assert ret["result"] is False and "a still broken" in ret["comment"]


def test_a_busy_lock_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(hc, "LOCK_WAIT", 0.2)
    host = FakeHost(tmp_path)
    with hr.HostLock("fake", host.run_root):
        ret = hc.run_remedy(FAKE, "x", {}, host=host)
    assert ret["result"] is False and ret["comment"].startswith("Nothing done: another hostcheck remedy")
    assert host.applied == 0


def test_options_from_config_only_for_declared_keys():
    asked = []

    def get(key):
        asked.append(key)
        return 7

    assert hc.options(FAKE, {}, get) == {"level": 7}
    assert asked == ["hostcheck:fake:level"]
    assert hc.options(FAKE, {"level": 2}, get) == {"level": 2}
