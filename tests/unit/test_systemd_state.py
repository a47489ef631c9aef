"""What hostcheck reads of systemd's state, on fake /run trees."""
import os

import hostcheck_systemd as hs


def fake_run(tmp_path, links):
    units = tmp_path / "systemd" / "units"
    units.mkdir(parents=True)
    (tmp_path / "systemd" / "system").mkdir()
    for unit, inv in links.items():
        os.symlink(inv, units / ("invocation:" + unit))
    (units / "unrelated-file").write_text("")
    return str(tmp_path)


def test_invocations_from_links(tmp_path):
    run = fake_run(tmp_path, {"cron.service": "abc", "dbus.service": "def"})
    assert hs.invocations(run) == {"cron.service": "abc", "dbus.service": "def"}
    assert hs.running_services(["cron.service", "leaky.service"], run_root=run) == {
        "cron.service": {"ActiveState": "active", "InvocationID": "abc"},
        "leaky.service": {"ActiveState": "inactive", "InvocationID": None},
    }


def test_no_systemd_means_none(tmp_path):
    assert hs.invocations(str(tmp_path)) is None
    assert hs.running_services(["cron.service"], run_root=str(tmp_path)) is None


def test_parse_show_blocks():
    text = "Id=a.service\nActiveState=active\nMainPID=12\nInvocationID=x\n\nId=b.service\nActiveState=failed\nMainPID=\n"
    assert hs.parse_show(text) == {
        "a.service": {"Id": "a.service", "ActiveState": "active", "MainPID": 12, "ControlPID": 0, "InvocationID": "x"},
        "b.service": {"Id": "b.service", "ActiveState": "failed", "MainPID": 0, "ControlPID": 0},
    }
