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

import hostcheck_check
import hostcheck_config
import hostcheck_metrics
import hostcheck_registry

log = logging.getLogger(__name__)

__virtualname__ = "hostcheck"


def __virtual__():
    if not os.path.isdir("/proc/self"):
        return (False, "hostcheck: needs a Linux /proc file system")
    return __virtualname__


def _config_get(key):
    return __salt__["config.get"](key, None)  # pylint: disable=undefined-variable


def _diagnose(name, **given):
    """Run one registered check with the given options (unset ones from config)."""
    check = hostcheck_registry.get(name)
    try:
        opts = hostcheck_check.options(check, given, _config_get)
    except hostcheck_config.ConfigError as exc:
        raise salt.exceptions.CommandExecutionError(str(exc)) from exc
    return hostcheck_check.diagnose(check, hostcheck_check.Host(), opts).as_dict()


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
        running, or left by an earlier run of a service that has been
        restarted since (their ``INVOCATION_ID`` is not the unit's current
        one): what ``KillMode=process`` leaves behind.
    ``duplicate-daemon``
        A second tree of a single-instance daemon (salt-minion, salt-master,
        supervisord, cron/crond, rsyslogd, ``dbus-daemon --system``,
        systemd-logind, plus ``hostcheck:orphans:daemons``) with the same
        configuration in the same namespaces. ``duplicate_of`` names the
        managed copy when there is exactly one.

    Every finding says whether ``hostcheck.orphans_reaped`` takes it:
    ``reap: default``; ``reap: when-named`` (with ``held``: a controlling
    terminal, a login uid, or an earlier run of a unit that runs again, as
    cron jobs and ssh sessions after a restart under ``KillMode=process``),
    only when its ``match`` names it; ``reap: no`` (no copy of a duplicate
    is managed, so none is the leak). Daemons are identified by executable
    and arguments together: ``exec -a salt-minion sleep`` is ``sleep``, and
    an init script of the same name is not the daemon. Daemons that double-forked
    and were legitimately adopted by init are not leaks and are never
    reported: they carry no supervisor provenance and belong to the current
    run of their unit (or live on a host without a service manager).
    Unmanaged duplicates are warnings.

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
    return _diagnose("orphans", daemons=daemons)


def deleted_binaries(ignore=None, packages=False):
    """
    Report processes running old code, grouped by what owns them.

    A process runs old code when its executable or an executable mapping
    (shared library) was deleted or replaced on disk (compared by device and
    inode through ``/proc/PID/root``, so a container's process is judged in
    its own file system), or when an interpreted daemon's main script
    (Python, Perl, Ruby; the salt-minion too) changed after it started.
    ``memfd:``, ``/dev/``, ``/SYSV``, ``[aio]``, anonymous mappings and
    temporary locations (``/tmp/``, ``/var/tmp/``, ``/run/``, JNA libraries)
    are never reported.

    One finding per owner (``code``): ``stale-unit`` (a systemd service, from
    the process's cgroup), ``stale-init`` (PID 1), ``stale-supervisor`` (a
    supervisord program), ``stale-minion`` (the minion running this job),
    ``stale-scope`` (a user session, ``user@`` manager or container scope;
    never mapped to a system service by name) and ``stale-unmanaged``. Each
    carries ``action``: ``restart-unit``, ``daemon-reexec``,
    ``supervisorctl``, ``self-restart`` or ``manual`` with a ``reason``.
    ``hostcheck.services_current`` applies them.

    ignore
        Path prefixes (or globs) of mappings that are never package files,
        replacing the defaults. Defaults to
        ``hostcheck:deleted_binaries:ignore`` from config or pillar.
    packages
        Also name the package owning each stale file (``package``, ``None``
        when no package owns it), from one batched ``dpkg-query -S`` or
        ``rpm -qf`` call. Without either tool, or when the call fails, a
        line in ``notes`` says so. Off by default.

    Returns ``{"stale": N processes, "units": [...], "findings": [...],
    "processes": N, "notes": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.deleted_binaries
        salt '*' hostcheck.deleted_binaries packages=True --out=json
    """
    return _diagnose("deleted_binaries", ignore=ignore, packages=packages)


def reboot_required():
    """
    Whether this host needs a reboot: the running kernel is older than the
    newest one installed (``/boot`` images that also have ``/lib/modules``,
    versions compared numerically), or the distribution's flag
    (``/run/reboot-required``, with the packages that set it) is there.

    Returns ``{"required": bool, "reasons": [...], "running": "6.1.0-28-amd64",
    "newest": "6.1.0-30-amd64", "findings": [...], "notes": [...]}``
    (``newest`` is None when no kernel is installed, e.g. in a container).
    Findings: ``kernel-outdated`` and ``reboot-flag`` (warnings).

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.reboot_required
        salt -G 'hostcheck:reboot_required:required:True' test.ping
    """
    return _diagnose("reboot_required")


