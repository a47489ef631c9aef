"""Real-systemd container test bed (systemd-nspawn on a cached Debian rootfs).

A scenario that must run against a real systemd (service cgroups, KillMode,
``systemctl restart``, logind sessions, cron with ``pam_systemd`` ...) boots a
throw-away container whose PID 1 is Debian bookworm's systemd 252::

    from tests.beds import nspawn

    with nspawn.Container() as c:            # builds the cached rootfs on first use
        c.run(["systemctl", "is-active", "cron"])
        c.write_file("/etc/systemd/system/x.service", "...")
        c.salt_call("hostcheck.deleted_binaries")   # synced from the checkout

How it works:

* :func:`ensure_rootfs` builds, once, ``debootstrap --variant=minbase`` of
  bookworm plus a Salt venv in ``/opt/salt`` (wheels built on the host from
  ``requirements/constraints.txt``, installed in the chroot with
  ``pip --no-index``). It is cached under ``$HOSTCHECK_BED_CACHE`` (default
  ``/var/cache/hostcheck-beds``) in two layers, ``base-<hash>`` (debootstrap)
  and ``salt-<hash>`` (base + venv + config), each keyed by a hash of its
  inputs, built in a temp dir and renamed into place (a killed build never
  leaves a half cache entry), under a file lock.
* :class:`Container` gives each container its own root: an overlayfs whose
  lower layer is the cached rootfs (mounted inside a private mount namespace
  made by ``unshare``, so the host never sees the mount and it vanishes with
  the container), or a ``cp -a`` copy where overlayfs is unavailable
  (``HOSTCHECK_BED_COPY=copy|overlay|auto``). It boots it with
  ``systemd-nspawn -b --register=no --keep-unit`` (the host has no systemd)
  with a private network, the checkout bound read-only at ``/srv/hostcheck``,
  and nspawn placed in a cgroup of its own so that containers never share
  nspawn's ``payload``/``supervisor`` cgroups.
* Commands run inside with ``nsenter -t <container PID 1> -a``.
* Teardown signals only processes the bed started: SIGTERM to its nspawn
  (which powers the container off), then, if that does not finish in time,
  SIGKILL to the container's init (identity re-checked: PID, start time, PID
  namespace, parent) and finally to nspawn. Then the temp dir and the bed's
  cgroups are removed.

Safety: the bed never writes the host's ``/etc`` and never signals a process
it did not start (nothing is killed by name). It writes only under the cache
dir, its own cgroup dirs, and whatever nspawn itself creates under
``/run/systemd/nspawn``. Never write a container's files through
``/proc/<pid>/root/...`` from the host: absolute symlinks inside the
container would resolve against the *host's* root. Use :meth:`Container.write_file`.

Run ``python -m tests.beds.nspawn packages`` for the Debian packages the bed
needs, ``python -m tests.beds.nspawn build`` to build (or find) the cached
rootfs ahead of a test run, ``python -m tests.beds.nspawn prune`` to delete
cache entries other than the current ones.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.beds.common import SYSTEM_PATH, host_path, which

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"

# Debian packages the *host* needs for this bed (.ci/run apt-get installs them).
DEBIAN_PACKAGES = [
    "debootstrap",  # builds the rootfs
    "debian-archive-keyring",  # debootstrap verifies the mirror's Release file
    "systemd-container",  # systemd-nspawn
    "util-linux",  # nsenter, unshare, setpriv (Essential, listed for clarity)
    "mount",  # mount -t overlay (Essential, listed for clarity)
]
# tool -> Debian package that provides it
REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
}

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
VARIANT = "minbase"
INCLUDE = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "cron",
    "python3",
    "python3-venv",
    "procps",
    "libpam-systemd",  # pam_systemd in common-session: cron jobs open logind sessions
    "tzdata",  # /usr/share/zoneinfo, for the timezone scenarios
)
SALT_REQUIREMENTS = ("salt", "psutil", "distro")

SALT_VENV = "/opt/salt"
SALT_CALL = f"{SALT_VENV}/bin/salt-call"
SALT_CONFIG_DIR = "/etc/salt"
REPO_MOUNT = "/srv/hostcheck"
PILLAR_ROOT = "/srv/pillar"
CONTAINER_ENV = {
    "PATH": SYSTEM_PATH,
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

# Bump when the build recipe changes in a way the hashed inputs do not show.
BED_FORMAT = 1

MINION_CONFIG = f"""\
# written by tests/beds/nspawn.py
file_client: local
file_roots:
  base:
    - {REPO_MOUNT}
