"""Reusable test beds (PID namespaces, supervisors, containers) for scenario tests."""
