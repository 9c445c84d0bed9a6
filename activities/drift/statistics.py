"""Drift statistics: a reference profile, built once from the baseline, against a current window.

Pure and vectorised (no I/O except `save_references` / `load_references`, no randomness, no
Python loop over rows): 1,000,000 current rows x 20 numeric columns take well under a second.
The monitor's policy (thresholds, significance, severity) is applied elsewhere to these numbers.

Missing values are left out of every distribution statistic and reported as rates: NaN, and
+-inf too for numeric columns (an infinity has no place on a histogram and would make W1
infinite); None / NaN / pandas NA for categorical ones. A statistic needs at least one
non-missing value on both sides; otherwise it is None (the display histogram is still drawn
from what exists).

Numeric columns (`NumericReference`: the reference's sorted finite values, kept once):

- The current column is sorted once; everything below works on the two sorted arrays.
- KS: D = sup |F_ref - F_cur|, and W1 = integral |F_ref - F_cur| dx, both from one merge of the
  two sorted arrays (the reference's positions found by `searchsorted`; the running count of
  reference values along the merge gives n*m*(F_ref - F_cur) in exact integers). Ties are exact:
  the CDFs are read at the last value of each run of equal values, which is where scipy's
  `searchsorted(side="right")` reads them, so D equals `scipy.stats.ks_2samp(...).statistic`
  and W1 equals `scipy.stats.wasserstein_distance` up to float rounding (~1e-16 relative).
- KS p-value: with en = n*m / (n + m), when max(n, m) <= 10,000 and en < 100, scipy's exact
  distribution (`ks_2samp(method="exact")`, what scipy's default picks there; under 5 ms at that
  size); otherwise scipy's large-sample approximation, exactly as `ks_2samp(method="asymp")`
  computes it for two-sided tests: `kstwo.sf(D, round(en))` (its slowest branch vectorised, see
  `_kstwo_sf`). Why not scipy's default everywhere: its exact path (taken whenever
  max(n, m) <= 10,000) costs 0.1-0.5 s per column for moderately large, mildly drifted samples
  (measured: 0.56 s at 3,000 vs 10,000 rows), and from en ~ 100 on the approximation is within
  a few thousandths of it (measured: 0.004 at en = 180, 0.002 at en = 1,700).
- PSI, KL(current || reference) and Jensen-Shannon on the reference's `bins` quantile bins.
  Interior edges are inverted-CDF quantiles k/bins (reference values themselves), duplicates
  collapsed and an edge equal to the maximum dropped; bins are right-closed, (e_i-1, e_i], so
  every reference bin holds at least one value even under heavy ties (a value holding 40% of
  the reference gets a bin of its own instead of empty neighbours).
- Display histogram: 30 equal-width bins over [min of both 0.5th percentiles, max of both 99.5th
  percentiles]; values outside fall into the end bins.

Categorical columns (`CategoricalReference`: the reference's categories, as str, and counts):

- Values are compared as str (1 and "1" are one category). Counting uses pyarrow's hash
  `value_counts` (one pass); object arrays pyarrow cannot type (mixed Python types) fall back
  to `pandas.factorize`. Only the distinct values are then looked up, never the rows.
- Chi-square is a contingency test of the two samples on a 2 x (K + 1) table (the reference's K
  categories plus one bucket for categories it never saw; all-zero columns dropped), equal to
  `scipy.stats.chi2_contingency(table)` including its default Yates correction when dof == 1.
  It is not a goodness-of-fit test against the reference taken as exact: the reference is a
  sample too, and with 10x more current than reference rows that version inflates the
  statistic ~11x and flags unshifted columns.
- Cramer's V = sqrt(chi2 / (n_total * (min(rows, cols) - 1))), 0 when the table has one column.
- PSI / KL / JS over the same K + 1 buckets; unseen_share = share of the current non-missing
  values outside the reference's categories.
- Display histogram: the 20 categories with the largest combined share (reference + current),
  then "(other)" for the rest of the reference's categories and "(unseen)" for values the
  reference never saw, each present only when non-empty.

PSI = sum((c - r) * ln(c / r)) and KL = sum(c * ln(c / r)) replace an empty bin's share (0) by
`EPSILON` = 1e-4 on either side (as Evidently does, unless a non-empty share is even smaller): a
bin seen on one side only then weighs in like a 0.01% share instead of making the sum infinite.
Jensen-Shannon needs no epsilon (0 * log 0 = 0): it is the distance, base 2, in [0, 1], computed
as `scipy.spatial.distance.jensenshannon(reference, current, base=2)` computes it.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from scipy.special import gammaln, rel_entr  # type: ignore[import-untyped, unused-ignore]

from activities.files import plain_permissions
from workflows.drift.models import Histogram

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]
# Numeric columns: a list / tuple of 1-D arrays, or a (rows, columns) array.
NumericInput = Sequence[npt.ArrayLike] | npt.ArrayLike

# Share given to an empty bin in PSI and KL (see the module docstring).
EPSILON = 1e-4
DEFAULT_BINS = 10
TOP_CATEGORIES = 20
OTHER_LABEL = "(other)"
RANGE_DASH = "\u2013"  # an en dash, as in "1.23\u20134.56"
UNSEEN_LABEL = "(unseen)"
# KS p-value: scipy's exact distribution only where it is cheap (see the module docstring).
EXACT_KS_MAX_N = 10_000
EXACT_KS_MAX_EN = 100.0
REFERENCE_FORMAT = "drift-references/1"

_T = TypeVar("_T")
_R = TypeVar("_R")


# ---------------------------------------------------------------------- references


@dataclass(frozen=True)
class NumericReference:
    """The baseline's numeric columns, computed once and stored."""

    names: list[str]
    sorted_values: list[FloatArray]  # per column: finite values, ascending
    edges: list[FloatArray]  # per column: interior quantile edges, strictly increasing
    proportions: list[FloatArray]  # per column: reference share per bin (len(edges) + 1)
    n_rows: int  # rows, missing included
    missing: IntArray  # per column: missing (non-finite) count


