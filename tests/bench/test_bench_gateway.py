"""`make bench`'s gateway burst runs end to end on a small burst (the figures are its own)."""

from __future__ import annotations

import pytest

from bench import gateway_burst


def test_a_small_burst_reaches_the_coordinators_both_ways(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway_burst.main(["--events", "200", "--models", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "round 1: direct" in out and "ratio" in out
    assert "200 data_arrived events into coordinators" in out
