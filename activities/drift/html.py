"""A drift report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

The page is stored beside the report JSON (a local directory, an artifact store) and opened from
there, often offline, so every chart is inline SVG, every style inline CSS, and a
Content-Security-Policy forbids the page from loading or running anything even if a browser
would. Everything that comes from data (column names, categories, issues, summary) is escaped.

The number formatting and the column order are shared with the terminal view
(`activities/drift/formatting.py`), so both show the same figures in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from string import Template

from activities.drift.formatting import (
    NONE,
    format_missing,
    format_number,
    format_pvalue,
    format_share,
    format_status,
    format_time,
    is_drifted,
    ordered_columns,
)
from activities.drift.statistics import edge_labels as edge_labels_of
from workflows.common.models import format_duration
from workflows.coordinator.triggers import Severity
from workflows.drift.models import (
    ColumnDrift,
    ColumnKind,
    ColumnStatus,
    DriftReport,
    Histogram,
    ReportStatus,
)

# ---- colours -----------------------------------------------------------------------------------

# Badge (background, text) per severity: low green, medium amber, high orange, critical red.
SEVERITY_COLOURS = {
    Severity.LOW: ("#15803d", "#ffffff"),
    Severity.MEDIUM: ("#f59e0b", "#1f1300"),
    Severity.HIGH: ("#ea580c", "#ffffff"),
    Severity.CRITICAL: ("#b91c1c", "#ffffff"),
}
# (background, text) per column status; the report statuses map onto the same four looks.
STATUS_COLOURS = {
    ColumnStatus.OK: ("#dcfce7", "#14532d"),
    ColumnStatus.DRIFTED: ("#b91c1c", "#ffffff"),
    ColumnStatus.DATA_QUALITY: ("#fef3c7", "#78350f"),
    ColumnStatus.INSUFFICIENT_DATA: ("#e2e8f0", "#334155"),
}
REPORT_STATUS_LOOK = {
    ReportStatus.OK: ColumnStatus.OK,
    ReportStatus.DRIFT: ColumnStatus.DRIFTED,
    ReportStatus.DATA_QUALITY: ColumnStatus.DATA_QUALITY,
    ReportStatus.INSUFFICIENT_DATA: ColumnStatus.INSUFFICIENT_DATA,
}
REFERENCE_FILL = "#94a3b8"
# The current distribution's bars take the column's status colour: a drifted column's chart is
# red at a glance, an unremarkable one blue.
CURRENT_FILL = {
    ColumnStatus.OK: "#2563eb",
    ColumnStatus.DRIFTED: "#dc2626",
    ColumnStatus.DATA_QUALITY: "#d97706",
    ColumnStatus.INSUFFICIENT_DATA: "#64748b",
}


def _badge(text: str, colours: tuple[str, str], css_class: str = "") -> str:
    background, foreground = colours
    return (
        f'<span class="badge {css_class}" style="background:{background};color:{foreground}">'
        f"{escape(text)}</span>"
    )


def _severity_badge(severity: Severity) -> str:
    return _badge(severity.value, SEVERITY_COLOURS[severity], f"severity-{severity.value}")


def _status_badge(status: ColumnStatus) -> str:
    return _badge(format_status(status.value), STATUS_COLOURS[status], f"status-{status.value}")


def _column_status(report: DriftReport, column: ColumnDrift) -> ColumnStatus:
    return ColumnStatus.DRIFTED if is_drifted(report, column) else column.status


def _pvalue_html(value: float | None) -> str:
    # "<1e-300" is the one formatted number with a character HTML needs escaped.
    return escape(format_pvalue(value))


# ---- the chart ---------------------------------------------------------------------------------

CHART_WIDTH = 560
PLOT_LEFT = 46
PLOT_RIGHT = 10
PLOT_TOP = 30
PLOT_HEIGHT = 150
LABEL_CHARS = 14
MAX_BAR = 28
# Approximate advance of an 11px sans-serif character, for laying out tick labels.
CHAR_PX = 6.2


def _short(label: str) -> str:
    # Cut from the middle: categories often share a prefix ("region-north", "region-south")
    # or a suffix, and either end may be the part that tells them apart.
    if len(label) <= LABEL_CHARS:
        return label
    head = (LABEL_CHARS - 1) // 2
    return label[:head] + "…" + label[-(LABEL_CHARS - 1 - head) :]


def _y_scale(peak: float) -> tuple[float, float]:
    """(tick step, axis top) with at most 5 ticks above zero."""
    for step in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        if peak <= 5 * step + 1e-12:
            return step, max(step, math.ceil(peak / step - 1e-9) * step)
    return 0.2, 1.0


def _svg_text(x: float, y: float, text: str, attrs: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" {attrs}>{escape(text)}</text>'


def render_chart(histogram: Histogram, column: ColumnDrift, status: ColumnStatus) -> str:
    """Grouped bars, reference vs current share per bin, as inline SVG."""
    bins = min(len(histogram.labels), len(histogram.reference), len(histogram.current))
    labels = histogram.labels[:bins]
    reference = histogram.reference[:bins]
    current = histogram.current[:bins]
    shown = [_short(label) for label in labels]
    widest = max(len(label) for label in shown) * CHAR_PX
    group = (CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT) / bins
    # Numeric bins are labelled by their edges, one number under each boundary (a range under
    # each bar would need twice the room); categories by name under their bars. Labels that do
    # not fit are thinned (numbers) or rotated, then thinned (categories, about 16px apart).
    # Each bin's tooltip has its full label regardless.
    edges = histogram.edges if len(histogram.edges) == bins - 1 else []
    numeric = bool(edges)
    edge_labels = edge_labels_of(edges)
    rotate = not numeric and widest > group - 4
    slant = widest * math.sin(math.radians(45))
    label_depth = slant + 14 if rotate else 16
    # A rotated first label reaches left of its bin: the plot moves right to keep it whole.
    left = max(PLOT_LEFT, math.ceil(slant - group / 2) + 2) if rotate else PLOT_LEFT
    plot_width = CHART_WIDTH - left - PLOT_RIGHT
    group = plot_width / bins
    step = max(1, math.ceil(16 / group)) if rotate else 1
    if numeric:
        room = max(len(text) for text in edge_labels) * CHAR_PX + 8
        step = max(1, math.ceil(room / group))
    height = round(PLOT_TOP + PLOT_HEIGHT + label_depth + 24)
    base = PLOT_TOP + PLOT_HEIGHT
    tick, top = _y_scale(max([*reference, *current], default=0.0))
    current_fill = CURRENT_FILL[status]

    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" '
        f'height="{height}" role="img" aria-label="{escape(column.name)}: reference vs current '
        f'share per bin" font-family="system-ui, sans-serif" font-size="11">',
        # Legend.
        f'<rect x="{left}" y="8" width="12" height="12" fill="{REFERENCE_FILL}"/>',
        _svg_text(left + 16, 18, "reference"),
        f'<rect x="{left + 90}" y="8" width="12" height="12" fill="{current_fill}"/>',
        _svg_text(left + 106, 18, "current"),
    ]
    # Y grid and ticks.
    ticks = round(top / tick)
    for i in range(ticks + 1):
        value = i * tick
        y = base - value / top * PLOT_HEIGHT
        parts.append(
            f'<line x1="{left}" x2="{CHART_WIDTH - PLOT_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#64748b" if i == 0 else "#e2e8f0"}"/>'
        )
        parts.append(_svg_text(left - 4, y + 4, format_share(value), 'text-anchor="end"'))
    parts.append(
        _svg_text(
            12,
            PLOT_TOP + PLOT_HEIGHT / 2,
            "share of rows",
            f'text-anchor="middle" transform="rotate(-90 12 {PLOT_TOP + PLOT_HEIGHT / 2:.1f})"',
        )
    )
    # A few bins would make slabs: bars stop growing at MAX_BAR and the pair is centred.
    bar = min(group * 0.76 / 2, MAX_BAR)
    pad = (group - 2 * bar) / 2
    for i, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = left + i * group
        ref_height = ref / top * PLOT_HEIGHT
        cur_height = cur / top * PLOT_HEIGHT
        # The tooltip (SVG <title>) needs no script: the browser shows it on hover.
        parts.append(
            f"<g><title>{escape(label)}: reference {format_share(ref)}, "
            f"current {format_share(cur)}</title>"
            f'<rect x="{x + pad:.1f}" y="{base - ref_height:.1f}" width="{bar:.1f}" '
            f'height="{ref_height:.1f}" fill="{REFERENCE_FILL}"/>'
            f'<rect x="{x + pad + bar:.1f}" y="{base - cur_height:.1f}" width="{bar:.1f}" '
            f'height="{cur_height:.1f}" fill="{current_fill}"/></g>'
        )
        if numeric or i % step:
            continue
        centre = x + group / 2
        if rotate:
            parts.append(
                _svg_text(
                    centre + 3,
                    base + 12,
                    shown[i],
                    f'text-anchor="end" transform="rotate(-45 {centre + 3:.1f} {base + 12:.1f})"',
                )
            )
        else:
            parts.append(_svg_text(centre, base + 14, shown[i], 'text-anchor="middle"'))
    for k, text in enumerate(edge_labels):
        if (k + 1) % step:
            continue
        boundary = left + (k + 1) * group
        parts.append(
            f'<line x1="{boundary:.1f}" x2="{boundary:.1f}" y1="{base:.1f}" '
            f'y2="{base + 4:.1f}" stroke="#64748b"/>'
        )
        parts.append(_svg_text(boundary, base + 15, text, 'text-anchor="middle"'))
    if column.kind is ColumnKind.CATEGORICAL:
        axis = "category"
    else:
        axis = "value: the reference's quantile bins, which PSI compares"
    if step > 1:
        axis += f", 1 in {step} labels shown"
    parts.append(
        _svg_text(
            left + plot_width / 2,
            height - 6,
            axis,
            'text-anchor="middle" fill="#475569"',
        )
    )
    parts.append("</svg>")
    return "".join(parts)


# ---- the page ------------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #0f172a;
  background: #f8fafc; margin: 0; padding: 24px; }
main { max-width: 1600px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0; word-break: break-word; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; white-space: nowrap; vertical-align: middle; }
.summary { white-space: pre-line; font-size: 15px; margin: 10px 0; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
.facts dt { color: #475569; }
.facts dd { margin: 0; word-break: break-word; }
.callout { border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.callout.drift { background: #fee2e2; border-left: 4px solid #b91c1c; }
.callout.quality { background: #fef3c7; border-left: 4px solid #d97706; }
.callout.notes { background: #f1f5f9; border-left: 4px solid #94a3b8; }
.callout ul { margin: 4px 0 0; padding-left: 20px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; background: #ffffff; font-size: 13px; }
th, td { padding: 4px 6px; border-bottom: 1px solid #e2e8f0; text-align: left;
  vertical-align: top; }
th { background: #f1f5f9; white-space: nowrap; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.drifted td { background: #fef2f2; }
tr.drifted td:first-child { box-shadow: inset 4px 0 #b91c1c; font-weight: 600; }
tr.data_quality td:first-child { box-shadow: inset 4px 0 #d97706; }
td.issues { min-width: 150px; }
a { color: inherit; }
.meter { display: inline-block; position: relative; width: 40px; height: 8px;
  background: #e2e8f0; border-radius: 2px; margin-left: 6px; vertical-align: middle; }
.meter span { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 2px; }
.meter i { position: absolute; left: 50%; top: -2px; bottom: -2px; border-left: 1px solid #0f172a; }
.column { background: #ffffff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 16px;
  margin: 12px 0; }
.column.drifted { border: 2px solid #b91c1c; box-shadow: 0 0 0 3px #fee2e2; }
.column.data_quality { border-left: 4px solid #d97706; }
.column header { display: flex; gap: 10px; align-items: center; flex-wrap: wrap;
  margin-bottom: 8px; }
.column .meta { color: #475569; }
.column .body { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.column .chart { max-width: 100%; height: auto; }
.column .nohist { width: 560px; max-width: 100%; padding: 40px 0; text-align: center;
  color: #64748b; background: #f8fafc; border: 1px dashed #cbd5e1; border-radius: 6px; }
.numbers { display: grid; grid-template-columns: max-content max-content; gap: 1px 14px;
  margin: 0; font-size: 13px; }
.numbers dt { color: #475569; }
.numbers dd { margin: 0; font-variant-numeric: tabular-nums; }
.numbers dd.hot { color: #b91c1c; font-weight: 700; }
.numbers dd.warm { color: #b45309; font-weight: 700; }
.issues-list { margin: 8px 0 0; padding: 6px 10px 6px 28px; background: #fef3c7;
  border-radius: 6px; }
footer { color: #64748b; font-size: 12px; margin-top: 28px; }
@media print { body { background: #ffffff; padding: 0; } .column { break-inside: avoid; } }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>$title</title>
<style>$css</style>
</head>
<body>
<main>
$body
</main>
</body>
</html>
""")