@dataclass(frozen=True)
class CategoricalReference:
    """The baseline's categorical columns, computed once and stored."""

    names: list[str]
    categories: list[StrArray]  # per column: the categories seen, as str, sorted
    counts: list[IntArray]  # per column: count per category
    n_rows: int
    missing: IntArray


def build_numeric_reference(
    names: Sequence[str], values: NumericInput, bins: int = DEFAULT_BINS
) -> NumericReference:
    """`values`: the columns as a list of 1-D arrays (no copy into a matrix needed), or a 2-D
    (n_rows, len(names)) array; floats, NaN / +-inf = missing."""
    columns, n_rows = _numeric_columns(values, len(names))
    if bins < 2:
        raise ValueError("bins must be at least 2")
    sorted_values: list[FloatArray] = []
    edges: list[FloatArray] = []
    proportions: list[FloatArray] = []
    missing = np.zeros(len(names), dtype=np.int64)
    for j in range(len(names)):
        column = _sorted_finite(columns[j])
        column_edges = _quantile_edges(column, bins)
        counts = _bin_counts(column, column_edges)
        sorted_values.append(column)
        edges.append(column_edges)
        proportions.append(counts / column.size if column.size else counts.astype(np.float64))
        missing[j] = n_rows - column.size
    return NumericReference(
        names=list(names),
        sorted_values=sorted_values,
        edges=edges,
        proportions=proportions,
        n_rows=n_rows,
        missing=missing,
    )