pillar_roots:
  base:
    - {PILLAR_ROOT}
# the checkout's virtualenv and git objects are no Salt files
file_ignore_regex:
  - '^\\.venv(/|$)'
  - '^\\.git(/|$)'
  - '^\\.hostcheck-demo(/|$)'
  - '(^|/)__pycache__(/|$)'
# no network in the container: skip reverse lookups
enable_fqdns_grains: false
"""

HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""

# Timers that would only make noise in a test container.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
)

# Runs inside the new rootfs (systemd-nspawn, not booted), wheels at /mnt/wheels.
SETUP_SCRIPT = f"""\
set -eu
python3 -m venv {SALT_VENV}
{SALT_VENV}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \\
    --no-index --find-links /mnt/wheels -c /mnt/wheels/constraints.txt \\
    {" ".join(SALT_REQUIREMENTS)}
{SALT_CALL} --version
for unit in {" ".join(MASKED_UNITS)}; do ln -sf /dev/null /etc/systemd/system/$unit; done
mkdir -p {SALT_CONFIG_DIR}/minion.d {PILLAR_ROOT} {REPO_MOUNT}
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache
"""

_MACHINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class BedError(RuntimeError):
    """The bed could not be built, booted or driven."""


class BedCommandError(subprocess.CalledProcessError):
    """A command run inside the container failed (``check=True``)."""

    def __str__(self) -> str:
        text = super().__str__()
        if self.stdout:
            text += f"\n--- stdout ---\n{_tail(self.stdout)}"
        if self.stderr:
            text += f"\n--- stderr ---\n{_tail(self.stderr)}"
        return text


class SaltCallError(BedError):
    """``salt-call`` failed or printed something that is not JSON."""

    def __init__(self, message: str, *, returncode: int, data: Any, stdout: str, stderr: str):
        super().__init__(
            f"{message} (exit {returncode})\n--- stdout ---\n{_tail(stdout)}"
            f"\n--- stderr ---\n{_tail(stderr)}"
        )
        self.returncode = returncode
        self.data = data
        self.stdout = stdout
        self.stderr = stderr


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _log(message: str) -> None:
    print(f"[nspawn-bed] {message}", file=sys.stderr, flush=True)


def _tool(name: str) -> str:
    path = which(name)
    if path is None:
        package = REQUIRED_TOOLS.get(name, name)
        raise BedError(f"{name} not found: apt-get install {package}")
    return path


def _host_env(**extra: str) -> dict[str, str]:
    env = {"PATH": host_path(), "LANG": "C.UTF-8", "TERM": "dumb", "SYSTEMD_COLORS": "0"}
    passed = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
    env.update({k: v for k, v in os.environ.items()
                if k.startswith("SYSTEMD_NSPAWN_") or k.lower() in passed})
    env.update(extra)
    return env


# --- cache ------------------------------------------------------------------


def cache_dir() -> Path:
    """The bed cache (``$HOSTCHECK_BED_CACHE``, default ``/var/cache/hostcheck-beds``)."""
    return Path(os.environ.get("HOSTCHECK_BED_CACHE") or "/var/cache/hostcheck-beds")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _base_inputs() -> dict:
    return {
        "format": BED_FORMAT,
        "suite": SUITE,
        "mirror": MIRROR,
        "variant": VARIANT,
        "include": sorted(INCLUDE),
    }


def _host_python() -> str:
    """The project venv's python (its pip builds the wheels), else ours."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _salt_inputs(base_key: str, python_tag: str) -> dict:
    return {
        "base": base_key,
        "constraints": CONSTRAINTS.read_text(),
        "requirements": list(SALT_REQUIREMENTS),
        "python": python_tag,
        "setup": SETUP_SCRIPT,
        "minion": MINION_CONFIG,
        "hosts": HOSTS,
    }


def base_key() -> str:
    return _digest(_base_inputs())


@contextlib.contextmanager
def _cache_lock(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    """rm -rf a bed-made tree, refusing if anything is mounted below it."""
    if not path.exists() and not path.is_symlink():
        return
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fp:
        for line in fp:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == real or mount_point.startswith(real + "/"):
                raise BedError(f"refusing to remove {path}: {mount_point} is mounted inside it")
    shutil.rmtree(path)


def _prune_build_leftovers(cache: Path) -> None:
    """Remove temp dirs of builds that were killed (call with the lock held)."""
    for entry in cache.glob(".tmp-*"):
        _log(f"removing the leftover of an interrupted build: {entry}")
        _remove_tree(entry)


def _run_logged(argv: list[str], log_path: Path, what: str, *, env=None, timeout=1800) -> None:
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env or _host_env(), timeout=timeout, check=False,
        )
    if proc.returncode != 0:
        raise BedError(
            f"{what} failed (exit {proc.returncode}); log {log_path}:\n"
            + _tail(log_path.read_text(errors="replace"))
        )


