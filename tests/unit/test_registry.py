"""hostcheck_registry: the grain and hostcheck.report iterate every check;
one check failing never breaks the others; one snapshot is shared."""
import types

import pytest

import hostcheck_check as hc
import hostcheck_config as hcfg
import hostcheck_proc as hp
import hostcheck_registry as hreg


def _check(name, findings=(), boom=None, notes=()):
    def read(host, opts, quick=False):
        if boom:
            raise boom
        host.snapshot()
        return quick

    def analyse(facts, opts):
        return hc.Diagnosis(name, [hc.finding(name, c, s, c) for c, s in findings], list(notes),
                            {"quick": facts}, facts)

    return types.SimpleNamespace(NAME=name, OPTIONS={}, read=read, analyse=analyse,
                                 summarise=lambda d: {"count": len(d.findings), "quick": d.details["quick"]})


@pytest.fixture
def fake_checks(monkeypatch):
    checks = (
        _check("one", [("a", "warning"), ("b", "info")], notes=["n1"]),
        _check("two", boom=RuntimeError("disk on fire")),
        _check("three", [("c", "critical")]),
    )
    monkeypatch.setattr(hreg, "CHECKS", checks)
    monkeypatch.setattr(hreg, "BY_NAME", {c.NAME: c for c in checks})
    monkeypatch.setitem(hreg.REPORT_ARGS, "checks", hcfg.string_list(
        check=lambda n: None if n in hreg.BY_NAME else "is not a check"))
    return checks


def test_grain_isolates_a_failing_check(fake_checks):
    g = hreg.grain()
    assert g == {"one": {"count": 2, "quick": True}, "two": {"error": "RuntimeError: disk on fire"},
                 "three": {"count": 1, "quick": True}}


def test_report_worst_first_with_errors_isolated(fake_checks):
    r = hreg.report()
    assert [f["code"] for f in r["findings"]] == ["c", "a", "b"]
    assert r["worst"] == "critical"
    assert r["checks"] == {"one": {"count": 2, "error": None}, "two": {"count": 0, "error": "RuntimeError: disk on fire"},
                           "three": {"count": 1, "error": None}}
    assert r["notes"] == ["one: n1"]


def test_report_filters(fake_checks):
    r = hreg.report(severity="warning")
    assert [f["code"] for f in r["findings"]] == ["c", "a"] and r["checks"]["one"]["count"] == 1
    r = hreg.report(checks=["one"], severity="critical")
    assert r == {"worst": "ok", "checks": {"one": {"count": 0, "error": None}}, "findings": [], "notes": ["one: n1"]}
    assert hreg.report(checks="one")["worst"] == "warning"


@pytest.mark.parametrize("kw,msg", [
    ({"checks": ["nope"]}, "is not a check"), ({"checks": 3}, "checks must be"),
    ({"severity": "high"}, "severity must be one of critical, warning, info"),
])
def test_report_bad_arguments(fake_checks, kw, msg):
    with pytest.raises(hcfg.ConfigError, match=msg):
        hreg.report(**kw)


def test_report_shares_one_snapshot(fake_checks, monkeypatch):
    taken = []
    real = hp.snapshot

    def counting(*a, **kw):
        taken.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(hp, "snapshot", counting)
    hreg.report()
    hreg.grain()
    assert len(taken) == 2  # one per run, not one per check


def test_real_checks_are_registered_with_the_protocol():
    for check in hreg.CHECKS:
        for attr in ("NAME", "OPTIONS", "read", "analyse", "summarise"):
            assert hasattr(check, attr), (check.NAME, attr)
        if hasattr(check, "REMEDY"):
            for attr in ("REMEDY_ARGS", "plan", "apply", "verify"):
                assert hasattr(check, attr), (check.NAME, attr)
    assert [c.NAME for c in hreg.CHECKS] == ["orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits"]


def test_real_report_on_this_host_shares_one_snapshot(monkeypatch):
    taken = []
    real = hp.snapshot
    monkeypatch.setattr(hp, "snapshot", lambda *a, **kw: taken.append(1) or real(*a, **kw))
    r = hreg.report()
    assert set(r["checks"]) == {"orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits"}
    assert all(e["error"] is None for e in r["checks"].values()), r["checks"]
    assert len(taken) == 1
