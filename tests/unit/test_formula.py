"""The formula (hostcheck/*.sls) and the example reactor SLS: salt-lint over
every file, then each one rendered by Salt's own renderer (jinja|yaml) for
several pillars: the structure is a state per ID with known functions, the
defaults are safe (only orphans acts without pillar), every remedy that
restarts something is opt-in, and init.sls includes every remedy SLS."""
import glob
import importlib
import json
import os
import subprocess
import sys

import pytest
import salt.config
import salt.loader
import salt.template
import salt.utils.data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORMULA = os.path.join(REPO, "hostcheck")
SLS_FILES = sorted(glob.glob(os.path.join(FORMULA, "*.sls")) + glob.glob(os.path.join(FORMULA, "reactor", "*.sls")))
REMEDY_SLS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(FORMULA, "*.sls"))
                    if not p.endswith("init.sls"))


def hostcheck_states():
    """State functions the formula may call: the state module's, plus the
    REMEDY of every check module (states being added land there first)."""
    names = set()
    with open(os.path.join(REPO, "_states", "hostcheck.py"), encoding="utf-8") as fh:
        names |= {line.split("(")[0][4:] for line in fh if line.startswith("def ") and not line.startswith("def _")}
    for path in glob.glob(os.path.join(REPO, "_utils", "hostcheck_*.py")):
        remedy = getattr(importlib.import_module(os.path.basename(path)[:-3]), "REMEDY", None)
        if remedy:
            names.add(remedy)
    return {"hostcheck." + n for n in names} | {"test.fail_without_changes"}


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    cache = tmp_path_factory.mktemp("render")
    opts = salt.config.minion_config(None)
    opts.update({"file_client": "local", "file_roots": {"base": [REPO]}, "cachedir": str(cache),
                 "extension_modules": str(cache / "extmods")})

    def render_sls(path, pillar=None, **context):
        pillar = pillar or {}
        funcs = {"pillar.get": lambda key, default="", **kw: salt.utils.data.traverse_dict_and_list(
            pillar, key, default)}
        renderers = salt.loader.render(opts, funcs)
        rel = os.path.relpath(path, REPO)[:-4].replace(os.sep, ".")
        return salt.template.compile_template(path, renderers, opts["renderer"], opts["renderer_blacklist"],
                                              opts["renderer_whitelist"], saltenv="base", sls=rel, **context)

    return render_sls


def highstate(render, pillar):
    """``{id: (function, {arg: value})}`` of ``state.apply hostcheck``."""
    top = render(os.path.join(FORMULA, "init.sls"), pillar)
    assert set(top) == {"include"}
    out = {}
    for sls in top["include"]:
        data = render(os.path.join(REPO, *sls.split(".")) + ".sls", pillar)
        assert isinstance(data, dict), (sls, data)
        for sid, body in data.items():
            ((fun, args),) = body.items()
            assert isinstance(args, list) and all(isinstance(a, dict) and len(a) == 1 for a in args), body
            out[sid] = (fun, {k: v for a in args for k, v in a.items()})
    return out


