"""What hostcheck asks the service manager, in one batched call.

This is part of the snapshot layer: it reads the host (through
``systemctl show``) and returns plain data for the analysis code. It never
starts, stops or changes a unit.
"""

import os
import shutil
import subprocess

SHOW_PROPERTIES = ("Id", "ActiveState", "SubState", "MainPID", "ControlPID", "KillMode")


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
