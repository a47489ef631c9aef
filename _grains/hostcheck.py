"""
The ``hostcheck`` grain: a small summary of every hostcheck check, cheap
enough to compute at each minion start and on ``saltutil.refresh_grains``.

Keys (see README.rst)::

    hostcheck:
      orphans:
        count: 0          # leaked process trees (critical findings)
        programs: []      # programs involved, sorted
        warnings: 0       # duplicate daemons where no copy is managed

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

import hostcheck_orphans

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


def _orphans():
    try:
        daemons = hostcheck_orphans.validate_daemons(_opts_section("orphans").get("daemons"))
        analysis = hostcheck_orphans.diagnose(daemons=daemons)
        return hostcheck_orphans.summary(analysis.findings)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("hostcheck grain: orphans check failed: %s", exc)
        return {"error": str(exc)}


def hostcheck():
    """Return the ``hostcheck`` grain dict."""
    return {"hostcheck": {"orphans": _orphans()}}
