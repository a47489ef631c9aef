"""Prometheus metrics of a hostcheck report, in the text exposition format
(version 0.0.4: what node_exporter's textfile collector and every
Prometheus server read).

``prometheus()`` runs the report (each check timed on one shared snapshot)
and returns the text; ``exposition()`` is the pure formatting; ``exported()``
is the ``hostcheck.metrics_exported`` state: it writes the text atomically
to a ``.prom`` file for the textfile collector.

Metrics (every check of the report appears in each family that has a
``check`` label, with 0 when it has nothing to report)::

    hostcheck_findings{check, severity}          findings per check and severity
    hostcheck_findings_by_code{check, code, severity}   only codes seen
    hostcheck_check_up{check}                    1 if the check ran, 0 if it failed
    hostcheck_check_duration_seconds{check}      the check's run time
    hostcheck_worst_severity                     0 ok, 1 info, 2 warning, 3 critical

Runtime dependencies: the Python standard library only.
"""

import os
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_files
import hostcheck_registry

#: where node_exporter's textfile collector reads on Debian (prometheus-node-exporter)
DEFAULT_PATH = "/var/lib/prometheus/node-exporter/hostcheck.prom"
SEVERITY_VALUE = {"ok": 0, "info": 1, "warning": 2, "critical": 3}

FAMILIES = (
    ("hostcheck_findings", "Findings of the last hostcheck report, per check and severity."),
    ("hostcheck_findings_by_code", "Findings of the last hostcheck report, per check, code and severity "
                                   "(only codes that were found)."),
    ("hostcheck_check_up", "1 if the check ran, 0 if it failed (see the minion log or hostcheck.report)."),
    ("hostcheck_check_duration_seconds", "Wall-clock time the check took in the last report."),
    ("hostcheck_worst_severity", "Worst severity found: 0 ok, 1 info, 2 warning, 3 critical."),
)


# --------------------------------------------------------------------------
# running the report, each check timed


def timed_report(checks=None, severity=None, get=None, host=None):
    """``hostcheck_registry.report()`` with ``seconds`` in each check's entry:
    the checks run one after the other on one shared snapshot (the first
    one pays for taking it)."""
    args = hostcheck_config.validate(hostcheck_registry.REPORT_ARGS, {"checks": checks, "severity": severity})
    wanted = args["checks"] or [c.NAME for c in hostcheck_registry.CHECKS]
    host = host or hostcheck_check.Host()
    out = {"checks": {}, "findings": [], "notes": []}
    for check in hostcheck_registry.CHECKS:
        if check.NAME not in wanted:
            continue
        start = time.perf_counter()
        part = hostcheck_registry.report(checks=[check.NAME], severity=args["severity"], host=host, get=get)
        entry = dict(part["checks"][check.NAME], seconds=time.perf_counter() - start)
        out["checks"][check.NAME] = entry
        out["findings"].extend(part["findings"])
        out["notes"].extend(part["notes"])
    out["findings"] = hostcheck_check.by_severity(out["findings"])
    out["worst"] = hostcheck_check.worst(out["findings"])
    return out


# --------------------------------------------------------------------------
# the exposition format (pure)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name, labels, value):
    inner = ",".join('{}="{}"'.format(k, _escape(v)) for k, v in labels)
    return "{}{{{}}} {}".format(name, inner, value) if inner else "{} {}".format(name, value)


