"""The check protocol: one shape for every hostcheck check, and the one state
runner every remedy goes through.

A check is one module in ``_utils/`` listed in ``hostcheck_registry``. It
has, under these names::

    NAME = "orphans"                 # the grain key and the finding "check"
    OPTIONS = {key: validator}       # diagnosis options (hostcheck_config);
                                     # unset ones come from hostcheck:<NAME>:<key>
    read(host, opts, quick=False)    # the only stage that touches /proc, /etc,
                                     # /run or a subprocess; roots come from host
    analyse(facts, opts) -> Diagnosis   # pure: plain data in, findings out
    summarise(diagnosis) -> dict     # the check's entry in the hostcheck grain

and, when it has a remedy (a state)::

    REMEDY = "orphans_reaped"        # the state function's name
    REMEDY_ARGS = {key: validator}   # the state's own arguments
    CONFIG_KEYS = (...)              # which of them come from config when unset
    validate_remedy(name, args, host)   # optional: checks that need the host
    remedy_facts(host, diagnosis, args) # optional: what only the remedy needs
                                        # to read (start limits, say), before plan
    plan(diagnosis, args) -> Plan    # pure: what would change
    apply(host, plan, args) -> Outcome  # acts, through hostcheck_service /
                                        # hostcheck_reaper / hostcheck_files
    verify(plan, outcome, after, args) -> [problem, ...]   # after = a new diagnosis

``quick`` asks for the grain's view: no subprocess, no walk of large trees.

Findings share one schema across checks (:func:`finding`)::

    {"check": "orphans", "code": "supervisor-leak", "severity": "critical",
     "summary": "one line a person can read", "pids": [...], ...details}

Runtime dependencies: the Python standard library only.
"""

import os

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_config
import hostcheck_proc
import hostcheck_reaper

SEVERITIES = ("critical", "warning", "info")
#: order of severities, worst first; ``ok`` is "no finding"
RANK = {"critical": 0, "warning": 1, "info": 2, "ok": 3}
#: seconds a remedy waits for another run of the same remedy on this host
LOCK_WAIT = 120.0


def finding(check, code, severity, summary, pids=(), **details):
    """A finding in the shared schema."""
    if severity not in RANK or severity == "ok":
        raise ValueError("unknown severity {!r}".format(severity))
    out = {"check": check, "code": code, "severity": severity, "summary": summary, "pids": list(pids)}
    out.update(details)
    return out


def by_severity(findings):
    """``findings`` sorted worst first (stable within a severity)."""
    return sorted(findings, key=lambda f: RANK[f["severity"]])


def worst(findings):
    """The worst severity among ``findings``, ``"ok"`` when there are none."""
    return min((f["severity"] for f in findings), key=RANK.__getitem__, default="ok")


class Diagnosis:
    """What every check's ``analyse`` returns.

    ``findings`` (shared schema), ``notes`` (lines a person should read:
    what could not be checked and why), ``details`` (the check's own plain
    data, merged into :meth:`as_dict`) and ``facts`` (what ``read``
    returned, for the remedy's plan; never shown).
    """

    __slots__ = ("check", "findings", "notes", "details", "facts")

    def __init__(self, check, findings=(), notes=(), details=None, facts=None):
        self.check = check
        self.findings = list(findings)
        self.notes = list(notes)
        self.details = dict(details or {})
        self.facts = facts

    def as_dict(self):
        """Plain data for the execution module: details, findings, notes."""
        out = dict(self.details)
        out["findings"] = self.findings
        out["notes"] = self.notes
        return out

    def __repr__(self):
        return "<Diagnosis {} findings={}>".format(self.check, len(self.findings))


class Plan:
    """What a remedy would change. ``changes``: exactly what a real run puts
    in the state's ``changes`` if everything works (same keys); ``actions``:
    the check's own data for ``apply``; ``problems``: refusals that make the
    result False whatever else happens; ``preview``: comment lines for
    ``test=True``; ``idle``: the comment when there is nothing to do."""

    __slots__ = ("changes", "actions", "problems", "notes", "preview", "idle")

    def __init__(self, changes=None, actions=None, problems=(), notes=(), preview=(), idle=""):
        self.changes = dict(changes or {})
        self.actions = actions
        self.problems = list(problems)
        self.notes = list(notes)
        self.preview = list(preview)
        self.idle = idle


class Outcome:
    """What ``apply`` did: ``changes`` (what really changed), ``lines`` (the
    comment, built from what happened), ``problems`` (what failed)."""

    __slots__ = ("changes", "lines", "problems", "notes")

    def __init__(self, changes=None, lines=(), problems=(), notes=()):
        self.changes = dict(changes or {})
        self.lines = list(lines)
        self.problems = list(problems)
        self.notes = list(notes)


