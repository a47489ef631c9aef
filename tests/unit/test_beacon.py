"""The ``hostcheck`` beacon (_beacons/hostcheck.py), loaded as Salt loads it:
configuration validation, one event per change (never the same finding
twice in a row), ``resolved`` when a finding goes away, and the last state
kept across a module refresh (a new ``__context__``) and a restart."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def leak(root=100, started="2026-11-27T20:05:30Z", pids=(100, 101), severity="critical"):
    return {"check": "orphans", "code": "supervisor-leak", "severity": severity, "root": root, "started": started,
            "program": "sh", "summary": "sh tree of {} processes".format(len(pids)), "pids": list(pids)}


def report(*findings, errors=None):
    checks = {"orphans": {"count": len(findings), "error": None}, "timezone": {"count": 0, "error": None}}
    for name, why in (errors or {}).items():
        checks[name] = {"count": 0, "error": why}
    return {"worst": "critical" if findings else "ok", "checks": checks, "findings": list(findings), "notes": []}


class Host:
    """What ``hostcheck.report`` answers, one pass after the other."""

    def __init__(self):
        self.next = report()
        self.calls = []

    def report(self, **kwargs):
        self.calls.append(kwargs)
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


def load(cachedir, host, context=None):
    spec = importlib.util.spec_from_file_location("hc_beacon", os.path.join(REPO, "_beacons", "hostcheck.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {"cachedir": str(cachedir)}
    mod.__salt__ = {"hostcheck.report": host.report}
    mod.__context__ = {} if context is None else context
    return mod


@pytest.fixture
def host():
    return Host()


@pytest.fixture
def beacon(tmp_path, host):
    return load(tmp_path, host)


CONFIG = [{"severity": "warning"}, {"_beacon_name": "hostcheck"}]


def tags(events):
    return [(e["tag"], e["state"]) for e in events]


@pytest.mark.parametrize("config,ok", [
    ([], True),
    ([{"interval": 60}, {"severity": "critical"}, {"checks": ["orphans", "timezone"]}], True),
    ([{"checks": "orphans,timezone"}, {"disable_during_state_run": True}], True),
    ({"interval": 60}, False),
    ([{"interval": 0}], False),
    ([{"interval": "60"}], False),
    ([{"severity": "loud"}], False),
    ([{"checks": []}], False),
    ([{"checks": [1]}], False),
    ([{"checks_typo": ["orphans"]}], False),
    (["interval"], False),
])
def test_validate(beacon, config, ok):
    valid, why = beacon.validate(config)
    assert valid is ok, why


def test_one_event_per_change_then_resolved(beacon, host):
    assert beacon.beacon(CONFIG) == []  # healthy: nothing to say
    host.next = report(leak())
    (event,) = beacon.beacon(CONFIG)
    assert event["tag"] == "orphans/supervisor-leak"
    assert event["state"] == "found" and event["severity"] == "critical"
    assert event["check"] == "orphans" and event["code"] == "supervisor-leak"
    assert event["finding"]["root"] == 100 and event["summary"] == "sh tree of 2 processes"
    # the same leak, steady (even as its PIDs and summary change): no event
    for _ in range(3):
        host.next = report(leak(pids=(100, 101, 102)))
        assert beacon.beacon(CONFIG) == []
    host.next = report()
    (event,) = beacon.beacon(CONFIG)
    assert (event["tag"], event["state"]) == ("orphans/supervisor-leak/resolved", "resolved")
    assert event["finding"]["pids"] == [100, 101, 102]  # as last seen
    assert beacon.beacon(CONFIG) == []
    assert host.calls[0] == {"severity": "warning"}


def test_a_new_tree_is_a_new_finding(beacon, host):
    host.next = report(leak())
    beacon.beacon(CONFIG)
    host.next = report(leak(), leak(root=200, started="2026-11-27T21:00:00Z"))
    assert [e["finding"]["root"] for e in beacon.beacon(CONFIG)] == [200]
    # same root PID, other start time: PID reuse, another tree
    host.next = report(leak(root=200, started="2026-11-27T22:00:00Z"))
    assert tags(beacon.beacon(CONFIG)) == [("orphans/supervisor-leak/resolved", "resolved")] * 2 + [
        ("orphans/supervisor-leak", "found")]


def test_severity_change_fires_again(beacon, host):
    host.next = report(leak(severity="warning"))
    beacon.beacon(CONFIG)
    host.next = report(leak(severity="critical"))
    (event,) = beacon.beacon(CONFIG)
    assert event["state"] == "found" and event["severity"] == "critical"


def test_failing_check_fires_once_per_error(beacon, host):
    host.next = report(errors={"timezone": "invalid configuration: daemons must be a list"})
    (event,) = beacon.beacon(CONFIG)
    assert event["tag"] == "timezone/error" and event["summary"].startswith("invalid configuration")
    assert beacon.beacon(CONFIG) == []
    host.next = report(errors={"timezone": "OSError: boom"})
    assert tags(beacon.beacon(CONFIG)) == [("timezone/error", "found")]
    host.next = report()
    assert tags(beacon.beacon(CONFIG)) == [("timezone/error/resolved", "resolved")]


def test_report_failure_is_an_error_event_not_a_storm(beacon, host):
    host.next = RuntimeError("checks must be one of ...")
    assert tags(beacon.beacon(CONFIG)) == [("report/error", "found")]
    assert beacon.beacon(CONFIG) == []


def test_options_passed_to_report(beacon, host):
    beacon.beacon([{"severity": "critical"}, {"checks": "orphans, timezone"}])
    assert host.calls[-1] == {"severity": "critical", "checks": ["orphans", "timezone"]}


def test_state_survives_refresh_and_restart(tmp_path, host):
    host.next = report(leak())
    first = load(tmp_path, host)
    assert len(first.beacon(CONFIG)) == 1
    state = json.loads((tmp_path / "hostcheck" / "beacon-hostcheck.json").read_text())
    assert len(state) == 1
    # module refresh / minion restart: a new module and an empty __context__
    again = load(tmp_path, host)
    assert again.beacon(CONFIG) == []
    host.next = report()
    assert tags(again.beacon(CONFIG)) == [("orphans/supervisor-leak/resolved", "resolved")]


def test_unreadable_state_file_starts_afresh(tmp_path, host):
    (tmp_path / "hostcheck").mkdir()
    (tmp_path / "hostcheck" / "beacon-hostcheck.json").write_text("{not json")
    host.next = report(leak())
    assert len(load(tmp_path, host).beacon(CONFIG)) == 1


def test_beacon_names_keep_separate_state(beacon, host):
    host.next = report(leak())
    assert len(beacon.beacon(CONFIG)) == 1
    assert len(beacon.beacon([{"_beacon_name": "hostcheck_critical"}])) == 1


def test_identity_ignores_pids_and_counts(beacon):
    a = leak(pids=(1, 2))
    b = dict(leak(pids=(1, 2, 3)), summary="other text")
    assert beacon.identity(a) == beacon.identity(b)
    assert beacon.identity(a) != beacon.identity(leak(root=7))
