"""
hostcheck states: remedies for what the ``hostcheck`` execution module finds.

Every state diagnoses with the same code as the execution module, plans from
the findings, acts, and diagnoses again to verify. With ``test=True`` it
stops after the plan. A second run is a no-op.
"""

import logging
import numbers
import os

import hostcheck_orphans
import hostcheck_timezone

log = logging.getLogger(__name__)

__virtualname__ = "hostcheck"


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck states need a Linux /proc file system")
    return __virtualname__


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def _globs(value, what):
    """Normalise a match/exclude argument: None, a string or a list of strings."""
    if value is None:
        return None, None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        return None, "{} must be a glob string or a list of glob strings, got {!r}".format(what, value)
    return list(value), None


def _describe(item):
    return {
        "root": item["root"],
        "program": item["program"],
        "code": item["code"],
        "pids": [pid for pid, _ in item["pids"]],
    }


def orphans_reaped(name, match=None, exclude=None, timeout=10, daemons=None):
    """
    Terminate the leaked process trees that ``hostcheck.orphans`` reports as
    critical: SIGTERM to the whole tree (frozen with SIGSTOP first so it
    cannot re-spawn), wait up to ``timeout`` seconds, SIGKILL to what is
    left, then diagnose again.

    Before every signal each process's identity (PID and start time) is
    checked again, through a pidfd where the kernel has them. PID 1, kernel
    threads, the managed twin of a duplicate, and the tree of the minion
    running this job (and its ancestors) are never signalled directly. If
    this job runs inside the leaked copy of a duplicated salt-minion, the
    reaping of that tree is deferred to a detached helper that acts after
    the job has returned its result; a following run then comes from the
    managed minion and is a no-op.

    name
        An ID for the state; not used otherwise.
    match
        Glob or list of globs; only trees whose program, supervisor program
        or systemd unit matches are reaped.
    exclude
        Glob or list of globs; trees matching any are left alone.
    timeout
        Seconds to wait after SIGTERM before SIGKILL (0 < timeout <= 600).
    daemons
        Extra single-instance daemons, as for ``hostcheck.orphans``.

    .. code-block:: yaml

        reap leaked trees:
          hostcheck.orphans_reaped:
            - exclude:
              - postgres*
            - timeout: 15
    """
    ret = _ret(name)
    match, err = _globs(match, "match")
    if err is None:
        exclude, err = _globs(exclude, "exclude")
    if err is None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not 0 < timeout <= 600
    ):
        err = "timeout must be a number of seconds between 0 and 600, got {!r}".format(timeout)
    if err is None:
        try:
            if daemons is None:
                daemons = __salt__["config.get"]("hostcheck:orphans:daemons", None)  # pylint: disable=undefined-variable
            daemons = hostcheck_orphans.validate_daemons(daemons)
        except hostcheck_orphans.ConfigError as exc:
            err = str(exc)
    if err is not None:
        ret["result"] = False
        ret["comment"] = "Invalid arguments, nothing done: " + err
        return ret

    analysis = hostcheck_orphans.diagnose(daemons=daemons)
    chosen = hostcheck_orphans.select(analysis.findings, match=match, exclude=exclude)
    plans = [p for p in hostcheck_orphans.plan(analysis, chosen) if p["pids"]]
    if not plans:
        ret["comment"] = "No leaked process trees to reap"
        skipped = [f for f in analysis.findings if f.get("reapable")]
        if skipped:
            ret["comment"] += " ({} leaked tree(s) left alone by match/exclude)".format(len(skipped))
        return ret

    direct = [p for p in plans if not p["contains_self"]]
    deferred = [p for p in plans if p["contains_self"]]

    euid = os.geteuid()
    if euid != 0:
        foreign = sorted(
            pid for p in plans for pid, _ in p["pids"]
            if analysis.snap.procs[pid].uid != euid
        )
        if foreign:
            ret["result"] = False
            ret["comment"] = (
                "The minion runs as uid {} and cannot signal processes of other users "
                "(PIDs {}); nothing was done. Run the state as root.".format(
                    euid, ", ".join(str(p) for p in foreign))
            )
            return ret

    if __opts__.get("test"):  # pylint: disable=undefined-variable
        ret["result"] = None
        ret["changes"] = {"would_reap": [_describe(p) for p in plans]}
        lines = ["Would reap {} leaked tree(s)".format(len(plans))]
        for p in plans:
            lines.append(
                "  {} (root {}, {} processes){}".format(
                    p["program"], p["root"], len(p["pids"]),
                    "; runs this job: would be reaped after it returns" if p["contains_self"] else "",
                )
            )
        ret["comment"] = "\n".join(lines)
        return ret

    reaped = []
    for p in direct:
        never = (1, os.getpid())
        outcome = hostcheck_orphans.reap(p["pids"], timeout=timeout, never=never)
        item = _describe(p)
        item.update(outcome)
        reaped.append(item)

    changes = {}
    if reaped:
        changes["reaped"] = reaped
    comments = []
    if deferred:
        helper = hostcheck_orphans.spawn_deferred(deferred, timeout)
        changes["deferred"] = [dict(_describe(p), helper_pid=helper) for p in deferred]
        comments.append(
            "{} leaked tree(s) contain the minion running this job; helper PID {} reaps "
            "them after this job returns. Apply again to verify.".format(len(deferred), helper)
        )
    ret["changes"] = changes

    # verify: none of the reaped identities may still be alive, and the
    # diagnosis must no longer report those trees.
    survivors = sorted({pid for item in reaped for pid in item["survivors"]})
    after = hostcheck_orphans.diagnose(daemons=daemons)
    still = [
        f for f in hostcheck_orphans.select(after.findings, match=match, exclude=exclude)
        if f["root"] in {p["root"] for p in direct}
    ]
    if survivors or still:
        ret["result"] = False
        comments.insert(
            0,
            "Reaping failed: still alive: {}".format(
                ", ".join(str(p) for p in survivors or [f["root"] for f in still])
            ),
        )
    elif reaped:
        comments.insert(
            0,
            "Reaped {} leaked tree(s): {}".format(
                len(reaped),
                "; ".join(
                    "{} (root {}, {} terminated, {} killed)".format(
                        r["program"], r["root"], len(r["terminated"]), len(r["killed"])
                    )
                    for r in reaped
                ),
            ),
        )
    ret["comment"] = "\n".join(comments)
    return ret


