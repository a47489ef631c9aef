"""
hostcheck states: remedies for what the ``hostcheck`` execution module finds.

Every state goes through one runner (``hostcheck_check.run_remedy``):
validate the arguments (bad ones change nothing), diagnose with the same
code as the execution module, plan, and with ``test=True`` stop there and
return the planned changes under exactly the keys a real run uses; else
act, diagnose again to verify (``result: False`` when it is not fixed), and
build the comment from what happened. A second run is a no-op. Two runs of
the same remedy on one host take turns (a lock in ``/run/lock``).
"""

import os

import hostcheck_check
import hostcheck_metrics
import hostcheck_registry

__virtualname__ = "hostcheck"


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck states need a Linux /proc file system")
    return __virtualname__


def _config_get(key):
    return __salt__["config.get"](key, None)  # pylint: disable=undefined-variable


def _remedy(check, name, **args):
    return hostcheck_check.run_remedy(
        hostcheck_registry.get(check), name, args,
        test=bool(__opts__.get("test")), get=_config_get)  # pylint: disable=undefined-variable


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
        or systemd unit matches are reaped. Trees that a person or a
        scheduler may be running (a controlling terminal, a login uid, or
        left by an earlier run of a unit that runs again, as cron jobs and
        ssh sessions under ``KillMode=process``) are reaped only when
        ``match`` names them; otherwise the comment lists them.
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
    return _remedy("orphans", name, match=match, exclude=exclude, timeout=timeout, daemons=daemons)


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
    return _remedy("timezone", name, copy=copy, daemons=daemons, timeout=timeout)


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
    return _remedy("deleted_binaries", name, only=only, exclude=exclude, refuse=refuse, ignore=ignore)


def logind_clean(name, closing=None, older_than=None, cron_pam=None):
    """
    Clean what ``hostcheck.logind`` reports, without the bus and without
    ending any live session:

    - **Stale session files**: ``systemctl restart systemd-logind`` (never
      stop-then-start, which ends every session; refused while a graphical
      session runs, or when a restart now would hit logind's start limit).
      logind drops the files whose scope is gone when it starts. Verified:
      those files are gone, the pile shrank and, when logind's memory was
      over its warning threshold, it dropped; ``result: False`` otherwise.
    - **Closing sessions kept alive by leftovers**: left alone (and listed in
      the comment) unless ``closing`` names their ``SERVICE``; then their
      leftover processes are frozen, sent SIGTERM and, after 10 s, SIGKILL,
      each identity (PID and start time) checked again before every signal.
      Never a session whose leader runs, never the minion's own session,
      ancestors or PID 1.
    - **cron's PAM stack**: with ``cron_pam: remove``, ``pam_systemd`` is
      taken out of the cron daemon's own file (``/etc/pam.d/crond`` or
      ``/etc/pam.d/cron``): the lines it includes from a shared file
      (``password-auth``, ``common-session-noninteractive``) are copied in
      without ``pam_systemd``, every other line is kept, and the shared
      files, which other services include, are not touched. The new stack
      is checked rule for rule before the atomic write; a jump
      (``[success=N]``) over ``pam_systemd`` or a ``substack`` is refused.
      The exact diff is in ``changes``. Default ``keep``: only reported.

    When dbus runs a deleted binary nothing is done: logind talks to
    everything through the bus and dbus cannot be restarted safely, so the
    comment says reboot. dbus is never restarted.

    name
        An ID for the state; not used otherwise.
    closing
        Glob or list of globs of session ``SERVICE`` names (``crond``,
        ``cron``, ``su*``) whose closing sessions' leftovers are reaped.
    older_than
        Only sessions older than this many seconds (default: any age).
    cron_pam
        ``keep`` (default) or ``remove``.

    ``changes``: ``pam`` (``{path: {"diff": ...}}``), ``reaped``
    (``[{session, service, user, pids}]``), ``restarted``
    (``["systemd-logind.service"]``) and ``stale_files`` (``{"old": N,
    "new": N}``); ``test=True`` reports the same keys and changes nothing.

    .. code-block:: yaml

        clean logind:
          hostcheck.logind_clean:
            - closing: [crond, cron]
            - older_than: 3600
            - cron_pam: remove
    """
    return _remedy("logind", name, closing=closing, older_than=older_than, cron_pam=cron_pam)


