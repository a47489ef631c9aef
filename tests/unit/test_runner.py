"""The ``hostcheck.fleet`` runner (_runners/hostcheck.py), loaded as Salt loads
it with the dunders injected; the master's LocalClient and target resolution
are replaced by fakes that answer like a fleet with one unreachable minion."""
import importlib.util
import os

import pytest
import salt.exceptions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTE = "orphans: systemd is not running here: the unit rule (unit-leftover) was skipped"


def report(worst="ok", findings=(), notes=(NOTE,), errors=None):
    checks = {name: {"count": sum(1 for f in findings if f["check"] == name), "error": (errors or {}).get(name)}
              for name in ("orphans", "deleted_binaries", "reboot_required", "timezone")}
    return {"worst": worst, "checks": checks, "findings": list(findings), "notes": list(notes)}


LEAK = {"check": "orphans", "code": "supervisor-leak", "severity": "critical", "summary": "sh tree", "pids": [5]}
STALE = {"check": "deleted_binaries", "code": "stale-unit", "severity": "warning", "summary": "cron", "pids": [9]}
FLEET = {
    "site-1": report("critical", [LEAK]),
    "site-2": report(),
    "site-3": report("warning", [STALE], notes=(NOTE, "timezone: PID 1's environment is not readable here")),
    "site-4": report(errors={"timezone": "invalid configuration: daemons must be a list"}),
    "site-5": None,  # unreachable
    "site-6": "'hostcheck.report' is not available.",
}


