"""
The ``hostcheck`` grain: a small summary of every registered hostcheck check,
cheap enough to compute at each minion start and on
``saltutil.refresh_grains``.

Keys (see README.rst)::

    hostcheck:
      orphans:
        count: 0          # leaked process trees (critical findings)
        programs: []      # programs involved, sorted
        warnings: 0       # warnings (unmanaged duplicates, leftovers of running units)
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

Options for the grain (``daemons``, ``ignore``, ...) are read from the minion
config (``hostcheck: {orphans: {daemons: ...}}``), since pillar is not
available while grains load.
"""

import os

import hostcheck_registry


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck grains need a Linux /proc file system")
    return True


def hostcheck():
    """Return the ``hostcheck`` grain dict."""
    return {"hostcheck": hostcheck_registry.grain(config=__opts__.get("hostcheck"))}  # pylint: disable=undefined-variable