def _number(value):
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def samples(report):
    """``{family: [sample line, ...]}`` for a report (pure)."""
    out = {name: [] for name, _ in FAMILIES}
    checks = report.get("checks") or {}
    by_code = {}
    for f in report.get("findings") or []:
        key = (f["check"], f["code"], f["severity"])
        by_code[key] = by_code.get(key, 0) + 1
    for check in checks:
        for sev in hostcheck_check.SEVERITIES:
            n = sum(v for (c, _, s), v in by_code.items() if c == check and s == sev)
            out["hostcheck_findings"].append(_sample("hostcheck_findings", [("check", check), ("severity", sev)], n))
    for (check, code, sev), n in sorted(by_code.items()):
        out["hostcheck_findings_by_code"].append(
            _sample("hostcheck_findings_by_code", [("check", check), ("code", code), ("severity", sev)], n))
    for check, entry in checks.items():
        up = 0 if entry.get("error") else 1
        out["hostcheck_check_up"].append(_sample("hostcheck_check_up", [("check", check)], up))
        if entry.get("seconds") is not None:
            out["hostcheck_check_duration_seconds"].append(_sample(
                "hostcheck_check_duration_seconds", [("check", check)], _number(round(entry["seconds"], 6))))
    worst = report.get("worst") or hostcheck_check.worst(report.get("findings") or [])
    out["hostcheck_worst_severity"].append(_sample("hostcheck_worst_severity", [], SEVERITY_VALUE[worst]))
    return out


def exposition(report):
    """The Prometheus text exposition of a report: ``# HELP``/``# TYPE``
    lines, then the samples of each family (all gauges)."""
    lines = []
    per_family = samples(report)
    for name, help_text in FAMILIES:
        if not per_family[name]:
            continue
        lines += ["# HELP {} {}".format(name, help_text), "# TYPE {} gauge".format(name)]
        lines += per_family[name]
    return "\n".join(lines) + "\n"


def prometheus(checks=None, severity=None, get=None, host=None):
    """Run the report (timed per check) and return its exposition text."""
    return exposition(timed_report(checks=checks, severity=severity, get=get, host=host))


# --------------------------------------------------------------------------
# the state: metrics_exported


def _without_durations(text):
    return [line for line in (text or "").splitlines() if not line.startswith("hostcheck_check_duration_seconds")]


def _totals(text):
    out = {}
    for line in _without_durations(text):
        if line.startswith("hostcheck_findings{"):
            sev = line.split('severity="', 1)[1].split('"', 1)[0]
            out[sev] = out.get(sev, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def validate_path(path, name="path"):
    """An absolute ``.prom`` path in an existing directory (the collector's)."""
    if not isinstance(path, str) or not os.path.isabs(path) or not path.endswith(".prom") or "\0" in path:
        raise hostcheck_config.ConfigError("{} must be an absolute path ending in .prom, got {!r}".format(name, path))
    if not os.path.isdir(os.path.dirname(path)):
        raise hostcheck_config.ConfigError(
            "{}: directory {} does not exist (is node_exporter's textfile collector set up?)".format(
                name, os.path.dirname(path)))
    return path


def _old_text(path):
    try:
        old = hostcheck_files.read_regular(path, follow=False)
    except (OSError, hostcheck_files.FileError):
        return None
    return old.text() if old is not None else None


def exported(name, path=None, checks=None, severity=None, test=False, get=None, host=None):
    """The ``hostcheck.metrics_exported`` state: write the report's metrics
    to ``path`` (default ``hostcheck:metrics:path``, else
    :data:`DEFAULT_PATH`) atomically. ``changes`` says how the finding
    counts changed; a run that only refreshes the durations changes
    nothing (the file is rewritten all the same, unless ``test``)."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        path = validate_path(path if path is not None else (get("hostcheck:metrics:path") if get else None)
                             or DEFAULT_PATH)
        text = prometheus(checks=checks, severity=severity, get=get, host=host)
    except hostcheck_config.ConfigError as exc:
        return dict(ret, result=False, comment="Invalid arguments, nothing written: {}".format(exc))
    old = _old_text(path)
    if old is None or _without_durations(old) != _without_durations(text):
        ret["changes"] = {"path": path, "findings": {"old": _totals(old) if old else None, "new": _totals(text)}}
    if test:
        ret["result"] = None if ret["changes"] else True
        ret["comment"] = ("Would write the metrics to {}" if ret["changes"] else
                          "Metrics in {} are current (findings unchanged)").format(path)
        return ret
    try:
        hostcheck_files.atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        return dict(ret, changes={}, result=False, comment="Cannot write {}: {}".format(path, exc))
    ret["comment"] = ("Wrote the metrics to {}" if ret["changes"] else
                      "Refreshed the metrics in {} (findings unchanged)").format(path)
    return ret
