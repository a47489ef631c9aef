"""
The ``hostcheck`` grain: a small summary of every hostcheck check, cheap
enough to compute at each minion start and on ``saltutil.refresh_grains``.

Keys (see README.rst)::

    hostcheck:
      orphans:
        count: 0          # leaked process trees (critical findings)
        programs: []      # programs involved, sorted
        warnings: 0       # duplicate daemons where no copy is managed
      deleted_binaries:   # daemon roots whose executable was deleted
        count: 0
        units: []
        programs: []
      reboot_required:
        required: false
        reasons: []
      timezone:
        zone: Etc/UTC     # effective zone (/etc/localtime; UTC if missing)
        consistent: true  # every zone source agrees

Target with e.g. ``salt -G 'hostcheck:orphans:count:0' test.ping`` (healthy
minions) or ``salt -C 'not G@hostcheck:orphans:count:0' hostcheck.orphans``.
A check that fails yields ``{"error": "..."}`` in its entry instead of
raising, so grain loading never breaks.

Extra daemons for the grain are read from the minion config
(``hostcheck: {orphans: {daemons: ...}}``), since pillar is not available
while grains load.
"""

import logging
import os

import hostcheck_deleted
import hostcheck_orphans
import hostcheck_proc
import hostcheck_reboot
import hostcheck_timezone

log = logging.getLogger(__name__)


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck grains need a Linux /proc file system")
    return True


def _opts_section(name):
    conf = __opts__.get("hostcheck") or {}  # pylint: disable=undefined-variable
    if not isinstance(conf, dict):
        return {}
    section = conf.get(name) or {}
    return section if isinstance(section, dict) else {}


def _orphans(snaps=None):
    try:
        daemons = hostcheck_orphans.validate_daemons(_opts_section("orphans").get("daemons"))
        analysis = hostcheck_orphans.diagnose(daemons=daemons)
        if snaps is not None:
            snaps.append(analysis.snap)  # reused by the deleted_binaries summary
        return hostcheck_orphans.summary(analysis.findings)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck grain: orphans check failed: %s", exc)
        return {"error": str(exc)}


def _deleted_binaries(snaps):
    try:
        snap = snaps[0] if snaps else hostcheck_proc.snapshot()
        return hostcheck_deleted.grain_summary(snap)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck grain: deleted_binaries check failed: %s", exc)
        return {"error": str(exc)}


def _reboot_required():
    try:
        verdict = hostcheck_reboot.check()
        return {"required": verdict["required"], "reasons": verdict["reasons"]}
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck grain: reboot_required check failed: %s", exc)
        return {"error": str(exc)}


def _timezone():
    # a few file reads: no process scan, no zoneinfo walk, no subprocess
    try:
        return hostcheck_timezone.grain()
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck grain: timezone check failed: %s", exc)
        return {"error": str(exc)}


def hostcheck():
    """Return the ``hostcheck`` grain dict."""
    snaps = []
    return {"hostcheck": {
        "orphans": _orphans(snaps),
        "deleted_binaries": _deleted_binaries(snaps),
        "reboot_required": _reboot_required(),
        "timezone": _timezone(),
    }}
