"""The drift statistics engine: agreement with scipy, invariants, storage, and why the
categorical test is a contingency test rather than goodness of fit."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]

from activities.drift import statistics as ds
from activities.drift.statistics import (
    EPSILON,
    OTHER_LABEL,
    UNSEEN_LABEL,
    CategoricalReference,
    NumericReference,
    build_categorical_reference,
    build_numeric_reference,
    categorical_drift,
    load_references,
    missing_rate_pvalue,
    numeric_drift,
    save_references,
)

TOL = 1e-9
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

Sampler = Callable[[np.random.Generator, int, bool], np.ndarray]


def _normal(rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    return rng.normal(0.08 if shifted else 0.0, 1.0, size)


def _discrete(rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    return rng.poisson(2.3 if shifted else 2.0, size).astype(np.float64)


def _point_mass(rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    # 60% exact zeros (heavy ties), the rest log-normal rounded to 0.1: more ties.
    values = np.round(rng.lognormal(0.2 if shifted else 0.0, 1.0, size), 1)
    values[rng.random(size) < (0.5 if shifted else 0.6)] = 0.0
    return values


def _scaled(rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    return rng.standard_t(5, size) * (1.3 if shifted else 1.0) * 1e4 + 5e5


SAMPLERS: dict[str, Sampler] = {
    "normal": _normal,
    "discrete": _discrete,
    "point_mass": _point_mass,
    "large_values": _scaled,
}
# (reference rows, current rows): scipy's exact p-value regime, the asymptotic one with both
# sides <= 10,000 (where scipy's default would be exact), larger samples in either order.
SIZES = [(30, 45), (60, 60), (300, 3_000), (5_000, 20_000), (20_000, 4_000)]


def _one(reference: NumericReference, current: np.ndarray) -> ds.NumericStats:
    return numeric_drift(reference, current.reshape(-1, 1))[0]


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Independent binning of unsorted values into (e_i-1, e_i]."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=edges.size + 1) / values.size


def _psi_kl(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    r = np.where(ref == 0, EPSILON, ref)
    c = np.where(cur == 0, EPSILON, cur)
    return float(np.sum((c - r) * np.log(c / r))), float(np.sum(c * np.log(c / r)))


# ---------------------------------------------------------------------- numeric vs scipy


# scipy's own fallback from its exact p-value (heavy ties, equal sizes): what ours does too.
@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("sampler", list(SAMPLERS), ids=str)
@pytest.mark.parametrize("shifted", [False, True], ids=["same", "shifted"])
def test_numeric_statistics_match_scipy(
    sampler: str, sizes: tuple[int, int], shifted: bool
) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{sampler}-{sizes}-{shifted}".encode()))
    ref = SAMPLERS[sampler](rng, sizes[0], False)
    cur = SAMPLERS[sampler](rng, sizes[1], shifted)
    reference = build_numeric_reference(["x"], ref.reshape(-1, 1))
    stats = _one(reference, cur)

    default = scipy.stats.ks_2samp(ref, cur)
    assert stats.ks_statistic == pytest.approx(default.statistic, abs=TOL)
    n, m = sizes
    if max(n, m) <= ds.EXACT_KS_MAX_N and n * m / (n + m) < ds.EXACT_KS_MAX_EN:
        assert stats.ks_pvalue == pytest.approx(default.pvalue, abs=TOL)
    else:
        asymp = scipy.stats.ks_2samp(ref, cur, method="asymp").pvalue
        assert stats.ks_pvalue == pytest.approx(asymp, abs=TOL, rel=TOL)
    w1 = scipy.stats.wasserstein_distance(ref, cur)
    assert stats.wasserstein == pytest.approx(w1, rel=TOL, abs=TOL)

    edges = reference.edges[0]
    expected_edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10, method="inverted_cdf"))
    np.testing.assert_array_equal(edges, expected_edges[expected_edges < ref.max()])
    ref_share, cur_share = _bin_shares(ref, edges), _bin_shares(cur, edges)
    assert (ref_share > 0).all(), "heavy ties must not leave a reference bin empty"
    np.testing.assert_allclose(reference.proportions[0], ref_share, rtol=0, atol=1e-15)
    psi, kl = _psi_kl(ref_share, cur_share)
    assert stats.psi == pytest.approx(psi, abs=TOL)
    assert stats.kl == pytest.approx(kl, abs=TOL)
    assert stats.js == pytest.approx(jensenshannon(ref_share, cur_share, base=2), abs=TOL)
    assert stats.js is not None and 0.0 <= stats.js <= 1.0


def test_ks_pvalue_fast_branch_matches_scipy() -> None:
    """The vectorised Smirnov sum against `scipy.stats.kstwo.sf` over the branch it replaces
    and around its borders (where scipy's own branches take over)."""
    for n in (141, 500, 4_000, 25_000, 90_909):
        for nx2 in (1.0, 2.19, 2.2, 3.0, 8.0, 40.0, 150.0, 369.0, 371.0):
            x = math.sqrt(nx2 / n)
            got = ds._kstwo_sf(x, n)
            expected = scipy.stats.kstwo.sf(x, n)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-11), (n, nx2)
        for x in (0.5, 0.7, 0.99):
            expected = scipy.stats.kstwo.sf(x, n)
            assert ds._kstwo_sf(x, n) == pytest.approx(expected, rel=1e-9, abs=1e-11)


