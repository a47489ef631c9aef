"""Leaked process trees: analysis (pure) and reaping (acts on PIDs it diagnosed).

Three rules, all judged from one :class:`hostcheck_proc.Snapshot` plus the
unit states the service manager reported:

``supervisor-leak`` (critical)
    A process-group leader carrying supervisord's ``SUPERVISOR_PROCESS_NAME``
    with no live supervisord among its ancestors: supervisord died (SIGKILL)
    and the program's tree was re-parented to init or to a subreaper. The
    whole tree below that root is the leak, whatever its descendants did to
    their own ``environ`` (setproctitle clobbers it). A tree inside the
    cgroup of a unit whose main process is supervisord but no longer below
    it is the same leak seen from systemd.

``unit-leftover`` (critical)
    Processes in the cgroup of a service that is no longer running, or that
    a previous run of a running service left behind (their
    ``INVOCATION_ID`` is not the unit's current one): what
    ``KillMode=process`` (or ``none``) leaves after a stop or restart. A tree
    left in a supervisord unit by an earlier supervisord is this leak too.

``duplicate-daemon`` (critical when one copy is managed, else warning)
    Two or more separate trees of the same single-instance daemon with the
    same configuration, in the same PID and mount namespace. The copy whose
    root is the child of a live supervisord, or the main process (or below
    it) of an active unit, is managed; the others are leaked and point at
    it with ``duplicate_of``.

Processes are identified by their executable and command line, never by
``comm`` alone, and a daemon that double-forked and was adopted by init is
not a leak: it has no supervisor provenance and is either the main process
of its (active) unit or on a host without a service manager.

"""

import fnmatch
import json
import os
import pwd
import signal
import subprocess
import sys
import time

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_proc
import hostcheck_systemd

CHECK = "orphans"

#: Interpreters whose first non-option argument names the real program.
INTERPRETERS = ("python", "perl", "ruby", "node", "php", "java", "bash", "sh", "dash")

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

LEAK_CODES = ("supervisor-leak", "unit-leftover", "duplicate-daemon")


class ConfigError(ValueError):
    """Bad configuration (pillar/minion config) given to the orphans check."""


# --------------------------------------------------------------------------
# identification


def program_of(proc):
    """Program name of a process from its argv/exe (not from comm).

    ``/usr/bin/python3 /usr/bin/salt-minion -c /etc/salt`` -> ``salt-minion``;
    ``/usr/sbin/cron -f`` -> ``cron``. ``None`` for kernel threads and
    processes whose command line is gone.
    """
    argv = proc.cmdline
    if not argv:
        exe = proc.exe
        if not exe:
            return None
        return os.path.basename(exe.replace(" (deleted)", ""))
    name = os.path.basename(argv[0]).rstrip(":")
    if name.startswith("-"):
        name = name[1:]  # login shells
    base = name.rstrip("0123456789.")
    if base in INTERPRETERS:
        skip_next = False
        for arg in argv[1:]:
            if skip_next:
                skip_next = False
                continue
            if arg in ("-m", "-c"):
                # "python -m pkg" names a module, "-c" a snippet: keep the
                # interpreter name, which never matches a daemon entry.
                return name
            if arg in ("-W", "-X", "-I", "-O", "-E", "-s", "-S", "-u", "-B", "-e"):
                if arg in ("-W", "-X", "-e"):
                    skip_next = True
                continue
            if arg.startswith("-"):
                continue
            return os.path.basename(arg)
        return name
    return name


def program_args(proc):
    """argv after the program itself (after the script for interpreters)."""
    argv = proc.cmdline
    if not argv:
        return []
    prog = program_of(proc)
    for idx, arg in enumerate(argv):
        if os.path.basename(arg).rstrip(":") == prog or (idx == 0 and prog == os.path.basename(arg).lstrip("-")):
            return argv[idx + 1 :]
    return argv[1:]


