"""Leaked process trees (``hostcheck.orphans``) and their remedy (``orphans_reaped``).

Three rules, judged on one :class:`hostcheck_proc.Snapshot` plus the unit
states the service manager reported. Only candidate tree roots are looked
at: process-group leaders and processes adopted by init (a structural
filter, never a name), which keeps the check cheap on hosts with thousands
of workers.

``supervisor-leak`` (critical)
    A candidate root carrying supervisord's ``SUPERVISOR_PROCESS_NAME`` with
    no live supervisord among its ancestors. Two ways to get there:
    supervisord died (SIGKILL) and the program's whole tree was re-parented
    to init or a subreaper; or supervisord lives on but the program's top
    process was killed, and a grandchild whose parent exited was adopted by
    init (its process group still names the dead top process) while
    supervisord starts the program again. The whole tree below that root
    is the leak, whatever its descendants did to their own ``environ``
    (setproctitle clobbers it).

``unit-leftover`` (critical when the unit is stopped, warning when it runs again)
    Processes adopted by init in the cgroup of a service that is no longer
    running, or left by an earlier run of a service that is running again
    (their ``INVOCATION_ID`` is not the unit's current one): what
    ``KillMode=process`` (or ``none``) leaves. Cron and sshd use that on
    purpose so jobs and sessions survive a restart, so leftovers of a
    running unit are never reaped unless ``match`` names them.

``duplicate-daemon`` (critical when one copy is managed, else warning)
    Two or more separate trees of the same single-instance daemon with the
    same configuration, in the same PID and mount namespace. The copy whose
    root is the child of a live supervisord, or the main process (or below
    it) of an active unit, is managed; the others are leaked and point at
    it with ``duplicate_of``.

Daemons are identified by executable and arguments together
(:mod:`hostcheck_ident`): ``exec -a salt-minion sleep`` is ``sleep`` and
``sh /etc/init.d/cron reload`` is a shell script, never cron. A daemon that
double-forked and was adopted by init is not a leak: it has no supervisor
provenance and is the main process of its (active) unit, or lives on a host
without a service manager.

Every finding says whether ``orphans_reaped`` takes it by default
(``reap``: ``default``), only when ``match`` names it (``when-named``, with
``held`` saying why: a controlling terminal, a login uid, an earlier run of
a running unit) or never (``no``: no copy of a duplicate is managed).
"""

import fnmatch
import os
import pwd

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_config
import hostcheck_ident
import hostcheck_proc
import hostcheck_reaper
import hostcheck_service

NAME = "orphans"
REMEDY = "orphans_reaped"

#: Single-instance daemons watched for duplicates. ``options``: the command
#: line options that select a configuration (two copies with different values
#: are not duplicates); ``require``: arguments a process must have to count
#: (``dbus-daemon --system`` only, never session buses).
DEFAULT_DAEMONS = {
    "salt-minion": {"options": ["-c", "--config-dir"]},
    "salt-master": {"options": ["-c", "--config-dir"]},
    "supervisord": {"options": ["-c", "--configuration"]},
    "cron": {"options": []},
    "crond": {"options": []},
    "rsyslogd": {"options": ["-f"]},
    "dbus-daemon": {"options": ["--config-file"], "require": ["--system"]},
    "systemd-logind": {"options": []},
}

#: Programs that supervise other programs with the SUPERVISOR_* environment.
SUPERVISORS = ("supervisord",)

NOTE_NO_SYSTEMD = "systemd is not running here: the unit rule (unit-leftover) was skipped"
NOTE_NO_SYSTEMCTL = "systemd did not answer: the unit rule (unit-leftover) was skipped"
NOTE_NOT_ROOT = ("not running as root: other users' processes are only partly readable, "
                 "so their leaks may be missed")


# --------------------------------------------------------------------------
# options