def test_numeric_histogram_shows_the_bins_psi_compares() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 1, 5_000), rng.normal(1, 1, 8_000)
    reference = build_numeric_reference(["x"], ref.reshape(-1, 1))
    stats = _one(reference, cur)
    hist = stats.histogram
    edges = reference.edges[0]
    assert hist.edges == edges.tolist() and len(edges) == ds.DEFAULT_BINS - 1
    assert len(hist.labels) == len(edges) + 1 == len(hist.reference) == len(hist.current)
    # The reference's quantile bins: about a tenth of the reference in each.
    assert hist.reference == pytest.approx([0.1] * ds.DEFAULT_BINS, abs=1e-3)
    assert hist.current == pytest.approx(
        [np.mean(cur <= edges[0])]
        + [np.mean((cur > a) & (cur <= b)) for a, b in itertools.pairwise(edges)]
        + [np.mean(cur > edges[-1])],
        abs=1e-12,
    )
    # PSI is computed from exactly these shares.
    ref_share, cur_share = np.array(hist.reference), np.array(hist.current)
    assert stats.psi == pytest.approx(ds._psi_kl(ref_share, cur_share)[0], rel=1e-12)
    # Labels name the edges, short but distinct, open at both ends.
    assert hist.labels[0] == f"\u2264 {edges[0]:.3g}"
    assert hist.labels[-1] == f"> {edges[-1]:.3g}"
    assert hist.labels[1] == f"{edges[0]:.3g}\u2013{edges[1]:.3g}"


def test_edge_labels_get_digits_until_they_differ() -> None:
    assert ds.edge_labels([1.0, 2.5, 1234567.0, 98_765.4, 5_000.0]) == [
        "1",
        "2.5",
        "1.23M",
        "98.8k",
        "5000",
    ]
    assert ds.edge_labels([1234.5, 12.5, 2.0]) == ["1234", "12.5", "2"]
    assert ds.edge_labels([0.000012345, -0.5]) == ["1.23e-05", "-0.5"]
    assert ds.edge_labels([100.1, 100.2, 100.25]) == ["100.1", "100.2", "100.25"]