class FakeClient:
    """cmd_iter as LocalClient answers with expect_minions=True: returns as
    they come, then ``{"failed": True}`` for each expected minion that did
    not answer."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.calls = []
        self.destroyed = False

    def targets(self, tgt, tgt_type):
        if tgt_type == "list":
            return list(tgt)
        return sorted(self.fleet)  # "*", or the grain every site minion has

    def cmd_iter(self, tgt, fun, kwarg=None, tgt_type="glob", timeout=None, expect_minions=False, **_):
        assert fun in ("hostcheck.report", "test.ping") and expect_minions
        self.calls.append({"tgt": tgt, "tgt_type": tgt_type, "fun": fun, "kwarg": kwarg, "timeout": timeout})
        for minion in self.targets(tgt, tgt_type):
            value = self.fleet[minion]
            if value is None:
                continue
            yield {minion: {"ret": True if fun == "test.ping" else value, "retcode": 0}}
        for minion in self.targets(tgt, tgt_type):
            if self.fleet[minion] is None:
                yield {minion: {"failed": True}}

    def destroy(self):
        self.destroyed = True


@pytest.fixture
def runner(monkeypatch):
    spec = importlib.util.spec_from_file_location("hc_runner", os.path.join(REPO, "_runners", "hostcheck.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {"timeout": 5, "output": None}
    mod.client = FakeClient(FLEET)
    monkeypatch.setattr(mod.salt.client, "get_local_client", lambda **kw: mod.client)

    class Ck:
        def __init__(self, opts):
            pass

        def check_minions(self, tgt, tgt_type="glob"):
            return {"minions": sorted(FLEET) if tgt == "*" else tgt.split(","), "missing": []}

    monkeypatch.setattr(mod.salt.utils.minions, "CkMinions", Ck)
    return mod


def test_rows_worst_first_and_unreachable_apart(runner):
    out = runner.fleet(table=False)
    assert [r["minion"] for r in out["rows"]] == ["site-1", "site-3", "site-4", "site-2"]
    assert out["rows"][0] == {"minion": "site-1", "worst": "critical", "codes": ["orphans/supervisor-leak"],
                              "counts": {"orphans": 1, "deleted_binaries": 0, "reboot_required": 0, "timezone": 0},
                              "errors": {}}
    assert out["no_return"] == ["site-5"]
    assert "site-5" not in {r["minion"] for r in out["rows"]}
    assert out["failed"] == {"site-6": "'hostcheck.report' is not available."}
    assert out["summary"] == {"critical": 1, "warning": 1, "info": 0, "ok": 2, "with_errors": 1,
                              "no_return": 1, "failed": 1, "minions": 6}
    assert runner.client.destroyed


def test_a_failed_check_is_shown_not_hidden(runner):
    (row,) = [r for r in runner.fleet(table=False)["rows"] if r["minion"] == "site-4"]
    assert row["errors"] == {"timezone": "invalid configuration: daemons must be a list"}
    # ok findings but a failed check: before the healthy ones
    assert row["worst"] == "ok"


def test_identical_notes_collapse_with_a_count(runner):
    notes = runner.fleet(table=False)["notes"]
    assert notes[0] == {"note": NOTE, "count": 4, "minions": ["site-1", "site-2", "site-3", "site-4"]}
    assert notes[1]["count"] == 1 and notes[1]["minions"] == ["site-3"]


def test_one_job_on_the_target_as_given(runner):
    """Not resolved on this master first: minions below a syndic answer too."""
    runner.fleet(tgt="site:acme", tgt_type="grain", timeout=7, table=False)
    assert runner.client.calls == [{"tgt": "site:acme", "tgt_type": "grain", "fun": "hostcheck.report",
                                    "kwarg": {}, "timeout": 7}]


@pytest.mark.parametrize("batch,sizes", [(2, [2, 2, 1]), ("4", [4, 1]), ("50%", [2, 2, 1]), ("10%", [1] * 5)])
def test_batches_after_a_ping(runner, batch, sizes):
    out = runner.fleet(batch=batch, timeout=7, table=False)
    ping, *reports = runner.client.calls
    assert ping["fun"] == "test.ping" and ping["tgt"] == "*"
    assert [len(c["tgt"]) for c in reports] == sizes
    assert all(c["tgt_type"] == "list" and c["timeout"] == 7 for c in reports)
    assert "site-5" not in {m for c in reports for m in c["tgt"]}  # did not answer the ping: not asked again
    assert out["no_return"] == ["site-5"] and len(out["rows"]) == 4 and list(out["failed"]) == ["site-6"]


def test_severity_and_checks_are_passed_on(runner):
    runner.fleet(severity="warning", checks="orphans,timezone", table=False)
    assert runner.client.calls[0]["kwarg"] == {"severity": "warning", "checks": "orphans,timezone"}
    runner.fleet(severity="critical", batch=3, table=False)
    assert runner.client.calls[1]["kwarg"] is None  # the ping
    assert runner.client.calls[2]["kwarg"] == {"severity": "critical"}


@pytest.mark.parametrize("kwargs,needle", [
    ({"batch": "0"}, "batch must be at least 1"),
    ({"batch": "ten"}, "batch must be"),
    ({"batch": "150%"}, "batch must be"),
    ({"timeout": -1}, "timeout must be"),
    ({"timeout": True}, "timeout must be"),
    ({"tgt_type": "regex"}, "tgt_type must be one of"),
    ({"severity": "loud"}, "severity must be one of"),
])
def test_bad_arguments(runner, kwargs, needle):
    with pytest.raises(salt.exceptions.SaltInvocationError, match=needle):
        runner.fleet(**kwargs)
    assert runner.client.calls == []


def test_table_for_people(runner):
    out = runner.fleet()
    assert set(out) == {"table"}
    lines = out["table"].splitlines()
    assert lines[0] == "6 minion(s): 1 critical, 1 warning, 0 info, 2 ok, 1 no return, 1 failed"
    header = lines[2].split()
    assert header == ["MINION", "WORST", "ORPHANS", "DELETED_BINARIES", "REBOOT_REQUIRED", "TIMEZONE", "CODES"]
    assert lines[3].split() == ["site-1", "critical", "1", "0", "0", "0", "orphans/supervisor-leak"]
    assert lines[5].split()[:6] == ["site-4", "ok", "0", "0", "0", "ERR"]
    assert "no return (never counted as healthy): site-5" in out["table"]
    assert "[all 4] " + NOTE in out["table"]
    assert "[1 of 4 (site-3)] timezone: PID 1's environment is not readable here" in out["table"]


def test_machine_outputters_get_the_data(runner):
    runner.__opts__["output"] = "json"
    assert "rows" in runner.fleet() and "table" not in runner.fleet()


def test_cached_from_grains_without_contacting_minions(runner):
    grains = {
        "site-1": {"hostcheck": {"orphans": {"count": 1, "programs": ["sh"], "warnings": 0},
                                 "timezone": {"zone": "UTC", "consistent": True}}},
        "site-2": {"hostcheck": {"orphans": {"count": 0, "programs": [], "warnings": 1},
                                 "reboot_required": {"required": True, "reasons": ["flag"]}}},
        "site-3": {"hostcheck": {"timezone": {"error": "TypeError: boom"}}},
        "site-4": {"os": "Debian"},
    }
    runner.__salt__ = {"cache.grains": lambda tgt, tgt_type: grains}
    out = runner.fleet(cached=True, table=False)
    assert runner.client.calls == []
    assert [(r["minion"], r["worst"]) for r in out["rows"]] == [("site-1", "critical"), ("site-2", "warning"),
                                                               ("site-3", "ok")]
    assert out["rows"][1]["counts"] == {"orphans": 1, "reboot_required": 1}
    assert out["rows"][2]["errors"] == {"timezone": "TypeError: boom"}
    assert out["failed"] == {"site-4": "no hostcheck grain in the cache (modules not synced?)"}
    assert out["no_return"] == ["site-5", "site-6"]
    assert out["cached"] is True
    text = runner.fleet(cached=True, table=True)["table"]
    assert "(from the master's grain cache)" in text and "no data in the cache" in text


def test_cli_examples_in_docstring(runner):
    assert "CLI Example" in runner.fleet.__doc__ and ".. code-block:: bash" in runner.fleet.__doc__
