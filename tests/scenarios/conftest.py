"""Fixtures for root scenarios.

Root-scenario convention (see tests/beds/common.py): a test that needs root
(or a tool) is marked ``@pytest.mark.root``; when its requirements are missing
it is skipped, but with ``CI=true`` in the environment it fails instead.
"""
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.beds.common import require_root_scenario  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "root: scenario needing root (skipped without it; fails with CI=true)"
    )


# --- supervisor-leak bed (tests/beds/supervisor_leak.py) --------------------

SALT_DIRS = ("_modules", "_states", "_grains", "_utils")


def _unshare_pid_works():
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        return f"unshare cannot run: {exc}"
    if probe.returncode != 0:
        return f"unshare --pid --fork --mount-proc fails: {probe.stderr.strip()}"
    return None


def _venv_tools():
    venv_bin = pathlib.Path(sys.prefix) / "bin"
    tools = ("supervisord", "supervisorctl", "salt-minion")
    missing = [t for t in tools if not (venv_bin / t).exists()]
    if missing:
        return f"missing in {venv_bin}: {', '.join(missing)} (run scripts/bootstrap)"
    return None


@pytest.fixture(scope="module")
def supervisor_leak_requirements():
    """Skip (or fail under CI) unless the supervisor-leak bed can run here.

    Returns the ``tests.beds.supervisor_leak`` module.
    """
    require_root_scenario(
        tools={"unshare": "util-linux"},
        checks=[_venv_tools, _unshare_pid_works],
        what="the supervisor-leak bed",
    )
    from tests.beds import supervisor_leak  # noqa: PLC0415

    return supervisor_leak


@pytest.fixture(scope="module")
def supervisor_leak_master(supervisor_leak_requirements, salt_factories, tmp_path_factory):
    """A salt-master on loopback (host PID namespace) serving this checkout.

    Its file_roots is a directory of symlinks to the checkout's ``_modules``,
    ``_states``, ``_grains`` and ``_utils``, so ``saltutil.sync_all`` delivers
    the working tree without the fileserver listing ``.venv``.
    """
    from saltfactories.utils import random_string  # noqa: PLC0415

    file_root = tmp_path_factory.mktemp("sl-file-root")
    for name in SALT_DIRS:
        (file_root / name).symlink_to(REPO_ROOT / name)
    factory = salt_factories.salt_master_daemon(
        random_string("hc-sl-master-"),
        overrides={
            "interface": "127.0.0.1",
            "auto_accept": True,
            "file_roots": {"base": [str(file_root)]},
        },
    )
    root_dir = pathlib.Path(factory.config["root_dir"])
    try:
        with factory.started(start_timeout=120):
            yield factory
    finally:
        # salt-factories puts the master's root_dir straight under /tmp
        if root_dir.name.startswith("hc-sl-master-"):
            shutil.rmtree(root_dir, ignore_errors=True)


@pytest.fixture
def supervisor_leak_bed_factory(
    supervisor_leak_requirements, supervisor_leak_master, tmp_path_factory
):
    """Build and start :class:`SupervisorLeakBed` instances; all are stopped at teardown.

    ``make(minion_id=..., program_settings=..., ...)`` takes the bed's keyword
    arguments; workdir and master are filled in, and the minion id defaults to
    a fresh one (the module's master already holds the keys of earlier beds).
    """
    from saltfactories.utils import random_string  # noqa: PLC0415

    beds = []

    def make(**kwargs):
        kwargs.setdefault("minion_id", random_string("hc-leak-minion-"))
        bed = supervisor_leak_requirements.SupervisorLeakBed(
            tmp_path_factory.mktemp("sl"), supervisor_leak_master.config, **kwargs
        )
        beds.append(bed)
        return bed.start()

    try:
        yield make
    finally:
        for bed in beds:
            bed.stop()


@pytest.fixture
def supervisor_leak_bed(supervisor_leak_bed_factory):
    """A started :class:`SupervisorLeakBed` (supervisord + salt-minion in a PID
    namespace, operator settings) connected to ``supervisor_leak_master``. Not
    yet leaked: call ``bed.leak()``."""
    return supervisor_leak_bed_factory()


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