def option_values(args, options):
    """Values of the given options in ``args`` (``-c X``, ``-cX``, ``--opt=X``)."""
    found = {}
    idx = 0
    while idx < len(args):
        arg = args[idx]
        for opt in options:
            if arg == opt:
                if idx + 1 < len(args):
                    found[opt] = args[idx + 1]
                    idx += 1
                break
            if opt.startswith("--") and arg.startswith(opt + "="):
                found[opt] = arg[len(opt) + 1 :]
                break
            if not opt.startswith("--") and len(opt) == 2 and arg.startswith(opt) and len(arg) > 2:
                found[opt] = arg[2:]
                break
        idx += 1
    return found


def validate_daemons(value):
    """Check a ``daemons`` mapping from pillar/config and merge it with the defaults.

    Accepts ``{name: {options: [..], require: [..]}}``; ``{name: null}`` or
    ``{name: false}`` removes a default. Raises :class:`ConfigError` on
    anything else.
    """
    merged = {k: dict(v) for k, v in DEFAULT_DAEMONS.items()}
    if value is None:
        return merged
    if not isinstance(value, dict):
        raise ConfigError(
            "hostcheck:orphans:daemons must be a mapping of program name to "
            "{{options: [...], require: [...]}}, got {}".format(type(value).__name__)
        )
    for name, spec in value.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError("hostcheck:orphans:daemons: invalid program name {!r}".format(name))
        if spec is None or spec is False:
            merged.pop(name, None)
            continue
        if spec is True:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(
                "hostcheck:orphans:daemons:{}: must be a mapping, got {}".format(name, type(spec).__name__)
            )
        unknown = set(spec) - {"options", "require"}
        if unknown:
            raise ConfigError(
                "hostcheck:orphans:daemons:{}: unknown keys {}".format(name, ", ".join(sorted(map(str, unknown))))
            )
        entry = {}
        for key in ("options", "require"):
            items = spec.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise ConfigError(
                    "hostcheck:orphans:daemons:{}:{} must be a list of strings".format(name, key)
                )
            entry[key] = list(items)
        merged[name] = entry
    return merged


def _ns(snap, proc, kind):
    base = proc._base  # pylint: disable=protected-access
    if base is None:
        return None
    try:
        return os.readlink(base + "/ns/" + kind)
    except OSError:
        return None


def _user(uid):
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --------------------------------------------------------------------------
# analysis


class Analysis:
    """Result of :func:`analyse`: findings plus what the state needs to act."""

    def __init__(self, snap, findings, trees, notes):
        self.snap = snap
        self.findings = findings
        #: root pid -> list of pids in the tree (root first), per finding
        self.trees = trees
        self.notes = notes

    def leaked(self):
        return [f for f in self.findings if f.get("reapable")]


def _tree_root_candidate(proc):
    """Whether ``proc`` can be the root of a leaked or duplicated tree.

    Structural, not by name: such a root leads its own process group
    (daemons call setsid(); systemd, supervisord, cron and job-control
    shells give every program its own group) or was adopted by its
    namespace's init (PID 1 as that namespace sees it) after a double fork
    or its parent's death. Only these are looked at by the three rules,
    which keeps the check cheap on hosts with thousands of worker processes.
    """
    return proc.pgid == proc.pid or proc.ppid == 1


def adopted_by_unit(procs):
    """``{unit: [pids]}`` of the processes init adopted, by their system service.

    Whatever a service leaves behind has lost its parent and was re-parented
    to PID 1: only these roots can be leftovers, so only their cgroups are
    read (a few dozen on a typical host instead of every process).
    """
    out = {}
    for proc in procs:
        if proc.ppid != 1:
            continue
        unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
        if unit and unit.endswith(".service") and not unit.startswith("user@"):
            out.setdefault(unit, []).append(proc.pid)
    return out


def _is_supervisor(proc):
    return proc is not None and program_of(proc) in SUPERVISORS


def _tree(snap, root):
    return [root] + snap.descendants(root)


