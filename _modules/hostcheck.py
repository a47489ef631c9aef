"""
hostcheck: find the slow-burning host problems that cause outages.

Execution module, virtual name ``hostcheck``. Every function reads the host
through hostcheck's shared snapshot layer (``_utils/hostcheck_proc.py``) and
returns plain data (dicts, lists, strings, numbers) in the shared finding
schema::

    {"check": "orphans", "code": "supervisor-leak", "severity": "critical",
     "summary": "one line a person can read", "pids": [...], ...}

Configuration is read with ``config.get`` (minion config, grains, pillar),
under the ``hostcheck`` key; see ``pillar.example``.
"""

import logging
import os

import salt.exceptions

import hostcheck_orphans

log = logging.getLogger(__name__)

__virtualname__ = "hostcheck"


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck: needs a Linux /proc file system")
    return __virtualname__


def _config(key, default=None):
    return __salt__["config.get"]("hostcheck:" + key, default)  # pylint: disable=undefined-variable


def _daemons(daemons):
    if daemons is None:
        daemons = _config("orphans:daemons", None)
    try:
        return hostcheck_orphans.validate_daemons(daemons)
    except hostcheck_orphans.ConfigError as exc:
        raise salt.exceptions.CommandExecutionError(str(exc)) from exc


def orphans(daemons=None):
    """
    Report process trees that escaped the supervisor or service manager that
    started them.

    Three kinds of leak are reported (``code``):

    ``supervisor-leak``
        A tree whose root carries supervisord's ``SUPERVISOR_PROCESS_NAME``
        while no live supervisord is above it (supervisord was killed and the
        tree re-parented to init or a subreaper), or a tree in a
        supervisord unit's cgroup that is no longer below supervisord.
    ``unit-leftover``
        Processes left in the cgroup of a systemd service that is no longer
        active (what ``KillMode=process`` leaves behind).
    ``duplicate-daemon``
        A second tree of a single-instance daemon (salt-minion, salt-master,
        supervisord, cron/crond, rsyslogd, ``dbus-daemon --system``,
        systemd-logind, plus ``hostcheck:orphans:daemons``) with the same
        configuration in the same namespaces. ``duplicate_of`` names the
        managed copy when there is exactly one.

    Findings of severity ``critical`` are leaks that
    ``hostcheck.orphans_reaped`` may terminate. Daemons that double-forked
    and were legitimately adopted by init are not leaks and are never
    critical; a tree inside an active unit but not below its main process is
    reported as ``stray`` with severity ``info``.

    daemons
        Extra single-instance daemons, merged over the defaults, as
        ``{name: {options: [...], require: [...]}}`` (``name: null`` removes
        a default). Defaults to ``hostcheck:orphans:daemons`` from config or
        pillar.

    Returns ``{"leaked": N, "programs": [...], "findings": [...],
    "processes": N, "notes": [...]}``. Only the provenance keys of a
    process's environment (``SUPERVISOR_*``) are read; no other environment
    value leaves the minion.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.orphans
        salt '*' hostcheck.orphans --out=json
    """
    merged = _daemons(daemons)
    analysis = hostcheck_orphans.diagnose(daemons=merged)
    summ = hostcheck_orphans.summary(analysis.findings)
    notes = list(analysis.notes)
    if os.geteuid() != 0:
        notes.append(
            "not running as root: other users' processes are only partly readable, "
            "so their leaks may be missed"
        )
    findings = []
    for f in analysis.findings:
        f = dict(f)
        f.pop("reapable", None)
        findings.append(f)
    return {
        "leaked": summ["count"],
        "programs": summ["programs"],
        "findings": findings,
        "processes": len(analysis.snap.procs),
        "notes": notes,
    }
