"""The pip route also delivers the master's runner and the beacon: after
``pip install .`` Salt's own loaders find ``hostcheck.fleet`` and the
``hostcheck`` beacon through the ``salt.loader`` entry point, with no sync."""
import json
import os
import subprocess
import sys

import pytest

from tests.beds.pip_route import install_copy

pytestmark = pytest.mark.slow

PROBE = """
import copy, json, salt.config, salt.loader
master = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
master.update(cachedir="{d}/mcache", extension_modules="{d}/mcache/extmods")
runners = salt.loader.runner(master)
minion = copy.deepcopy(salt.config.DEFAULT_MINION_OPTS)
minion.update(cachedir="{d}/cache", extension_modules="{d}/cache/extmods")
beacons = salt.loader.beacons(minion, {{}})
print(json.dumps({{
    "runner": "hostcheck.fleet" in runners and runners["hostcheck.fleet"].__module__,
    "runner_doc": "CLI Example" in (runners["hostcheck.fleet"].__doc__ or ""),
    "beacon": "hostcheck.beacon" in beacons,
    "validate": list(beacons["hostcheck.validate"]([{{"interval": 60}}, {{"severity": "critical"}}])),
    "invalid": list(beacons["hostcheck.validate"]([{{"severity": "loud"}}])),
}}))
"""


def test_pip_route_has_runner_and_beacon(tmp_path):
    target = install_copy(tmp_path)
    assert (target / "hostcheck_saltext" / "runners" / "hostcheck.py").exists()
    assert (target / "hostcheck_saltext" / "beacons" / "hostcheck.py").exists()
    assert (target / "hostcheck_metrics.py").exists()
    out = subprocess.run([sys.executable, "-c", PROBE.format(d=tmp_path)], capture_output=True, text=True,
                         check=True, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(target)))
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["runner"] and found["runner_doc"] and found["beacon"], found
    assert found["validate"][0] is True
    assert found["invalid"][0] is False and "severity must be one of" in found["invalid"][1]