def _daemon_spec(name, spec):
    if spec is True:
        spec = {}
    if not isinstance(spec, dict):
        raise hostcheck_config.ConfigError(
            "daemons:{}: must be a mapping, got {}".format(name, type(spec).__name__))
    unknown = set(spec) - {"options", "require"}
    if unknown:
        raise hostcheck_config.ConfigError(
            "daemons:{}: unknown keys {}".format(name, ", ".join(sorted(map(str, unknown)))))
    items = hostcheck_config.string_list([], allow_empty=True, one=False)
    return {key: items(spec.get(key), "daemons:{}:{}".format(name, key)) for key in ("options", "require")}


def validate_daemons(value, name="daemons"):
    """A ``daemons`` mapping merged over :data:`DEFAULT_DAEMONS`.

    Accepts ``{program: {options: [..], require: [..]}}``; ``{program: null}``
    or ``{program: false}`` removes a default.
    """
    merged = {k: dict(v) for k, v in DEFAULT_DAEMONS.items()}
    if value is None:
        return merged
    if not isinstance(value, dict):
        raise hostcheck_config.ConfigError(
            "{} must be a mapping of program name to {{options: [...], require: [...]}}, got {}".format(
                name, type(value).__name__))
    for prog, spec in value.items():
        if not isinstance(prog, str) or not prog or "/" in prog:
            raise hostcheck_config.ConfigError("{}: invalid program name {!r}".format(name, prog))
        if spec is None or spec is False:
            merged.pop(prog, None)
        else:
            merged[prog] = _daemon_spec(prog, spec)
    return merged


OPTIONS = {"daemons": validate_daemons}


# --------------------------------------------------------------------------
# read: the snapshot, the unit states and every field the rules look at


def candidate_roots(snap):
    """Processes that can root a leaked or duplicated tree: group leaders
    (daemons call setsid(); systemd, supervisord, cron and job-control
    shells give every program its own group) and init's children (adopted
    after a double fork or their parent's death). Never PID 1."""
    return [p for p in snap.user_procs if (p.pgid == p.pid or p.ppid == 1) and p.pid != 1]


def _unit(proc):
    return hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]


def adopted_by_unit(roots):
    """``{unit: [pids]}`` of the candidate roots init adopted, by their system
    service: only these can be leftovers, so only their cgroups are read."""
    out = {}
    for proc in roots:
        if proc.ppid != 1:
            continue
        unit = _unit(proc)
        if unit and unit.endswith(".service") and not unit.startswith("user@"):
            out.setdefault(unit, []).append(proc.pid)
    return out


class Facts:
    """What :func:`read` collected: the snapshot (every field the rules look
    at already loaded), unit states, user names and the unit note."""

    __slots__ = ("snap", "units", "users", "note", "euid", "hits")

    def __init__(self, snap, units=None, users=None, note=NOTE_NO_SYSTEMD, euid=0, hits=None):
        self.snap = snap
        self.units = units
        self.users = users or {}
        self.note = note
        self.euid = euid
        #: the rules' hits, when read() already judged which roots to enrich
        self.hits = hits


def read(host, opts, quick=False):  # pylint: disable=unused-argument
    """Snapshot, unit states, and the fields the rules need, loaded now."""
    snap = host.snapshot()
    daemons = opts["daemons"]
    roots = candidate_roots(snap)
    for proc in roots:
        proc.load(("program", "provenance"))
    for pid in {a for p in roots for a in snap.ancestors(p.pid)}:
        snap.procs[pid].load(("program",))
    watched = [p for p in roots if p.program is not None and p.program.name in daemons]
    for proc in watched:
        proc.load(("cgroup", "ns:pid", "ns:mnt"))
    units, note = None, NOTE_NO_SYSTEMD
    if hostcheck_service.systemd_running(host.run_root):
        names = set(adopted_by_unit(roots)) | {u for u in map(_unit, watched) if u}
        units = hostcheck_service.running_services(sorted(names), run_root=host.run_root)
        note = NOTE_NO_SYSTEMCTL
    facts = Facts(snap, units, note=note, euid=host.euid())
    # what only findings show: who runs them, and whether a person does
    facts.hits = _rules(facts, daemons)
    for root in facts.hits:
        proc = snap.procs[root]
        proc.load(("uid", "loginuid", "cgroup"))
        if proc.uid is not None and proc.uid not in facts.users:
            facts.users[proc.uid] = _user_name(proc.uid)
        if facts.euid != 0:
            for pid in snap.descendants(root):
                snap.procs[pid].load(("uid",))
    return facts


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --------------------------------------------------------------------------
# analyse (pure)