def _protected(snap):
    """PIDs a reaper must never touch: this process, its ancestors, PID 1."""
    out = {1}
    if snap.self_pid is not None:
        out.add(snap.self_pid)
        out.update(snap.ancestors(snap.self_pid))
    return out


NOTE_NO_SYSTEMD = "systemd is not running here: the unit rule (unit-leftover) was skipped"
NOTE_NO_SYSTEMCTL = "systemd did not answer: the unit rule (unit-leftover) was skipped"


def analyse(snap, units=None, daemons=None, units_note=NOTE_NO_SYSTEMD):
    """Judge a snapshot. Pure: reads nothing but the snapshot's lazy fields.

    :param snap: a :class:`hostcheck_proc.Snapshot`.
    :param units: ``{unit: {"ActiveState", "InvocationID"}}`` from
        :func:`hostcheck_systemd.running_services`, or ``None`` when there is
        no service manager to ask (the unit rule is then skipped).
    :param daemons: merged daemon table (see :func:`validate_daemons`).
    """
    if daemons is None:
        daemons = DEFAULT_DAEMONS
    procs = snap.procs
    kthread = hostcheck_proc.PF_KTHREAD
    gone = (b"Z", b"X", b"x")
    # The only pass over every process: _tree_root_candidate() and the
    # kernel_thread/zombie properties, inlined. The rules below see only
    # these candidate roots (group leaders and init's children).
    roots = [
        p for p in procs.values()
        if (p.pgid == p.pid or p.ppid == 1)
        and not p.flags & kthread and p.pid != 1 and p._state not in gone  # pylint: disable=protected-access
    ]
    findings = {}  # root pid -> finding
    notes = []
    protected = _protected(snap)

    def base_finding(code, severity, root, program, provenance):
        proc = procs[root]
        pids = _tree(snap, root)
        return {
            "check": CHECK,
            "code": code,
            "severity": severity,
            "summary": "",
            "pids": pids,
            "root": root,
            "program": program,
            "user": _user(proc.uid),
            "started": snap.started_iso(proc),
            "provenance": provenance,
            "duplicate_of": None,
            "reapable": severity == "critical",
            "contains_self": bool(protected.intersection(pids) - {1}),
        }

    # ---- rule 1: supervisor leaks -------------------------------------------
    sup_roots = []
    for proc in roots:
        if proc.pgid != proc.pid:
            continue  # supervisord setpgid()s every program it starts
        parent = procs.get(proc.ppid)
        if _is_supervisor(parent):
            continue
        prov = proc.provenance()
        if not prov.get("SUPERVISOR_PROCESS_NAME"):
            continue
        if any(_is_supervisor(procs.get(a)) for a in snap.ancestors(proc.pid)):
            continue
        sup_roots.append(proc.pid)
    sup_set = set(sup_roots)
    for root in sup_roots:
        if sup_set.intersection(snap.ancestors(root)):
            continue  # part of a leaked tree already reported from its root
        prov = procs[root].provenance()
        provenance = {
            "supervisor_program": prov.get("SUPERVISOR_PROCESS_NAME"),
            "supervisor_group": prov.get("SUPERVISOR_GROUP_NAME"),
            "unit": hostcheck_proc.unit_of_cgroup(procs[root].cgroup)[0],
        }
        findings[root] = base_finding(
            "supervisor-leak", "critical", root, program_of(procs[root]), provenance
        )

    # ---- rule 2: systemd leftovers ------------------------------------------
    if units is None:
        # no cgroup is read for the unit rule when it cannot run
        notes.append(units_note)
    else:
        for unit, adopted in sorted(adopted_by_unit(roots).items()):
            state = units.get(unit)
            if state is None:
                continue
            active = state.get("ActiveState")
            current = state.get("InvocationID")
            for root in adopted:
                invocation = procs[root].provenance().get("INVOCATION_ID")
                if active in ("inactive", "failed"):
                    why = active
                elif active in ("active", "reloading") and current and invocation and invocation != current:
                    why = "previous-run"
                else:
                    continue  # part of the current run, or nothing to compare with
                if root in findings:
                    findings[root]["provenance"]["unit"] = unit
                    continue
                findings[root] = base_finding(
                    "unit-leftover", "critical", root, program_of(procs[root]),
                    {"unit": unit, "unit_state": why},
                )

    # ---- rule 3: duplicate daemons ------------------------------------------
    groups = {}
    for proc in roots:
        prog = program_of(proc)
        spec = daemons.get(prog)
        if spec is None:
            continue
        parent = procs.get(proc.ppid)
        if parent is not None and program_of(parent) == prog:
            continue  # not the root of its daemon tree
        args = program_args(proc)
        if any(req not in args for req in spec.get("require", ())):
            continue
        opts = option_values(args, spec.get("options", ()))
        key = (
            prog,
            tuple(sorted(opts.items())),
            _ns(snap, proc, "pid"),
            _ns(snap, proc, "mnt"),
        )
        groups.setdefault(key, []).append(proc.pid)
    for key, copies in groups.items():
        if len(copies) < 2:
            continue
        prog = key[0]
        managed = [r for r in copies if _managed_by(snap, r, units) is not None]
        twin = managed[0] if len(managed) == 1 else None
        for root in copies:
            if root == twin:
                continue
            if root in findings:
                if twin is not None:
                    findings[root]["duplicate_of"] = twin
                continue
            if twin is not None:
                f = base_finding("duplicate-daemon", "critical", root, prog,
                                 {"unit": hostcheck_proc.unit_of_cgroup(procs[root].cgroup)[0]})
                f["duplicate_of"] = twin
            else:
                f = base_finding("duplicate-daemon", "warning", root, prog,
                                 {"unit": hostcheck_proc.unit_of_cgroup(procs[root].cgroup)[0]})
                f["duplicates"] = sorted(r for r in copies if r != root)
            findings[root] = f
        if twin is not None:
            for root in copies:
                f = findings.get(root)
                if f is not None and root != twin and f.get("duplicate_of") is None:
                    f["duplicate_of"] = twin

    # ---- finish: summaries, and never offer to reap protected trees --------
    out = []
    trees = {}
    for root in sorted(findings):
        f = findings[root]
        if 1 in f["pids"]:
            f["reapable"] = False
        f["summary"] = _summary(f)
        trees[root] = f["pids"]
        out.append(f)
    order = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda f: (order[f["severity"]], f["root"]))
    return Analysis(snap, out, trees, notes)


