"""Shared pytest setup: make the runtime core importable by its plain names,
exactly as Salt does after ``saltutil.sync_all``."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))
if REPO not in sys.path:
    sys.path.insert(1, REPO)  # tests.fakes, tests.beds


def pytest_sessionfinish(session, exitstatus):
    """Salt's log handlers flush at interpreter exit into streams pytest has
    already closed; without this every run ends with pages of
    "--- Logging error ---" after pytest's summary line."""
    import logging

    logging.raiseExceptions = False