def build_categorical_reference(
    names: Sequence[str], columns: Sequence[Any]
) -> CategoricalReference:
    """`columns`: one 1-D array per name (numpy str/object, pandas Series or pyarrow array, all of
    one length); None / NaN / NA = missing; values are compared as str."""
    n_rows = _common_length(names, columns)
    categories: list[StrArray] = []
    counts: list[IntArray] = []
    missing = np.zeros(len(names), dtype=np.int64)
    for j, column in enumerate(columns):
        values, value_counts, missing_count = _value_counts(column)
        categories.append(values)
        counts.append(value_counts)
        missing[j] = missing_count
    return CategoricalReference(
        names=list(names), categories=categories, counts=counts, n_rows=n_rows, missing=missing
    )


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class NumericStats:
    name: str
    n_reference: int  # non-missing values
    n_current: int
    missing_reference: float  # missing rate in [0, 1]
    missing_current: float
    missing_pvalue: float  # two-proportion z-test of the two missing rates
    psi: float | None
    kl: float | None
    js: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    wasserstein: float | None
    histogram: Histogram


@dataclass(frozen=True)
class CategoricalStats:
    name: str
    n_reference: int
    n_current: int
    missing_reference: float
    missing_current: float
    missing_pvalue: float
    psi: float | None
    kl: float | None
    js: float | None
    chi2: float | None
    chi2_pvalue: float | None
    chi2_dof: int | None
    cramers_v: float | None
    unseen_share: float | None  # None when the current window has no non-missing value
    histogram: Histogram


# ---------------------------------------------------------------------- numeric


def numeric_drift(
    reference: NumericReference, current: NumericInput, threads: int = 2
) -> list[NumericStats]:
    """`current`: the reference's columns, in its order, as a list of 1-D arrays or a 2-D
    (n_rows, columns) array (a row-major one is read with strides, ~5 ms more per 1M rows).

    Columns run on `threads` workers: sorting, searchsorted and the merge release the GIL.
    """
    columns, n_rows = _numeric_columns(current, len(reference.names))

    def column(j: int) -> NumericStats:
        return _numeric_column(reference, j, _sorted_finite(columns[j]), n_rows)

    return _map(column, list(range(len(reference.names))), threads)


def _numeric_column(
    reference: NumericReference, j: int, current: FloatArray, n_rows: int
) -> NumericStats:
    ref = reference.sorted_values[j]
    n, m = ref.size, current.size
    missing_ref = int(reference.missing[j])
    missing_cur = n_rows - m
    # The reference's quantile bins: what PSI, KL and JS compare, and what the chart shows.
    cur_share = _bin_counts(current, reference.edges[j]) / m if m else None
    base = NumericStats(
        name=reference.names[j],
        n_reference=n,
        n_current=m,
        missing_reference=_rate(missing_ref, reference.n_rows),
        missing_current=_rate(missing_cur, n_rows),
        missing_pvalue=missing_rate_pvalue(missing_ref, reference.n_rows, missing_cur, n_rows),
        psi=None,
        kl=None,
        js=None,
        ks_statistic=None,
        ks_pvalue=None,
        wasserstein=None,
        histogram=_numeric_histogram(ref, reference.edges[j], reference.proportions[j], cur_share),
    )
    if n == 0 or cur_share is None:
        return base
    d, w1 = _ks_wasserstein(ref, current)
    ref_share = reference.proportions[j]
    psi, kl = _psi_kl(ref_share, cur_share)
    return replace(
        base,
        psi=psi,
        kl=kl,
        js=_js(ref_share, cur_share),
        ks_statistic=d,
        ks_pvalue=_ks_pvalue(d, ref, current),
        wasserstein=w1,
    )