def _safe_child(root: Path, rel: str) -> Path:
    """``root/rel`` for writing from the host, refusing symlinks out of ``root``."""
    path = root / rel.lstrip("/")
    parent = os.path.realpath(path.parent)
    if not (parent + "/").startswith(os.path.realpath(root) + "/"):
        raise BedError(f"{rel} resolves outside {root}")
    if path.is_symlink():
        path.unlink()
    return path


def _rootfs_python(root: Path) -> str:
    versions = sorted(
        p.name[len("python"):] for p in (root / "usr" / "bin").glob("python3.*")
        if re.fullmatch(r"python3\.\d+", p.name)
    )
    if not versions:
        raise BedError(f"no python3.X in {root}/usr/bin")
    return versions[-1]


def _build_base(cache: Path, key: str) -> Path:
    final = cache / f"base-{key}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-base-{key}-", dir=cache))
    log_path = cache / f"base-{key}.log"
    log_path.write_text("")
    started = time.monotonic()
    _log(f"debootstrap {SUITE} into {tmp} (about 1-2 minutes; log {log_path})")
    try:
        _run_logged(
            [_tool("debootstrap"), f"--variant={VARIANT}", "--include=" + ",".join(INCLUDE),
             SUITE, str(tmp / "root"), MIRROR],
            log_path, "debootstrap",
        )
        meta = {"inputs": _base_inputs(), "seconds": round(time.monotonic() - started, 1)}
        (tmp / "bed.json").write_text(json.dumps(meta, indent=2))
        os.rename(tmp, final)
    except BaseException:
        _remove_tree(tmp)
        raise
    _log(f"base rootfs ready in {meta['seconds']} s: {final}")
    return final


def _spawn_build(root: Path, wheels: Path, log_path: Path) -> None:
    """Run SETUP_SCRIPT in ``root`` with systemd-nspawn (no boot)."""
    name = f"hcbuild-{secrets.token_hex(4)}"
    argv = [
        _tool("systemd-nspawn"), "--quiet", "-D", str(root), "-M", name,
        "--register=no", "--keep-unit", "--private-network", "--resolv-conf=off",
        "--timezone=off", "--link-journal=no", "--console=pipe",
        f"--bind-ro={wheels}:/mnt/wheels", "/bin/sh", "-c", SETUP_SCRIPT,
    ]
    cgroups = _make_cgroups(name)
    try:
        _run_logged(_wrap(argv, cgroups), log_path, "installing Salt in the rootfs", timeout=900)
    finally:
        _remove_cgroups(cgroups)
        _cleanup_nspawn_run_dir(name)


def _build_salt(cache: Path, base: Path, key: str) -> Path:
    final = cache / f"salt-{key}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-salt-{key}-", dir=cache))
    log_path = cache / f"salt-{key}.log"
    log_path.write_text("")
    started = time.monotonic()
    try:
        root = tmp / "root"
        _log(f"copying the base rootfs to {root}")
        _run_logged(["cp", "-a", "--reflink=auto", str(base / "root"), str(root)], log_path, "cp -a")
        wheels = tmp / "wheels"
        wheels.mkdir()
        _log("building wheels on the host: " + " ".join(SALT_REQUIREMENTS))
        _run_logged(
            [_host_python(), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "-w", str(wheels), "-c", str(CONSTRAINTS), *SALT_REQUIREMENTS],
            log_path, "pip wheel", env={**os.environ, "PATH": host_path()},
        )
        shutil.copy(CONSTRAINTS, wheels / "constraints.txt")
        for rel in ("etc/hostname", "etc/resolv.conf"):
            path = _safe_child(root, rel)
            if path.exists():
                path.unlink()
        # no hostname file: systemd keeps the machine name nspawn sets (-M);
        # no resolver: the container has a private network
        _safe_child(root, "etc/resolv.conf").write_text("")
        _safe_child(root, "etc/hosts").write_text(HOSTS)
        _log("installing Salt into the rootfs (/opt/salt)")
        _spawn_build(root, wheels, log_path)
        minion = _safe_child(root, SALT_CONFIG_DIR + "/minion")
        minion.write_text(MINION_CONFIG)
        _remove_tree(wheels)
        meta = {
            "base": base.name,
            "seconds": round(time.monotonic() - started, 1),
            "salt": _constraint_version("salt"),
        }
        (tmp / "bed.json").write_text(json.dumps(meta, indent=2))
        os.rename(tmp, final)
    except BaseException:
        _remove_tree(tmp)
        raise
    _log(f"Salt rootfs ready in {meta['seconds']} s: {final}")
    return final