def _is_supervisor(proc):
    return proc is not None and any(hostcheck_ident.is_daemon(proc.program, s) for s in SUPERVISORS)


def _supervisor_leaks(snap, roots):
    """``{root: None}`` of supervisor programs with no live supervisord above."""
    found = []
    for proc in roots:
        if proc.pgid != proc.pid and proc.ppid != 1:
            continue  # a group leader, or a process adopted by init
        if _is_supervisor(snap.procs.get(proc.ppid)):
            continue
        if not proc.provenance().get("SUPERVISOR_PROCESS_NAME"):
            continue
        if any(_is_supervisor(snap.procs.get(a)) for a in snap.ancestors(proc.pid)):
            continue
        found.append(proc.pid)
    inside = set(found)
    # one finding per tree: the topmost leaked root
    return [r for r in found if not inside.intersection(snap.ancestors(r))]


def _unit_leftovers(snap, roots, units):
    """``{root: (unit, why)}``; ``why`` is the unit's state or ``previous-run``."""
    out = {}
    for unit, adopted in sorted(adopted_by_unit(roots).items()):
        state = units.get(unit)
        if state is None:
            continue
        active = state.get("ActiveState")
        current = state.get("InvocationID")
        for root in adopted:
            invocation = snap.procs[root].provenance().get("INVOCATION_ID")
            if active in ("inactive", "failed"):
                out[root] = (unit, active)
            elif active in ("active", "reloading") and current and invocation and invocation != current:
                out[root] = (unit, "previous-run")
    return out


def _daemon_key(snap, proc, daemons):
    """``(program, options, pid ns, mnt ns)`` of a daemon tree root, or ``None``."""
    prog = proc.program
    if prog is None:
        return None
    spec = daemons.get(prog.name)
    if spec is None or not hostcheck_ident.is_daemon(prog, prog.name):
        return None
    parent = snap.procs.get(proc.ppid)
    if parent is not None and parent.program is not None and parent.program.name == prog.name:
        return None  # not the root of its daemon tree
    if any(req not in prog.args for req in spec.get("require", ())):
        return None
    opts = hostcheck_ident.option_values(prog.args, spec.get("options", ()))
    return prog.name, tuple(sorted(opts.items())), proc.ns("pid"), proc.ns("mnt")


def _managed(snap, root, units, leaked):
    """True when a live manager owns the tree at ``root``: its parent is a
    supervisord, or it runs in the current run of an active unit; never a
    copy inside a tree another rule reports as leaked."""
    if root in leaked:
        return False
    proc = snap.procs[root]
    if _is_supervisor(snap.procs.get(proc.ppid)):
        return True
    unit = _unit(proc) if units else None
    state = units.get(unit) if unit else None
    if state and state.get("ActiveState") in ("active", "reloading"):
        current = state.get("InvocationID")
        invocation = proc.provenance().get("INVOCATION_ID")
        return not current or not invocation or invocation == current
    return False


def _duplicates(snap, roots, units, daemons, leaked=frozenset()):
    """``{root: (program, twin or None, [other copies])}`` of duplicated daemons;
    ``leaked``: pids in trees already reported as leaked (never managed)."""
    groups = {}
    for proc in roots:
        key = _daemon_key(snap, proc, daemons)
        if key is not None:
            groups.setdefault(key, []).append(proc.pid)
    out = {}
    for key, copies in groups.items():
        if len(copies) < 2:
            continue
        managed = [r for r in copies if _managed(snap, r, units, leaked)]
        twin = managed[0] if len(managed) == 1 else None
        for root in copies:
            if root != twin:
                out[root] = (key[0], twin, sorted(r for r in copies if r != root))
    return out