def timezone(daemons=None):
    """
    Check that every source of the timezone agrees, and find the daemons
    that still run with a zone that has changed since they started.

    Every source is read and compared, without ``timedatectl`` or D-Bus:
    ``/etc/localtime`` (a symlink names its zone; a copy is matched to the
    zones with identical bytes, TZif validated), ``/etc/timezone``,
    ``ZONE=`` in ``/etc/sysconfig/clock``, ``TZ`` in ``/etc/environment`` and
    in PID 1's environment (only that key is read), and ``timedatectl`` as an
    extra witness when systemd runs and it answers.

    daemons
        Programs that read the zone only at start (identified by argv/exe,
        never by comm). Defaults to ``hostcheck:timezone:daemons`` from config
        or pillar, else ``cron``, ``crond``, ``rsyslogd``, ``atd``.

    Returns ``{"zone": effective zone (what glibc uses), "consistent": bool,
    "agreement": how the sources agree, "conflicts": [...], "sources": {...},
    "stale": [...], "changed": time of the last change of /etc/localtime or
    /etc/timezone, "findings": [...], "notes": [...]}``. Finding codes:
    ``zone-conflict`` (critical), ``localtime-missing`` (warning),
    ``stale-daemon`` (warning, with ``pids``): a daemon that started more than
    1.5 s (clock skew between process start times and file times) before the
    last change.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.timezone
        salt -G 'hostcheck:timezone:consistent:False' hostcheck.timezone --out=json
    """
    return _diagnose("timezone", daemons=daemons)


def logind(pile_warning=None, pile_critical=None, rss_warning_mb=None, rss_critical_mb=None):
    """
    Report logind sessions piling up, and what feeds the pile: closing
    sessions kept alive by leftover processes, stale session files,
    systemd-logind's memory, ``pam_systemd`` in a cron daemon's PAM stack,
    and logind, dbus or PID 1 running a deleted binary.

    Everything is read from files, never through the bus (a drowning logind
    does not answer it): ``/run/systemd/sessions/*`` (the ``*.ref`` FIFOs
    are never opened, nor anything that is not a regular file; values are
    C-unescaped), ``/run/systemd/users/*``, the session scopes' cgroups,
    ``/proc`` and ``/etc/pam.d``. Findings (``code``):

    ``session-pileup``
        The number of session files, by ``STATE`` and ``SERVICE``; warning
        and critical by ``pile_warning`` and ``pile_critical`` (logind
        refuses new sessions at 8192).
    ``closing-leftovers``
        One per ``SERVICE``: sessions whose leader is gone while their scope
        still holds processes (they stay ``closing`` for ever); the
        processes are in ``pids`` and named in ``programs``.
    ``stale-session-files``
        Files whose scope cgroup is gone (or empty) and whose leader is gone
        or was reused (started after the session's ``REALTIME``); logind
        drops them when it restarts, except the ``orphaned`` ones (users
        logind does not track: it never loads them; delete them by hand).
    ``logind-memory``
        systemd-logind's resident memory, by ``rss_warning_mb`` and
        ``rss_critical_mb``.
    ``cron-pam-systemd``
        ``pam_systemd`` in the PAM stack of ``crond``, ``cron`` or ``fcron``,
        followed through ``include``, ``substack`` and ``@include``
        (``chains`` shows the way); critical when the pile comes from cron.
    ``deleted-dbus``, ``deleted-logind``, ``deleted-init``
        The system bus (critical: reboot), logind or PID 1 run a deleted or
        replaced binary.

    Without systemd or logind there is a note and no finding.

    pile_warning, pile_critical
        Session files for a warning / critical (default 1024 / 4096).
        Defaults to ``hostcheck:logind:pile_warning`` and
        ``hostcheck:logind:pile_critical`` from config or pillar.
    rss_warning_mb, rss_critical_mb
        logind's memory in MB for a warning / critical (default 256 / 1024),
        or ``hostcheck:logind:rss_warning_mb`` / ``rss_critical_mb``.

    Returns ``{"sessions": N files, "closing": N sessions with leftovers,
    "stale": N, "orphaned": N, "leftovers": N processes, "rss_mb": MB or
    None, "by_state": {...}, "by_service": {...}, "graphical": [session
    ids], "findings": [...], "notes": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.logind
        salt '*' hostcheck.logind pile_warning=200 --out=json
        salt '*' grains.get hostcheck:logind
    """
    return _diagnose("logind", pile_warning=pile_warning, pile_critical=pile_critical,
                     rss_warning_mb=rss_warning_mb, rss_critical_mb=rss_critical_mb)


