"""Fixtures shared by the reliability tests."""

from read_only import read_only_switch  # noqa: F401 - a fixture: folders that refuse writes