def _rules(facts, daemons):
    """``{root: (code, detail)}`` of every rule's hits (one entry per root:
    supervisor leaks first, then leftovers, then duplicates)."""
    snap = facts.snap
    roots = candidate_roots(snap)
    hits = {}
    for root in _supervisor_leaks(snap, roots):
        hits[root] = ("supervisor-leak", {})
    if facts.units is not None:
        for root, (unit, why) in _unit_leftovers(snap, roots, facts.units).items():
            if root in hits:
                hits[root][1]["unit"] = unit
            else:
                hits[root] = ("unit-leftover", {"unit": unit, "unit_state": why})
    leaked = {pid for root in hits for pid in [root] + snap.descendants(root)}
    for root, (prog, twin, others) in _duplicates(snap, roots, facts.units, daemons, leaked).items():
        if root in hits:
            hits[root][1]["duplicate_of"] = twin
        else:
            hits[root] = ("duplicate-daemon", {"program": prog, "duplicate_of": twin, "duplicates": others})
    return hits


def _held(snap, pids, root, why):
    """Why a person or a scheduler may be running this tree (or ``None``)."""
    if why == "previous-run":
        return "left by an earlier run of a unit that runs again (KillMode=process keeps jobs and sessions)"
    tty = next((p for p in pids if snap.procs[p].tty), None)
    if tty is not None:
        return "PID {} has a controlling terminal".format(tty)
    loginuid = snap.procs[root].loginuid
    if loginuid is not None:
        return "started from a login session (login uid {})".format(loginuid)
    return None


def _finding(facts, protected, root, code, detail):
    snap = facts.snap
    proc = snap.procs[root]
    pids = [root] + snap.descendants(root)
    prov = proc.provenance()
    twin = detail.get("duplicate_of")
    if code == "supervisor-leak":
        severity = "critical"
    elif code == "unit-leftover":
        severity = "warning" if detail["unit_state"] == "previous-run" else "critical"
    else:
        severity = "critical" if twin is not None else "warning"
    held = _held(snap, pids, root, detail.get("unit_state"))
    if 1 in pids or (code == "duplicate-daemon" and twin is None):
        reap = "no"
    else:
        reap = "when-named" if held else "default"
    program = detail.get("program") or (proc.program.name if proc.program else None)
    f = hostcheck_check.finding(
        NAME, code, severity, "", pids, root=root, program=program,
        user=facts.users.get(proc.uid), started=snap.started_iso(proc),
        provenance={"supervisor_program": prov.get("SUPERVISOR_PROCESS_NAME"),
                    "supervisor_group": prov.get("SUPERVISOR_GROUP_NAME"),
                    "unit": detail.get("unit") or _unit(proc),
                    "unit_state": detail.get("unit_state")},
        duplicate_of=twin, reap=reap, held=held,
        contains_self=bool(protected.intersection(pids) - {1}))
    if code == "duplicate-daemon" and twin is None:
        f["duplicates"] = detail["duplicates"]
    f["summary"] = _summary(f)
    return f


def analyse(facts, opts):
    """Judge the facts :func:`read` collected. Pure."""
    snap = facts.snap
    protected = hostcheck_reaper.protected(snap)
    hits = facts.hits if facts.hits is not None else _rules(facts, opts["daemons"])
    findings = hostcheck_check.by_severity(
        [_finding(facts, protected, root, code, detail) for root, (code, detail) in sorted(hits.items())])
    notes = [] if facts.units is not None else [facts.note]
    if facts.euid != 0:
        notes.append(NOTE_NOT_ROOT)
    critical = [f for f in findings if f["severity"] == "critical"]
    details = {"leaked": len(critical), "programs": sorted({f["program"] or "unknown" for f in critical}),
               "processes": len(snap.procs)}
    return hostcheck_check.Diagnosis(NAME, findings, notes, details, facts)


