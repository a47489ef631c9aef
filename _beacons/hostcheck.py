"""
Beacon ``hostcheck``: run the hostcheck checks every ``interval`` seconds
and fire one event per change, so a host with a steady problem does not
flood the master.

.. code-block:: yaml

    beacons:
      hostcheck:
        - interval: 60            # seconds between runs (Salt's own beacon option)
        - severity: warning       # the least severe finding that fires (default warning)
        - checks: [orphans, deleted_binaries]   # default: every registered check

Events (the tag is appended to ``salt/beacon/<minion id>/hostcheck/``):

``<check>/<code>``
    A finding appeared, or its severity changed. Data: ``state: found``,
    ``check``, ``code``, ``severity``, ``summary`` and ``finding`` (the
    finding in hostcheck's shared schema).
``<check>/<code>/resolved``
    A finding that was reported is gone. Same data, ``state: resolved``,
    describing the finding as it was last seen.
``<check>/error`` and ``<check>/error/resolved``
    A check that fails (a bad pillar value for it, say), once per change of
    its error text; ``report/error`` when ``hostcheck.report`` itself
    cannot run (modules not synced, a bad ``checks`` option).

A finding is the same finding from one run to the next when its check,
code and identity (the tree's root and start time, the unit, the program,
the resource or file it is about; never its PIDs or counts) are the same.
The last state is kept in ``__context__`` and, when it changes, in a small
JSON file in the minion's cache directory
(``<cachedir>/hostcheck/beacon-hostcheck.json``), so neither a module
refresh nor a minion restart fires a steady finding again.

Each run is one ``hostcheck.report`` call (one shared ``/proc`` snapshot
for every check); ``bench/beacon_bench.py`` measures its cost.
"""

import json
import logging
import os
import tempfile

log = logging.getLogger(__name__)

__virtualname__ = "hostcheck"

SEVERITIES = ("critical", "warning", "info")
RANK = {"critical": 0, "warning": 1, "info": 2}
#: this beacon's own options
OPTIONS = ("severity", "checks")
#: options Salt's beacon machinery reads (or adds) itself
GENERIC = ("interval", "disable_during_state_run", "run_once", "beacon_module", "enabled", "_beacon_name")
#: finding keys that say *which* thing a finding is about (never PIDs or counts)
IDENTITY = ("root", "started", "unit", "owner", "program", "service", "resource", "file", "line",
            "domain", "type", "zone", "supervisord")


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck beacon: needs a Linux /proc file system")
    return __virtualname__


def _merge(config):
    merged = {}
    for item in config:
        merged.update(item)
    return merged


def _check_list(value):
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return None
    return value


def validate(config):
    """``(True, ...)`` for a valid configuration, else ``(False, why)``."""
    if not isinstance(config, list) or not all(isinstance(item, dict) for item in config):
        return False, "Configuration for hostcheck beacon must be a list of mappings."
    merged = _merge(config)
    unknown = sorted(set(merged) - set(OPTIONS) - set(GENERIC))
    if unknown:
        return False, "hostcheck beacon: unknown option(s) {}; known: {}".format(
            ", ".join(unknown), ", ".join(OPTIONS + ("interval",)))
    if merged.get("severity", "warning") not in SEVERITIES:
        return False, "hostcheck beacon: severity must be one of {}, got {!r}".format(
            ", ".join(SEVERITIES), merged["severity"])
    if "checks" in merged and _check_list(merged["checks"]) is None:
        return False, "hostcheck beacon: checks must be a check name or a list of them, got {!r}".format(
            merged["checks"])
    interval = merged.get("interval", 1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        return False, "hostcheck beacon: interval must be a positive number of seconds, got {!r}".format(interval)
    return True, "Valid beacon configuration"


# --------------------------------------------------------------------------
# state and changes (pure)


def identity(finding):
    """The key that says a finding is the same from one run to the next."""
    ident = [finding.get("check"), finding.get("code")]
    ident += [[k, finding[k]] for k in IDENTITY if finding.get(k) not in (None, "", [], {})]
    return json.dumps(ident, sort_keys=True, default=str)


def _record(check, code, severity, summary, finding):
    return {"check": check, "code": code, "severity": severity, "summary": summary, "finding": finding}


def state_of(report):
    """``{identity: record}`` for a ``hostcheck.report`` result: its findings
    and the checks that failed (code ``error``)."""
    out = {}
    for f in report.get("findings") or []:
        out[identity(f)] = _record(f.get("check"), f.get("code"), f.get("severity"), f.get("summary"), f)
    for name, entry in sorted((report.get("checks") or {}).items()):
        if isinstance(entry, dict) and entry.get("error"):
            out[json.dumps([name, "error"])] = _record(name, "error", "warning", entry["error"], None)
    return out


def _event(record, state):
    tag = "{}/{}".format(record["check"], record["code"])
    data = dict(record, state=state)
    data["tag"] = tag if state == "found" else tag + "/resolved"
    return data


def _changed(old, new):
    return old is None or old["severity"] != new["severity"] or (
        new["code"] == "error" and old["summary"] != new["summary"])


def changes(previous, current):
    """The events from ``previous`` to ``current`` (both :func:`state_of`):
    ``resolved`` for what went away, ``found`` for what is new or changed
    severity; worst first."""
    gone = [_event(previous[k], "resolved") for k in sorted(previous) if k not in current]
    new = [_event(current[k], "found") for k in sorted(current) if _changed(previous.get(k), current[k])]
    new.sort(key=lambda e: RANK.get(e["severity"], 1))
    return gone + new


# --------------------------------------------------------------------------
# remembering the last state


def _state_file(name):
    cachedir = __opts__.get("cachedir") or tempfile.gettempdir()  # pylint: disable=undefined-variable
    return os.path.join(cachedir, "hostcheck", "beacon-{}.json".format(name))


def _load(name):
    key = "hostcheck.beacon." + name
    if key not in __context__:  # pylint: disable=undefined-variable
        try:
            with open(_state_file(name), encoding="utf-8") as fh:
                loaded = json.load(fh)
            __context__[key] = loaded if isinstance(loaded, dict) else {}  # pylint: disable=undefined-variable
        except (OSError, ValueError):
            __context__[key] = {}  # pylint: disable=undefined-variable
    return __context__[key]  # pylint: disable=undefined-variable


def _save(name, state):
    path = _state_file(name)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".beacon-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("hostcheck beacon: cannot keep its state in %s: %s", path, exc)


def _report(opts):
    kwargs = {"severity": opts.get("severity", "warning")}
    if opts.get("checks"):
        kwargs["checks"] = _check_list(opts["checks"])
    try:
        return __salt__["hostcheck.report"](**kwargs)  # pylint: disable=undefined-variable
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck beacon: hostcheck.report failed: %s", exc)
        return {"checks": {"report": {"count": 0, "error": str(exc)}}, "findings": []}


def beacon(config):
    """Run the checks; return one event per change since the last run."""
    opts = _merge(config)
    name = str(opts.get("_beacon_name") or __virtualname__)
    previous = _load(name)
    current = state_of(_report(opts))
    events = changes(previous, current)
    __context__["hostcheck.beacon." + name] = current  # pylint: disable=undefined-variable
    if events or set(previous) != set(current):
        _save(name, current)  # on change only: a steady host writes nothing
    return events
