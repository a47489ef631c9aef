"""
hostcheck states: remedies for what the ``hostcheck`` execution module finds.

Every state diagnoses with the same code as the execution module, plans from
the findings, acts, and diagnoses again to verify. With ``test=True`` it
stops after the plan. A second run is a no-op.
"""

import logging
import numbers
import os

import hostcheck_deleted
import hostcheck_orphans
import hostcheck_supervisor
import hostcheck_systemd
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


def _plan_lines(plan):
    lines = []
    if plan["reexec"]:
        lines.append("  PID 1: systemctl daemon-reexec")
    for unit in plan["units"]:
        lines.append("  {}: systemctl restart".format(unit))
    for prog in plan["supervisor"]:
        lines.append("  {}: restart through its supervisord".format(prog))
    if plan["self"]:
        lines.append("  {}: restarted last, after this job returned".format(plan["self"]))
    return lines


def _leftovers(plan):
    lines = []
    for item in plan["refused"]:
        lines.append("Refused {}: {}".format(item["name"], item["reason"]))
    for item in plan["manual"]:
        lines.append("Manual {} (pids {}): {}".format(
            item["name"], ", ".join(map(str, item["pids"])), item["reason"]))
    return lines


def services_current(name, only=None, exclude=None, refuse=None, ignore=None):
    """
    Restart what ``hostcheck.deleted_binaries`` finds running old code.

    * systemd services: one ``systemctl restart`` for all affected units
      (never retried, so a restart never loops into systemd's start limit;
      a unit that fails reports its state and result, e.g.
      ``failed/start-limit-hit``);
    * systemd's start limits: a unit already in ``start-limit-hit``, or one
      started ``StartLimitBurst`` times within ``StartLimitIntervalSec``
      (counted from the journal: systemd does not expose the counter), is
      refused with the reason instead of being restarted into a failed
      state, and makes ``result: False``;
    * PID 1 (systemd): ``systemctl daemon-reexec``, never a restart;
    * supervisord programs: restarted (stop, then start, as ``supervisorctl
      restart``) through the supervisord that started them, with the stdlib
      XML-RPC client at the ``SUPERVISOR_SERVER_URL`` it gave them (a unix
      socket owned by that supervisord's user, or loopback HTTP); without
      that URL, ``supervisorctl restart`` on ``PATH``. Nothing found through
      a process is executed;
    * the minion running this job: restarted last, by a transient systemd
      timer that fires after the job has returned its result;
    * units on the refuse list (dbus, dbus-broker, getty, serial-getty,
      display managers, ``user@`` units, container runtimes) are refused
      with the reason and reported as needing a reboot;
    * user sessions, scopes and unmanaged processes are reported as manual.

    After acting it diagnoses again; a restarted unit still running old code
    makes ``result: False``. A second run changes nothing. On hosts without
    systemd only supervisor programs are restarted.

    name
        An ID for the state; not used otherwise.
    only
        Glob or list of globs; only owners whose unit (with or without
        ``.service``), ``group:program`` or kind (``init``, ``minion``,
        ``supervisor``, ``unit``) matches are restarted.
    exclude
        Glob or list of globs; owners matching any are left alone. Plain unit
        names in ``only``/``exclude`` must be units systemd knows.
    refuse
        Globs of units never restarted, replacing the default list (also
        ``hostcheck:deleted_binaries:refuse``).
    ignore
        Mapping paths never reported, as for ``hostcheck.deleted_binaries``.

    .. code-block:: yaml

        services run current code:
          hostcheck.services_current:
            - exclude:
              - postgresql*
    """
    ret = _ret(name)
    only, err = _globs(only, "only")
    if err is None:
        exclude, err = _globs(exclude, "exclude")
    if err is None:
        try:
            if refuse is None:
                refuse = __salt__["config.get"]("hostcheck:deleted_binaries:refuse", None)  # pylint: disable=undefined-variable
            refuse = hostcheck_deleted.validate_patterns(
                refuse, "refuse", hostcheck_deleted.DEFAULT_REFUSE)
            if ignore is None:
                ignore = __salt__["config.get"]("hostcheck:deleted_binaries:ignore", None)  # pylint: disable=undefined-variable
            ignore = hostcheck_deleted.validate_ignore(ignore)
        except hostcheck_deleted.ConfigError as exc:
            err = str(exc)
    systemd = hostcheck_systemd.systemd_running()
    if err is None:
        names = hostcheck_deleted.unit_names_to_check((only or []) + (exclude or []))
        if names:
            loaded = hostcheck_deleted.load_states(names) if systemd else None
            unknown = [n for n in names if loaded is None or loaded.get(n) == "not-found"]
            if unknown:
                err = "unknown unit(s): {}{}".format(
                    ", ".join(unknown), "" if systemd else " (systemd is not running)")
    if err is not None:
        ret["result"] = False
        ret["comment"] = "Invalid arguments, nothing done: " + err
        return ret

    findings, _ = hostcheck_deleted.diagnose(ignore=ignore)
    plan = hostcheck_deleted.plan(findings, only=only, exclude=exclude, refuse=refuse, systemd=systemd)
    notes = _leftovers(plan)
    # systemd's start limits: a unit a restart would push into start-limit-hit
    # (or already there) is refused and makes the result False; never retried
    limited = []
    if systemd and (plan["units"] or plan["self"]):
        over, limit_notes = hostcheck_deleted.start_limits(plan["units"] + ([plan["self"]] if plan["self"] else []))
        notes.extend(limit_notes)
        for unit in sorted(over):
            limited.append("Refused {}: {} (needs attention)".format(unit, over[unit]))
        plan["units"] = [u for u in plan["units"] if u not in over]
        if plan["self"] in over:
            plan["self"] = None
    todo = plan["reexec"] or plan["units"] or plan["supervisor"] or plan["self"]
    if not systemd:
        notes.append("systemd is not running: only supervisor programs are restarted, the rest is manual")
    if not todo and not limited:
        ret["comment"] = "\n".join(["No service runs old code that this state may restart"] + notes)
        return ret
    if __opts__.get("test"):  # pylint: disable=undefined-variable
        ret["result"] = None
        ret["changes"] = {"would_restart": {k: plan[k] for k in ("units", "reexec", "supervisor", "self")}}
        ret["comment"] = "\n".join(limited + ["Would restart:"] + _plan_lines(plan) + notes)
        return ret

    changes = {}
    failed = list(limited)
    if plan["reexec"]:
        ok, out = hostcheck_deleted.run_command(["systemctl", "daemon-reexec"])
        (changes.setdefault("reexecuted", []) if ok else failed).append("PID 1" if ok else "PID 1: " + out)
    if plan["units"]:
        ok, out = hostcheck_deleted.run_command(["systemctl", "restart", "--"] + plan["units"])
        if ok:
            changes["restarted"] = plan["units"]
        else:
            states = hostcheck_deleted.unit_results(plan["units"])
            failed.append("systemctl restart failed ({}): {}".format(
                out, ", ".join("{} {}".format(u, st) for u, st in sorted(states.items()))))
    if plan["supervisor"]:
        restarted, errors, methods = hostcheck_supervisor.restart_all(plan["supervisor"], plan["supervisor_via"])
        if restarted:
            changes["supervisor_restarted"] = restarted
        notes.extend("supervisor program " + m for m in methods)
        failed.extend("supervisor restart failed: " + e for e in errors)
    if plan["self"]:
        ok, out = hostcheck_deleted.schedule_self_restart(plan["self"])
        if ok:
            changes["deferred"] = plan["self"]
            notes.append("{} is restarted about 10 s after this job returns; apply again to verify".format(plan["self"]))
        else:
            failed.append("could not schedule the minion's restart: " + out)

    after, _ = hostcheck_deleted.diagnose(ignore=ignore)
    done = set(changes.get("restarted", [])) | set(changes.get("supervisor_restarted", []))
    if changes.get("reexecuted"):
        done.add("PID 1")
    still = sorted(f["owner"]["name"] for f in after if f["owner"]["name"] in done)
    if still:
        failed.append("still running old code after the restart: " + ", ".join(still))
    ret["changes"] = changes
    ret["result"] = not failed
    done_lines = _plan_lines(plan)
    lines = failed + (["Restarted:"] + done_lines if done_lines else [])
    ret["comment"] = "\n".join(lines + notes)
    return ret
