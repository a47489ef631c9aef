"""The fleet pieces on the other Salt versions users run (3006 LTS, 3007):
a master and two minions of that version behind the NAT bed
(tests/beds/nat.py); the ``hostcheck.fleet`` runner with one minion
stopped (live, batched and cached), and the beacon + reactor remedying a
planted leak on the minion that opted in. Salt 3008 is covered in
test_nat_fleet.py."""
import os

import pytest

from tests.beds.common import require_root_scenario, skip_or_fail
from tests.beds.pidns import COMPAT, EXPECTED_COMPAT

pytestmark = [pytest.mark.root, pytest.mark.slow]

BEACON = {"hostcheck": [{"interval": 2}]}
REACTOR = [{"salt/beacon/*/hostcheck/*": ["salt://hostcheck/reactor/remedy.sls"]}]


@pytest.mark.parametrize("salt", sorted(EXPECTED_COMPAT))
def test_runner_beacon_and_reactor(salt):
    require_root_scenario(tools={"ip": "iproute2", "nft": "nftables", "unshare": "util-linux"}, what="the NAT bed")
    salt_bin = os.path.join(COMPAT, salt, "bin")
    if not os.path.exists(os.path.join(salt_bin, "salt-master")):
        skip_or_fail("{} is not built (scripts/bootstrap-compat)".format(salt_bin))
    from tests.beds import nat  # noqa: PLC0415

    bed = nat.NatBed({"site-1": {}, "site-2": {"beacons": BEACON}}, salt_bin=salt_bin,
                     pillar={"site-2": {"hostcheck": {"reactor": {"orphans": True}}}}, reactor=REACTOR)
    try:
        bed.start()
        bed.accept_keys()
        bed.wait_all_answer()
        version = bed.cmd("*", "test.version")
        assert all(v.startswith(salt[4:8]) for v in version.values()), version
        assert "beacons.hostcheck" in bed.cmd("*", "saltutil.sync_all", timeout=120)["site-2"]["beacons"]
        assert "runners.hostcheck" in bed.master_cmd("salt-run", "saltutil.sync_all").stdout
        with nat.EventWatch(bed.master_opts()) as watch:
            leak = bed.minions["site-2"].plant_leak()
            nat.wait_for(lambda: bed.minions["site-2"].reaped(leak), 90, interval=0.5, what="the reactor's remedy")
            nat.wait_for(lambda: watch.tagged("salt/beacon/site-2/hostcheck/orphans/supervisor-leak/resolved"), 30,
                         interval=0.5, what="the resolved event")
        assert [e["tag"] for e in watch.events] == [
            "salt/beacon/site-2/hostcheck/orphans/supervisor-leak",
            "salt/beacon/site-2/hostcheck/orphans/supervisor-leak/resolved"]
        bed.stop_minion("site-1")
        table = bed.master_cmd("salt-run", "hostcheck.fleet", "timeout=5").stdout
        assert "1 ok, 1 no return" in table and "no return (never counted as healthy): site-1" in table, table
        batched = bed.runner("hostcheck.fleet", batch=1, timeout=5, table=False)
        assert [r["minion"] for r in batched["rows"]] == ["site-2"] and batched["no_return"] == ["site-1"]
        cached = bed.runner("hostcheck.fleet", cached=True, table=False)
        assert sorted(r["minion"] for r in cached["rows"]) == ["site-1", "site-2"]
    finally:
        bed.stop()
