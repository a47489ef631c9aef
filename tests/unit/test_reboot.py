"""hostcheck_reboot: kernel versions, the distribution's flag, the check's stages."""
import os

import hostcheck_check as hc
import hostcheck_reboot as hr
from tests.fakes import host_access_forbidden


def test_kernel_version_ordering():
    order = ["5.10.0-9-amd64", "5.10.0-28-amd64", "6.1.0-9-amd64", "6.1.0-30-amd64", "6.9.0", "6.10.0"]
    assert sorted(reversed(order), key=hr.version_key) == order
    assert hr.version_key("5.14.0-427.el9.x86_64") < hr.version_key("5.14.0-503.11.1.el9_5.x86_64")


def test_installed_kernels_and_verdict(tmp_path):
    boot = tmp_path / "boot"
    mods = tmp_path / "modules"
    boot.mkdir()
    for rel in ("6.1.0-28-amd64", "6.1.0-30-amd64"):
        (boot / ("vmlinuz-" + rel)).write_text("")
        (mods / rel).mkdir(parents=True)
    (mods / "6.1.0-10-amd64").mkdir()  # leftover of a removed kernel
    run = tmp_path / "run"
    run.mkdir()
    installed = hr.installed_kernels(str(boot), str(mods))
    assert installed == ["6.1.0-28-amd64", "6.1.0-30-amd64"]
    v = hr.judge("6.1.0-28-amd64", installed, *hr.read_flag(str(run)))
    assert v["required"] is True and v["newest"] == "6.1.0-30-amd64"
    assert "older than the newest installed 6.1.0-30-amd64" in v["reasons"][0]
    assert hr.judge("6.1.0-30-amd64", installed, False, [])["required"] is False
    (run / "reboot-required").write_text("*** System restart required ***\n")
    (run / "reboot-required.pkgs").write_text("libc6\nlibc6\ndbus\n")
    v = hr.judge("6.1.0-30-amd64", installed, *hr.read_flag(str(run)))
    assert v["required"] is True and v["reasons"] == ["the distribution's reboot-required flag is set (by dbus, libc6)"]
    # a container: no kernels in /boot, only the flag counts
    assert hr.judge("6.1.0-30-amd64", [], False, [])["required"] is False


def _host(tmp_path, kernels=("6.1.0-28-amd64", "6.1.0-30-amd64"), flag=None):
    boot, mods, run = tmp_path / "boot", tmp_path / "modules", tmp_path / "run"
    for d in (boot, mods, run):
        d.mkdir(exist_ok=True)
    for rel in kernels:
        (boot / ("vmlinuz-" + rel)).write_text("")
        (mods / rel).mkdir()
    if flag is not None:
        (run / "reboot-required").write_text("")
        (run / "reboot-required.pkgs").write_text(flag)
    return hc.Host(boot=str(boot), modules=str(mods), run_root=str(run))


def test_findings_in_the_shared_schema(tmp_path, monkeypatch):
    host = _host(tmp_path, flag="dbus\n")
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "6.1.0-28-amd64", "#1", "x86_64")))
    facts = hr.read(host, {})
    with host_access_forbidden():
        diag = hr.analyse(facts, {})
    assert [(f["check"], f["code"], f["severity"]) for f in diag.findings] == [
        ("reboot_required", "kernel-outdated", "warning"), ("reboot_required", "reboot-flag", "warning")]
    assert diag.findings[0]["newest"] == "6.1.0-30-amd64" and diag.findings[1]["packages"] == ["dbus"]
    assert diag.as_dict()["required"] is True
    assert hr.summarise(diag) == {"required": True, "reasons": diag.details["reasons"]}


def test_container_without_kernels_notes_it(tmp_path):
    diag = hc.diagnose(hr, _host(tmp_path, kernels=()))
    assert diag.findings == [] and diag.details["required"] is False
    assert diag.notes == ["no kernel image in /boot (a container?): only the flag was checked"]


def test_a_fifo_as_the_package_list_never_hangs(tmp_path):
    host = _host(tmp_path)
    (tmp_path / "run" / "reboot-required").write_text("")
    os.mkfifo(tmp_path / "run" / "reboot-required.pkgs")
    assert hr.read_flag(host.run_root) == (True, [])