def _summary(f):
    n = len(f["pids"])
    what = "{} tree of {} process{} (root {}{})".format(
        f["program"] or "unknown", n, "" if n == 1 else "es", f["root"],
        ", started " + f["started"] if f.get("started") else "")
    prov = f["provenance"]
    code = f["code"]
    if code == "supervisor-leak":
        text = "{} escaped supervisord program '{}': no live supervisord above it".format(
            what, prov.get("supervisor_program") or "?")
    elif code == "unit-leftover":
        if prov.get("unit_state") == "previous-run":
            text = "{} was left behind by an earlier run of {}, which has been restarted since".format(
                what, prov.get("unit"))
        else:
            text = "{} is left in the cgroup of {}, which is {} (KillMode=process or none keeps children)".format(
                what, prov.get("unit"), prov.get("unit_state"))
    elif f.get("duplicate_of"):
        text = "{} duplicates the managed copy at PID {} (same configuration)".format(what, f["duplicate_of"])
    else:
        text = ("{} is one of several copies ({}) of a single-instance daemon with the same configuration; "
                "none is managed").format(what, ", ".join(str(p) for p in [f["root"]] + f.get("duplicates", [])))
    if f.get("duplicate_of") and code != "duplicate-daemon":
        text += "; managed copy at PID {}".format(f["duplicate_of"])
    if f["reap"] == "when-named":
        text += "; not reaped unless named in match: " + f["held"]
    return text


def summarise(diag):
    """The grain entry: leaked trees (critical), their programs, warnings."""
    return {
        "count": diag.details["leaked"],
        "programs": diag.details["programs"],
        "warnings": sum(1 for f in diag.findings if f["severity"] == "warning"),
    }


# --------------------------------------------------------------------------
# the remedy: orphans_reaped

REMEDY_ARGS = {
    "match": hostcheck_config.globs(),
    "exclude": hostcheck_config.globs(),
    "timeout": hostcheck_config.seconds(10),
}
CONFIG_KEYS = ()


def _names(f):
    prov = f.get("provenance") or {}
    return [n for n in (f.get("program"), prov.get("supervisor_program"), prov.get("unit")) if n]


def _matches(f, globs):
    return any(fnmatch.fnmatchcase(n, g) for n in _names(f) for g in globs)


def select(findings, match=None, exclude=None):
    """The findings a reaper takes: ``reap: default`` ones (filtered by
    ``match``), ``reap: when-named`` ones only when ``match`` names them,
    none that ``exclude`` names."""
    out = []
    for f in findings:
        if f["reap"] == "no" or (f["reap"] == "when-named" and not match):
            continue
        if match and not _matches(f, match):
            continue
        if exclude and _matches(f, exclude):
            continue
        out.append(f)
    return out


def members(snap, f, never):
    """``[[pid, starttime], ...]`` of a finding's tree that may be signalled:
    never PID 1, a kernel thread, ``never`` (the minion's own tree and
    ancestors are handled by deferral, see :func:`plan`) or the managed
    twin's tree."""
    twin = f.get("duplicate_of")
    twin_tree = set([twin] + snap.descendants(twin)) if twin in snap.procs else set()
    out = []
    for pid in f["pids"]:
        proc = snap.procs.get(pid)
        if proc is None or proc.kernel_thread or pid in twin_tree or pid in never:
            continue
        out.append([pid, proc.starttime])
    return out


def _describe(f, pids):
    return {"root": f["root"], "program": f["program"], "code": f["code"], "pids": pids}


