"""Does this host need a reboot? Kernel versions and the distribution's flag.

The check ``reboot_required``: :func:`read` (the installed kernels and the
flag; roots from the host), :func:`analyse` (pure), :func:`summarise`.
Findings: ``kernel-outdated`` and ``reboot-flag`` (both warnings).
"""

import os
import re

# Every import of a sibling _utils module must be at the top: Salt's loader
# puts the synced utils directory on sys.path only while it loads a module.
import hostcheck_check
import hostcheck_files

NAME = "reboot_required"
OPTIONS = {}

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
    """``(set, packages)`` of Debian/Ubuntu's ``reboot-required`` flag (the
    package list read as a bounded regular file only)."""
    path = os.path.join(run_root, "reboot-required")
    if not os.path.lexists(path):
        return False, []
    try:
        text = hostcheck_files.read_regular(path + ".pkgs", limit=64 * 1024)
    except OSError:
        text = None
    lines = text.text().splitlines() if text is not None else []
    return True, sorted({line.strip() for line in lines if line.strip()})


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


def read(host, opts, quick=False):  # pylint: disable=unused-argument
    """``(running, installed, flag, flag_pkgs)``."""
    flag, pkgs = read_flag(host.run_root)
    return os.uname().release, installed_kernels(host.boot, host.modules), flag, pkgs


def analyse(facts, opts):  # pylint: disable=unused-argument
    """The verdict as a :class:`hostcheck_check.Diagnosis`. Pure."""
    running, installed, flag, pkgs = facts
    verdict = judge(running, installed, flag, pkgs)
    findings = []
    if verdict["newest"] is not None and version_key(verdict["newest"]) > version_key(running):
        findings.append(hostcheck_check.finding(
            NAME, "kernel-outdated", "warning", verdict["reasons"][0] + ": reboot to run it",
            running=running, newest=verdict["newest"]))
    if flag:
        findings.append(hostcheck_check.finding(
            NAME, "reboot-flag", "warning", verdict["reasons"][-1], packages=pkgs))
    notes = [] if installed else ["no kernel image in /boot (a container?): only the flag was checked"]
    return hostcheck_check.Diagnosis(NAME, findings, notes, verdict, facts)


def summarise(diag):
    """The grain entry: ``{required, reasons}``."""
    return {"required": diag.details["required"], "reasons": diag.details["reasons"]}