def _ks_wasserstein(ref: FloatArray, cur: FloatArray) -> tuple[float, float]:
    """KS D and W1 of two non-empty sorted samples, from one merge of the two."""
    n, m = ref.size, cur.size
    total = n + m
    # Merged order, reference values first among equals: a tie group's last position then
    # carries the counts of both samples up to and including that value.
    ref_pos = np.searchsorted(cur, ref, side="left")
    ref_pos += np.arange(n)
    is_ref = np.zeros(total, dtype=bool)
    is_ref[ref_pos] = True
    merged = np.empty(total, dtype=np.float64)
    merged[ref_pos] = ref
    merged[~is_ref] = cur
    # n*m*(F_ref - F_cur) along the merge: +m per reference value, -n per current one. Integers,
    # so float64 holds every partial sum exactly (while n*m < 2**53, i.e. ~9e15), and D and W1
    # are divided by n*m once at the end: fewer passes over the arrays than two ECDFs.
    gap = np.where(is_ref[:-1], float(m), float(-n))
    del is_ref  # temporaries go as soon as they are used: 2 threads x 1M rows add up
    np.cumsum(gap, out=gap)
    np.abs(gap, out=gap)
    deltas = np.diff(merged)
    del merged
    scale = float(n) * float(m)
    w1 = float(np.vecdot(gap, deltas)) / scale  # not np.dot: threaded BLAS is 10x slower here
    # Inside a tie group deltas are 0: those positions weigh nothing in W1 and must be skipped
    # by D (only a group's last position has both counts complete). `all` stops at the first 0.
    top = np.max(gap) if deltas.all() else np.max(gap, where=deltas > 0, initial=0.0)
    d = float(top) / scale
    return d, w1


def _ks_pvalue(d: float, ref: FloatArray, cur: FloatArray) -> float:
    n1, n2 = ref.size, cur.size
    # scipy's own expression (larger size first), so the rounding below is the same.
    big, small = sorted([float(n1), float(n2)], reverse=True)
    en = big * small / (big + small)
    if max(n1, n2) <= EXACT_KS_MAX_N and en < EXACT_KS_MAX_EN:
        # When the exact computation fails (float trouble with some tie patterns) scipy warns
        # and returns the asymptotic p-value, which is this module's rule anyway. The filter
        # is process-global for the duration: two threads here at once may at worst leave this
        # one message silenced.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation", RuntimeWarning)
            return float(scipy.stats.ks_2samp(ref, cur, method="exact").pvalue)
    return float(np.clip(_kstwo_sf(d, int(np.round(en))), 0.0, 1.0))


def _kstwo_sf(x: float, n: int) -> float:
    """`scipy.stats.kstwo.sf(x, n)`, with its slowest branch vectorised.

    For n > 140, x >= 0.5 or 2.2 <= n x^2 < 370, scipy returns 2 * `scipy.special.smirnov(n, x)`,
    whose C loop over the n(1 - x) terms of the Birnbaum-Tingey sum takes ~80 ms at n = 1e5 and
    holds the GIL (a scalar call), stalling the other columns. The same sum computed with numpy
    in log space takes ~5 ms, releases the GIL, and agrees to ~1e-11 (relative ~1e-10). Every other
    branch is cheap and left to scipy.
    """
    t = n * x
    nx2 = t * x
    if n > 140 and 1.0 < t < n - 1 and x < 1.0 and (x >= 0.5 or 2.2 <= nx2 < 370.0):
        return min(1.0, max(0.0, 2.0 * _smirnov(n, x)))
    return float(scipy.stats.kstwo.sf(x, n))


def _smirnov(n: int, x: float) -> float:
    """P(D+_n >= x) = sum over v <= n(1-x) of C(n,v) x (x + v/n)^(v-1) (1 - x - v/n)^(n-v)."""
    v = np.arange(math.floor(n * (1.0 - x)) + 1, dtype=np.float64)
    step = x + v / n
    with np.errstate(divide="ignore"):  # the last term may be 0^(n-v): log 0 = -inf, exp = 0
        log_terms = (
            gammaln(n + 1.0)
            - gammaln(v + 1.0)
            - gammaln(n - v + 1.0)
            + math.log(x)
            + (v - 1.0) * np.log(step)
            + (n - v) * np.log1p(-step)
        )
    return float(np.sum(np.exp(log_terms)))


