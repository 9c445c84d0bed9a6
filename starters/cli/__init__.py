"""`retrain`: the command-line interface, one module per command group (`app.py` is the root)."""

from __future__ import annotations


def main() -> None:
    """`starters.cli:main`, kept for scripts that name it; the console script is `app:main`."""
    from starters.cli.app import main as run

    run()
