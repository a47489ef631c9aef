"""The pip route from a clean checkout: ``pip install`` of a copy of the
tracked files (the in-tree build would leave ``build/`` and an egg-info in
``_utils``), into a private ``--target`` directory."""
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def install_copy(tmp_path):
    """Install the package from a copy of the tracked files under
    ``tmp_path``; the ``--target`` directory (a ``pathlib.Path``) for
    ``PYTHONPATH``."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("_", "hostcheck_saltext/")) or rel in ("setup.py", "README.rst"):
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(REPO, rel), dest)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, cwd=str(tmp_path))
    return target
