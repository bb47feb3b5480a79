"""Integration tests run against real processes; their fixtures are in tests/conftest.py."""