def timezone_pinned(name, copy=False, daemons=None, timeout=30):
    """
    Pin the timezone: make every source name ``name`` and restart the
    daemons that cached the old zone.

    The zone is validated before anything is touched: plain path components
    under the zoneinfo directory (no ``..``, no absolute path, no symlink
    leading out of it) naming a valid TZif file. Then:

    - ``/etc/localtime`` becomes a relative symlink into zoneinfo (or, with
      ``copy: True``, a copy of the zone file); an existing absolute symlink
      to the same zone is left alone;
    - ``/etc/timezone`` is written on the Debian family or where it exists,
      ``ZONE=`` in ``/etc/sysconfig/clock`` where that exists, and ``TZ`` in
      ``/etc/environment`` where it names another zone; each write is atomic
      (temp file in the same directory, fsync, rename), owner and mode kept;
    - the time-caching daemons (``hostcheck:timezone:daemons``; default
      cron, crond, rsyslogd, atd) are restarted through their systemd unit
      when files changed, or when they started before the last change of the
      zone files (stale though the files are right); each must come back as a
      new process. A daemon that survives its restart, or that no service
      manager can restart, makes the result False and is named.

    The result is verified by diagnosing again. ``PID 1``'s own ``TZ``
    cannot be changed without a reboot: it is reported, not hidden.

    name
        The zone, e.g. ``Europe/Paris``.
    copy
        Write ``/etc/localtime`` as a copy instead of a symlink.
    daemons
        Time-caching daemon programs, as for ``hostcheck.timezone``.
    timeout
        Seconds to wait for each restart and for the old process to exit.

    .. code-block:: yaml

        Etc/UTC:
          hostcheck.timezone_pinned: []

        pin the zone:
          hostcheck.timezone_pinned:
            - name: Europe/Paris
            - copy: True
    """
    ret = _ret(name)
    if daemons is None:
        daemons = __salt__["config.get"]("hostcheck:timezone:daemons", None)  # pylint: disable=undefined-variable
    result, changes, comment = hostcheck_timezone.pin(
        name, copy=copy, daemons=daemons, timeout=timeout,
        test=bool(__opts__.get("test")),  # pylint: disable=undefined-variable
    )
    ret.update(result=result, changes=changes, comment=comment)
    return ret
