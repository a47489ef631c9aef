"""Does this host need a reboot? Kernel versions and the distribution's flag.

``snapshot``-style reading (:func:`installed_kernels`, :func:`read_flag`)
takes its roots as parameters; :func:`judge` is pure.
"""

import os
import re

_VMLINUZ = ("vmlinuz-", "vmlinux-", "Image-", "kernel-")


def version_key(version):
    """Sort key for kernel release strings (``6.1.0-28-amd64`` < ``6.1.0-30-amd64``,
    ``5.14.0-427.el9`` < ``5.14.0-503.el9``, ``6.10`` > ``6.9``): digit runs
    compare as numbers, other runs as text, and numbers sort after text."""
    out = []
    for part in re.findall(r"\d+|[A-Za-z]+", version):
        out.append((1, int(part), "") if part.isdigit() else (0, 0, part))
    return out


def installed_kernels(boot="/boot", modules="/lib/modules"):
    """Kernel releases installed: ``/boot/vmlinuz-*`` whose ``/lib/modules/REL``
    exists too (a leftover directory of a removed kernel does not count;
    where ``/boot`` has no image at all, e.g. in containers, none is)."""
    try:
        mods = {n for n in os.listdir(modules) if os.path.isdir(os.path.join(modules, n))}
    except OSError:
        mods = set()
    images = set()
    try:
        for name in os.listdir(boot):
            for prefix in _VMLINUZ:
                if name.startswith(prefix):
                    images.add(name[len(prefix):])
    except OSError:
        pass
    # Fedora/RHEL 8+ keep the image in /lib/modules/REL/vmlinuz
    for rel in mods:
        if os.path.exists(os.path.join(modules, rel, "vmlinuz")):
            images.add(rel)
    return sorted((images & mods) if mods else images, key=version_key)


def read_flag(run_root="/run"):
    """``(set, packages)`` of Debian/Ubuntu's ``reboot-required`` flag."""
    path = os.path.join(run_root, "reboot-required")
    if not os.path.exists(path):
        return False, []
    try:
        with open(path + ".pkgs", encoding="utf-8", errors="replace") as fh:
            pkgs = sorted({line.strip() for line in fh if line.strip()})
    except OSError:
        pkgs = []
    return True, pkgs


def judge(running, installed, flag, flag_pkgs):
    """Pure verdict: ``{"required", "reasons", "running", "newest"}``."""
    reasons = []
    newest = installed[-1] if installed else None
    if newest is not None and version_key(newest) > version_key(running):
        reasons.append("running kernel {} is older than the newest installed {}".format(running, newest))
    if flag:
        reasons.append(
            "the distribution's reboot-required flag is set"
            + (" (by {})".format(", ".join(flag_pkgs)) if flag_pkgs else "")
        )
    return {"required": bool(reasons), "reasons": reasons, "running": running, "newest": newest}


def check(boot="/boot", modules="/lib/modules", run_root="/run"):
    flag, pkgs = read_flag(run_root)
    return judge(os.uname().release, installed_kernels(boot, modules), flag, pkgs)