def service_limits(name, nofile=None, nproc=None, core=None, memlock=None, restart=True, force=False):
    """
    Declare the resource limits a systemd service runs with, and make the
    running service match.

    Writes one drop-in, ``/etc/systemd/system/<unit>.d/hostcheck-limits.conf``
    (atomic; owner root, mode 0644) with ``LimitNOFILE=``, ``LimitNPROC=``,
    ``LimitCORE=``, ``LimitMEMLOCK=`` for the limits given, runs
    ``systemctl daemon-reload`` and restarts the unit; then verifies from
    ``/proc/<MainPID>/limits`` that the new main process has them
    (``result: False`` when it does not). Copies of the unit's program
    running outside systemd (``hostcheck.rlimits`` reports them with
    ``outside: true``, e.g. a daemon started by hand from a login shell) are
    stopped first (SIGTERM, then SIGKILL; identity-checked), so that the
    unit runs it again under its own limits. A unit that is not running is
    not started: its drop-in applies when it starts. A second run changes
    nothing.

    Everything is validated before anything is written: the unit must exist
    (a unit file on systemd's search path, not masked) and be a service
    (``.service`` optional; no ``/`` or ``..``; an instance, not a
    template); each limit is non-negative with soft at most hard, ``nofile``
    at most ``fs.nr_open`` and never unlimited, and no hard limit above what
    systemd can grant (PID 1's own hard limit where it lacks
    ``CAP_SYS_RESOURCE``, as in containers). A later drop-in that would
    override this one is refused. ``limits.conf`` and ``system.conf`` are
    never edited; dbus, dbus-broker, systemd-logind and the unit running
    the minion are never restarted (refused with the reason unless
    ``restart: False``).

    name
        The unit, e.g. ``nginx`` or ``nginx.service``.
    nofile, nproc, core, memlock
        Each an int (soft and hard), ``unlimited``, ``"soft:hard"`` (quote
        it in YAML) or ``{soft: N, hard: M}``. At least one is required.
    restart
        Restart the unit now (default). ``False`` only writes the drop-in
        and reports the restart as pending.
    force
        Allow a soft ``nofile`` below the descriptors the unit's processes
        hold now, or a soft ``nproc`` below the tasks its user runs
        (refused otherwise).

    .. code-block:: yaml

        nginx:
          hostcheck.service_limits:
            - nofile: 65536

        worker@1.service:
          hostcheck.service_limits:
            - nofile: "1024:65536"
            - core: unlimited
            - restart: False
    """
    return _remedy("rlimits", name, nofile=nofile, nproc=nproc, core=core, memlock=memlock,
                   restart=restart, force=force)


def metrics_exported(name, path=None, checks=None, severity=None):
    """
    Write hostcheck's metrics (what ``hostcheck.report format=prometheus``
    returns) to a file for node_exporter's textfile collector, atomically:
    a temporary file in the same directory (named ``.hostcheck-*``, which
    the collector ignores), fsynced, renamed over the old one, so the
    collector never reads half a file.

    name
        An ID for the state; not used otherwise.
    path
        The ``.prom`` file, in a directory that exists (the collector's
        ``--collector.textfile.directory``). Default:
        ``hostcheck:metrics:path`` from config or pillar, else
        ``/var/lib/prometheus/node-exporter/hostcheck.prom`` (Debian's
        prometheus-node-exporter).
    checks
        Checks to run (a list; default: all).
    severity
        The least severe finding counted (default ``info``: all).

    The file is rewritten on every run (the run times change), but
    ``changes`` is set (finding totals per severity, old and new) only when
    a finding count changed, so a highstate on a steady host reports no
    change. ``test=True`` writes nothing. A bad path or argument gives
    ``result: False`` and writes nothing.

    .. code-block:: yaml

        hostcheck metrics:
          hostcheck.metrics_exported:
            - path: /var/lib/node_exporter/textfile_collector/hostcheck.prom
    """
    return hostcheck_metrics.exported(name, path=path, checks=checks, severity=severity,
                                      test=bool(__opts__.get("test")),  # pylint: disable=undefined-variable
                                      get=_config_get)
