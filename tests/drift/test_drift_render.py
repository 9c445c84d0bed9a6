"""Drift reports for people: the self-contained HTML page and the rich terminal tables."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from html import escape
from html.parser import HTMLParser

from rich.console import Console

from activities.drift.formatting import format_number, format_pvalue, format_share, ordered_columns
from activities.drift.html import render_drift_html
from starters.cli.render.drift import (
    drift_report_header,
    drift_report_panel,
    drift_report_table,
    monitor_status_table,
)
from workflows.coordinator.triggers import Severity
from workflows.drift.models import (
    CheckRecord,
    ColumnDrift,
    Delivery,
    DriftReport,
    Histogram,
    MonitorStatus,
    ReportStatus,
)

T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
EVIL = "<script>alert('x')</script>"


def column(name: str, role: str, kind: str, status: str, **fields: object) -> ColumnDrift:
    base: dict[str, object] = {
        "name": name,
        "role": role,
        "kind": kind,
        "status": status,
        "n_reference": 50_000,
        "n_current": 12_000,
        "missing_reference": 0.0,
        "missing_current": 0.0,
        "threshold": 0.1,
        "weight": 1.0,
    }
    return ColumnDrift.model_validate(base | fields)


def numeric(name: str, status: str = "ok", role: str = "feature", **fields: object) -> ColumnDrift:
    return column(name, role, "numeric", status, **fields)


def categorical(
    name: str, status: str = "ok", role: str = "feature", **fields: object
) -> ColumnDrift:
    return column(name, role, "categorical", status, **fields)


COLUMNS = [
    numeric(
        "income",
        psi=0.02,
        kl=0.01,
        js=0.05,
        ks_statistic=0.03,
        ks_pvalue=0.2,
        wasserstein=1234.5,
        score=0.02,
        pvalue=0.2,
    ),
    categorical(
        "region",
        psi=0.04,
        kl=0.02,
        js=0.07,
        chi2=18.2,
        chi2_pvalue=0.002,
        chi2_dof=4,
        cramers_v=0.03,
        unseen_share=0.0,
        score=0.04,
        pvalue=0.002,
    ),
    numeric(
        "age",
        "drifted",
        psi=0.31,
        kl=0.2,
        js=0.21,
        ks_statistic=0.18,
        ks_pvalue=1e-12,
        wasserstein=4.2,
        score=0.31,
        pvalue=1e-12,
        significant=True,
        weight=2.0,
    ),
    # Large score, not significant: above its threshold, still ok.
    numeric(
        "score",
        role="prediction",
        psi=0.12,
        kl=0.08,
        js=0.1,
        ks_statistic=0.05,
        ks_pvalue=0.03,
        wasserstein=0.01,
        score=0.12,
        pvalue=0.03,
    ),
    categorical(
        "defaulted",
        role="label",
        psi=0.01,
        js=0.02,
        chi2=0.4,
        chi2_pvalue=0.52,
        chi2_dof=1,
        cramers_v=0.005,
        score=0.01,
        pvalue=0.52,
    ),
    categorical(
        "email_domain",
        "data_quality",
        psi=0.05,
        js=0.06,
        chi2=40.0,
        chi2_pvalue=0.0,
        chi2_dof=9,
        cramers_v=0.04,
        unseen_share=0.12,
        score=0.05,
        pvalue=0.0,
        missing_reference=0.01,
        missing_current=0.35,
        missing_pvalue=1e-9,
        issues=["missing rate 1% -> 35% (> +10%)", "unseen categories <12%> & rising"],
    ),
    categorical(
        EVIL,
        "drifted",
        psi=0.5,
        js=0.3,
        chi2=900.0,
        chi2_pvalue=1e-40,
        chi2_dof=2,
        cramers_v=0.25,
        score=0.5,
        pvalue=1e-40,
        significant=True,
    ),
    numeric("raw_score", psi=None, ks_statistic=None, score=None),
    categorical(
        "merchant",
        psi=0.08,
        js=0.09,
        chi2=51.0,
        chi2_pvalue=0.4,
        chi2_dof=39,
        cramers_v=0.02,
        score=0.08,
        pvalue=0.4,
    ),
]


def report(**fields: object) -> DriftReport:
    base: dict[str, object] = {
        "model": "credit",
        "check_id": "drift-credit-42",
        "checked_at": T0,
        "window_start": T0 - timedelta(hours=24),
        "window_end": T0,
        "profile_version": "7",
        "profile_source": "s3://bucket/credit/train.parquet",
        "reference_rows": 50_000,
        "rows": 12_000,
        "score": 0.62,
        "severity": "high",
        "status": "drift",
        "drifted": [EVIL, "age"],
        "data_quality": [
            "email_domain: missing rate 1% -> 35% (> +10%)",
            "email_domain: unseen categories <12%> & rising",
        ],
        "notes": ["column <new_col> is not in the reference profile"],
        "endpoint": "credit-prod",
        "columns": COLUMNS,
        "summary": f"2 columns drifted: age & {EVIL}\nemail_domain: missing values rose",
        "report_uri": "file:///tmp/reports/drift-credit-42.json",
        "html_uri": "file:///tmp/reports/drift-credit-42.html",
        "compute_seconds": 1.234,
    }
    return DriftReport.model_validate(base | fields)


def histograms() -> dict[str, Histogram]:
    def hist(labels: list[str], reference: list[float], current: list[float]) -> Histogram:
        return Histogram(labels=labels, reference=reference, current=current)

    edges = [f"{18 + 7 * i}-{25 + 7 * i}" for i in range(8)]
    merchants = [f"merchant-{i:02d}" for i in range(40)]
    return {
        "income": hist(
            ["0-20k", "20k-40k", "40k-60k", "60k+"], [0.2, 0.3, 0.3, 0.2], [0.22, 0.29, 0.3, 0.19]
        ),
        "region": hist(
            ["north", "south", "east", "west", "other"],
            [0.3, 0.2, 0.2, 0.2, 0.1],
            [0.28, 0.22, 0.2, 0.2, 0.1],
        ),
        "age": hist(
            edges,
            [0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.05, 0.05],
            [0.02, 0.05, 0.08, 0.15, 0.2, 0.25, 0.15, 0.1],
        ),
        "score": hist(
            ["0-0.25", "0.25-0.5", "0.5-0.75", "0.75-1"],
            [0.4, 0.3, 0.2, 0.1],
            [0.35, 0.3, 0.22, 0.13],
        ),
        "defaulted": hist(["0", "1"], [0.9, 0.1], [0.89, 0.11]),
        "email_domain": hist(
            ["gmail.com", "yahoo.com", "<unseen>", "other & co"],
            [0.5, 0.3, 0.0, 0.2],
            [0.4, 0.25, 0.12, 0.23],
        ),
        EVIL: hist(["<b>bold</b>", "a&b", '"quoted"'], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]),
        "merchant": hist(merchants, [1 / 40] * 40, [1 / 40] * 40),
        # "raw_score" has none on purpose.
    }


VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


class Structure(HTMLParser):
    """Checks tags nest and close, and collects section classes and ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[tuple[str, str]] = []
        self.roots = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.roots += 1
        if tag == "section":
            self.sections.append((values.get("class") or "", values.get("id") or ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def parse(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def console() -> Console:
    return Console(record=True, width=200, color_system=None)


def rendered(*renderables: object) -> str:
    out = console()
    for renderable in renderables:
        out.print(renderable)
    return out.export_text()


# ---- HTML --------------------------------------------------------------------------------------


def test_page_is_one_self_contained_document() -> None:
    page = render_drift_html(report(), histograms())
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    structure = parse(page)
    assert structure.roots == 1
    assert structure.errors == []
    assert structure.stack == []
    lowered = page.lower()
    # Nothing runs and nothing is fetched: it must open offline from a file.
    for forbidden in (
        "<script",
        "javascript:",
        " on",
        "http://",
        "https://",
        "<link",
        "<img",
        "src=",
        "url(",
        "@import",
        "<iframe",
    ):
        if forbidden == " on":
            assert not re.search(r"<[^>]*\son\w+\s*=", lowered), "event handler attribute"
        else:
            assert forbidden not in lowered, forbidden


def test_user_text_is_escaped() -> None:
    page = render_drift_html(report(), histograms())
    assert EVIL not in page
    assert escape(EVIL) in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "a&amp;b" in page
    assert "&quot;quoted&quot;" in page
    assert "unseen categories &lt;12%&gt; &amp; rising" in page
    assert "age &amp; " + escape(EVIL) in page
    assert "s3://bucket/credit/train.parquet" in page
    assert "column &lt;new_col&gt; is not in the reference profile" in page
    assert "credit-prod" in page
    # Data-quality entries link their column's section.
    assert (
        '<li><a href="#column-4">email_domain</a>: unseen categories &lt;12%&gt; &amp; rising</li>'
        in page
    )
    other = render_drift_html(report(data_quality=["x<y: changed type", "age"]), histograms())
    assert "<li>x&lt;y: changed type</li>" in other
    assert '<li><a href="#column-1">age</a></li>' in other


def test_every_column_has_a_row_and_a_section_drifted_first() -> None:
    r = report()
    page = render_drift_html(r, histograms())
    structure = parse(page)
    assert len(structure.sections) == len(r.columns)
    for c in r.columns:
        # In the summary table, in its section's heading, and linked from the table.
        assert page.count(f"<h3>{escape(c.name)}</h3>") == 1
        assert page.count(f">{escape(c.name)}</a></td>") == 1
    order = [c.name for c in ordered_columns(r)]
    assert order[:2] == [EVIL, "age"]  # drifted, by score
    assert order[-1] == "raw_score"  # no score: last
    assert [cls for cls, _ in structure.sections[:2]] == ["column drifted"] * 2
    assert all("drifted" not in cls for cls, _ in structure.sections[2:])
    assert ("column data_quality", "column-4") in structure.sections
    # Sections come in table order, so the headings follow `order`.
    headings = re.findall(r"<h3>(.*?)</h3>", page)
    assert headings == [escape(name) for name in order]
    # The header lists the drifted columns, linked to their sections.
    assert f'<a href="#column-0">{escape(EVIL)}</a>' in page
    assert '<a href="#column-1">age</a>' in page
    assert "2 drifted columns" in page


def test_one_chart_per_histogram() -> None:
    r = report()
    hists = histograms()
    page = render_drift_html(r, hists)
    assert page.count("<svg") == len(hists) == len(r.columns) - 1
    assert page.count("</svg>") == len(hists)
    assert "no histogram" in page
    assert page.count("reference</text>") == len(hists)  # a legend per chart
    # Many categories: rotated, thinned labels; every bin keeps its full label as a tooltip.
    merchant = page.split("merchant-00", 1)[1].split("</svg>", 1)[0]
    assert "rotate(-45" in merchant
    assert "1 in 2 labels shown" in merchant
    assert page.count("<title>merchant-") == 40
    assert page.count(">merchant-") < 40 + 40


def test_long_labels_are_cut_in_the_middle_and_kept_whole_in_tooltips() -> None:
    labels = [f"<merchant> category {i:02d}" for i in range(12)]
    hists = {"region": Histogram(labels=labels, reference=[1 / 12] * 12, current=[1 / 12] * 12)}
    page = render_drift_html(report(), hists)
    # Cut at the end, every one would read "<merchant> ca…".
    assert ">&lt;merch…gory 00</text>" in page
    assert ">&lt;merch…gory 11</text>" in page
    assert "<title>&lt;merchant&gt; category 11: reference 8.33%, current 8.33%" in page


def test_drifted_charts_are_red_and_numbers_compact() -> None:
    page = render_drift_html(report(), histograms())
    age = page.split("<h3>age</h3>", 1)[1].split("</section>", 1)[0]
    assert 'fill="#dc2626"' in age
    income = page.split("<h3>income</h3>", 1)[1].split("</section>", 1)[0]
    assert 'fill="#2563eb"' in income and 'fill="#dc2626"' not in income
    assert "1.00e-12" in age  # p-value < 1e-3: scientific
    assert "1,230" in income  # W1 1234.5, 3 significant digits
    assert "1% → 35%" in page
    assert "&lt;1e-300" in page  # chi2 p-value underflowed to 0
    assert "severity-high" in page


def test_formatting() -> None:
    assert format_number(None) == "\u2013"
    assert format_number(0) == "0"
    assert format_number(0.31234) == "0.312"
    assert format_number(1234.5) == "1,230"
    assert format_number(2.5e7) == "2.5e+07"
    assert format_number(0.0000123) == "1.23e-05"
    assert format_pvalue(0.0123) == "0.0123"
    assert format_pvalue(0.000123) == "1.23e-04"
    assert format_pvalue(0.0) == "<1e-300"
    assert format_share(0.125) == "12.5%"


def test_degenerate_reports_render() -> None:
    empty = report(
        status="insufficient_data",
        severity="low",
        score=0.0,
        drifted=[],
        data_quality=[],
        columns=[],
        summary="",
        profile_version=None,
        profile_source=None,
        report_uri=None,
        compute_seconds=None,
    )
    page = render_drift_html(empty, {})
    assert "no column statistics" in page
    assert "<svg" not in page
    assert parse(page).errors == []
    # Histograms that do not line up, or are empty, still render.
    odd = {
        "age": Histogram(labels=["a", "b", "c"], reference=[0.5, 0.5], current=[1.0, 0.0, 0.0]),
        "income": Histogram(labels=[], reference=[], current=[]),
    }
    page = render_drift_html(report(), odd)
    assert page.count("<svg") == 1
    assert "empty histogram" in page
    assert parse(page).errors == []


# ---- terminal ----------------------------------------------------------------------------------


def test_report_table_renders_drifted_first() -> None:
    markup = "[bold]tricky[/]"
    r = report(columns=[*COLUMNS, numeric(markup, score=0.001)])
    text = rendered(drift_report_table(r))
    for c in r.columns:
        assert c.name in text
    assert "credit: severity high, score 0.62 (PSI), drift, 12,000 rows vs 50,000 reference" in text
    lines = text.splitlines()
    evil_line = next(i for i, line in enumerate(lines) if EVIL in line)
    age_line = next(i for i, line in enumerate(lines) if "│ age " in line)
    income_line = next(i for i, line in enumerate(lines) if "│ income " in line)
    assert evil_line < age_line < income_line
    assert "drifted" in lines[age_line]
    assert "1.00e-12" in lines[age_line]
    assert " 900 " in lines[evil_line]  # chi2 for the categorical column
    assert "1% → 35%" in text
    assert "missing rate 1% -> 35%" in text
    assert "data quality" in text


def test_report_table_fits_narrow_terminals() -> None:
    # Rich crops what does not fit: the right edge must survive, the issues fold instead.
    for width in (100, 120):
        out = Console(record=True, width=width, color_system=None)
        out.print(drift_report_table(report()))
        lines = out.export_text().splitlines()[1:]
        assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in lines), width
        assert "1% → 35%" in "".join(lines)


def test_report_header_lines() -> None:
    lines = drift_report_header(report())
    text = "\n".join(line.plain for line in lines)
    assert "2024-06-02 09:00:00 - 2024-06-03 09:00:00 UTC (1d)" in text
    assert "7 from s3://bucket/credit/train.parquet" in text
    assert f"drifted  {EVIL}, age" in text
    assert "quality  email_domain: missing rate 1% -> 35% (> +10%)" in text
    assert "         email_domain: unseen categories <12%> & rising" in text
    assert "notes    column <new_col> is not in the reference profile" in text
    assert "endpoint credit-prod" in text
    assert "html     file:///tmp/reports/drift-credit-42.html" in text
    assert "severity high" in text
    panel = rendered(drift_report_panel(report(model="[/]")))
    assert "[/]" in panel


def record(i: int, **fields: object) -> CheckRecord:
    base: dict[str, object] = {
        "check_id": f"drift-credit-{i}",
        "checked_at": T0 + timedelta(hours=i),
        "status": "ok",
        "severity": "low",
        "score": 0.01 * i,
        "reason": "scheduled",
    }
    return CheckRecord.model_validate(base | fields)


def status(history: list[CheckRecord], last: DriftReport | None) -> MonitorStatus:
    return MonitorStatus(
        model="credit",
        enabled=True,
        interval_seconds=3600,
        checks=len(history),
        checking=False,
        next_check_at=T0 + timedelta(hours=1) if history else None,
        last_report=last,
        history=history,
    )


def test_monitor_status_with_empty_history() -> None:
    text = rendered(monitor_status_table(status([], None)))
    assert "drift-credit" in text
    assert "enabled" in text and "yes" in text
    assert "1h" in text
    assert "none yet" in text
    assert "last report" in text


def test_monitor_status_with_history() -> None:
    history = [record(i) for i in range(1, 13)]
    history.append(
        record(
            13,
            status=ReportStatus.DRIFT,
            severity=Severity.HIGH,
            score=0.62,
            drifted=["age", EVIL],
            trigger="drift",
            delivery=Delivery.SENT,
            delivery_note="coordinator accepted event drift-credit-13",
        )
    )
    history.append(
        record(
            14,
            status="drift",
            severity="critical",
            score=1.2,
            drifted=["age"],
            trigger="drift",
            delivery="failed",
            delivery_note="coordinator unreachable",
            reason="on demand",
        )
    )
    text = rendered(monitor_status_table(status(history, report())))
    assert "drift-credit-14" in text and "coordinator unreachable" in text
    assert "drift-credit-13" in text and "drift sent" in text
    assert "coordinator accepted event drift-credit-13" in text
    assert "drift failed" in text
    assert "on demand" in text
    assert "critical" in text
    # Newest first, the oldest beyond the first ten left out and counted.
    assert text.index("drift-credit-14 ") < text.index("drift-credit-13 ")
    assert "drift-credit-1 " not in text
    assert "4 older checks not shown" in text
    assert "drift-credit-42 at 2024-06-03 09:00:00: drift, severity high, score 0.62" in text
    assert "2 drifted" in text


def test_numeric_bins_are_labelled_by_their_edges_without_overlap() -> None:
    """Numeric charts show the quantile bins PSI compares, one edge number per boundary:
    never rotated, thinned when the numbers would touch, every range kept in its tooltip."""
    reference = report()
    for edges, readable in (
        ([1.5, 2.5, 3.5], True),
        ([12_345.678 * (i + 1) for i in range(9)], True),  # ten bins of five-digit values
        ([1_000_000.123456 + i * 0.001 for i in range(29)], False),
    ):
        labels = ["≤ a", *[f"b{i}" for i in range(len(edges) - 1)], "> z"]
        share = [1 / len(labels)] * len(labels)
        histogram = Histogram(labels=labels, reference=share, current=share, edges=edges)
        page = render_drift_html(reference, {"income": histogram})
        chart = page.split("<h3>income</h3>", 1)[1].split("</svg>", 1)[0]
        assert "rotate(-45" not in chart
        assert "the reference&#x27;s quantile bins, which PSI compares" in chart
        ticks = re.findall(
            r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle">([^<]+)</text>', chart
        )
        numbers = [(float(x), text) for x, text in ticks if text[0].isdigit()]
        thinned = re.search(r"1 in (\d+) labels shown", chart)
        step = int(thinned.group(1)) if thinned else 1
        assert (step == 1) == readable
        assert len(numbers) == len(edges) // step
        for (x1, a), (x2, b) in itertools.pairwise(numbers):
            # Centred labels: half of each, plus a gap, fit between their centres.
            assert x2 - x1 >= (len(a) + len(b)) / 2 * 6.2 + 4, (a, b)
        assert chart.count("<title>") == len(labels)
    assert "equal-width" not in page
