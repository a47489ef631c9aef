"""A real salt-master and salt-minion on loopback (pytest-salt-factories),
with the master serving hostcheck from its file_roots, as in production."""
import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVED = ("_modules", "_states", "_grains", "_utils", "hostcheck")


def make_file_root(path):
    """A master file_root that serves the repository's Salt directories.

    Symlinks keep one source of truth while the master does not have to
    list the whole checkout (.venv and all) on every fileserver update.
    """
    os.makedirs(path, exist_ok=True)
    for name in SERVED:
        link = os.path.join(path, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(REPO, name), link)
    return path


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory):
    root = make_file_root(str(tmp_path_factory.mktemp("file_root")))
    overrides = {
        "file_roots": {"base": [root]},
        "open_mode": True,
        "auto_accept": True,
        "interface": "127.0.0.1",
    }
    factory = salt_factories.salt_master_daemon("hc-master", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    factory = salt_master.salt_minion_daemon("hc-minion", overrides={"master": "127.0.0.1"})
    with factory.started(start_timeout=120):
        ret = salt_master.salt_cli(timeout=120).run("saltutil.sync_all", minion_tgt=factory.id)
        assert ret.returncode == 0, ret
        yield factory


@pytest.fixture(scope="package")
def salt_cli(salt_master, salt_minion):
    return salt_master.salt_cli(timeout=120)
