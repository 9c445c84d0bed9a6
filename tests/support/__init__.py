"""Harnesses and doubles shared by the tests."""