def test_numeric_edge_cases() -> None:
    values = np.array(
        [[1.0, np.nan, 7.0], [2.0, np.nan, 7.0], [np.inf, np.nan, 7.0], [3.0, np.nan, 7.0]]
    )
    reference = build_numeric_reference(["a", "all_missing", "constant"], values)
    assert reference.missing.tolist() == [1, 4, 0]
    assert reference.edges[1].size == 0 and reference.edges[2].size == 0
    current = np.array([[2.0, 1.0, 7.0], [np.nan, 2.0, 7.0], [-np.inf, 3.0, 7.0]])
    a, all_missing, constant = numeric_drift(reference, current)
    assert a.n_reference == 3 and a.n_current == 1
    assert a.missing_reference == 0.25 and a.missing_current == pytest.approx(2 / 3)
    assert all_missing.n_reference == 0 and all_missing.psi is None
    assert all_missing.ks_statistic is None and all_missing.wasserstein is None
    assert sum(all_missing.histogram.reference) == 0.0
    assert sum(all_missing.histogram.current) == pytest.approx(1.0)
    assert constant.psi == 0.0 and constant.ks_statistic == 0.0 and constant.wasserstein == 0.0
    assert constant.histogram.labels == ["7"] and constant.histogram.current == [1.0]
    # No columns, no rows.
    empty = build_numeric_reference([], np.empty((0, 0)))
    assert numeric_drift(empty, np.empty((10, 0))) == []
    no_rows = numeric_drift(reference, np.empty((0, 3)))
    assert [s.missing_current for s in no_rows] == [0.0, 0.0, 0.0]
    assert all(s.psi is None for s in no_rows)
    with pytest.raises(ValueError, match="shape"):
        numeric_drift(reference, np.zeros((2, 2)))


def test_numeric_columns_as_list_or_matrix() -> None:
    rng = np.random.default_rng(8)
    ref, cur = rng.normal(size=(300, 3)), rng.normal(0.2, 1, size=(400, 3))
    cur[::9, 1] = np.nan
    from_matrix = build_numeric_reference(["a", "b", "c"], ref)
    from_list = build_numeric_reference(["a", "b", "c"], list(ref.T))
    _assert_same_references(from_matrix, from_list)
    expected = numeric_drift(from_matrix, cur)
    columns = [cur[:, j].copy() for j in range(3)]
    assert numeric_drift(from_list, columns) == expected
    assert numeric_drift(from_list, np.asfortranarray(cur), threads=1) == expected
    np.testing.assert_array_equal(columns[1], cur[:, 1])  # the caller's arrays are not sorted
    with pytest.raises(ValueError, match="length"):
        numeric_drift(from_list, [cur[:, 0], cur[:, 1], cur[:10, 2]])
    with pytest.raises(ValueError, match="3 1-D columns"):
        numeric_drift(from_list, [cur[:, 0], cur[:, 1]])


def test_missing_rate_pvalue() -> None:
    z = (30 / 1000 - 60 / 1200) / math.sqrt((90 / 2200) * (1 - 90 / 2200) * (1 / 1000 + 1 / 1200))
    expected = 2 * scipy.stats.norm.sf(abs(z))
    assert missing_rate_pvalue(30, 1000, 60, 1200) == pytest.approx(expected, rel=1e-12)
    assert missing_rate_pvalue(0, 1000, 0, 50) == 1.0
    assert missing_rate_pvalue(10, 10, 5, 5) == 1.0
    assert missing_rate_pvalue(0, 0, 3, 5) == 1.0
    assert missing_rate_pvalue(0, 10_000, 2_000, 10_000) < 1e-100


# ---------------------------------------------------------------------- categorical vs scipy