def _numeric_histogram(
    ref: FloatArray, edges: FloatArray, ref_share: FloatArray, cur_share: FloatArray | None
) -> Histogram:
    """The bins PSI compares, as a chart shows them: the reference's quantile bins, labelled
    by their edges (`≤ a`, `a` to `b`, `> z`), the shares of each side per bin."""
    if edges.size == 0:  # no reference values, or all equal: one bin
        label = _format_number(float(ref[0]), 0.0) if ref.size else "all values"
        return Histogram(
            labels=[label],
            reference=[1.0 if ref.size else 0.0],
            current=[1.0 if cur_share is not None else 0.0],
        )
    shown = edge_labels(edges.tolist())
    labels = [
        f"\u2264 {shown[0]}",
        *(f"{a}{RANGE_DASH}{b}" for a, b in itertools.pairwise(shown)),
        f"> {shown[-1]}",
    ]
    current = [0.0] * len(labels) if cur_share is None else cur_share.tolist()
    return Histogram(
        labels=labels,
        reference=[float(share) for share in ref_share],
        current=[float(share) for share in current],
        edges=[float(edge) for edge in edges],
    )


def edge_labels(edges: list[float]) -> list[str]:
    """The shortest labels that keep every edge distinct: 3 significant digits or more, with
    k / M / G for thousands and up (12.3k, 4.56M), so that one fits under a bin."""
    for digits in range(3, 18):
        labels = [_compact(edge, digits) for edge in edges]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(edge) for edge in edges]


