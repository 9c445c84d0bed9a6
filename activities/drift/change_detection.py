"""A sequential change detector on the per-prediction loss stream (river's ADWIN).

A one-shot window compares the window's average quality with the reference: a change in the
window's last fifth moves that average by a fifth of its size and hides behind the tolerance.
ADWIN (Bifet & Gavaldà 2007) keeps comparing every split of the recent stream instead, so it
fires shortly after the change whatever the window's length.

**False alarms.** river's ADWIN checks its window every `clock` observations; at each check it
tests every bucket boundary with a Bernstein bound at `delta' = ln(2 ln(width) / delta)`, so a
check cuts a stationary window with probability at most `delta` (the paper's Theorem 3.1), for
values in [0, 1]. A stream of `horizon` observations has at most `horizon / clock` checks, so
`delta = false_alarm_rate * clock / horizon` bounds the probability of any false alarm over the
horizon by `false_alarm_rate` (a union bound: conservative, and cheap, because `delta` enters the
threshold through a logarithm). Losses outside [0, 1] (log loss, squared or absolute errors)
are divided by a stated bound and clipped to it first.

**Change point.** ADWIN drops old buckets until its window looks stationary, which says little
about where the change was. When it fires, the change point is estimated by least squares over
the stretch it examined (since the previous change): the split maximising
`n1 n2 / n (mean1 - mean2)^2`, the maximum-likelihood split of a single mean shift.

The detector runs over one check's stream from scratch (stateless between checks), so a check is
a pure function of its data and the false-alarm rate holds per check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from river import drift  # type: ignore[import-untyped, unused-ignore]

from workflows.drift.performance_models import (
    MAX_CHANGES,
    ChangePoint,
    DetectorMethod,
    DetectorState,
    LossKind,
)

FloatArray = npt.NDArray[np.float64]

# river's defaults: check every 32 observations, sub-windows of at least 5.
CLOCK = 32
MIN_WINDOW_LENGTH = 5
GRACE_PERIOD = 10


def adwin_delta(false_alarm_rate: float, horizon: int, clock: int = CLOCK) -> float:
    """ADWIN's per-check confidence for at most `false_alarm_rate` false alarms over
    `horizon` observations (union bound over the horizon's checks)."""
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), not {false_alarm_rate}")
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, not {horizon}")
    checks = max(1, horizon // clock)
    return false_alarm_rate / checks


def unit_losses(losses: npt.ArrayLike, kind: LossKind, scale: float | None = None) -> FloatArray:
    """The losses in [0, 1] for the detector: 0/1 errors as they are; others divided by `scale`
    (an upper bound stated by the caller, e.g. a high quantile of the reference's losses) and
    clipped to 1, so one huge error counts as one error, not as many."""
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"losses must be one-dimensional, not {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("losses must be finite")
    if (values < 0).any():
        raise ValueError("losses cannot be negative")
    if kind is LossKind.ZERO_ONE:
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError("0/1 losses must be 0 or 1")
        return values
    if scale is None or not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"{kind.value} losses are unbounded: give a positive scale (an upper bound, e.g. the "
            "reference's 99th percentile) to bring them into [0, 1]"
        )
    clipped: FloatArray = np.minimum(values / scale, 1.0)
    return clipped


def _least_squares_split(values: FloatArray, minimum: int) -> int | None:
    """The split k (values[:k] | values[k:]) maximising n1 n2 / n (mean1 - mean2)^2, both sides
    at least `minimum` long; None when the stretch is too short."""
    n = len(values)
    if n < 2 * minimum:
        return None
    cumulative = np.cumsum(values)
    k = np.arange(minimum, n - minimum + 1)
    left = cumulative[k - 1] / k
    right = (cumulative[-1] - cumulative[k - 1]) / (n - k)
    gain = k * (n - k) / n * (left - right) ** 2
    return int(k[int(np.argmax(gain))])


Times = Sequence[datetime] | npt.NDArray[np.datetime64]


def _time(times: Times | None, index: int) -> datetime | None:
    if times is None or index >= len(times):
        return None
    moment = times[index]
    if isinstance(moment, np.datetime64):
        moment = moment.astype("datetime64[us]").item()
    if not isinstance(moment, datetime):
        raise ValueError(f"times must be datetimes, not {type(moment).__name__}")
    # Naive times are UTC (numpy's datetime64 has no zone; the capture stores UTC).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def detect_changes(
    losses: npt.ArrayLike,
    *,
    kind: LossKind = LossKind.ZERO_ONE,
    scale: float | None = None,
    times: Times | None = None,
    false_alarm_rate: float = 0.01,
    horizon: int | None = None,
    clock: int = CLOCK,
) -> DetectorState:
    """Run ADWIN over the loss stream (time order) and describe every change it finds.

    `horizon`: the stream length the false-alarm rate is stated for (default: this stream's).
    `times`: each observation's time (the captured request's), for the change's timestamps.
    """
    raw = np.asarray(losses, dtype=np.float64)
    unit = unit_losses(raw, kind, scale)
    n = len(unit)
    if times is not None and len(times) != n:
        raise ValueError(f"{len(times)} times for {n} losses")
    horizon = horizon or max(n, 1)
    delta = adwin_delta(false_alarm_rate, horizon, clock)
    detector = drift.ADWIN(  # type: ignore[no-untyped-call, unused-ignore]
        delta=delta, clock=clock, min_window_length=MIN_WINDOW_LENGTH, grace_period=GRACE_PERIOD
    )
    # Change points and detection positions, in stream order.
    found: list[tuple[int, int]] = []
    segment_start = 0
    for index, value in enumerate(unit.tolist()):
        detector.update(value)  # type: ignore[no-untyped-call, unused-ignore]
        if not detector.drift_detected:
            continue
        split = _least_squares_split(unit[segment_start : index + 1], MIN_WINDOW_LENGTH)
        change = segment_start + split if split is not None else index
        found.append((change, index))
        # river restarts the detector after a detection; the next change is looked for in
        # the new regime, which began at this change point.
        segment_start = change
    changes = []
    bounds = [change for change, _ in found]
    for number, (change, detected) in enumerate(found):
        previous = bounds[number - 1] if number > 0 else 0
        following = bounds[number + 1] if number + 1 < len(bounds) else n
        changes.append(
            ChangePoint(
                index=change,
                detected_index=detected,
                at=_time(times, change),
                detected_at=_time(times, detected),
                # Means of the raw losses (in their own units), not of the scaled ones.
                mean_before=float(raw[previous:change].mean()),
                mean_after=float(raw[change:following].mean()),
            )
        )
    return DetectorState(
        method=DetectorMethod.ADWIN,
        loss=kind,
        loss_scale=1.0 if kind is LossKind.ZERO_ONE else float(scale or 1.0),
        false_alarm_rate=false_alarm_rate,
        horizon=horizon,
        delta=delta,
        clock=clock,
        observations=n,
        mean=float(raw.mean()) if n else None,
        changes=changes[-MAX_CHANGES:],
    )