def _managed_by(snap, root, units):
    """``"supervisor"``/``"unit"`` when a live manager owns the tree at ``root``."""
    proc = snap.procs[root]
    if _is_supervisor(snap.procs.get(proc.ppid)):
        return "supervisor"
    if units:
        unit = hostcheck_proc.unit_of_cgroup(proc.cgroup)[0]
        state = units.get(unit) if unit else None
        if state and state.get("ActiveState") in ("active", "reloading"):
            current = state.get("InvocationID")
            invocation = proc.provenance().get("INVOCATION_ID")
            if not current or not invocation or invocation == current:
                return "unit"
    return None


def _summary(f):
    n = len(f["pids"])
    what = "{} tree of {} process{} (root {}{})".format(
        f["program"] or "unknown", n, "" if n == 1 else "es", f["root"],
        ", started " + f["started"] if f.get("started") else "",
    )
    prov = f["provenance"]
    code = f["code"]
    if code == "supervisor-leak":
        text = "{} escaped supervisord program '{}': no live supervisord above it".format(
            what, prov.get("supervisor_program") or "?"
        )
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
        text = "{} is one of several copies ({}) of a single-instance daemon with the same configuration; none is managed".format(
            what, ", ".join(str(p) for p in [f["root"]] + f.get("duplicates", []))
        )
    if f.get("duplicate_of") and code != "duplicate-daemon":
        text += "; managed copy at PID {}".format(f["duplicate_of"])
    return text


