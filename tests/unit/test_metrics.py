"""hostcheck_metrics: the Prometheus text exposition of a report, parsed with
prometheus_client's own parser (a test requirement only; the runtime is
stdlib), and the metrics_exported state writing a textfile-collector file."""
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

import hostcheck_check as hc
import hostcheck_metrics as hm
import hostcheck_registry
from tests.fakes import fake_proc_root, make_proc

SUP_ENV = b"SUPERVISOR_PROCESS_NAME=worker\0SUPERVISOR_GROUP_NAME=worker\0"


def parse(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family):
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


REPORT = {
    "worst": "critical",
    "checks": {"orphans": {"count": 2, "error": None, "seconds": 0.0123},
               "timezone": {"count": 1, "error": None, "seconds": 0.002},
               "deleted_binaries": {"count": 0, "error": 'OSError: "odd"\\ path\nline', "seconds": 0.5}},
    "findings": [
        {"check": "orphans", "code": "supervisor-leak", "severity": "critical", "summary": "", "pids": [1]},
        {"check": "orphans", "code": "duplicate-daemon", "severity": "warning", "summary": "", "pids": [2]},
        {"check": "timezone", "code": "zone-conflict", "severity": "critical", "summary": "", "pids": []},
    ],
    "notes": [],
}


def test_exposition_parses_with_help_and_type():
    text = hm.exposition(REPORT)
    fams = parse(text)
    assert set(fams) == {"hostcheck_findings", "hostcheck_findings_by_code", "hostcheck_check_up",
                         "hostcheck_check_duration_seconds", "hostcheck_worst_severity"}
    for name, fam in fams.items():
        assert fam.type == "gauge"
        assert "# HELP {} ".format(name) in text and "# TYPE {} gauge".format(name) in text
        assert fam.documentation


def test_counts_by_check_severity_and_code():
    fams = parse(hm.exposition(REPORT))
    findings = samples(fams["hostcheck_findings"])
    assert findings[(("check", "orphans"), ("severity", "critical"))] == 1
    assert findings[(("check", "orphans"), ("severity", "warning"))] == 1
    assert findings[(("check", "orphans"), ("severity", "info"))] == 0
    assert findings[(("check", "deleted_binaries"), ("severity", "critical"))] == 0  # zeros are there
    assert len(findings) == 9  # every check x every severity
    codes = samples(fams["hostcheck_findings_by_code"])
    assert codes == {(("check", "orphans"), ("code", "duplicate-daemon"), ("severity", "warning")): 1,
                     (("check", "orphans"), ("code", "supervisor-leak"), ("severity", "critical")): 1,
                     (("check", "timezone"), ("code", "zone-conflict"), ("severity", "critical")): 1}
    assert samples(fams["hostcheck_worst_severity"]) == {(): 3}


def test_run_time_and_up():
    fams = parse(hm.exposition(REPORT))
    assert samples(fams["hostcheck_check_duration_seconds"])[(("check", "orphans"),)] == pytest.approx(0.0123)
    up = samples(fams["hostcheck_check_up"])
    assert up[(("check", "orphans"),)] == 1 and up[(("check", "deleted_binaries"),)] == 0


def test_label_values_are_escaped():
    report = {"checks": {"orphans": {"count": 1, "error": None}}, "worst": "info",
              "findings": [{"check": "orphans", "code": 'we"ird\\co\nde', "severity": "info"}]}
    fams = parse(hm.exposition(report))
    ((labels, value),) = samples(fams["hostcheck_findings_by_code"]).items()
    assert dict(labels)["code"] == 'we"ird\\co\nde' and value == 1


def test_healthy_report_has_no_code_family():
    report = {"checks": {"orphans": {"count": 0, "error": None}}, "worst": "ok", "findings": []}
    fams = parse(hm.exposition(report))
    assert "hostcheck_findings_by_code" not in fams
    assert samples(fams["hostcheck_worst_severity"]) == {(): 0}


