"""Helpers shared by the root-scenario test beds.

Root-scenario convention: a test that needs root (or a host tool) is marked
``@pytest.mark.root``. When a requirement is missing it is *skipped* on a
developer's machine, but it *fails* when ``CI=true`` is in the environment:
CI installs everything the beds need, so a skip there would hide a broken
set-up and a green run would prove nothing.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping

import pytest

# Where root's tools live even when the caller's PATH lacks the sbin dirs
# (debootstrap is in /usr/sbin).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def in_ci() -> bool:
    """True when running under CI (``CI=true``, as .ci/run is started)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip the current test, or fail it when running under CI."""
    if in_ci():
        pytest.fail(f"CI=true and a root scenario cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def host_path() -> str:
    """The caller's PATH with the system dirs appended (for ``shutil.which``)."""
    current = os.environ.get("PATH", "")
    return f"{current}:{SYSTEM_PATH}" if current else SYSTEM_PATH


def which(tool: str) -> str | None:
    """Absolute path of a host tool, also looking in the sbin dirs."""
    return shutil.which(tool, path=host_path())


def missing_tools(tools: Mapping[str, str] | Iterable[str]) -> list[str]:
    """Human-readable list of missing tools.

    ``tools`` is either an iterable of tool names or a mapping
    ``{tool: debian_package}``; with a mapping the message names the package
    to install.
    """
    if isinstance(tools, Mapping):
        items = list(tools.items())
    else:
        items = [(tool, None) for tool in tools]
    missing = []
    for tool, package in items:
        if which(tool) is None:
            missing.append(f"{tool} (Debian package {package})" if package else tool)
    return missing


def require_root_scenario(
    *,
    tools: Mapping[str, str] | Iterable[str] = (),
    checks: Iterable[Callable[[], str | None]] = (),
    what: str = "this root scenario",
) -> None:
    """Skip (or, under ``CI=true``, fail) unless a root scenario can run here.

    :param tools: host tools the scenario runs (``{tool: debian_package}`` or names)
    :param checks: extra callables; each returns ``None`` when satisfied, or a
        one-line reason why the scenario cannot run
    :param what: names the scenario in the message
    """
    reasons = []
    if os.geteuid() != 0:
        reasons.append("must run as root")
    missing = missing_tools(tools)
    if missing:
        reasons.append("missing tools: " + ", ".join(missing))
    for check in checks:
        reason = check()
        if reason:
            reasons.append(reason)
    if reasons:
        skip_or_fail(f"{what} cannot run: " + "; ".join(reasons))
