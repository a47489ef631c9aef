"""A fleet behind NAT, driven from its master (tests/beds/nat.py).

A real salt-master in its own network namespace and five real salt-minions at
a "client site" whose only way out is a router that masquerades them: the
minions connect out to 4505/4506, the master can never connect in. Each
minion runs in its own PID namespace, so every remedy can only ever act on
what the test planted there. Everything goes through the master: keys,
``saltutil.sync_all``, ``hostcheck.report``, grain targeting, the formula in
test mode, a real remedy, the beacon and the reactor, and the
``hostcheck.fleet`` runner with a minion stopped and with the site's link
cut.

Minions: site-1 gets a leak that is remedied through the master; site-2 has
the beacon and opts in to the reactor for orphans (pillar); site-3 has the
beacon without opting in; site-4 has the beacon and stays healthy; site-5 is
stopped to show a minion that does not answer.
"""
import json
import subprocess
import sys
import time

import pytest

import hostcheck_registry
from tests.beds.common import require_root_scenario
from tests.beds.supervisor_leak import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

IDS = ["site-1", "site-2", "site-3", "site-4", "site-5"]
INTERVAL = 2
BEACON = {"hostcheck": [{"interval": INTERVAL}, {"severity": "warning"}]}
REACTOR = [{"salt/beacon/*/hostcheck/*": ["salt://hostcheck/reactor/remedy.sls"]}]
CHECKS = {c.NAME for c in hostcheck_registry.CHECKS}


@pytest.fixture(scope="module")
def nat():
    require_root_scenario(tools={"ip": "iproute2", "nft": "nftables", "unshare": "util-linux"},
                          what="the NAT bed")
    from tests.beds import nat as nat_bed  # noqa: PLC0415

    reason = nat_bed.requirements()
    if reason:
        require_root_scenario(checks=[lambda: reason], what="the NAT bed")
    bed = nat_bed.NatBed(
        {"site-1": {}, "site-2": {"beacons": BEACON}, "site-3": {"beacons": BEACON}, "site-4": {"beacons": BEACON},
         "site-5": {}},
        pillar={"site-2": {"hostcheck": {"reactor": {"orphans": True}}}},
        reactor=REACTOR)
    bed.records = {}
    try:
        t0 = time.monotonic()
        bed.start()
        bed.records["leak"] = bed.minions["site-1"].plant_leak()
        bed.records["keys"] = bed.accept_keys()
        bed.wait_all_answer()
        bed.records["sync"] = bed.cmd("*", "saltutil.sync_all", timeout=120)
        bed.records["master_sync"] = bed.master_cmd("salt-run", "saltutil.sync_all", "--out=json")
        bed.timings["ready"] = time.monotonic() - t0
        yield bed
    finally:
        bed.stop()


def _states(ret):
    assert isinstance(ret, dict), ret
    return ret


# -- the topology ----------------------------------------------------------


