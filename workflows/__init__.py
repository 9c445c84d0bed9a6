"""Deterministic orchestration: workflow definitions, their messages and pure decision rules."""
