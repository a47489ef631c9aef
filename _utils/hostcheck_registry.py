"""The registry of checks, and what iterates it: the grain and ``hostcheck.report``.

Adding a check: write its module (see ``hostcheck_check`` for the stages),
import it here and add it to :data:`CHECKS`. The grain and the report pick
it up; a check that fails yields ``{"error": ...}`` in its own entry and
never breaks the others.

Runtime dependencies: the Python standard library only.
"""

import logging

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_deleted
import hostcheck_logind
import hostcheck_orphans
import hostcheck_reboot
import hostcheck_rlimits
import hostcheck_timezone

log = logging.getLogger(__name__)

#: every check, in report order
CHECKS = (hostcheck_orphans, hostcheck_deleted, hostcheck_reboot, hostcheck_timezone, hostcheck_logind,
          hostcheck_rlimits)
BY_NAME = {c.NAME: c for c in CHECKS}


def get(name):
    """The check module called ``name``."""
    return BY_NAME[name]


def _error(exc):
    if isinstance(exc, hostcheck_config.ConfigError):
        return "invalid configuration: {}".format(exc)
    return "{}: {}".format(type(exc).__name__, exc)


def grain(host=None, config=None):
    """``{check: summary}`` for every check, each read in its quick mode
    from one shared snapshot. ``config`` is the minion config's
    ``hostcheck`` mapping (pillar is not there while grains load)."""
    host = host or hostcheck_check.Host()
    config = config if isinstance(config, dict) else {}
    out = {}
    for check in CHECKS:
        section = config.get(check.NAME)
        section = section if isinstance(section, dict) else {}
        try:
            opts = hostcheck_check.options(
                check, {k: v for k, v in section.items() if k in check.OPTIONS})
            out[check.NAME] = check.summarise(hostcheck_check.diagnose(check, host, opts, quick=True))
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("hostcheck grain: %s check failed: %s", check.NAME, exc)
            out[check.NAME] = {"error": _error(exc)}
    return out


REPORT_ARGS = {
    "checks": hostcheck_config.string_list(
        check=lambda n: None if n in BY_NAME else "is not a check (known: {})".format(", ".join(BY_NAME))),
    "severity": hostcheck_config.choice("info", hostcheck_check.SEVERITIES),
}


def report(checks=None, severity=None, host=None, get=None):
    """Every (or the named) check once, on one shared snapshot.

    Returns ``{"worst": critical|warning|info|ok, "checks": {name: {"count",
    "error"}}, "findings": [...worst first...], "notes": [...]}``; only
    findings of ``severity`` or worse are listed and counted. Raises
    :class:`hostcheck_config.ConfigError` for bad arguments.
    """
    args = hostcheck_config.validate(REPORT_ARGS, {"checks": checks, "severity": severity})
    names = args["checks"] or [c.NAME for c in CHECKS]
    limit = hostcheck_check.RANK[args["severity"]]
    host = host or hostcheck_check.Host()
    entries, findings, notes = {}, [], []
    for check in CHECKS:
        if check.NAME not in names:
            continue
        try:
            diag = hostcheck_check.diagnose(check, host, hostcheck_check.options(check, None, get))
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("hostcheck.report: %s check failed: %s", check.NAME, exc)
            entries[check.NAME] = {"count": 0, "error": _error(exc)}
            continue
        kept = [f for f in diag.findings if hostcheck_check.RANK[f["severity"]] <= limit]
        entries[check.NAME] = {"count": len(kept), "error": None}
        findings.extend(kept)
        notes.extend("{}: {}".format(check.NAME, n) for n in diag.notes)
    findings = hostcheck_check.by_severity(findings)
    return {"worst": hostcheck_check.worst(findings), "checks": entries,
            "findings": findings, "notes": notes}