@pytest.fixture
def leaked_host(tmp_path):
    root = fake_proc_root(tmp_path)
    make_proc(root, 1, 0, cmdline=b"/sbin/init\0", exe="/sbin/init")
    make_proc(root, 100, 1, cmdline=b"/usr/bin/worker\0", exe="/usr/bin/worker", environ=SUP_ENV)
    make_proc(root, 101, 100, pgid=100, cmdline=b"/usr/bin/worker\0", exe="/usr/bin/worker")
    return hc.Host(proc_root=str(root), run_root=str(tmp_path / "run"), etc_root=str(tmp_path / "etc"))


def test_timed_report_equals_the_report(leaked_host):
    timed = hm.timed_report(host=leaked_host)
    plain = hostcheck_registry.report(host=hc.Host(leaked_host.proc_root, leaked_host.etc_root, leaked_host.run_root))
    assert {k: {"count": v["count"], "error": v["error"]} for k, v in timed["checks"].items()} == plain["checks"]
    assert timed["findings"] == plain["findings"] and timed["worst"] == plain["worst"] == "critical"
    assert all(v["seconds"] >= 0 for v in timed["checks"].values())
    fams = parse(hm.prometheus(host=hc.Host(leaked_host.proc_root, leaked_host.etc_root, leaked_host.run_root)))
    codes = samples(fams["hostcheck_findings_by_code"])
    assert codes[(("check", "orphans"), ("code", "supervisor-leak"), ("severity", "critical"))] == 1


def test_this_host_parses():
    """The real report of the machine running the tests (read only)."""
    fams = parse(hm.prometheus(checks=["orphans", "timezone"], severity="warning"))
    assert {dict(k)["check"] for k in samples(fams["hostcheck_check_up"])} == {"orphans", "timezone"}


def test_exported_writes_atomically_and_reports_changes(tmp_path, leaked_host):
    path = str(tmp_path / "hostcheck.prom")
    ret = hm.exported("metrics", path=path, test=True, host=leaked_host)
    assert ret["result"] is None and ret["changes"]["path"] == path and not os.path.exists(path)
    ret = hm.exported("metrics", path=path, host=leaked_host.fresh())
    assert ret["result"] is True and ret["changes"]["findings"]["old"] is None
    assert ret["changes"]["findings"]["new"]["critical"] == 1  # the leak (the fake /etc adds a warning)
    assert parse(open(path).read())["hostcheck_worst_severity"].samples[0].value == 3
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".hostcheck-")] == []
    # only the durations differ: rewritten, no change reported
    ret = hm.exported("metrics", path=path, host=leaked_host.fresh())
    assert ret["result"] is True and ret["changes"] == {} and "findings unchanged" in ret["comment"]
    ret = hm.exported("metrics", path=path, test=True, host=leaked_host.fresh())
    assert ret["result"] is True and ret["changes"] == {}


def test_exported_path_from_config(tmp_path, leaked_host):
    path = str(tmp_path / "x.prom")
    ret = hm.exported("m", get={"hostcheck:metrics:path": path}.get, host=leaked_host)
    assert ret["result"] is True and os.path.exists(path)


@pytest.mark.parametrize("path,needle", [
    ("relative.prom", "absolute path ending in .prom"),
    ("/tmp/x.txt", "absolute path ending in .prom"),
    ("/nonexistent-dir-hc/x.prom", "does not exist"),
    (5, "absolute path"),
])
def test_exported_bad_path_writes_nothing(path, needle, leaked_host):
    ret = hm.exported("m", path=path, host=leaked_host)
    assert ret["result"] is False and needle in ret["comment"] and ret["changes"] == {}


def test_exported_bad_severity(tmp_path, leaked_host):
    ret = hm.exported("m", path=str(tmp_path / "a.prom"), severity="loud", host=leaked_host)
    assert ret["result"] is False and "severity must be one of" in ret["comment"]
