"""Fixtures for root scenarios.

Root-scenario convention (see tests/beds/common.py): a test that needs root
(or a tool) is marked ``@pytest.mark.root``; when its requirements are missing
it is skipped, but with ``CI=true`` in the environment it fails instead.
"""
import pytest


# --- real-systemd container bed (tests/beds/nspawn.py) ----------------------
# Self-contained section: it needs nothing from the rest of this file.


def _nspawn_bed():
    import pathlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    repo = str(pathlib.Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tests.beds import common, nspawn  # noqa: PLC0415

    return common, nspawn


@pytest.fixture(scope="session")
def systemd_rootfs():
    """The cached Debian bookworm rootfs with systemd and Salt in /opt/salt.

    Built on first use (about 2 minutes), then a lookup. Skips without root
    or the bed's tools (fails instead under ``CI=true``)."""
    common, nspawn = _nspawn_bed()
    common.require_root_scenario(tools=nspawn.REQUIRED_TOOLS, what="the systemd container bed")
    return nspawn.ensure_rootfs()


@pytest.fixture
def systemd_container(systemd_rootfs):
    """A freshly booted :class:`tests.beds.nspawn.Container` (systemd as PID 1,
    cron, dbus and logind running, the checkout read-only at /srv/hostcheck);
    powered off and removed after the test."""
    _, nspawn = _nspawn_bed()
    with nspawn.Container(systemd_rootfs) as container:
        yield container
