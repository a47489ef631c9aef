"""pip-installable Salt extension: ``pip install .`` registers hostcheck's
grains, execution and state modules, the runner and the beacon through a
``salt.loader`` entry point.

The same files are served by a master from ``salt://`` (``_modules``,
``_states``, ``_grains``, ``_utils``) and synced with ``saltutil.sync_all``;
for the pip route the shared core in ``_utils`` is installed as top-level
modules so that ``import hostcheck_core`` works exactly as it does after a
sync.
"""
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _py_modules(folder):
    return sorted(
        f[:-3]
        for f in os.listdir(os.path.join(HERE, folder))
        if f.endswith(".py") and not f.startswith("_")
    )


setup(
    name="hostcheck",
    version="0.1.0",
    description="Salt extension that finds and fixes slow-burning host problems",
    long_description=open(os.path.join(HERE, "README.rst"), encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.10",
    # salt itself brings psutil and distro; nothing else is needed at runtime.
    install_requires=[],
    packages=[
        "hostcheck_saltext",
        "hostcheck_saltext.modules",
        "hostcheck_saltext.states",
        "hostcheck_saltext.grains",
        "hostcheck_saltext.runners",
        "hostcheck_saltext.beacons",
    ],
    package_dir={
        "hostcheck_saltext": "hostcheck_saltext",
        "hostcheck_saltext.modules": "_modules",
        "hostcheck_saltext.states": "_states",
        "hostcheck_saltext.grains": "_grains",
        "hostcheck_saltext.runners": "_runners",
        "hostcheck_saltext.beacons": "_beacons",
        "": "_utils",
    },
    py_modules=_py_modules("_utils"),
    entry_points={"salt.loader": ["hostcheck = hostcheck_saltext.loader:loader_dirs"]},
    zip_safe=False,
)