def _anchor(index: int) -> str:
    # Ids by position: column names can hold anything, ids should not.
    return f"column-{index}"


def _fact(term: str, value: str) -> str:
    """A <dt>/<dd> pair; `value` is HTML the caller already escaped."""
    return f"<dt>{escape(term)}</dt><dd>{value}</dd>"


def _header(report: DriftReport, anchors: dict[str, str]) -> str:
    status_look = REPORT_STATUS_LOOK[report.status]
    window = report.window_end - report.window_start
    profile = escape(
        f"v{report.profile_version}" if report.profile_version else "baseline (no champion)"
    )
    if report.profile_source:
        profile += f" <span class='meta'>from {escape(report.profile_source)}</span>"
    facts = [
        _fact("check", escape(report.check_id)),
        _fact("checked at", f"{format_time(report.checked_at)} UTC"),
        _fact(
            "window",
            f"{format_time(report.window_start)} \u2013 {format_time(report.window_end)} UTC "
            f"({format_duration(window)})",
        ),
        _fact("rows", f"{report.rows:,} current vs {report.reference_rows:,} reference"),
        _fact("endpoint", escape(report.endpoint or NONE)),
        _fact("reference profile", profile),
        _fact("statistic", escape(report.statistic.value.upper())),
        _fact(
            "overall score",
            f"<strong>{format_number(report.score)}</strong> "
            "<span class='meta'>(largest weight &times; score among drifted columns)</span>",
        ),
        _fact("severity", _severity_badge(report.severity)),
        _fact(
            "status",
            _badge(format_status(report.status.value), STATUS_COLOURS[status_look]),
        ),
    ]
    if report.report_uri:
        facts.append(_fact("report JSON", f"<code>{escape(report.report_uri)}</code>"))
    if report.compute_seconds is not None:
        facts.append(_fact("computed in", f"{format_number(report.compute_seconds)} s"))
    parts = [
        f"<header><h1>Drift report: {escape(report.model)} {_severity_badge(report.severity)} "
        f"{_badge(format_status(report.status.value), STATUS_COLOURS[status_look])}</h1>",
    ]
    if report.summary:
        parts.append(f'<p class="summary">{escape(report.summary)}</p>')
    parts.append(f'<dl class="facts">{"".join(facts)}</dl>')
    if report.drifted:
        items = "".join(f"<li>{_column_link(name, anchors)}</li>" for name in report.drifted)
        parts.append(
            f'<div class="callout drift"><strong>{len(report.drifted)} drifted '
            f"column{'s' if len(report.drifted) != 1 else ''}</strong><ul>{items}</ul></div>"
        )
    quality = _quality_items(report, anchors)
    if quality:
        parts.append(
            f'<div class="callout quality"><strong>data quality</strong>'
            f"<ul>{''.join(quality)}</ul></div>"
        )
    if report.notes:
        items = "".join(f"<li>{escape(note)}</li>" for note in report.notes)
        parts.append(f'<div class="callout notes"><strong>notes</strong><ul>{items}</ul></div>')
    parts.append("</header>")
    return "\n".join(parts)


