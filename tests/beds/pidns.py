"""Run a driver script as PID 1 of a throw-away PID namespace, with a chosen Salt.

The drivers in tests/functional build a small host inside the namespace,
run hostcheck through a real ``salt-call --local`` and print one line
``REPORT <json>``. With ``--kill-child`` and ``--mount-proc`` nothing in the
namespace can see or signal a host process, and everything in it dies when
the driver exits.
"""
import json
import os
import subprocess
import sys

import pytest

from .common import require_root_scenario

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPAT = os.path.join(REPO, ".venv-compat")
#: The Salt versions users run: this venv (3008) and, on the Python that
#: onedir minions bundle (3.10), 3006 LTS and 3007 (scripts/bootstrap-compat).
SALTS = ["main"] + sorted(os.listdir(COMPAT) if os.path.isdir(COMPAT) else [])
EXPECTED_COMPAT = {"salt3006-py310", "salt3007-py310"}


def salt_call_of(name):
    """Path of ``salt-call`` for a name in :data:`SALTS`."""
    if name == "main":
        return os.path.join(os.path.dirname(sys.executable), "salt-call")
    return os.path.join(COMPAT, name, "bin", "salt-call")


def run_driver(driver, work, salt="main", tools=("unshare",), timeout=300):
    """Run ``driver`` (a path) in a new PID namespace; return its REPORT dict."""
    require_root_scenario(tools=list(tools))
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
         sys.executable, driver, REPO, str(work), salt_call_of(salt)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    if not lines:
        pytest.fail("driver {} failed:\n{}{}".format(driver, proc.stdout[-3000:], proc.stderr[-3000:]))
    return json.loads(lines[-1][len("REPORT "):])