def test_salt_lint_is_clean():
    lint = os.path.join(os.path.dirname(sys.executable), "salt-lint")
    assert os.path.exists(lint), "salt-lint is pinned in requirements/test.in: run scripts/bootstrap"
    proc = subprocess.run([lint, "--nocolor"] + SLS_FILES, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_init_includes_every_remedy(render):
    included = render(os.path.join(FORMULA, "init.sls"))["include"]
    assert sorted(s.split(".", 1)[1] for s in included) == REMEDY_SLS


ALL_ON = {"hostcheck": {
    "orphans": {"reap": {"match": ["sh"], "exclude": ["postgres*"], "timeout": 5}},
    "deleted_binaries": {"restart": {"only": ["cron"], "exclude": ["postgresql*"]}},
    "timezone": {"pin": {"zone": "Europe/Paris", "copy": True}},
    "logind": {"clean": {"closing": ["cron"]}},
    "rlimits": {"units": {"nginx.service": {"nofile": 65536}}},
}}


@pytest.mark.parametrize("pillar", [{}, ALL_ON, {"hostcheck": {"orphans": {"reap": {"enabled": False}},
                                                                 "deleted_binaries": {"restart": {"enabled": False}},
                                                                 "logind": {"clean": {"enabled": False}}}}],
                         ids=["default", "all-on", "all-off"])
def test_every_state_calls_a_known_function(render, pillar):
    known = hostcheck_states()
    for sid, (fun, _) in highstate(render, pillar).items():
        assert fun in known, (sid, fun)


def test_defaults_are_safe(render):
    """No pillar: only the orphans remedy (it restarts nothing)."""
    assert highstate(render, {}) == {
        "hostcheck-orphans-reaped": ("hostcheck.orphans_reaped", {"name": "leaked process trees"})}


def test_all_remedies_switched_on_by_pillar(render):
    states = highstate(render, ALL_ON)
    assert states["hostcheck-orphans-reaped"][1] == {
        "name": "leaked process trees", "match": ["sh"], "exclude": ["postgres*"], "timeout": 5}
    assert states["hostcheck-services-current"] == (
        "hostcheck.services_current", {"name": "services running old code", "only": ["cron"],
                                       "exclude": ["postgresql*"]})
    assert states["hostcheck-timezone-pinned"] == ("hostcheck.timezone_pinned", {"name": "Europe/Paris", "copy": True})
    funs = {fun for fun, _ in states.values()}
    assert {"hostcheck.services_current", "hostcheck.timezone_pinned"} <= funs
    if "logind" in REMEDY_SLS:
        assert "hostcheck.logind_clean" in funs
    if "rlimits" in REMEDY_SLS:
        assert "hostcheck.service_limits" in funs


def test_switched_off(render):
    off = {"hostcheck": {"orphans": {"reap": {"enabled": False}}, "deleted_binaries": {"restart": {"enabled": False}}}}
    assert highstate(render, off) == {}


REACTOR = os.path.join(FORMULA, "reactor", "remedy.sls")
FOUND = {"id": "site-2", "state": "found", "check": "orphans", "code": "supervisor-leak", "severity": "critical"}


def react(render, **data):
    event = dict(FOUND, **data)
    return render(REACTOR, tag="salt/beacon/{}/hostcheck/{}/{}".format(event["id"], event["check"], event["code"]),
                  data=event)



def remedy_checks():
    """Names of the checks that have a remedy (a state)."""
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "_utils", "hostcheck_*.py"))):
        mod = importlib.import_module(os.path.basename(path)[:-3])
        if getattr(mod, "REMEDY", None):
            out.append(mod.NAME)
    return out


SLS_OF = {"orphans": "hostcheck.orphans", "deleted_binaries": "hostcheck.services", "timezone": "hostcheck.timezone",
          "rlimits": "hostcheck.rlimits", "logind": "hostcheck.logind"}


def test_every_remedy_has_a_reactor_mapping():
    assert sorted(remedy_checks()) == sorted(SLS_OF)


@pytest.mark.parametrize("check,sls", sorted(SLS_OF.items()))
def test_reactor_targets_the_minion_and_its_pillar(render, check, sls):
    out = react(render, check=check)
    assert json.loads(json.dumps(out)) == {"hostcheck-remedy-{}-site-2".format(check): {"local.state.apply": [
        {"tgt": "L@site-2 and I@hostcheck:reactor:{}:true".format(check)},
        {"tgt_type": "compound"},
        {"args": [{"mods": sls}]}]}}
    assert os.path.exists(os.path.join(REPO, *sls.split(".")) + ".sls")


@pytest.mark.parametrize("data", [
    {"state": "resolved"},
    {"severity": "info"},
    {"check": "report", "code": "error"},
    {"check": "reboot_required"},  # no remedy: a reboot is a person's decision
    {"id": "site-2 or *"},
    {"id": "*"},
    {"id": ""},
    {"id": "a,b"},
])
def test_reactor_ignores_other_events(render, data):
    assert react(render, **data) == {}


def test_reactor_ignores_events_that_are_not_mappings(render):
    assert render(REACTOR, tag="salt/beacon/x/hostcheck/orphans/y", data="nonsense") == {}