class Host:
    """Where the checks read and act: the roots (parameters, so tests use
    fake trees and containers) and one ``/proc`` snapshot shared by every
    check of one run."""

    def __init__(self, proc_root="/proc", etc_root="/etc", run_root="/run",
                 zoneinfo="/usr/share/zoneinfo", boot="/boot", modules="/lib/modules",
                 cgroup_root="/sys/fs/cgroup"):
        self.proc_root = proc_root
        self.etc_root = etc_root
        self.run_root = run_root
        self.zoneinfo = zoneinfo
        self.boot = boot
        self.modules = modules
        self.cgroup_root = cgroup_root
        self._snap = None

    def snapshot(self):
        """The run's process snapshot, taken on first use."""
        if self._snap is None:
            self._snap = hostcheck_proc.snapshot(self.proc_root)
        return self._snap

    def taken(self):
        """The snapshot if some check already took it, else ``None``."""
        return self._snap

    def fresh(self):
        """The same roots, no snapshot yet (for verification after acting)."""
        return type(self)(self.proc_root, self.etc_root, self.run_root, self.zoneinfo, self.boot, self.modules,
                          self.cgroup_root)

    @staticmethod
    def euid():
        return os.geteuid()


def config_lookup(get, keys):
    """A lookup for :func:`hostcheck_config.validate` that answers only for
    ``keys`` (``get`` is Salt's ``config.get``)."""
    keys = set(keys)

    def lookup(path):
        return get(path) if path.rsplit(":", 1)[-1] in keys else None

    return lookup


def options(check, given=None, get=None):
    """The check's validated diagnosis options; unset ones from
    ``hostcheck:<check>:<key>`` through ``get`` (Salt's ``config.get``)."""
    lookup = config_lookup(get, check.OPTIONS) if get else None
    return hostcheck_config.validate(check.OPTIONS, dict(given or {}), lookup,
                                     prefix="hostcheck:" + check.NAME)


def diagnose(check, host=None, opts=None, quick=False):
    """read + analyse: the :class:`Diagnosis` of ``check``."""
    host = host or Host()
    opts = options(check) if opts is None else opts
    return check.analyse(check.read(host, opts, quick=quick), opts)


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def _validate_remedy(check, name, args, get, host):
    given = {k: v for k, v in args.items() if k in check.OPTIONS}
    opts = options(check, given, get)
    rest = {k: v for k, v in args.items() if k not in check.OPTIONS}
    lookup = config_lookup(get, getattr(check, "CONFIG_KEYS", ())) if get else None
    rargs = hostcheck_config.validate(check.REMEDY_ARGS, rest, lookup, prefix="hostcheck:" + check.NAME)
    if hasattr(check, "validate_remedy"):
        check.validate_remedy(name, rargs, host)
    return opts, rargs


def run_remedy(check, name, args, test=False, get=None, host=None):
    """The one state runner: validate -> diagnose -> plan -> (test: the
    planned changes, result None) -> apply -> verify. Returns a state
    return dict; the comment is built from what happened.

    ``args``: the state's arguments (diagnosis options and remedy
    arguments together); ``get``: Salt's ``config.get``.
    """
    ret = _ret(name)
    host = host or Host()
    try:
        opts, rargs = _validate_remedy(check, name, args, get, host)
    except hostcheck_config.ConfigError as exc:
        ret["result"] = False
        ret["comment"] = "Invalid arguments, nothing done: {}".format(exc)
        return ret
    try:
        with hostcheck_reaper.HostLock(check.NAME, host.run_root, LOCK_WAIT):
            return _run_locked(check, ret, host, opts, rargs, test)
    except hostcheck_reaper.Busy as exc:
        ret["result"] = False
        ret["comment"] = "Nothing done: {}".format(exc)
        return ret


def _run_locked(check, ret, host, opts, rargs, test):
    diag = diagnose(check, host, opts)
    if hasattr(check, "remedy_facts"):
        check.remedy_facts(host, diag, rargs)
    plan = check.plan(diag, rargs)
    if not plan.changes:
        ret["result"] = not plan.problems
        ret["comment"] = "\n".join(plan.problems + [plan.idle] + plan.notes).strip()
        return ret
    if test:
        ret["result"] = None
        ret["changes"] = plan.changes
        ret["comment"] = "\n".join(plan.preview + plan.problems + plan.notes)
        return ret
    outcome = check.apply(host, plan, rargs)
    after = diagnose(check, host.fresh(), opts)
    problems = plan.problems + outcome.problems + list(check.verify(plan, outcome, after, rargs))
    ret["changes"] = outcome.changes
    ret["result"] = not problems
    ret["comment"] = "\n".join(outcome.lines + problems + plan.notes + outcome.notes)
    return ret