def rlimits(unit=None, limits=None):
    """
    Compare the resource limits every service process runs with against
    what its own configuration gives it at the next boot, and find services
    near their open-file limit.

    Service processes: the main process of every systemd service (init's
    children in a ``*.service`` cgroup, of the unit's current invocation),
    the programs of every supervisord, and daemons init adopted outside any
    service. Limits are read from ``/proc/PID/limits``; open descriptors are
    counted from the size of ``/proc/PID/fd`` (or its listing on kernels
    before 6.2). Unit configuration is read from the unit files and their
    drop-ins in systemd's precedence order, ``DefaultLimit*=`` from
    ``system.conf`` and ``system.conf.d``, and systemd's own defaults
    (nofile 1024:524288 since systemd 240); ``systemctl show`` is only a
    witness. Finding codes:

    ``limits-differ``
        A service process runs with other limits than its unit gives it
        (the incident: a daemon restarted by hand from a login shell whose
        ``.bash_profile`` ran ``ulimit -n 65536``): a reboot takes them
        away. A daemon running outside systemd that runs a unit's
        ``ExecStart=`` program is compared with that unit (``outside``),
        with the login session it came from. Warning; critical when it
        holds more descriptors than the unit would give it.
    ``login-session``
        A daemon adopted by init inside a login session's scope, or with a
        login uid: started by hand (``session`` names the session and its
        PAM service, e.g. ``su-l`` or ``sshd``). Warning when it runs a
        unit's program or systemd is absent, else info (tmux, agents).
    ``fds-near-limit``
        Open descriptors at 80 % (warning) or 95 % (critical) of the soft
        limit, or above the hard limit.
    ``limits-conf-unused``
        A ``nofile``/``nproc`` line of ``/etc/security/limits.conf`` or
        ``limits.d`` for a user that runs services (or ``*``), while a
        service of that user gets none of it: ``pam_limits`` applies only to
        login sessions. Info, with where the limit belongs instead.
    ``supervisor-limits``
        A supervisord program near the open-file or process limit it
        inherited from supervisord (``minfds``/``minprocs``).

    Where PID 1 lacks ``CAP_SYS_RESOURCE`` (containers) systemd cannot raise
    a hard limit above its own, and the comparison allows for it. Hosts
    without systemd, containers and non-root minions give notes.

    unit
        One unit or a glob (``.service`` optional): only its findings, plus
        ``detail`` with its configured, expected, loaded and live limits and
        its drop-ins. Defaults to ``hostcheck:rlimits:unit``.
    limits
        Resources to compare (a list or comma-separated string of
        ``nofile``, ``nproc``, ``core``, ``memlock``). Defaults to
        ``hostcheck:rlimits:limits``, else ``nofile`` and ``nproc``.

    Returns ``{"count": N findings, "units": [units or programs concerned],
    "lowest_nofile": the lowest soft open-file limit among service
    processes, "lowest_nofile_of": {pid, name}, "services": N, "limits":
    [...], "findings": [...], "notes": [...]}`` (and ``detail`` with
    ``unit``). Limits are ints, or ``"unlimited"``.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.rlimits
        salt '*' hostcheck.rlimits unit=nginx limits=nofile,nproc,core --out=json
        salt -C 'not G@hostcheck:rlimits:count:0' hostcheck.rlimits
    """
    return _diagnose("rlimits", unit=unit, limits=limits)


def report(checks=None, severity=None, format="data"):  # pylint: disable=redefined-builtin
    """
    Run every hostcheck check once and return all findings in one list,
    worst first: the one call to run across a fleet.

    The checks share one ``/proc`` snapshot, so the report costs no more
    than its checks run one by one. A check that fails (say, a bad pillar
    value for it) has ``error`` set in its entry and the others still run.

    checks
        Names of the checks to run (a list, or one name; default: all of
        orphans, deleted_binaries, reboot_required, timezone, logind, rlimits).
    severity
        The least severe finding to include: ``critical``, ``warning`` or
        ``info`` (default ``info``: everything).
    format
        ``data`` (default): the dict described below. ``prometheus``: the
        same report as Prometheus text exposition (one string, ``# HELP``
        and ``# TYPE`` lines, all gauges): ``hostcheck_findings{check,
        severity}`` (every check and severity, 0 included),
        ``hostcheck_findings_by_code{check, code, severity}`` (codes found),
        ``hostcheck_check_up{check}`` (0 when the check failed),
        ``hostcheck_check_duration_seconds{check}`` (the check's run time;
        the checks run one after the other on one shared snapshot, the first
        pays for taking it) and ``hostcheck_worst_severity`` (0 ok, 1 info,
        2 warning, 3 critical). ``hostcheck.metrics_exported`` writes it for
        node_exporter's textfile collector.

    Returns ``{"worst": "critical"|"warning"|"info"|"ok", "checks": {name:
    {"count": N, "error": None or "why"}}, "findings": [...], "notes":
    [...]}``: ``count`` is the number of findings listed for that check,
    ``worst`` the worst severity listed (``ok`` when none), ``notes`` each
    check's notes prefixed by its name.

    CLI Example:

    .. code-block:: bash

        salt '*' hostcheck.report
        salt '*' hostcheck.report severity=critical --out=json
        salt '*' hostcheck.report checks='[orphans, timezone]'
        salt '*' hostcheck.report format=prometheus
    """
    if isinstance(checks, str) and "," in checks:
        checks = [c for c in checks.split(",") if c.strip()]
    try:
        if hostcheck_config.choice("data", ("data", "prometheus"))(format, "format") == "prometheus":
            return hostcheck_metrics.prometheus(checks=checks, severity=severity, get=_config_get)
        return hostcheck_registry.report(checks=checks, severity=severity, get=_config_get)
    except hostcheck_config.ConfigError as exc:
        raise salt.exceptions.CommandExecutionError(str(exc)) from exc