def summary(findings):
    """The grain-sized summary: count of leaked trees and programs involved."""
    leaked = [f for f in findings if f["severity"] == "critical"]
    return {
        "count": len(leaked),
        "programs": sorted({f["program"] or "unknown" for f in leaked}),
        "warnings": sum(1 for f in findings if f["severity"] == "warning"),
    }


def diagnose(proc_root="/proc", run_root="/run", daemons=None, units=None, ask_systemd=True):
    """Snapshot + unit states + analysis in one call (what module, grain and state use)."""
    snap = hostcheck_proc.snapshot(proc_root)
    note = NOTE_NO_SYSTEMD
    if units is None and ask_systemd and hostcheck_systemd.systemd_running(run_root):
        note = NOTE_NO_SYSTEMCTL
        kthread = hostcheck_proc.PF_KTHREAD
        names = adopted_by_unit(p for p in snap.procs.values() if not p.flags & kthread)
        units = hostcheck_systemd.running_services(names, run_root=run_root)
    return analyse(snap, units=units, daemons=daemons, units_note=note)


# --------------------------------------------------------------------------
# selection and reaping


def select(findings, match=None, exclude=None):
    """Reapable findings filtered by ``match``/``exclude`` glob lists.

    A finding matches a glob when its program, supervisor program or unit
    does.
    """

    def names(f):
        prov = f.get("provenance") or {}
        return [n for n in (f.get("program"), prov.get("supervisor_program"), prov.get("unit")) if n]

    out = []
    for f in findings:
        if not f.get("reapable"):
            continue
        cand = names(f)
        if match and not any(fnmatch.fnmatchcase(n, g) for n in cand for g in match):
            continue
        if exclude and any(fnmatch.fnmatchcase(n, g) for n in cand for g in exclude):
            continue
        out.append(f)
    return out


def plan(analysis, findings):
    """Identities to signal for the given findings: ``[{root, program, pids: [[pid, starttime], ...]}]``.

    PID 1, kernel threads, this process, its ancestors and the managed twin's
    tree are never part of a plan.
    """
    snap = analysis.snap
    never = {1}
    if snap.self_pid is not None:
        never.add(snap.self_pid)
        never.update(snap.ancestors(snap.self_pid))
    out = []
    for f in findings:
        twin = f.get("duplicate_of")
        twin_tree = set(_tree(snap, twin)) if twin in snap.procs else set()
        members = []
        for pid in f["pids"]:
            proc = snap.procs.get(pid)
            if proc is None or proc.kernel_thread or pid in twin_tree:
                continue
            members.append([pid, proc.starttime])
        contains_self = any(pid in never for pid, _ in members)
        if contains_self:
            members = [m for m in members if m[0] != 1]
        out.append({
            "root": f["root"],
            "program": f["program"],
            "code": f["code"],
            "pids": members,
            "contains_self": contains_self,
        })
    return out


def _signal(pid, starttime, sig, proc_root="/proc"):
    """Send ``sig`` to ``pid`` only if it still is the process diagnosed.

    Uses a pidfd where the kernel has one, so the identity check and the
    signal refer to the same process even if the PID is reused in between.
    Returns True when the signal was delivered.
    """
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
    try:
        if not hostcheck_proc.still_same(pid, starttime, proc_root):
            return False
        if pidfd is not None and hasattr(signal, "pidfd_send_signal"):
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _alive(members, proc_root):
    return [(pid, st) for pid, st in members if hostcheck_proc.still_same(pid, st, proc_root)]


def _new_children(members, proc_root, never):
    """Children forked by tree members since the plan was made (they belong to the tree)."""
    snap = hostcheck_proc.snapshot(proc_root)
    have = {pid for pid, _ in members}
    found = []
    queue = list(have)
    while queue:
        parent = queue.pop()
        for child in snap.children.get(parent, ()):
            if child in have or child in never:
                continue
            proc = snap.procs[child]
            if proc.kernel_thread:
                continue
            have.add(child)
            found.append((child, proc.starttime))
            queue.append(child)
    return found