def _listen_in_site(bed, port):
    code = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "s.bind(('0.0.0.0',{}));s.listen();print('up',flush=True);time.sleep(60)\n").format(port)
    proc = subprocess.Popen(["ip", "netns", "exec", bed.net.site, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


def test_topology_site_reaches_master_master_cannot_reach_site(nat):
    from tests.beds.nat import MASTER_IP, PORTS, ROUTER_M_IP, SITE_IP  # noqa: PLC0415

    for port in PORTS:
        ok, why = nat.net.probe(nat.net.site, MASTER_IP, port)
        assert ok, why
    listener = _listen_in_site(nat, 7777)
    try:
        assert nat.net.probe(nat.net.site, SITE_IP, 7777)[0]  # the listener is real
        ok, why = nat.net.probe(nat.net.master, SITE_IP, 7777)
        assert not ok and "unreachable" in why, why
        # even with a route to the site, the router lets no new connection in
        subprocess.run(["ip", "-n", nat.net.master, "route", "add", "10.250.1.0/30", "via", ROUTER_M_IP], check=True)
        try:
            ok, why = nat.net.probe(nat.net.master, SITE_IP, 7777, timeout=2)
            assert not ok, why
        finally:
            subprocess.run(["ip", "-n", nat.net.master, "route", "del", "10.250.1.0/30"], check=True)
    finally:
        listener.kill()  # our own child, by PID
        listener.wait()
    # the master sees every minion's connections from the router's address only
    ss = subprocess.run(["ip", "netns", "exec", nat.net.master, "ss", "-Htn", "state", "established"],
                        capture_output=True, text=True, check=True).stdout
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in ss.splitlines()
             if line.split()[-2].endswith((":4505", ":4506"))}
    assert peers == {ROUTER_M_IP}, ss


# -- a client site without DNS ---------------------------------------------------


def test_site_without_dns_stalls_grains_unless_configured(nat, tmp_path):
    from tests.beds import nat as nat_bed  # noqa: PLC0415

    stock = nat_bed.dns_stall_config(tmp_path / "stock", fqdns=True)
    stalled, out = nat_bed.time_grains_in_site(nat, stock, nat_bed.stock_hosts(nat))
    assert out.returncode == 0, out.stderr
    fixed = nat_bed.dns_stall_config(tmp_path / "fixed", fqdns=False)
    quick, out = nat_bed.time_grains_in_site(nat, fixed, nat.site_hosts)
    assert out.returncode == 0, out.stderr
    print("grains load at a site without DNS: stock {:.1f} s, with enable_fqdns_grains: False and "
          "/etc/hosts {:.1f} s".format(stalled, quick))
    assert stalled > quick + 5


# -- keys, sync, report ------------------------------------------------------


def test_keys_accepted_through_the_master(nat):
    assert nat.records["keys"]["listed"]["minions_pre"] == IDS
    assert "Key for minion site-5 accepted." in nat.records["keys"]["accepted"]
    listed = json.loads(nat.master_cmd("salt-key", "-L", "--out=json").stdout)
    assert listed["minions"] == IDS and listed["minions_pre"] == []


def test_sync_all_delivered_modules_beacon_and_runner(nat):
    for mid in IDS:
        synced = nat.records["sync"][mid]
        for kind, name in (("modules", "modules.hostcheck"), ("states", "states.hostcheck"),
                           ("grains", "grains.hostcheck"), ("beacons", "beacons.hostcheck"),
                           ("utils", "utils.hostcheck_registry")):
            assert name in synced[kind], (mid, kind, synced)
    master = json.loads(nat.records["master_sync"].stdout)
    assert "runners.hostcheck" in master["runners"], master


def test_report_from_every_minion(nat):
    ret = nat.cmd("*", "hostcheck.report", timeout=60)
    assert sorted(ret) == IDS
    for mid, report in ret.items():
        assert set(report["checks"]) == CHECKS, (mid, report)
        assert all(e["error"] is None for e in report["checks"].values()), (mid, report["checks"])
    (leak,) = [f for f in ret["site-1"]["findings"] if f["severity"] != "info"]
    assert leak["code"] == "supervisor-leak" and leak["root"] == nat.records["leak"]
    assert sorted(leak["pids"]) == nat.minions["site-1"].tree(nat.records["leak"])
    for mid in IDS[1:]:
        assert ret[mid]["worst"] in ("ok", "info"), (mid, ret[mid])


def test_grain_targeting(nat):
    assert sorted(nat.cmd("*", "saltutil.refresh_grains", timeout=30)) == IDS
    time.sleep(1)
    leaky = nat.cmd("hostcheck:orphans:count:1", "test.ping", timeout=10, tgt_type="grain")
    assert sorted(leaky) == ["site-1"]
    healthy = nat.cmd("hostcheck:orphans:count:0", "test.ping", timeout=10, tgt_type="grain")
    assert sorted(healthy) == IDS[1:]
    # as an operator types it, and the client site's own grain
    out = nat.master_cmd("salt", "-G", "hostcheck:orphans:count:1", "test.ping", "--out=json", "--static")
    assert json.loads(out.stdout) == {"site-1": True}, out
    assert sorted(nat.cmd("site:acme", "test.ping", timeout=10, tgt_type="grain")) == IDS


def test_formula_test_mode_changes_nothing_on_healthy_minions(nat):
    ret = nat.cmd("*", "state.apply", ["hostcheck"], kwarg={"test": True}, timeout=120)
    assert sorted(ret) == IDS
    for mid in IDS[1:]:
        states = _states(ret[mid])
        assert states, mid
        for sid, state in states.items():
            assert state["result"] is True and state["changes"] == {}, (mid, sid, state)
    (state,) = [s for s in _states(ret["site-1"]).values() if s["__id__"] == "hostcheck-orphans-reaped"]
    assert state["result"] is None
    assert [t["root"] for t in state["changes"]["reaped"]] == [nat.records["leak"]]
    assert nat.minions["site-1"].tree(nat.records["leak"]), "test=True must not reap"


def test_real_remedy_on_one_minion(nat):
    site1 = nat.minions["site-1"]
    root = nat.records["leak"]
    others = {mid: nat.minions[mid].log_events("reap") for mid in IDS[1:]}
    ret = nat.cmd("site-1", "state.apply", ["hostcheck"], timeout=120)
    (state,) = [s for s in _states(ret["site-1"]).values() if s["__id__"] == "hostcheck-orphans-reaped"]
    assert state["result"] is True, state
    assert [t["root"] for t in state["changes"]["reaped"]] == [root]
    wait_for(lambda: site1.reaped(root), 10, what="the leak to be reaped")
    assert site1.tree(root) == []
    assert not site1.reaped(site1.minion_nspid) and site1.alive()  # the minion itself lives on
    # nothing died in the other minions' namespaces
    assert {mid: nat.minions[mid].log_events("reap") for mid in IDS[1:]} == others
    assert nat.cmd("site-1", "hostcheck.report", timeout=30)["site-1"]["worst"] in ("ok", "info")


def test_metrics_through_the_master(nat):
    """``hostcheck.report format=prometheus`` and ``hostcheck.metrics_exported``,
    once the execution and state modules have them (hostcheck_metrics.py
    holds the code; the wrappers are one line each)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    text = nat.cmd("site-4", "hostcheck.report", kwarg={"format": "prometheus"}, timeout=30)["site-4"]
    if isinstance(text, str) and "keyword arguments are not valid: format=prometheus" in text:
        pytest.skip("hostcheck.report has no format argument yet: " + str(text)[:200])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["check"]: s.value for s in families["hostcheck_check_up"].samples}
    assert up == {name: 1 for name in CHECKS}
    assert families["hostcheck_worst_severity"].samples[0].value in (0, 1)
    path = nat.minions["site-4"].dir / "hostcheck.prom"
    ret = nat.cmd("site-4", "state.single", ["hostcheck.metrics_exported", "name=metrics", "path={}".format(path)],
                  timeout=60)["site-4"]
    (state,) = ret.values()
    assert state["result"] is True and state["changes"]["path"] == str(path), state
    assert "hostcheck_findings" in {f.name for f in text_string_to_metric_families(path.read_text())}


# -- beacon and reactor ------------------------------------------------------


def _beacon_events(watch, mid):
    return [(e["tag"].split("/hostcheck/", 1)[1], e["data"]) for e in watch.tagged("salt/beacon/{}/hostcheck/".format(mid))]


def test_beacon_fires_once_and_the_reactor_remedies_opt_in_only(nat):
    from tests.beds.nat import EventWatch  # noqa: PLC0415

    site2, site3 = nat.minions["site-2"], nat.minions["site-3"]
    with EventWatch(nat.master_opts(), prefixes=("salt/beacon/", "salt/job/")) as watch:
        time.sleep(2 * INTERVAL)  # the healthy minions' beacons run: nothing to say
        assert watch.tagged("salt/beacon/") == []
        leak2 = site2.plant_leak("leak-2")
        leak3 = site3.plant_leak("leak-3")
        wait_for(lambda: site2.reaped(leak2), 90, interval=0.5, what="the reactor to reap site-2's leak")
        wait_for(lambda: [t for t, _ in _beacon_events(watch, "site-2") if t.endswith("/resolved")], 30,
                 interval=0.5, what="the resolved event")
        time.sleep(3 * INTERVAL)  # a steady host: no more events
    site2_events = _beacon_events(watch, "site-2")
    assert [t for t, _ in site2_events] == ["orphans/supervisor-leak", "orphans/supervisor-leak/resolved"]
    found, resolved = (d for _, d in site2_events)
    assert found["state"] == "found" and found["severity"] == "critical" and found["finding"]["root"] == leak2
    assert resolved["state"] == "resolved" and resolved["finding"]["root"] == leak2 and found["id"] == "site-2"
    # site-3 did not opt in: one event, no remedy, the leak lives on
    (event,) = _beacon_events(watch, "site-3")
    assert event[0] == "orphans/supervisor-leak" and event[1]["finding"]["root"] == leak3
    assert len(site3.tree(leak3)) == 3
    assert _beacon_events(watch, "site-4") == []
    # the reactor's job: state.apply hostcheck.orphans with the opt-in target. For site-3 the
    # master's pillar cache already matches no minion, so nothing is published at all.
    new = [e["data"] for e in watch.tagged("salt/job/") if e["tag"].endswith("/new") and e["data"]["fun"] == "state.apply"]
    assert [d["tgt"] for d in new] == ["L@site-2 and I@hostcheck:reactor:orphans:true"], new
    assert new[0]["arg"] == [{"__kwarg__": True, "mods": "hostcheck.orphans"}] and new[0]["minions"] == ["site-2"]
    rets = [e for e in watch.tagged("salt/job/") if "/ret/" in e["tag"] and e["data"]["fun"] == "state.apply"]
    assert {e["data"]["id"] for e in rets} == {"site-2"}
    (state,) = rets[0]["data"]["return"].values()
    assert state["result"] is True and [t["root"] for t in state["changes"]["reaped"]] == [leak2]
    nat.records["leak3"] = leak3


# -- the fleet runner ----------------------------------------------------------


def test_fleet_runner_lists_a_stopped_minion_apart(nat):
    assert sorted(nat.cmd("*", "saltutil.refresh_grains", timeout=30)) == IDS
    nat.stop_minion("site-5")
    out = nat.master_cmd("salt-run", "hostcheck.fleet", "timeout=5")
    lines = out.stdout.splitlines()
    print(out.stdout)
    assert lines[0].strip() == "table:"
    assert lines[1].strip() == "5 minion(s): 1 critical, 0 warning, 0 info, 3 ok, 1 no return, 0 failed"
    assert lines[3].split()[:2] == ["MINION", "WORST"]
    assert lines[4].split()[:2] == ["site-3", "critical"] and "orphans/supervisor-leak" in lines[4]
    assert "no return (never counted as healthy): site-5" in out.stdout
    data = json.loads(nat.master_cmd("salt-run", "hostcheck.fleet", "timeout=5", "--out=json").stdout)
    assert [r["minion"] for r in data["rows"]] == ["site-3", "site-1", "site-2", "site-4"]
    assert data["no_return"] == ["site-5"] and data["failed"] == {}
    assert data["rows"][0]["counts"]["orphans"] == 1 and data["rows"][0]["codes"] == ["orphans/supervisor-leak"]
    assert data["summary"]["ok"] == 3 and data["summary"]["no_return"] == 1
    assert data["notes"][0]["count"] == 4  # the notes every minion returns alike, once
    batched = nat.runner("hostcheck.fleet", tgt="site:acme", tgt_type="grain", batch=2, timeout=5, table=False)
    assert batched["rows"] == data["rows"] and batched["no_return"] == ["site-5"]


def test_fleet_cached_and_link_cut(nat):
    t0 = time.monotonic()
    cached = nat.runner("hostcheck.fleet", cached=True, table=False)
    assert time.monotonic() - t0 < 10
    assert [(r["minion"], r["worst"]) for r in cached["rows"]][0] == ("site-3", "critical")
    assert sorted(r["minion"] for r in cached["rows"]) == IDS  # site-5's grains are in the cache
    nat.net.cut_site()
    live = nat.runner("hostcheck.fleet", timeout=3, table=False)
    assert live["rows"] == [] and live["no_return"] == IDS
    assert live["summary"]["ok"] == 0 and live["summary"]["no_return"] == 5
    # the cache answers without any minion
    assert nat.runner("hostcheck.fleet", cached=True, table=False)["rows"] == cached["rows"]
