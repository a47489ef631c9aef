"""What hostcheck asks the service manager, in one batched call.

This is part of the snapshot layer: it reads the host (through
``systemctl show``) and returns plain data for the analysis code. It never
starts, stops or changes a unit.
"""

import os
import shutil
import subprocess

SHOW_PROPERTIES = ("Id", "ActiveState", "SubState", "MainPID", "ControlPID", "KillMode", "InvocationID")


def systemd_running(run_root="/run"):
    """True when systemd is PID 1 of this system (sd_booted(3)'s test)."""
    return os.path.isdir(os.path.join(run_root, "systemd", "system"))


def parse_show(text):
    """Parse ``systemctl show`` output for several units into ``{Id: {prop: value}}``."""
    units = {}
    current = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                for key in ("MainPID", "ControlPID"):
                    try:
                        current[key] = int(current.get(key) or 0)
                    except ValueError:
                        current[key] = 0
                units[current["Id"]] = current
            current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    return units


def unit_states(names, run_root="/run", timeout=10):
    """``{unit: {ActiveState, SubState, MainPID, ControlPID, KillMode}}`` for ``names``.

    Returns ``None`` when systemd is not running or ``systemctl`` is missing
    or fails: the caller then skips the unit rules and says so.
    """
    names = sorted({n for n in names if n})
    if not systemd_running(run_root):
        return None
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    if not names:
        return {}
    try:
        proc = subprocess.run(
            [systemctl, "show", "--no-pager", "-p", ",".join(SHOW_PROPERTIES), "--"] + names,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return parse_show(proc.stdout.decode("utf-8", "replace"))


def invocations(run_root="/run"):
    """``{unit: invocation id}`` of every running unit, from ``/run/systemd/units``.

    systemd (232 and later) keeps an ``invocation:UNIT`` symlink there while a
    unit runs and removes it when the unit stops or fails; every process the
    run starts carries the same id as ``INVOCATION_ID``. Reading the links
    costs a few dozen readlinks and no subprocess. ``None`` when the
    directory is missing (no systemd, or an older one).
    """
    base = os.path.join(run_root, "systemd", "units")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    out = {}
    for name in names:
        if name.startswith("invocation:"):
            try:
                out[name[11:]] = os.readlink(os.path.join(base, name))
            except OSError:
                pass  # the unit stopped while we looked
    return out


def running_services(names, run_root="/run"):
    """``{unit: {"ActiveState": ..., "InvocationID": ...}}`` for ``names``.

    From the invocation links when systemd keeps them (``ActiveState`` is
    then ``"active"`` for a running unit and ``"inactive"`` for one that is
    not running, failed or stopped), else from one ``systemctl show``.
    ``None`` when systemd is not running or does not answer.
    """
    if not systemd_running(run_root):
        return None
    inv = invocations(run_root)
    if inv is not None:
        return {
            name: {"ActiveState": "active" if name in inv else "inactive", "InvocationID": inv.get(name)}
            for name in names
        }
    states = unit_states(names, run_root=run_root)
    if states is None:
        return None
    return {
        name: {"ActiveState": st.get("ActiveState"), "InvocationID": st.get("InvocationID") or None}
        for name, st in states.items()
    }
