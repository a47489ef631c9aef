"""``salt.loader`` entry point for the pip route.

Salt calls :func:`loader_dirs` and loads hostcheck's modules from the
returned directories: execution modules, states, grains and the
``hostcheck`` beacon on a minion, the ``hostcheck.fleet`` runner on a
master. The ``_utils`` core is installed as plain top-level modules by
``setup.py``, so no ``utils`` directory is returned (Salt's utils loader
ignores entry points anyway).
"""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def loader_dirs():
    """Directories per loader type, as Salt's new-style entry point expects."""
    return {
        "modules": [os.path.join(_HERE, "modules")],
        "states": [os.path.join(_HERE, "states")],
        "grains": [os.path.join(_HERE, "grains")],
        "runners": [os.path.join(_HERE, "runners")],
        "beacons": [os.path.join(_HERE, "beacons")],
    }
