"""Shared pytest setup: make the runtime core importable by its plain names,
exactly as Salt does after ``saltutil.sync_all``."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))