def reap(members, timeout=10.0, proc_root="/proc", never=(1,), poll=0.05):
    """Terminate one tree: freeze it, SIGTERM every member, thaw, wait, SIGKILL the rest.

    ``members`` is ``[(pid, starttime), ...]`` from :func:`plan`. Freezing
    first (SIGSTOP) keeps a parent from re-spawning children between the
    signals. Every signal re-checks identity. Returns
    ``{"terminated": [...], "killed": [...], "survivors": [...]}`` (pids).
    """
    never = set(never) | {1}
    members = [(int(p), int(s)) for p, s in members if int(p) not in never]
    stopped = [m for m in members if _signal(m[0], m[1], signal.SIGSTOP, proc_root)]
    # children forked after the plan and before the freeze
    extra = _new_children(members, proc_root, never)
    for pid, st in extra:
        if _signal(pid, st, signal.SIGSTOP, proc_root):
            stopped.append((pid, st))
    members = members + extra
    termed = [m for m in members if _signal(m[0], m[1], signal.SIGTERM, proc_root)]
    for pid, st in stopped:
        _signal(pid, st, signal.SIGCONT, proc_root)
    deadline = time.monotonic() + max(0.0, float(timeout))
    alive = _alive(members, proc_root)
    while alive and time.monotonic() < deadline:
        time.sleep(poll)
        more = _new_children(alive, proc_root, never)
        if more:
            members += more
            for pid, st in more:
                _signal(pid, st, signal.SIGTERM, proc_root)
        alive = _alive(members, proc_root)
    killed = []
    for pid, st in alive:
        if _signal(pid, st, signal.SIGKILL, proc_root):
            killed.append(pid)
    end = time.monotonic() + 2.0
    survivors = _alive(members, proc_root)
    while survivors and time.monotonic() < end:
        time.sleep(poll)
        survivors = _alive(members, proc_root)
    return {
        "terminated": sorted(p for p, _ in termed if p not in killed),
        "killed": sorted(killed),
        "survivors": sorted(p for p, _ in survivors),
    }


def _wait_gone(pid, starttime, proc_root, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end and hostcheck_proc.still_same(pid, starttime, proc_root):
        time.sleep(0.1)


def spawn_deferred(plans, timeout, proc_root="/proc", grace=2.0, wait_limit=120.0):
    """Reap trees that contain this very process after this job has returned.

    Used when the job runs inside the leaked copy of a duplicated minion:
    killing the tree now would kill the job before it answers the master.
    A detached helper (own session, so it is not part of the tree once this
    process exits) waits until this process is gone, then reaps the planned
    identities exactly as :func:`reap` does. Returns the helper's PID.
    """
    me = os.getpid()
    snap_self = hostcheck_proc.parse_stat(
        hostcheck_proc.read_bytes("{}/{}/stat".format(proc_root, me))
    )
    payload = {
        "plans": plans,
        "timeout": timeout,
        "proc_root": proc_root,
        "grace": grace,
        "wait": [me, snap_self[6] if snap_self else 0],
        "wait_limit": wait_limit,
    }
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); "
        "import hostcheck_orphans; hostcheck_orphans._deferred_main(json.loads(sys.argv[2]))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", code, here, json.dumps(payload)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )
    return proc.pid


def _deferred_main(payload):
    """Entry point of the detached helper started by :func:`spawn_deferred`."""
    proc_root = payload["proc_root"]
    wait_pid, wait_start = payload["wait"]
    _wait_gone(wait_pid, wait_start, proc_root, payload["wait_limit"])
    time.sleep(payload["grace"])
    me = os.getpid()
    for item in payload["plans"]:
        reap(item["pids"], timeout=payload["timeout"], proc_root=proc_root, never=(1, me))
