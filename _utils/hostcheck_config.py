"""Argument and configuration validation: the one home of :class:`ConfigError`.

Every value a user hands hostcheck (CLI arguments, state arguments, pillar,
minion config) goes through a validator here before anything is read or
changed. A validator takes the value and the name to blame, returns the
normalised value and raises :class:`ConfigError` with a message a person can
act on. A check declares its arguments as a schema, ``{name: validator}``,
and :func:`validate` applies it: unknown keys are refused, missing ones are
looked up in the configuration (``hostcheck:<check>:<key>``) and then take
the validator's default.

Runtime dependencies: the Python standard library only.
"""

import numbers

_MISSING = object()


class ConfigError(ValueError):
    """A bad argument or configuration value; the message says which and why."""


def _type(value):
    return type(value).__name__


def string_list(default=None, what="a list of strings", allow_empty=False, check=None, one=True):
    """Validator: ``None`` -> ``default``; a list of non-empty strings (or,
    with ``one``, a single string) -> a list. ``check(item)`` may return an
    error text for an item."""

    def validate(value, name):
        if value is None:
            return None if default is None else list(default)
        if isinstance(value, str) and one:
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError("{} must be {}, got {!r}".format(name, what, value))
        if not value and not allow_empty:
            raise ConfigError("{} must not be empty".format(name))
        out = [v.strip() for v in value]
        if check is not None:
            for item in out:
                why = check(item)
                if why:
                    raise ConfigError("{}: {!r} {}".format(name, item, why))
        return out

    return validate


def globs(default=None):
    """Validator for ``match``/``exclude``-style glob lists."""
    return string_list(default, what="a glob string or a list of glob strings")


def boolean(default=False):
    """Validator: only real booleans (``True``/``False``); ``"yes"`` is refused,
    since every non-empty string would otherwise be true."""

    def validate(value, name):
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError("{} must be true or false, got {} {!r}".format(name, _type(value), value))
        return value

    return validate


def number(default, low, high, what="a number of seconds", integer=False):
    """Validator: a number (not a bool) with ``low < value <= high``."""

    def validate(value, name):
        if value is None:
            return default
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not low < value <= high:
            raise ConfigError("{} must be {} greater than {} and at most {}, got {!r}".format(
                name, what, low, high, value))
        return value

    return validate


def seconds(default, high=600):
    """Validator for timeouts: seconds, ``0 < value <= high``."""
    return number(default, 0, high)


def choice(default, choices):
    """Validator: one of ``choices``."""

    def validate(value, name):
        if value is None:
            return default
        if value not in choices:
            raise ConfigError("{} must be one of {}, got {!r}".format(
                name, ", ".join(map(str, choices)), value))
        return value

    return validate


def validate(schema, given, lookup=None, prefix="hostcheck"):
    """Apply ``schema`` (``{key: validator}``) to the ``given`` arguments.

    ``given`` values that are ``None`` count as not given; those are looked
    up with ``lookup("<prefix>:<key>")`` (Salt's ``config.get``: minion
    config, grains, pillar) when a lookup is passed. Unknown keys raise
    :class:`ConfigError`. Returns the complete, normalised arguments.
    """
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ConfigError("unknown argument{} {}; known: {}".format(
            "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(sorted(schema)) or "none"))
    out = {}
    for key, validator in schema.items():
        value = given.get(key)
        name = key
        if value is None and lookup is not None:
            value = lookup("{}:{}".format(prefix, key))
            if value is not None:
                name = "{}:{}".format(prefix, key)
        out[key] = validator(value, name)
    return out
