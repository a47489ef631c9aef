"""hostcheck delivered by a master: saltutil.sync_all, then called through the master."""
import os
import subprocess
import sys

import pytest

from tests.beds.pip_route import install_copy

pytestmark = pytest.mark.slow

SCHEMA_KEYS = {"check", "code", "severity", "summary", "pids", "root", "program", "user",
               "started", "provenance", "duplicate_of"}


def test_sync_delivered_everything(salt_cli, salt_minion):
    ret = salt_cli.run("sys.list_functions", "hostcheck", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    assert "hostcheck.orphans" in ret.data
    ret = salt_cli.run("sys.list_state_functions", "hostcheck", minion_tgt=salt_minion.id)
    assert "hostcheck.orphans_reaped" in ret.data


def test_orphans_through_master_returns_schema(salt_cli, salt_minion):
    ret = salt_cli.run("hostcheck.orphans", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    data = ret.data
    assert set(data) == {"leaked", "programs", "findings", "processes", "notes"}
    assert isinstance(data["leaked"], int) and data["processes"] > 5
    for f in data["findings"]:
        assert SCHEMA_KEYS <= set(f)
        assert f["check"] == "orphans"
        assert f["severity"] in ("critical", "warning", "info")


def test_report_through_master(salt_cli, salt_minion):
    ret = salt_cli.run("hostcheck.report", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    data = ret.data
    assert set(data["checks"]) == {"orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits"}
    assert all(entry["error"] is None for entry in data["checks"].values()), data["checks"]
    assert data["worst"] in ("critical", "warning", "info", "ok")
    assert sum(e["count"] for e in data["checks"].values()) == len(data["findings"])
    ranks = {"critical": 0, "warning": 1, "info": 2}
    assert [ranks[f["severity"]] for f in data["findings"]] == sorted(ranks[f["severity"]] for f in data["findings"])
    ret = salt_cli.run("hostcheck.report", "checks=timezone,reboot_required", "severity=critical",
                       minion_tgt=salt_minion.id)
    assert set(ret.data["checks"]) == {"timezone", "reboot_required"}
    ret = salt_cli.run("hostcheck.report", "severity=loud", minion_tgt=salt_minion.id)
    assert "severity must be one of critical, warning, info" in str(ret.data)


def test_orphans_healthy_host_has_no_alarm(salt_cli, salt_minion):
    """The machine running the tests is healthy: nothing critical or warning."""
    ret = salt_cli.run("hostcheck.orphans", minion_tgt=salt_minion.id)
    loud = [f for f in ret.data["findings"] if f["severity"] in ("critical", "warning")]
    assert loud == [], loud


def test_grain_targeting(salt_cli, salt_minion):
    ret = salt_cli.run("saltutil.refresh_grains", minion_tgt=salt_minion.id)
    ret = salt_cli.run("grains.get", "hostcheck", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    grain = ret.data["orphans"]
    assert set(grain) == {"count", "programs", "warnings"}
    diag = salt_cli.run("hostcheck.orphans", minion_tgt=salt_minion.id).data
    assert grain["count"] == diag["leaked"]
    assert grain["programs"] == diag["programs"]
    ret = salt_cli.run("-G", "hostcheck:orphans:count:{}".format(grain["count"]), "test.ping", minion_tgt="")
    assert ret.returncode == 0, ret
    assert ret.data is True or salt_minion.id in str(ret.data)
    ret = salt_cli.run("-G", "hostcheck:orphans:count:{}".format(grain["count"] + 7), "test.ping", minion_tgt="")
    assert salt_minion.id not in str(ret.data)


def test_state_test_mode_and_noop(salt_cli, salt_minion):
    ret = salt_cli.run("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True",
                       minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    (state,) = ret.data.values()
    assert state["result"] is True and state["changes"] == {}
    assert "No leaked process trees" in state["comment"]


@pytest.mark.parametrize("args,needle", [
    (["exclude=5"], "exclude must be"),
    (["match={'a': 1}"], "match must be"),
    (["timeout=-1"], "timeout must be"),
    (["timeout=abc"], "timeout must be"),
    (["daemons=[1]"], "must be a mapping"),
])
def test_state_bad_arguments(salt_cli, salt_minion, args, needle):
    ret = salt_cli.run("state.single", "hostcheck.orphans_reaped", "name=leaks", *args,
                       minion_tgt=salt_minion.id)
    (state,) = ret.data.values()
    assert state["result"] is False
    assert needle in state["comment"]
    assert state["changes"] == {}


def test_module_bad_pillar_type_is_clear_error(salt_cli, salt_minion):
    ret = salt_cli.run("hostcheck.orphans", "daemons=notadict", minion_tgt=salt_minion.id)
    assert "must be a mapping" in str(ret.data)


def test_docs_have_cli_examples(salt_cli, salt_minion):
    ret = salt_cli.run("sys.doc", "hostcheck", minion_tgt=salt_minion.id)
    for fun, doc in ret.data.items():
        assert "CLI Example" in doc, fun


def test_pip_route_without_sync(tmp_path):
    """``pip install .`` registers the salt.loader entry point: salt-call works with no sync."""
    target = install_copy(tmp_path)  # from a copy of the tracked files, as from a clean checkout
    assert (target / "hostcheck_orphans.py").exists()
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "minion").write_text(
        "file_client: local\n"
        "cachedir: {0}/cache\npki_dir: {0}/pki\nsock_dir: {0}/sock\n"
        "log_file: {0}/minion.log\nroot_dir: {0}\n".format(tmp_path)
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    salt_call = os.path.join(os.path.dirname(sys.executable), "salt-call")
    out = subprocess.run(
        [salt_call, "--local", "-c", str(conf), "--out=json", "hostcheck.orphans"],
        check=True, capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )
    import json
    data = json.loads(out.stdout)["local"]
    assert "findings" in data and isinstance(data["leaked"], int)
    # the state and the grain come through the same entry point
    out = subprocess.run(
        [salt_call, "--local", "-c", str(conf), "--out=json", "grains.get", "hostcheck"],
        check=True, capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )
    assert json.loads(out.stdout)["local"]["orphans"]["count"] == 0
    out = subprocess.run(
        [salt_call, "--local", "-c", str(conf), "--out=json", "hostcheck.report"],
        check=True, capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )
    report = json.loads(out.stdout)["local"]
    assert set(report["checks"]) == {"orphans", "deleted_binaries", "reboot_required", "timezone", "logind", "rlimits"}
    out = subprocess.run(
        [salt_call, "--local", "-c", str(conf), "--out=json", "state.single",
         "hostcheck.orphans_reaped", "name=x", "test=True"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )
    data = json.loads(out.stdout)["local"]
    (state,) = data.values()
    assert state["result"] is True


def test_formula_in_highstate_form(salt_cli, salt_minion):
    """The formula served from salt://hostcheck renders from pillar and applies."""
    ret = salt_cli.run("state.apply", "hostcheck", "test=True", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    (state,) = ret.data.values()
    assert state["__id__"] == "hostcheck-orphans-reaped"
    assert state["result"] is True and state["changes"] == {}
    pillar = '{"hostcheck": {"orphans": {"reap": {"exclude": ["postgres*"], "timeout": 5}}}}'
    ret = salt_cli.run("state.show_sls", "hostcheck", "pillar=" + pillar, minion_tgt=salt_minion.id)
    args = ret.data["hostcheck-orphans-reaped"]["hostcheck"]
    assert {"exclude": ["postgres*"]} in args and {"timeout": 5} in args
    assert not any("match" in a for a in args if isinstance(a, dict))
    off = '{"hostcheck": {"orphans": {"reap": {"enabled": false}}}}'
    ret = salt_cli.run("state.show_sls", "hostcheck", "pillar=" + off, minion_tgt=salt_minion.id)
    assert "hostcheck-orphans-reaped" not in ret.data