def _column_link(name: str, anchors: dict[str, str]) -> str:
    if name in anchors:
        return f'<a href="#{anchors[name]}">{escape(name)}</a>'
    return escape(name)


def _quality_items(report: DriftReport, anchors: dict[str, str]) -> list[str]:
    """The report's data-quality entries ("column: issue", or a bare column name), with the
    column linked to its section."""
    # Longest names first: a name may itself contain ": " ("a: b: issue" is column "a: b").
    names = sorted(anchors, key=len, reverse=True)
    items = []
    for entry in report.data_quality:
        if entry in anchors:
            items.append(f"<li>{_column_link(entry, anchors)}</li>")
            continue
        name = next((n for n in names if entry.startswith(f"{n}: ")), None)
        if name is None:
            items.append(f"<li>{escape(entry)}</li>")
        else:
            rest = entry[len(name) :]
            items.append(f"<li>{_column_link(name, anchors)}{escape(rest)}</li>")
    return items


def _meter(column: ColumnDrift, status: ColumnStatus) -> str:
    """Score against threshold: the tick is the threshold, the bar is full at twice it."""
    if column.score is None:
        return ""
    ratio = min(column.score / column.threshold, 2.0) / 2
    if status is ColumnStatus.DRIFTED:
        fill = "#dc2626"
    elif column.score >= column.threshold:
        # Large but not significant: worth a look, not a drift.
        fill = "#f59e0b"
    else:
        fill = "#64748b"
    return (
        f'<span class="meter" title="score / threshold = {format_number(ratio * 2)}">'
        f'<span style="width:{ratio * 100:.1f}%;background:{fill}"></span><i></i></span>'
    )


