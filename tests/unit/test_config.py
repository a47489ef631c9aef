"""hostcheck_config: one ConfigError, one validator per kind of value."""
import pytest

import hostcheck_config as hc


def test_string_list():
    v = hc.string_list()
    assert v(None, "x") is None
    assert v("a", "x") == ["a"] and v(["a", " b "], "x") == ["a", "b"]
    for bad in ([], [""], [1], {"a": 1}, 3, True):
        with pytest.raises(hc.ConfigError, match="^x"):
            v(bad, "x")
    with pytest.raises(hc.ConfigError):
        hc.string_list(one=False)("a", "x")
    assert hc.string_list(["d"])(None, "x") == ["d"]
    assert hc.string_list(check=lambda i: "bad" if i == "no" else None)(["ok"], "x") == ["ok"]
    with pytest.raises(hc.ConfigError, match="'no' bad"):
        hc.string_list(check=lambda i: "bad" if i == "no" else None)(["no"], "x")


@pytest.mark.parametrize("bad", ["yes", "true", 1, 0, "False", [True]])
def test_boolean_refuses_truthy_values(bad):
    with pytest.raises(hc.ConfigError, match="true or false"):
        hc.boolean()(bad, "packages")


def test_boolean():
    assert hc.boolean()(None, "x") is False and hc.boolean(True)(None, "x") is True
    assert hc.boolean()(True, "x") is True


@pytest.mark.parametrize("bad", [0, -1, 601, True, "10", None.__class__])
def test_seconds_refuses(bad):
    with pytest.raises(hc.ConfigError, match="timeout must be"):
        hc.seconds(10)(bad, "timeout")


def test_seconds_and_choice():
    assert hc.seconds(10)(None, "t") == 10 and hc.seconds(10)(0.5, "t") == 0.5
    assert hc.choice("info", ("critical", "info"))(None, "s") == "info"
    with pytest.raises(hc.ConfigError, match="one of critical, info"):
        hc.choice("info", ("critical", "info"))("high", "s")


def test_validate_schema_lookup_and_unknown_keys():
    schema = {"a": hc.string_list(["x"]), "t": hc.seconds(5)}
    seen = []

    def lookup(key):
        seen.append(key)
        return ["cfg"] if key == "hostcheck:orphans:a" else None

    assert hc.validate(schema, {"t": 3}, lookup, "hostcheck:orphans") == {"a": ["cfg"], "t": 3}
    assert seen == ["hostcheck:orphans:a"]
    assert hc.validate(schema, {}) == {"a": ["x"], "t": 5}
    with pytest.raises(hc.ConfigError, match="unknown argument bogus"):
        hc.validate(schema, {"bogus": 1})
    # a bad configured value names the config key
    with pytest.raises(hc.ConfigError, match="hostcheck:orphans:t"):
        hc.validate(schema, {}, lambda k: "soon", "hostcheck:orphans")
