"""How a drift report's figures read, in the HTML page and in the terminal alike: numbers,
p-values, shares, times, and the column order (drifted first). Plain Python on purpose: the CLI
imports it, and must start without numpy or scipy."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from workflows.drift.models import ColumnDrift, ColumnStatus, DriftReport

# "No value" in the page: an en dash, escaped so the source stays ASCII.
NONE = "\u2013"


def format_number(value: float | None, none: str = NONE) -> str:
    """3 significant digits; thousands get separators instead of an exponent (chi2, W1)."""
    if value is None:
        return none
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    if 1e3 <= abs(value) < 1e6:
        return f"{float(f'{value:.3g}'):,.0f}"
    return f"{value:.3g}"


def format_pvalue(value: float | None, none: str = NONE) -> str:
    if value is None:
        return none
    if value == 0:
        # Underflow: the test's p-value is below the smallest double, not literally zero.
        return "<1e-300"
    if value < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3g}"


def format_share(value: float | None, none: str = NONE) -> str:
    if value is None:
        return none
    if value == 0:
        return "0%"
    return f"{value * 100:.3g}%"


def format_missing(column: ColumnDrift) -> str:
    return f"{format_share(column.missing_reference)} → {format_share(column.missing_current)}"


def format_time(value: datetime | None, none: str = NONE) -> str:
    """UTC, to the second: reports from workers in different zones read the same."""
    if value is None:
        return none
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_status(value: str) -> str:
    return value.replace("_", " ")


def is_drifted(report: DriftReport, column: ColumnDrift) -> bool:
    # The status and the report's list should agree; either one is enough to flag a column.
    return column.status is ColumnStatus.DRIFTED or column.name in report.drifted


def ordered_columns(report: DriftReport) -> list[ColumnDrift]:
    """Drifted columns first, then by score descending (no score last), then by name."""

    def key(column: ColumnDrift) -> tuple[bool, float, str]:
        score = -column.score if column.score is not None else math.inf
        return (not is_drifted(report, column), score, column.name)

    return sorted(report.columns, key=key)