def _table(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """The 2 x (K + 1) table built independently with pandas: reference categories, then one
    bucket for everything the reference never saw."""
    ref_counts = pd.Series(ref).value_counts(dropna=True)
    cur_counts = pd.Series(cur).value_counts(dropna=True)
    seen = cur_counts.index.isin(ref_counts.index)
    cur_on_ref = cur_counts[seen].reindex(ref_counts.index, fill_value=0)
    table = np.array(
        [
            [*ref_counts.to_numpy(), 0],
            [*cur_on_ref.to_numpy(), int(cur_counts[~seen].sum())],
        ]
    )
    return table[:, table.sum(axis=0) > 0]


CATEGORICAL_CASES = {
    # dof == 1: scipy applies Yates' correction.
    "two_categories": (["a", "b"], [0.7, 0.3], [0.64, 0.36], 400, 900),
    "two_categories_identical": (["a", "b"], [0.5, 0.5], [0.5, 0.5], 50, 60),
    "many_categories": ([f"c{i}" for i in range(30)], None, None, 3_000, 12_000),
    "one_seen_one_unseen": (["a", "new"], [1.0, 0.0], [0.9, 0.1], 200, 300),
}


@pytest.mark.parametrize("case", list(CATEGORICAL_CASES))
def test_categorical_statistics_match_scipy(case: str) -> None:
    categories, p_ref, p_cur, n, m = CATEGORICAL_CASES[case]
    rng = np.random.default_rng(len(case))
    k = len(categories)
    p_ref = p_ref or list(rng.dirichlet(np.ones(k)))
    p_cur = p_cur or list(rng.dirichlet(np.ones(k)))
    ref = rng.choice(np.array(categories, dtype=object), size=n, p=p_ref)
    cur = rng.choice(np.array([*categories, "unseen"], dtype=object), size=m, p=[*p_cur, 0.0])
    if case == "many_categories":
        cur[:5] = "unseen"
    reference = build_categorical_reference(["c"], [ref])
    stats = categorical_drift(reference, [cur])[0]

    table = _table(ref, cur)
    expected = scipy.stats.chi2_contingency(table)
    assert stats.chi2 == pytest.approx(expected.statistic, abs=TOL, rel=TOL)
    assert stats.chi2_pvalue == pytest.approx(expected.pvalue, abs=TOL, rel=TOL)
    assert stats.chi2_dof == expected.dof
    if expected.dof > 1:  # scipy's association() never applies Yates
        cramer = scipy.stats.contingency.association(table, method="cramer")
        assert stats.cramers_v == pytest.approx(cramer, abs=TOL)
    ref_share, cur_share = table[0] / table[0].sum(), table[1] / table[1].sum()
    psi, kl = _psi_kl(ref_share, cur_share)
    assert stats.psi == pytest.approx(psi, abs=TOL)
    assert stats.kl == pytest.approx(kl, abs=TOL)
    assert stats.js == pytest.approx(jensenshannon(ref_share, cur_share, base=2), abs=TOL)
    assert stats.unseen_share == pytest.approx(np.mean(~np.isin(cur, ref)), abs=1e-15)


def test_yates_correction_only_at_one_degree_of_freedom() -> None:
    ref = np.array(["a"] * 70 + ["b"] * 30, dtype=object)
    cur = np.array(["a"] * 55 + ["b"] * 45, dtype=object)
    stats = categorical_drift(build_categorical_reference(["c"], [ref]), [cur])[0]
    table = np.array([[70, 30], [55, 45]])
    corrected = scipy.stats.chi2_contingency(table, correction=True).statistic
    assert stats.chi2_dof == 1
    assert stats.chi2 == pytest.approx(corrected, rel=TOL)
    assert stats.chi2 < scipy.stats.chi2_contingency(table, correction=False).statistic


def test_contingency_not_goodness_of_fit() -> None:
    """An unshifted feature, 10x more current than reference rows. Goodness of fit against the
    reference's shares (as if they were exact) inflates the statistic by ~1 + m/n = 11 and flags
    drift that is not there; the two-sample contingency test does not."""
    categories = np.array([f"c{i}" for i in range(20)], dtype=object)
    shares = np.random.default_rng(0).dirichlet(np.full(20, 2.0))
    ratios, ours, gof = [], [], []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        ref = rng.choice(categories, size=2_000, p=shares)
        cur = rng.choice(categories, size=20_000, p=shares)
        reference = build_categorical_reference(["c"], [ref])
        stats = categorical_drift(reference, [cur])[0]
        assert stats.chi2 is not None and stats.chi2_pvalue is not None
        ref_counts = reference.counts[0]
        cur_counts = pd.Series(cur).value_counts().reindex(reference.categories[0], fill_value=0)
        expected = ref_counts / ref_counts.sum() * cur_counts.sum()
        fit = scipy.stats.chisquare(cur_counts.to_numpy(), f_exp=expected)
        ratios.append(fit.statistic / stats.chi2)
        ours.append(stats.chi2_pvalue)
        gof.append(fit.pvalue)
    assert 8.0 < float(np.mean(ratios)) < 14.0
    assert float(np.mean(ours)) > 0.2  # uniform under the null: ~0.5 on average
    assert float(np.mean(np.array(ours) < 0.01)) <= 0.2
    assert float(np.mean(np.array(gof) < 0.01)) >= 0.5  # false alarms on an unshifted feature


def test_categorical_histogram_top_other_unseen() -> None:
    rng = np.random.default_rng(5)
    categories = np.array([f"c{i:02d}" for i in range(30)], dtype=object)
    shares = np.linspace(1, 3, 30) / np.linspace(1, 3, 30).sum()
    ref = rng.choice(categories, size=3_000, p=shares)
    cur = rng.choice(categories, size=4_000, p=shares[::-1])
    cur[:40] = "never-seen"
    stats = categorical_drift(build_categorical_reference(["c"], [ref]), [cur])[0]
    hist = stats.histogram
    assert hist.labels[-2:] == [OTHER_LABEL, UNSEEN_LABEL]
    assert len(hist.labels) == ds.TOP_CATEGORIES + 2
    assert sum(hist.reference) == pytest.approx(1.0)
    assert sum(hist.current) == pytest.approx(1.0)
    assert hist.current[-1] == pytest.approx(40 / 4_000) == stats.unseen_share
    combined = [r + c for r, c in zip(hist.reference[:-2], hist.current[:-2], strict=True)]
    assert combined == sorted(combined, reverse=True)
    # Few categories, nothing unseen: no empty buckets.
    small = categorical_drift(
        build_categorical_reference(["c"], [np.array(["x", "y", "y"], dtype=object)]),
        [np.array(["y", "x"], dtype=object)],
    )[0]
    assert small.histogram.labels == ["y", "x"]


def test_categorical_inputs_and_missing_values() -> None:
    ref = np.array(["a", "b", None, "b", float("nan"), 1, "1"], dtype=object)
    reference = build_categorical_reference(["c"], [ref])
    # 1 and "1" are one category (compared as str); None and NaN are missing.
    assert reference.categories[0].tolist() == ["1", "a", "b"]
    assert reference.counts[0].tolist() == [2, 1, 2]
    assert reference.missing.tolist() == [2]
    current_forms: list[Any] = [
        np.array(["a", "b", "b", None, "z"], dtype=object),
        pd.Series(["a", "b", "b", None, "z"], dtype="string"),
        pa.array(["a", "b", "b", None, "z"]),
        pa.array(["a", "b", "b", None, "z"]).dictionary_encode(),
        pa.chunked_array([["a", "b"], ["b", None, "z"]]),
    ]
    results = [categorical_drift(reference, [form])[0] for form in current_forms]
    for stats in results:
        assert stats == results[0]
    assert results[0].missing_current == 0.2 and results[0].unseen_share == 0.25
    # Floats: NaN is missing whichever way it arrives (numpy NaN, or NaN inside arrow doubles).
    floats = build_categorical_reference(
        ["f", "g"],
        [np.array([1.0, np.nan, 2.0]), pa.array([1.0, float("nan"), 2.0], from_pandas=False)],
    )
    assert floats.missing.tolist() == [1, 1]
    assert floats.categories[0].tolist() == floats.categories[1].tolist() == ["1.0", "2.0"]
    # Empty sides.
    none_current = categorical_drift(reference, [np.array([None, None], dtype=object)])[0]
    assert none_current.chi2 is None and none_current.unseen_share is None
    assert none_current.missing_current == 1.0
    empty = build_categorical_reference([], [])
    assert empty.n_rows == 0 and categorical_drift(empty, []) == []
    with pytest.raises(ValueError, match="length"):
        build_categorical_reference(["a", "b"], [np.array(["x"]), np.array(["x", "y"])])


# ---------------------------------------------------------------------- properties

_values = st.lists(
    st.one_of(
        st.integers(-3, 3).map(float),  # ties
        st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=40,
)
_categories = st.lists(st.sampled_from(["a", "b", "c", "d", "e", ""]), min_size=1, max_size=40)


@PROPERTY_SETTINGS
@given(_values)
def test_identical_numeric_samples_show_no_drift(values: list[float]) -> None:
    sample = np.array(values)
    stats = _one(build_numeric_reference(["x"], sample.reshape(-1, 1)), sample)
    for value in (stats.psi, stats.kl, stats.js, stats.ks_statistic, stats.wasserstein):
        assert value == pytest.approx(0.0, abs=1e-12)
    assert stats.ks_pvalue == pytest.approx(1.0)
    assert stats.histogram.reference == stats.histogram.current


@PROPERTY_SETTINGS
@given(_categories)
def test_identical_categorical_samples_show_no_drift(values: list[str]) -> None:
    sample = np.array(values, dtype=object)
    stats = categorical_drift(build_categorical_reference(["c"], [sample]), [sample])[0]
    for value in (stats.psi, stats.kl, stats.js, stats.chi2, stats.cramers_v):
        assert value == pytest.approx(0.0, abs=1e-12)
    assert stats.chi2_pvalue == pytest.approx(1.0)
    assert stats.unseen_share == 0.0


@PROPERTY_SETTINGS
@given(_values, _values, st.randoms(use_true_random=False))
def test_numeric_statistics_ignore_row_order(
    ref: list[float], cur: list[float], random: Any
) -> None:
    reference = build_numeric_reference(["x"], np.array(ref).reshape(-1, 1))
    shuffled = list(cur)
    random.shuffle(shuffled)
    assert _one(reference, np.array(cur)) == _one(reference, np.array(shuffled))


@PROPERTY_SETTINGS
@given(_categories, _categories, st.randoms(use_true_random=False))
def test_categorical_statistics_ignore_row_order(
    ref: list[str], cur: list[str], random: Any
) -> None:
    reference = build_categorical_reference(["c"], [np.array(ref, dtype=object)])
    shuffled = list(cur)
    random.shuffle(shuffled)
    assert categorical_drift(reference, [np.array(cur, dtype=object)]) == categorical_drift(
        reference, [np.array(shuffled, dtype=object)]
    )


def _with_missing(values: list[Any], slots: list[int], missing: Any) -> list[Any]:
    out = list(values)
    for slot in slots:
        out.insert(slot % (len(out) + 1), missing)
    return out


@PROPERTY_SETTINGS
@given(_values, _values, st.lists(st.integers(0, 100), max_size=10), st.data())
def test_nan_changes_only_the_missing_rate(
    ref: list[float], cur: list[float], slots: list[int], data: st.DataObject
) -> None:
    ref_slots = data.draw(st.lists(st.integers(0, 100), max_size=5))
    clean_ref = build_numeric_reference(["x"], np.array(ref).reshape(-1, 1))
    gappy_ref = build_numeric_reference(
        ["x"], np.array(_with_missing(ref, ref_slots, math.nan)).reshape(-1, 1)
    )
    clean = _one(clean_ref, np.array(cur))
    gappy = _one(gappy_ref, np.array(_with_missing(cur, slots, math.nan)))
    assert gappy.missing_current == len(slots) / (len(cur) + len(slots))
    assert gappy.missing_reference == len(ref_slots) / (len(ref) + len(ref_slots))
    for field in ("n_reference", "n_current", "psi", "kl", "js", "ks_statistic"):
        assert getattr(gappy, field) == getattr(clean, field), field
    assert gappy.ks_pvalue == clean.ks_pvalue and gappy.wasserstein == clean.wasserstein
    assert gappy.histogram == clean.histogram


@PROPERTY_SETTINGS
@given(_categories, _categories, st.lists(st.integers(0, 100), max_size=10))
def test_missing_categories_change_only_the_missing_rate(
    ref: list[str], cur: list[str], slots: list[int]
) -> None:
    reference = build_categorical_reference(["c"], [np.array(ref, dtype=object)])
    clean = categorical_drift(reference, [np.array(cur, dtype=object)])[0]
    gappy_values = _with_missing(_with_missing(cur, slots[::2], None), slots[1::2], math.nan)
    gappy = categorical_drift(reference, [np.array(gappy_values, dtype=object)])[0]
    assert gappy.missing_current == len(slots) / (len(cur) + len(slots))
    for field in ("n_current", "psi", "kl", "js", "chi2", "chi2_pvalue", "unseen_share"):
        assert getattr(gappy, field) == getattr(clean, field), field
    assert gappy.histogram == clean.histogram


@PROPERTY_SETTINGS
@given(_categories, st.lists(st.sampled_from(["x", "y", "zz"]), min_size=1, max_size=20))
def test_unseen_categories_land_in_the_unseen_bucket(ref: list[str], new: list[str]) -> None:
    reference = build_categorical_reference(["c"], [np.array(ref, dtype=object)])
    cur = np.array(ref + new, dtype=object)
    stats = categorical_drift(reference, [cur])[0]
    assert stats.unseen_share == pytest.approx(len(new) / len(cur), abs=1e-15)
    assert stats.histogram.labels[-1] == UNSEEN_LABEL
    assert stats.histogram.current[-1] == pytest.approx(len(new) / len(cur), abs=1e-15)
    assert stats.histogram.reference[-1] == 0.0
    assert stats.chi2 is not None and stats.chi2_dof == len(set(ref))


# ---------------------------------------------------------------------- storage


def _references() -> tuple[NumericReference, CategoricalReference]:
    rng = np.random.default_rng(11)
    values = rng.normal(size=(500, 3))
    values[::7, 1] = np.nan
    values[:, 2] = np.nan  # an all-missing column
    categorical = [
        rng.choice(np.array(["é", "b", "", "long category name"], dtype=object), 500),
        np.array([None] * 500, dtype=object),
    ]
    return (
        build_numeric_reference(["x", "y", "z"], values),
        build_categorical_reference(["c", "empty"], categorical),
    )


def _assert_same_references(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    for field in a.__dataclass_fields__:
        left, right = getattr(a, field), getattr(b, field)
        if isinstance(left, list) and left and isinstance(left[0], np.ndarray):
            assert len(left) == len(right)
            for x, y in zip(left, right, strict=True):
                np.testing.assert_array_equal(x, y)
                assert x.dtype.kind == y.dtype.kind
        elif isinstance(left, np.ndarray):
            np.testing.assert_array_equal(left, right)
        else:
            assert left == right, field


def test_save_load_round_trip(tmp_path: Path) -> None:
    numeric, categorical = _references()
    path = tmp_path / "profiles" / "champion.npz"
    save_references(path, numeric, categorical)
    assert [p.name for p in path.parent.iterdir()] == ["champion.npz"]  # no temp file left
    loaded_numeric, loaded_categorical = load_references(path)
    _assert_same_references(numeric, loaded_numeric)
    _assert_same_references(categorical, loaded_categorical)
    rng = np.random.default_rng(12)
    current = rng.normal(0.1, 1, size=(800, 3))
    cats = [rng.choice(np.array(["é", "b", "new"], dtype=object), 800)] * 2
    assert numeric_drift(numeric, current) == numeric_drift(loaded_numeric, current)
    assert categorical_drift(categorical, cats) == categorical_drift(loaded_categorical, cats)
    # Overwriting is atomic and leaves one file.
    save_references(path, loaded_numeric, loaded_categorical)
    assert [p.name for p in path.parent.iterdir()] == ["champion.npz"]


def test_save_load_without_columns(tmp_path: Path) -> None:
    numeric = build_numeric_reference([], np.empty((0, 0)))
    categorical = build_categorical_reference([], [])
    path = tmp_path / "empty.npz"
    save_references(path, numeric, categorical)
    loaded_numeric, loaded_categorical = load_references(path)
    assert loaded_numeric.names == [] and loaded_categorical.names == []
    assert numeric_drift(loaded_numeric, np.empty((4, 0))) == []