def _issues_html(issues: Iterable[str]) -> str:
    return "<br>".join(escape(issue) for issue in issues) or NONE


def _summary_table(report: DriftReport, columns: list[ColumnDrift]) -> str:
    headings = [
        "column",
        "role",
        "kind",
        "status",
        "score",
        "threshold",
        "weight",
        "p-value",
        "PSI",
        "JS",
        "KS D",
        "W1",
        "chi2",
        "Cramér's V",
        "missing\nref→cur",
        "issues",
    ]
    # Headings do not wrap except where a line break is asked for: the table must fit.
    head = "".join(f"<th>{escape(h).replace(chr(10), '<br>')}</th>" for h in headings)
    rows = []
    for index, column in enumerate(columns):
        status = _column_status(report, column)
        cells = [
            f'<td><a href="#{_anchor(index)}">{escape(column.name)}</a></td>',
            f"<td>{escape(column.role.value)}</td>",
            f"<td>{escape(column.kind.value)}</td>",
            f"<td>{_status_badge(status)}</td>",
            f'<td class="num">{format_number(column.score)}{_meter(column, status)}</td>',
            f'<td class="num">{format_number(column.threshold)}</td>',
            f'<td class="num">{format_number(column.weight)}</td>',
            f'<td class="num">{_pvalue_html(column.pvalue)}</td>',
            f'<td class="num">{format_number(column.psi)}</td>',
            f'<td class="num">{format_number(column.js)}</td>',
            f'<td class="num">{format_number(column.ks_statistic)}</td>',
            f'<td class="num">{format_number(column.wasserstein)}</td>',
            f'<td class="num">{format_number(column.chi2)}</td>',
            f'<td class="num">{format_number(column.cramers_v)}</td>',
            f'<td class="num">{format_missing(column)}</td>',
            f'<td class="issues">{_issues_html(column.issues)}</td>',
        ]
        rows.append(f'<tr class="{status.value}">{"".join(cells)}</tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(headings)}">no column statistics</td></tr>')
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _numbers(report: DriftReport, column: ColumnDrift, status: ColumnStatus) -> str:
    over = column.score is not None and column.score >= column.threshold
    # Red only for drift; a large score without significance is amber, as in the table's meter.
    hot = "" if not over else ' class="hot"' if status is ColumnStatus.DRIFTED else ' class="warm"'
    weighted = None if column.score is None else column.score * column.weight
    missing_p = (
        "" if column.missing_pvalue is None else f" (p {_pvalue_html(column.missing_pvalue)})"
    )
    items = [
        (f"score ({report.statistic.value.upper()})", format_number(column.score), hot),
        ("threshold", format_number(column.threshold), ""),
        ("weight → weighted", f"{format_number(column.weight)} → {format_number(weighted)}", ""),
        (
            "significant",
            f"{'yes' if column.significant else 'no'} (p {_pvalue_html(column.pvalue)})",
            ' class="hot"' if column.significant and status is ColumnStatus.DRIFTED else "",
        ),
        ("PSI", format_number(column.psi), ""),
        ("KL", format_number(column.kl), ""),
        ("JS distance", format_number(column.js), ""),
    ]
    if column.kind is ColumnKind.NUMERIC:
        items += [
            ("KS D", format_number(column.ks_statistic), ""),
            ("KS p-value", _pvalue_html(column.ks_pvalue), ""),
            ("Wasserstein (W1)", format_number(column.wasserstein), ""),
        ]
    else:
        dof = "" if column.chi2_dof is None else f" ({column.chi2_dof} dof)"
        items += [
            ("chi2", format_number(column.chi2) + dof, ""),
            ("chi2 p-value", _pvalue_html(column.chi2_pvalue), ""),
            ("Cramér's V", format_number(column.cramers_v), ""),
            ("unseen categories", format_share(column.unseen_share), ""),
        ]
    items += [
        ("rows ref / cur", f"{column.n_reference:,} / {column.n_current:,}", ""),
        ("missing ref → cur", format_missing(column) + missing_p, ""),
    ]
    body = "".join(f"<dt>{escape(k)}</dt><dd{cls}>{v}</dd>" for k, v, cls in items)
    return f'<dl class="numbers">{body}</dl>'