def _compact(value: float, digits: int) -> str:
    magnitude = abs(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if 1e4 <= magnitude < 1e12 and magnitude >= size:
            return f"{value / size:.{digits}g}{suffix}"
    if 1 <= magnitude < 1e4:  # whole digits rather than 5e+03
        decimals = max(0, digits - len(str(int(magnitude))))
        return f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"
    return f"{value:.{digits}g}"


def _format_number(value: float, step: float) -> str:
    """Enough digits to tell neighbouring bins apart (2 significant digits of the step)."""
    if not (step > 0 and math.isfinite(step)):
        return f"{value:.4g}"
    step_exponent = math.floor(math.log10(step))
    decimals = max(0, 1 - step_exponent)
    if decimals <= 6 and abs(value) < 1e9:
        return f"{value:.{decimals}f}"
    # Tiny steps or huge values: scientific notation, digits down to the step's second digit.
    value_exponent = math.floor(math.log10(abs(value))) if value else step_exponent
    return f"{value:.{min(17, max(2, value_exponent - step_exponent + 2))}g}"


def _sorted_finite(column: npt.NDArray[np.float64]) -> FloatArray:
    # One contiguous copy (a row-major matrix's column is read with strides once), sorted in
    # place; non-finite values are dropped only when there are any.
    values = np.array(column, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    values.sort()
    return values


def _quantile_edges(values: FloatArray, bins: int) -> FloatArray:
    """Interior edges: the inverted-CDF k/bins quantiles (the smallest value with at least
    k/bins of the sample at or below it), unique, below the maximum."""
    n = values.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    k = np.arange(1, bins, dtype=np.int64)
    index = (n * k + bins - 1) // bins - 1  # ceil(n k / bins) - 1, in integers
    edges = np.unique(values[index])
    below_max: FloatArray = edges[edges < values[-1]]
    return below_max


def _bin_counts(values: FloatArray, edges: FloatArray) -> IntArray:
    """Counts of sorted `values` in (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    at_or_below = np.searchsorted(values, edges, side="right")
    return np.diff(np.concatenate(([0], at_or_below, [values.size]))).astype(np.int64)


# ---------------------------------------------------------------------- categorical


def categorical_drift(
    reference: CategoricalReference, current: Sequence[Any], threads: int = 2
) -> list[CategoricalStats]:
    """`current`: one 1-D column per reference column, in the same order (see
    `build_categorical_reference` for what a column may be)."""
    n_rows = _common_length(reference.names, current)

    def column(j: int) -> CategoricalStats:
        return _categorical_column(reference, j, current[j], n_rows)

    return _map(column, list(range(len(reference.names))), threads)


def _categorical_column(
    reference: CategoricalReference, j: int, column: Any, n_rows: int
) -> CategoricalStats:
    categories = reference.categories[j]
    k = categories.size
    values, counts, missing_cur = _value_counts(column)
    # Current values onto the reference's categories; index k = unseen.
    where = np.searchsorted(categories, values)
    seen = where < k
    seen[seen] = categories[where[seen]] == values[seen]
    bucket = np.where(seen, where, k)
    cur_counts = np.zeros(k + 1, dtype=np.int64)
    np.add.at(cur_counts, bucket, counts)
    ref_counts = np.append(reference.counts[j], 0).astype(np.int64)
    n, m = int(ref_counts.sum()), int(cur_counts.sum())
    missing_ref = int(reference.missing[j])
    base = CategoricalStats(
        name=reference.names[j],
        n_reference=n,
        n_current=m,
        missing_reference=_rate(missing_ref, reference.n_rows),
        missing_current=_rate(missing_cur, n_rows),
        missing_pvalue=missing_rate_pvalue(missing_ref, reference.n_rows, missing_cur, n_rows),
        psi=None,
        kl=None,
        js=None,
        chi2=None,
        chi2_pvalue=None,
        chi2_dof=None,
        cramers_v=None,
        unseen_share=float(cur_counts[k] / m) if m else None,
        histogram=_categorical_histogram(categories, ref_counts, cur_counts),
    )
    if n == 0 or m == 0:
        return base
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    chi2, pvalue, dof = _chi2_contingency(table)
    rows, cols = table.shape
    smaller = min(rows, cols) - 1
    cramers_v = math.sqrt(chi2 / (n + m) / smaller) if smaller > 0 else 0.0
    ref_share, cur_share = table[0] / n, table[1] / m
    psi, kl = _psi_kl(ref_share, cur_share)
    return replace(
        base,
        psi=psi,
        kl=kl,
        js=_js(ref_share, cur_share),
        chi2=chi2,
        chi2_pvalue=pvalue,
        chi2_dof=dof,
        cramers_v=cramers_v,
    )


def _chi2_contingency(table: IntArray) -> tuple[float, float, int]:
    """Pearson's chi-square test of independence, as `scipy.stats.chi2_contingency(table)` with
    its defaults: Yates' continuity correction (each observed count moved by at most 0.5
    towards its expected count) when dof == 1; statistic 0 and p-value 1 when dof == 0."""
    observed = table.astype(np.float64)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True)
    expected /= observed.sum()
    dof = expected.size - sum(expected.shape) + expected.ndim - 1
    if dof == 0:
        return 0.0, 1.0, 0
    if dof == 1:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(scipy.stats.chi2.sf(statistic, dof)), int(dof)


def _categorical_histogram(
    categories: StrArray, ref_counts: IntArray, cur_counts: IntArray
) -> Histogram:
    k = categories.size
    ref_share = _shares(ref_counts)
    cur_share = _shares(cur_counts)
    combined = ref_share[:k] + cur_share[:k]
    # Largest combined share first; ties by name (categories are sorted, the sort is stable).
    order = np.argsort(-combined, kind="stable")
    top, rest = order[:TOP_CATEGORIES], order[TOP_CATEGORIES:]
    labels = [str(c) for c in categories[top]]
    reference = ref_share[top].tolist()
    current = cur_share[top].tolist()
    if rest.size:
        labels.append(OTHER_LABEL)
        reference.append(float(ref_share[rest].sum()))
        current.append(float(cur_share[rest].sum()))
    if cur_counts[k] > 0:
        labels.append(UNSEEN_LABEL)
        reference.append(0.0)
        current.append(float(cur_share[k]))
    return Histogram(
        labels=labels,
        reference=[min(1.0, share) for share in reference],
        current=[min(1.0, share) for share in current],
    )


def _shares(counts: IntArray) -> FloatArray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.size, dtype=np.float64)


def _value_counts(column: Any) -> tuple[StrArray, IntArray, int]:
    """(distinct non-missing values as str, sorted; their counts; missing count)."""
    try:
        array = (
            column
            if isinstance(column, pa.Array | pa.ChunkedArray)
            else pa.array(column, from_pandas=True)
        )
        if pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        counted = pc.value_counts(array)
        distinct: list[Any] = counted.field("values").to_pylist()
        counts: list[int] = counted.field("counts").to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Mixed Python types (e.g. 1 and "1"): hash the objects, then compare as str below.
        codes, uniques = pd.factorize(np.asarray(column, dtype=object), use_na_sentinel=True)
        distinct = [*uniques, None]
        counts = np.bincount(codes + 1, minlength=len(uniques) + 1).tolist()
        counts = counts[1:] + counts[:1]  # code -1 (missing) counted last, beside None
    # Loops over the distinct values (few), never over rows.
    missing = sum(c for v, c in zip(distinct, counts, strict=True) if _is_missing(v))
    present = [(str(v), c) for v, c in zip(distinct, counts, strict=True) if not _is_missing(v)]
    if not present:
        return np.empty(0, dtype="<U1"), np.empty(0, dtype=np.int64), missing
    names = np.array([name for name, _ in present], dtype=np.str_)
    values, inverse = np.unique(names, return_inverse=True)
    merged = np.zeros(values.size, dtype=np.int64)
    np.add.at(merged, inverse, np.array([c for _, c in present], dtype=np.int64))
    return values, merged, missing


def _is_missing(value: Any) -> bool:
    # pyarrow keeps NaN in float arrays it was given (only numpy input maps NaN to null).
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------- shared pieces


def missing_rate_pvalue(missing_ref: int, n_ref: int, missing_cur: int, n_cur: int) -> float:
    """Two-sided pooled two-proportion z-test of the missing rates; 1.0 when undefined (a side
    has no rows, or the pooled rate is 0 or 1)."""
    if n_ref <= 0 or n_cur <= 0:
        return 1.0
    if not (0 <= missing_ref <= n_ref and 0 <= missing_cur <= n_cur):
        raise ValueError("missing counts must lie between 0 and the row count")
    pooled = (missing_ref + missing_cur) / (n_ref + n_cur)
    if pooled <= 0.0 or pooled >= 1.0:
        return 1.0
    z = (missing_ref / n_ref - missing_cur / n_cur) / math.sqrt(
        pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur)
    )
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def _psi_kl(ref_share: FloatArray, cur_share: FloatArray) -> tuple[float, float]:
    r = np.where(ref_share > 0, ref_share, EPSILON)
    c = np.where(cur_share > 0, cur_share, EPSILON)
    log_ratio = np.log(c / r)
    return float(np.sum((c - r) * log_ratio)), float(np.sum(c * log_ratio))


def _js(ref_share: FloatArray, cur_share: FloatArray) -> float:
    """`scipy.spatial.distance.jensenshannon(ref_share, cur_share, base=2)`, step by step."""
    p = ref_share / np.sum(ref_share)
    q = cur_share / np.sum(cur_share)
    mid = (p + q) / 2.0
    js = (np.sum(rel_entr(p, mid)) + np.sum(rel_entr(q, mid))) / np.log(2.0)
    return float(np.sqrt(max(js / 2.0, 0.0)))  # rounding can leave -1e-17 when p == q


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def _numeric_columns(values: NumericInput, count: int) -> tuple[list[FloatArray], int]:
    """(one float64 1-D array per column, n_rows): a list or tuple holds columns, anything else
    is read as a (rows, columns) matrix."""
    if isinstance(values, list | tuple):
        columns = [np.asarray(column, dtype=np.float64) for column in values]
        if len(columns) != count or any(column.ndim != 1 for column in columns):
            raise ValueError(f"expected {count} 1-D columns")
        lengths = {column.size for column in columns}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: {sorted(lengths)}")
        return columns, lengths.pop() if lengths else 0
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1 and matrix.size == 0:
        matrix = matrix.reshape(0, count)
    if matrix.ndim != 2 or matrix.shape[1] != count:
        raise ValueError(f"expected a (rows, {count}) array, got shape {matrix.shape}")
    return [matrix[:, j] for j in range(count)], matrix.shape[0]


def _common_length(names: Sequence[str], columns: Sequence[Any]) -> int:
    if len(columns) != len(names):
        raise ValueError(f"{len(names)} names but {len(columns)} columns")
    lengths = {len(column) for column in columns}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _map(work: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    if threads <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(work, items))


# ---------------------------------------------------------------------- storage


def save_references(
    path: Path, numeric: NumericReference, categorical: CategoricalReference
) -> None:
    """One .npz (no pickles: strings are fixed-width unicode arrays), written to a temporary
    file beside `path` and renamed over it, so a reader never sees half a file."""
    arrays: dict[str, npt.NDArray[Any]] = {
        "format": np.array(REFERENCE_FORMAT),
        "numeric_names": _str_array(numeric.names),
        "numeric_n_rows": np.array(numeric.n_rows, dtype=np.int64),
        "numeric_missing": np.asarray(numeric.missing, dtype=np.int64),
        "categorical_names": _str_array(categorical.names),
        "categorical_n_rows": np.array(categorical.n_rows, dtype=np.int64),
        "categorical_missing": np.asarray(categorical.missing, dtype=np.int64),
    }
    for j in range(len(numeric.names)):
        arrays[f"numeric_{j}_sorted"] = numeric.sorted_values[j]
        arrays[f"numeric_{j}_edges"] = numeric.edges[j]
        arrays[f"numeric_{j}_proportions"] = numeric.proportions[j]
    for j in range(len(categorical.names)):
        arrays[f"categorical_{j}_categories"] = _str_array(categorical.categories[j].tolist())
        arrays[f"categorical_{j}_counts"] = np.asarray(categorical.counts[j], dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    plain_permissions(handle)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, allow_pickle=False, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_references(path: Path) -> tuple[NumericReference, CategoricalReference]:
    with np.load(Path(path), allow_pickle=False) as data:
        if str(data["format"]) != REFERENCE_FORMAT:
            raise ValueError(f"{path}: not a {REFERENCE_FORMAT} file")
        numeric_names = [str(name) for name in data["numeric_names"]]
        categorical_names = [str(name) for name in data["categorical_names"]]
        numeric = NumericReference(
            names=numeric_names,
            sorted_values=[data[f"numeric_{j}_sorted"] for j in range(len(numeric_names))],
            edges=[data[f"numeric_{j}_edges"] for j in range(len(numeric_names))],
            proportions=[data[f"numeric_{j}_proportions"] for j in range(len(numeric_names))],
            n_rows=int(data["numeric_n_rows"]),
            missing=data["numeric_missing"],
        )
        categorical = CategoricalReference(
            names=categorical_names,
            categories=[data[f"categorical_{j}_categories"] for j in range(len(categorical_names))],
            counts=[data[f"categorical_{j}_counts"] for j in range(len(categorical_names))],
            n_rows=int(data["categorical_n_rows"]),
            missing=data["categorical_missing"],
        )
    return numeric, categorical


def _str_array(values: Sequence[str]) -> StrArray:
    # np.str_ gives the fixed-width "<U<n>" dtype; an empty list still needs a width.
    return np.array(list(values), dtype=np.str_) if values else np.empty(0, dtype="<U1")