def plan(diag, args):
    """Which trees to reap, as identities. Pure."""
    facts = diag.facts
    snap = facts.snap
    protected = hostcheck_reaper.protected(snap)
    chosen = select(diag.findings, args["match"], args["exclude"])
    items = []
    for f in chosen:
        # a tree holding this job is reaped whole, after the job returned
        ids = members(snap, f, {1} if f["contains_self"] else protected)
        twin = f.get("duplicate_of")
        twin_tree = set([twin] + snap.descendants(twin)) if twin in snap.procs else set()
        if ids:
            items.append({"finding": f, "pids": ids, "contains_self": f["contains_self"],
                          "never": sorted((({1} if f["contains_self"] else protected) | twin_tree))})
    held = [f for f in diag.findings if f["reap"] == "when-named" and f not in chosen]
    notes = ["Left alone (name it in match to reap it): {} (root {}): {}".format(
        f["program"], f["root"], f["held"]) for f in held]
    if facts.euid != 0:
        foreign = sorted(pid for it in items for pid, _ in it["pids"] if snap.procs[pid].uid != facts.euid)
        if foreign:
            return hostcheck_check.Plan(problems=[
                "The minion runs as uid {} and cannot signal processes of other users (PIDs {}); "
                "nothing was done. Run the state as root.".format(facts.euid, ", ".join(map(str, foreign)))])
    skipped = len([f for f in diag.findings if f["reap"] == "default"]) - len(
        [it for it in items if it["finding"]["reap"] == "default"])
    idle = "No leaked process trees to reap" + (
        " ({} leaked tree(s) left alone by match/exclude)".format(skipped) if skipped else "")
    direct = [it for it in items if not it["contains_self"]]
    deferred = [it for it in items if it["contains_self"]]
    changes = {}
    if direct:
        changes["reaped"] = [_describe(it["finding"], [p for p, _ in it["pids"]]) for it in direct]
    if deferred:
        changes["deferred"] = [dict(_describe(it["finding"], [p for p, _ in it["pids"]]), helper_pid=None)
                               for it in deferred]
    preview = ["Would reap {} leaked tree(s)".format(len(items))] + [
        "  {} (root {}, {} processes){}".format(
            it["finding"]["program"], it["finding"]["root"], len(it["pids"]),
            "; runs this job: would be reaped after it returns" if it["contains_self"] else "")
        for it in items]
    return hostcheck_check.Plan(changes, {"direct": direct, "deferred": deferred}, notes=notes,
                                preview=preview, idle=idle)


def apply(host, plan_, args):
    """Reap the planned trees (identity-checked), defer the minion's own."""
    changes, lines, problems = {}, [], []
    reaped = []
    me = os.getpid()
    for it in plan_.actions["direct"]:
        f = it["finding"]
        out = hostcheck_reaper.reap(it["pids"], timeout=args["timeout"], proc_root=host.proc_root,
                                    never=set(it["never"]) | {me})
        ended = sorted(out["terminated"] + out["killed"])
        it["survivors"] = out["survivors"]
        if not ended and not out["survivors"]:
            lines.append("{} (root {}) had already exited; nothing was signalled".format(f["program"], f["root"]))
            continue
        if ended:
            reaped.append(_describe(f, ended))
            lines.append("Reaped {} (root {}): {} terminated, {} killed{}".format(
                f["program"], f["root"], len(out["terminated"]), len(out["killed"]),
                ", {} had already exited".format(len(out["gone"])) if out["gone"] else ""))
        if out["survivors"]:
            problems.append("Reaping {} (root {}) failed: still alive: {}".format(
                f["program"], f["root"], ", ".join(map(str, out["survivors"]))))
    if reaped:
        changes["reaped"] = reaped
    deferred = plan_.actions["deferred"]
    if deferred:
        helper = hostcheck_reaper.spawn_deferred(deferred, args["timeout"], proc_root=host.proc_root)
        changes["deferred"] = [dict(_describe(it["finding"], [p for p, _ in it["pids"]]), helper_pid=helper)
                               for it in deferred]
        lines.append("{} leaked tree(s) contain the minion running this job; helper PID {} reaps them "
                     "after this job returns. Apply again to verify.".format(len(deferred), helper))
    return hostcheck_check.Outcome(changes, lines, problems)


def verify(plan_, outcome, after, args):
    """Problems: a reaped tree that the new diagnosis still reports."""
    roots = {it["finding"]["root"] for it in plan_.actions["direct"] if not it.get("survivors")}
    still = [f for f in after.findings if f["root"] in roots]
    return ["Still reported after reaping: {} (root {})".format(f["program"], f["root"]) for f in still]