def _column_section(
    report: DriftReport, index: int, column: ColumnDrift, histogram: Histogram | None
) -> str:
    status = _column_status(report, column)
    if histogram is None:
        chart = '<div class="nohist">no histogram</div>'
    elif min(len(histogram.labels), len(histogram.reference), len(histogram.current)) == 0:
        chart = '<div class="nohist">empty histogram</div>'
    else:
        chart = render_chart(histogram, column, status)
    issues = ""
    if column.issues:
        issues = (
            '<ul class="issues-list">'
            + "".join(f"<li>{escape(issue)}</li>" for issue in column.issues)
            + "</ul>"
        )
    return (
        f'<section class="column {status.value}" id="{_anchor(index)}">'
        f"<header><h3>{escape(column.name)}</h3>{_status_badge(status)}"
        f'<span class="meta">{escape(column.role.value)} · {escape(column.kind.value)}</span>'
        f"</header>"
        f'<div class="body">{chart}{_numbers(report, column, status)}</div>{issues}</section>'
    )


def render_drift_html(report: DriftReport, histograms: dict[str, Histogram]) -> str:
    """The report as one HTML5 document (no script, no external resources)."""
    columns = ordered_columns(report)
    anchors: dict[str, str] = {}
    for index, column in enumerate(columns):
        anchors.setdefault(column.name, _anchor(index))
    drifted = sum(is_drifted(report, column) for column in columns)
    sections = [
        _column_section(report, index, column, histograms.get(column.name))
        for index, column in enumerate(columns)
    ]
    body = [
        _header(report, anchors),
        f"<h2>Columns ({len(columns)}, {drifted} drifted)</h2>",
        _summary_table(report, columns),
        "<h2>Distributions</h2>",
        *sections,
        "<footer>A column drifts when its score reaches its threshold and its shift is "
        "significant (KS for numeric, chi-square for categorical columns, Bonferroni-corrected). "
        "Numeric charts show the reference profile's quantile bins, the bins PSI, KL and JS "
        "compare (about the same share of reference rows in each, so a current bar above or "
        "below its reference bar is where the distribution moved); categorical charts show "
        "the most frequent categories.</footer>",
    ]
    return PAGE.substitute(
        title=escape(f"Drift report: {report.model} ({report.check_id})"),
        css=CSS,
        body="\n".join(body),
    )
