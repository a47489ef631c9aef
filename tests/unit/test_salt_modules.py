"""The thin Salt wrappers (_modules, _states, _grains) loaded as Salt loads
them, with the dunders injected: they validate, delegate to the registry and
the runner, and return plain data. Remedies run against fake /proc trees
with the reaper replaced by a recorder: nothing on this host is signalled."""
import importlib.util
import inspect
import json
import os
import shutil

import pytest
import salt.exceptions

import hostcheck_check as hc
import hostcheck_reaper as hr
from tests.fakes import fake_proc_root, make_proc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUP_ENV = b"SUPERVISOR_PROCESS_NAME=worker\0SUPERVISOR_GROUP_NAME=worker\0"


def load(kind, opts=None, config=None):
    spec = importlib.util.spec_from_file_location("hc_" + kind, os.path.join(REPO, kind, "hostcheck.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = config or {}
    mod.__opts__ = dict(opts or {"test": False})
    mod.__salt__ = {"config.get": lambda key, default="": config.get(key, default)}
    return mod


@pytest.fixture
def leaked_host(tmp_path, monkeypatch):
    """A fake host with one leaked supervisor tree (100, 101); the runner's Host() is this one."""
    root = fake_proc_root(tmp_path)
    make_proc(root, 1, 0, cmdline=b"/sbin/init\0", exe="/sbin/init")
    make_proc(root, 100, 1, cmdline=b"/usr/bin/worker\0", exe="/usr/bin/worker", environ=SUP_ENV)
    make_proc(root, 101, 100, pgid=100, cmdline=b"/usr/bin/worker\0", exe="/usr/bin/worker")
    (tmp_path / "run").mkdir()
    real = hc.Host
    monkeypatch.setattr(hc, "Host", lambda: real(proc_root=str(root), run_root=str(tmp_path / "run"),
                                               etc_root=str(tmp_path / "etc")))
    calls = []

    def recorder(members, timeout=10, proc_root="/proc", never=(), **kw):
        calls.append(sorted(p for p, _ in members))
        for pid, _ in members:  # the fake processes "exit"
            shutil.rmtree(os.path.join(proc_root, str(pid)), ignore_errors=True)
        return {"terminated": sorted(p for p, _ in members), "killed": [], "survivors": [], "gone": []}

    monkeypatch.setattr(hr, "reap", recorder)
    return calls


def test_every_public_function_has_a_cli_example():
    mod = load("_modules")
    public = [n for n, f in inspect.getmembers(mod, inspect.isfunction)
              if not n.startswith("_") and f.__module__ == mod.__name__]
    assert set(public) == {"orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits", "report"}
    for name in public:
        doc = getattr(mod, name).__doc__
        assert "CLI Example:" in doc and ".. code-block:: bash" in doc, name


def test_module_orphans_on_a_fake_host(leaked_host):
    out = load("_modules").orphans()
    assert out["leaked"] == 1 and out["findings"][0]["root"] == 100
    json.dumps(out)  # plain data


def test_module_bad_arguments_are_clear_errors():
    mod = load("_modules")
    with pytest.raises(salt.exceptions.CommandExecutionError, match="daemons must be a mapping"):
        mod.orphans(daemons="salt-minion")
    with pytest.raises(salt.exceptions.CommandExecutionError, match="packages must be true or false"):
        mod.deleted_binaries(packages="yes")
    with pytest.raises(salt.exceptions.CommandExecutionError, match="is not a check"):
        mod.report(checks=["bogus"])
    with pytest.raises(salt.exceptions.CommandExecutionError, match="severity must be one of"):
        mod.report(severity="loud")


def test_module_report_comma_separated_checks(leaked_host):
    out = load("_modules").report(checks="orphans,reboot_required")
    assert set(out["checks"]) == {"orphans", "reboot_required"}
    assert out["worst"] == "critical" and out["findings"][0]["code"] == "supervisor-leak"


def test_module_config_supplies_unset_options(leaked_host):
    mod = load("_modules", config={"hostcheck:orphans:daemons": "bad"})
    with pytest.raises(salt.exceptions.CommandExecutionError, match="hostcheck:orphans:daemons"):
        mod.orphans()


def test_state_test_mode_then_real_run_then_noop(leaked_host):
    dry = load("_states", {"test": True}).orphans_reaped("x")
    assert dry["result"] is None and leaked_host == []
    assert dry["changes"] == {"reaped": [{"root": 100, "program": "worker", "code": "supervisor-leak",
                                          "pids": [100, 101]}]}
    st = load("_states")
    real = st.orphans_reaped("x")
    assert leaked_host == [[100, 101]]
    assert real["result"] is True and set(real["changes"]) == set(dry["changes"])
    assert real["comment"].startswith("Reaped worker (root 100): 2 terminated, 0 killed")
    again = st.orphans_reaped("x")
    assert again["result"] is True and again["changes"] == {}
    assert again["comment"] == "No leaked process trees to reap"


def test_state_bad_arguments_change_nothing(leaked_host):
    st = load("_states")
    for kw in ({"timeout": 0}, {"timeout": "10"}, {"match": 3}, {"daemons": []}):
        ret = st.orphans_reaped("x", **kw)
        assert ret["result"] is False and ret["comment"].startswith("Invalid arguments, nothing done")
    assert leaked_host == []


def test_grain_from_the_registry(leaked_host):
    grains = load("_grains", {"hostcheck": {"orphans": {"daemons": {"worker": {}}}}})
    g = grains.hostcheck()["hostcheck"]
    assert set(g) == {"orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits"}
    assert g["orphans"] == {"count": 1, "programs": ["worker"], "warnings": 0}
    bad = load("_grains", {"hostcheck": {"orphans": {"daemons": "nope"}}}).hostcheck()["hostcheck"]
    assert bad["orphans"]["error"].startswith("invalid configuration: daemons must be a mapping")
    assert "error" not in bad["reboot_required"]


def test_module_rlimits_and_its_bad_arguments(leaked_host):
    out = load("_modules").rlimits()
    assert out["count"] == 0 and out["findings"] == []
    assert any("systemd is not running here" in n for n in out["notes"])
    json.dumps(out)  # plain data
    with pytest.raises(salt.exceptions.CommandExecutionError, match="is not one of"):
        load("_modules").rlimits(limits="nofile,cpu")
    with pytest.raises(salt.exceptions.CommandExecutionError, match="is not a unit name"):
        load("_modules").rlimits(unit="../x")


def test_state_service_limits_bad_names_and_values_change_nothing(leaked_host):
    st = load("_states")
    for name, kw in (("../x", {"nofile": 1024}), ("cron.timer", {"nofile": 1024}),
                     ("nosuch", {"nofile": 1024}), ("cron", {}), ("cron", {"nofile": "2:1"})):
        ret = st.service_limits(name, **kw)
        assert ret["result"] is False and ret["changes"] == {}, (name, kw, ret)
        assert ret["comment"].startswith("Invalid arguments, nothing done"), ret["comment"]