def _constraint_version(name: str) -> str | None:
    for line in CONSTRAINTS.read_text().splitlines():
        left, _, right = line.partition("==")
        if left.strip().lower() == name.lower():
            return right.strip()
    return None


def _python_tag() -> str:
    out = subprocess.run(
        [_host_python(), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def ensure_rootfs(cache: Path | str | None = None) -> Path:
    """Return the cached rootfs (a directory), building it when needed.

    First build: debootstrap (about a minute) plus the Salt venv (about half a
    minute); afterwards a lookup. Safe to call from concurrent processes.
    """
    cache = Path(cache) if cache else cache_dir()
    host_python = _python_tag()
    bkey = base_key()
    with _cache_lock(cache):
        base = cache / f"base-{bkey}"
        skey = _digest(_salt_inputs(bkey, host_python))
        final = cache / f"salt-{skey}"
        if (final / "root" / SALT_CALL.lstrip("/")).exists():
            return final / "root"
        _prune_build_leftovers(cache)
        if not (base / "root").is_dir():
            base = _build_base(cache, bkey)
        container_python = _rootfs_python(base / "root")
        if container_python != host_python:
            raise BedError(
                f"the wheels are built with the host's Python {host_python} ({_host_python()}) "
                f"but the container's python3 is {container_python}: run the tests from a "
                f"Python {container_python} venv"
            )
        return _build_salt(cache, base, skey) / "root"


def current_keys() -> set[str]:
    bkey = base_key()
    return {f"base-{bkey}", f"salt-{_digest(_salt_inputs(bkey, _python_tag()))}"}


def prune_cache(cache: Path | None = None) -> list[Path]:
    """Delete cache entries that the current inputs no longer use."""
    cache = Path(cache) if cache else cache_dir()
    keep = current_keys()
    removed = []
    with _cache_lock(cache):
        _prune_build_leftovers(cache)
        for entry in cache.iterdir():
            if re.fullmatch(r"(base|salt)-[0-9a-f]{16}(\.log)?", entry.name) and entry.name.removesuffix(".log") not in keep:
                if entry.is_dir():
                    _remove_tree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    return removed


# --- cgroups and process plumbing ------------------------------------------


def _cgroup_hierarchies() -> list[Path]:
    """This process's cgroup dirs in the hierarchies nspawn manages.

    That is the cgroup v2 hierarchy (at /sys/fs/cgroup or, on a hybrid host,
    /sys/fs/cgroup/unified) and the named v1 ``name=systemd`` hierarchy.
    """
    own_v2 = own_named = None
    with open("/proc/self/cgroup") as fp:
        for line in fp:
            ident, controllers, path = line.rstrip("\n").split(":", 2)
            if ident == "0" and controllers == "":
                own_v2 = path
            elif "name=systemd" in controllers.split(","):
                own_named = path
    found = []
    with open("/proc/self/mountinfo") as fp:
        for line in fp:
            left, _, right = line.rstrip("\n").partition(" - ")
            fields, rfields = left.split(), right.split()
            if fields[3] != "/":  # bind of a sub-cgroup: skip
                continue
            mount_point, fstype, options = fields[4], rfields[0], rfields[2].split(",")
            if fstype == "cgroup2" and own_v2 is not None:
                found.append(Path(mount_point) / own_v2.lstrip("/"))
            elif fstype == "cgroup" and "name=systemd" in options and own_named is not None:
                found.append(Path(mount_point) / own_named.lstrip("/"))
    return found


def _make_cgroups(name: str) -> list[Path]:
    """One fresh cgroup per hierarchy for one nspawn (it creates payload/ and
    supervisor/ below the cgroup it starts in; without this every container
    would share them)."""
    made = []
    for parent in _cgroup_hierarchies():
        path = parent / f"hostcheck-bed-{name}"
        path.mkdir()
        made.append(path)
    return made


def _remove_cgroups(cgroups: list[Path]) -> None:
    """rmdir the bed's cgroups, deepest first (rmdir fails on a busy cgroup)."""
    for top in cgroups:
        if not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError as exc:
                _log(f"could not remove cgroup {d}: {exc}")


def _cleanup_nspawn_run_dir(name: str) -> None:
    """nspawn leaves an empty /run/systemd/nspawn/propagate/NAME when /run is not a tmpfs."""
    with contextlib.suppress(OSError):
        os.rmdir(f"/run/systemd/nspawn/propagate/{name}")


_CGROUP_JOIN = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 97; '
    'shift; n=$((n - 1)); done; exec "$@"'
)
_OVERLAY_MOUNT = (
    'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" || exit 98; '
    'shift 4; exec "$@"'
)


def _wrap(argv: list[str], cgroups: list[Path], overlay: tuple[Path, Path, Path, Path] | None = None) -> list[str]:
    """Wrap nspawn's argv: join the bed's cgroups, die with the test process
    (SIGTERM to nspawn = container poweroff), optionally mount the overlay
    root in a private mount namespace. Every step execs, so the PID the bed
    gets from Popen is nspawn's."""
    wrapped = ["/bin/sh", "-c", _CGROUP_JOIN, "sh", str(len(cgroups)), *map(str, cgroups),
               _tool("setpriv"), "--pdeathsig", "TERM"]
    if overlay is not None:
        wrapped += [_tool("unshare"), "--mount", "--propagation", "private",
                    "/bin/sh", "-c", _OVERLAY_MOUNT, "sh", *map(str, overlay)]
    return wrapped + argv


_overlay_ok: bool | None = None


def overlay_supported(cache: Path | None = None) -> bool:
    """Can this kernel mount an overlayfs with its layers in the cache dir?"""
    global _overlay_ok  # noqa: PLW0603
    if _overlay_ok is None:
        cache = Path(cache) if cache else cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".probe-", dir=cache) as tmp:
            dirs = [Path(tmp) / d for d in ("lower", "upper", "work", "merged")]
            for d in dirs:
                d.mkdir()
            (dirs[0] / "f").write_text("x")
            probe = subprocess.run(
                [_tool("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c",
                 _OVERLAY_MOUNT, "sh", *map(str, dirs), "/bin/sh", "-c", f"echo y > {dirs[3]}/f"],
                capture_output=True, text=True, env=_host_env(), check=False, timeout=30,
            )
            _overlay_ok = probe.returncode == 0 and (dirs[0] / "f").read_text() == "x"
    return _overlay_ok


def _proc_status(pid: int) -> dict[str, str]:
    status = {}
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return status


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fp:
        return int(fp.read().rsplit(")", 1)[1].split()[19])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fp:
            return [int(x) for x in fp.read().split()]
    except FileNotFoundError:
        return []


def _alive_as(pid: int, start_time: int) -> bool:
    """Is ``pid`` still the process that had ``start_time`` (not a reuse)?"""
    try:
        return _start_time(pid) == start_time and _proc_status(pid).get("State", "")[:1] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False


# --- the container ----------------------------------------------------------


class Container:
    """A booted systemd-nspawn container on a fresh copy of the cached rootfs.

    Use as a context manager (or call :meth:`start` / :meth:`stop`).

    Attributes once started: ``name`` (machine and host name), ``nspawn_pid``
    (host PID of the nspawn the bed started), ``pid1`` (host PID of the
    container's systemd), ``workdir`` (host temp dir).
    """

    def __init__(
        self,
        rootfs: Path | str | None = None,
        *,
        name: str | None = None,
        repo: Path | str = REPO_ROOT,
        private_network: bool = True,
        copy_mode: str | None = None,
        boot_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        nspawn_args: tuple[str, ...] = (),
    ):
        self.rootfs = Path(rootfs) if rootfs else None
        self.name = name or f"hc-{secrets.token_hex(4)}"
        if not _MACHINE_NAME.match(self.name):
            raise BedError(f"bad machine name {self.name!r}: lower-case letters, digits, '-'")
        self.repo = Path(repo).resolve()
        self.private_network = private_network
        self.copy_mode = copy_mode or os.environ.get("HOSTCHECK_BED_COPY", "auto")
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.nspawn_args = tuple(nspawn_args)
        self.workdir: Path | None = None
        self.nspawn_pid: int | None = None
        self.pid1: int | None = None
        self.timings: dict[str, float] = {}
        self._popen: subprocess.Popen | None = None
        self._pid1_start: int | None = None
        self._pid1_ns: str | None = None
        self._log_fp = None
        self._log_text = ""
        self._cgroups: list[Path] = []
        self._synced: dict | None = None

    # -- life cycle --

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> Container:
        started = time.monotonic()
        for tool in REQUIRED_TOOLS:
            _tool(tool)
        if self.rootfs is None:
            self.rootfs = ensure_rootfs()
        t_rootfs = time.monotonic()
        cache = cache_dir()
        runs = cache / "containers"
        runs.mkdir(parents=True, exist_ok=True)
        _prune_dead_containers(runs)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=runs))
        try:
            self._boot(cache)
            self.timings["rootfs_lookup"] = round(t_rootfs - started, 2)
            self.timings["boot"] = round(time.monotonic() - t_rootfs, 2)
        except BaseException:
            self.stop()
            raise
        return self

    def _boot(self, cache: Path) -> None:
        workdir = self.workdir
        mode = self.copy_mode
        if mode not in ("auto", "overlay", "copy"):
            raise BedError(f"HOSTCHECK_BED_COPY={mode!r}: use auto, overlay or copy")
        paths_ok = not re.search(r"[,:\s\\]", f"{self.rootfs}{workdir}")
        if mode == "auto":
            mode = "overlay" if paths_ok and overlay_supported(cache) else "copy"
        elif mode == "overlay" and not paths_ok:
            raise BedError(f"overlay mode cannot use paths with ',', ':' or blanks: {workdir}")
        self.copy_mode = mode
        root = workdir / "root"
        root.mkdir()
        overlay = None
        if mode == "overlay":
            upper, work = workdir / "upper", workdir / "work"
            upper.mkdir()
            work.mkdir()
            overlay = (self.rootfs, upper, work, root)
        else:
            root.rmdir()
            subprocess.run(["cp", "-a", "--reflink=auto", str(self.rootfs), str(root)], check=True)
        argv = [
            _tool("systemd-nspawn"), "-D", str(root), "-b", "-M", self.name,
            "--register=no", "--keep-unit",
            f"--bind-ro={self.repo}:{REPO_MOUNT}",
            "--resolv-conf=off",  # keep the rootfs' (empty) resolv.conf
            "--timezone=off",  # never copy the host's zone in: timezone scenarios own it
            "--link-journal=no",  # never touch the host's /var/log/journal
            "--console=read-only",
            "--setenv=SYSTEMD_COLORS=0",
            *(["--private-network"] if self.private_network else []),
            *self.nspawn_args,
        ]
        self._cgroups = _make_cgroups(self.name)
        self._log_fp = open(workdir / "nspawn.log", "w+")  # noqa: SIM115
        self._popen = subprocess.Popen(
            _wrap(argv, self._cgroups, overlay),
            stdin=subprocess.DEVNULL, stdout=self._log_fp, stderr=subprocess.STDOUT,
            env=_host_env(), start_new_session=True,
        )
        self.nspawn_pid = self._popen.pid
        nspawn_start = _start_time(self.nspawn_pid)
        self._find_pid1()
        (workdir / "state.json").write_text(json.dumps({
            "nspawn_pid": self.nspawn_pid, "nspawn_start": nspawn_start,
            "pid1": self.pid1, "pid1_start": self._pid1_start,
            "name": self.name, "cgroups": [str(cg) for cg in self._cgroups],
        }))
        self._wait_running()
        self.write_file("/etc/hosts", HOSTS + f"127.0.1.1\t{self.name}\n")

    def _find_pid1(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        own_ns = os.readlink("/proc/self/ns/pid")
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise BedError(f"systemd-nspawn exited with {self._popen.returncode} before "
                               f"the container started:\n{_tail(self.nspawn_output())}")
            for child in _children(self.nspawn_pid):
                try:
                    status = _proc_status(child)
                    ns = os.readlink(f"/proc/{child}/ns/pid")
                    start = _start_time(child)
                except (FileNotFoundError, ProcessLookupError):
                    continue
                nspids = status.get("NSpid", "").split()
                # comm turns "systemd" only once nspawn has exec'd the init,
                # i.e. after its namespaces and mounts are complete
                if ns != own_ns and len(nspids) >= 2 and nspids[-1] == "1" and status.get("Name") == "systemd":
                    self.pid1, self._pid1_start, self._pid1_ns = child, start, ns
                    return
            time.sleep(0.05)
        raise BedError(f"no container init (systemd) appeared under nspawn PID {self.nspawn_pid} "
                       f"within {self.boot_timeout} s:\n{_tail(self.nspawn_output())}")

    def _wait_running(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise BedError(f"systemd-nspawn exited with {self._popen.returncode} during boot:\n"
                               f"{_tail(self.nspawn_output())}")
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=15)
            state = result.stdout.strip() or result.stderr.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        jobs = self.run(["systemctl", "list-jobs", "--no-pager"], check=False, timeout=15)
        failed = self.run(["systemctl", "--failed", "--no-pager"], check=False, timeout=15)
        raise BedError(
            f"container {self.name} not running after {self.boot_timeout} s "
            f"(systemctl is-system-running: {state!r})\n--- jobs ---\n{jobs.stdout}{jobs.stderr}"
            f"\n--- failed units ---\n{failed.stdout}{failed.stderr}"
            f"\n--- nspawn output ---\n{_tail(self.nspawn_output())}"
        )

    def stop(self) -> None:
        """Power the container off and remove everything the bed made. Idempotent."""
        popen, self._popen = self._popen, None
        try:
            if popen is not None:
                self._stop_processes(popen)
        finally:
            if self._log_fp is not None:
                self._log_text = self.nspawn_output()
                self._log_fp.close()
                self._log_fp = None
            _remove_cgroups(self._cgroups)
            self._cgroups = []
            _cleanup_nspawn_run_dir(self.name)
            if self.workdir is not None and os.environ.get("HOSTCHECK_BED_KEEP") != "1":
                _remove_tree(self.workdir)
                self.workdir = None

    def _pid1_is_ours(self) -> bool:
        if self.pid1 is None or not _alive_as(self.pid1, self._pid1_start):
            return False
        try:
            return os.readlink(f"/proc/{self.pid1}/ns/pid") == self._pid1_ns
        except OSError:
            return False

    def _stop_processes(self, popen: subprocess.Popen) -> None:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)  # nspawn -b: SIGRTMIN+3 to init = poweroff
            try:
                popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _log(f"{self.name}: no poweroff within {self.stop_timeout} s; SIGKILL to its init")
        if popen.poll() is None and self._pid1_is_ours():
            # killing a PID namespace's init kills the whole namespace; nspawn
            # (its parent) then reaps it and exits
            os.kill(self.pid1, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)
        if popen.poll() is None:
            _log(f"{self.name}: nspawn {popen.pid} still running; SIGKILL")
            popen.kill()
            popen.wait()
        if self._pid1_is_ours():
            # nspawn died first (killed from outside?): its init survived it
            os.kill(self.pid1, signal.SIGKILL)

    # -- looking inside --

    def nspawn_output(self) -> str:
        """What systemd-nspawn and the container console printed so far."""
        if self._log_fp is None:
            return self._log_text
        self._log_fp.flush()
        with open(self._log_fp.name, errors="replace") as fp:
            return fp.read().replace("\r\n", "\n")  # the console is a pty

    def _require_running(self) -> None:
        if self.pid1 is None or self._popen is None:
            raise BedError(f"container {self.name} is not running")

    def run(
        self,
        cmd: list[str] | str,
        *,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,  # noqa: A002 - as subprocess.run
        env: dict[str, str] | None = None,
        scope: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the container (``nsenter -t PID1 -a``).

        ``cmd`` is an argv list, or a string for ``/bin/sh -c``. The command
        gets a clean environment (``CONTAINER_ENV`` updated with ``env``).
        It runs in the container's namespaces but in the *host's* cgroup (it
        shows as ``/..`` in its ``/proc/self/cgroup`` inside); with
        ``scope=True`` it is wrapped in ``systemd-run --scope`` so it sits in
        a transient ``run-*.scope`` of the container's systemd instead.
        On timeout the whole process group is SIGKILLed and
        ``subprocess.TimeoutExpired`` raised. Returns a text
        ``CompletedProcess``; with ``check`` a non-zero exit raises
        :class:`BedCommandError`.
        """
        self._require_running()
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if scope:
            argv = ["systemd-run", "--quiet", "--scope", "--collect", "--", *argv]
        full_env = dict(CONTAINER_ENV)
        full_env.update(env or {})
        proc = subprocess.Popen(
            [_tool("nsenter"), "-t", str(self.pid1), "-a", *argv],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=full_env, start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # the group of the nsenter we just started (not yet reaped, so
            # its PID and group cannot have been reused)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise BedCommandError(result.returncode, argv, out, err)
        return result

    def write_file(self, path: str, text: str, *, mode: int = 0o644) -> None:
        """Write ``text`` to ``path`` inside, atomically (temp file + rename)."""
        self.run(
            ["/bin/sh", "-c",
             'set -e; mkdir -p "$(dirname "$1")"; t=$(mktemp "$1.bed-XXXXXX"); '
             'cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1"',
             "sh", path, format(mode, "o")],
            input=text,
        )

    def read_file(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def main_pid(self, unit: str) -> int:
        """The unit's MainPID as seen inside the container (0 if none)."""
        out = self.run(["systemctl", "show", "--property=MainPID", "--value", unit]).stdout
        return int(out.strip() or 0)

    def host_pid(self, pid: int) -> int:
        """Host PID of the process that is ``pid`` in the container's PID namespace."""
        self._require_running()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                nspids = _proc_status(int(entry)).get("NSpid", "").split()
                if len(nspids) >= 2 and nspids[-1] == str(pid) and \
                        os.readlink(f"/proc/{entry}/ns/pid") == self._pid1_ns:
                    return int(entry)
            except (FileNotFoundError, ProcessLookupError):
                continue
        raise BedError(f"no process {pid} in container {self.name}")

    # -- Salt --

    def sync(self, *, force: bool = False) -> dict:
        """``saltutil.sync_all`` from the checkout (once per container unless ``force``)."""
        if self._synced is None or force:
            self.write_file(f"{SALT_CONFIG_DIR}/minion.d/bed.conf", f"id: {self.name}\n")
            self._synced = self.salt_call("saltutil.sync_all", sync=False)
        return self._synced

    def salt_call(self, *args: str, check: bool = True, timeout: float = 300, sync: bool = True) -> Any:
        """``salt-call --local --out=json`` inside; returns the ``local`` value.

        Syncs the checkout's custom modules first (:meth:`sync`). With
        ``check`` a non-zero exit or non-JSON output raises
        :class:`SaltCallError` (which carries ``returncode``, ``data``,
        ``stdout``, ``stderr``); without, the parsed value is returned
        whatever the exit status (``None`` if there was no JSON).
        """
        if sync:
            self.sync()
        argv = [SALT_CALL, "--local", "--out=json", f"--file-root={REPO_MOUNT}",
                f"--config-dir={SALT_CONFIG_DIR}", *args]
        result = self.run(argv, check=False, timeout=timeout)
        try:
            data = json.loads(result.stdout)["local"]
            parsed = True
        except (ValueError, KeyError, TypeError):
            data, parsed = None, False
        if check and (result.returncode != 0 or not parsed):
            raise SaltCallError(
                f"salt-call {' '.join(args)} failed" if parsed else f"salt-call {' '.join(args)} printed no JSON",
                returncode=result.returncode, data=data, stdout=result.stdout, stderr=result.stderr,
            )
        return data


def _prune_dead_containers(runs: Path) -> None:
    """Remove work dirs of containers whose nspawn and init are both gone
    (a test process that was SIGKILLed). Never signals anything."""
    now = time.time()
    for entry in runs.iterdir():
        state_file = entry / "state.json"
        try:
            if state_file.exists():
                state = json.loads(state_file.read_text())
                if _alive_as(state["nspawn_pid"], state["nspawn_start"]) or (
                    state.get("pid1") and _alive_as(state["pid1"], state["pid1_start"])
                ):
                    continue
            elif now - entry.stat().st_mtime < 3600:
                continue  # a container being started right now
            _log(f"removing the leftovers of a dead container: {entry}")
            if state_file.exists():
                _remove_cgroups([Path(cg) for cg in state.get("cgroups", [])])
                if state.get("name"):
                    _cleanup_nspawn_run_dir(state["name"])
            _remove_tree(entry)
        except (OSError, ValueError, KeyError, BedError) as exc:
            _log(f"leaving {entry}: {exc}")


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tests.beds.nspawn", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["packages", "build", "prune", "boot"])
    args = parser.parse_args(argv)
    if args.command == "packages":
        print(" ".join(DEBIAN_PACKAGES))
    elif args.command == "build":
        started = time.monotonic()
        print(ensure_rootfs())
        _log(f"rootfs ready after {time.monotonic() - started:.1f} s")
    elif args.command == "prune":
        for path in prune_cache():
            print(f"removed {path}")
    elif args.command == "boot":
        with Container() as c:
            print(f"{c.name}: booted in {c.timings['boot']} s ({c.copy_mode}), "
                  f"{c.run(['systemctl', 'is-system-running'], check=False).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
