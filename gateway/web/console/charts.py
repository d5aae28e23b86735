"""The console's charts, drawn on the gateway as SVG.

Server-rendered SVG, not a JavaScript charting library: the figures already live in
Python (the judge's definitions, the records), the page needs no build step and no
vendored code, and the browser shows the chart as the gateway drew it, so a test can
read the numbers off the SVG. Each mark carries its figures as ``data-*`` attributes,
and every text is escaped (workflow and backend names come from users).

Two charts: the empirical cumulative distribution (ECDF) of a time figure per backend,
which shows the whole distribution (a median, a tail, a second mode) where percentiles
show three points; and failure rates per backend with their 95% Wilson intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from gateway.reports.comparison import format_seconds, percentile
from gateway.reports.distributions import wilson_interval

__all__ = ["BACKEND_COLOURS", "ecdf_chart", "failure_chart"]

#: One colour per backend, the same in every chart (and colour-blind safe together).
BACKEND_COLOURS = {"rq": "#d55e00", "prefect": "#0072b2"}
_OTHER = "#555555"

_WIDTH, _HEIGHT = 440, 204
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 24, 58


def _colour(backend: str) -> str:
    return BACKEND_COLOURS.get(backend, _OTHER)


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def ecdf_chart(title: str, values: Mapping[str, Sequence[float]]) -> str:
    """An ECDF of ``values`` per backend (seconds), one step line each.

    >>> svg = ecdf_chart("queue wait", {"rq": [1.0, 2.0], "prefect": []})
    >>> 'data-backend="rq" data-count="2" data-p50="1.000"' in svg
    True
    """
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    top = max((max(v) for v in values.values() if v), default=0.0) or 1.0

    def x(seconds: float) -> float:
        return _LEFT + plot_w * seconds / top

    def y(share: float) -> float:
        return _TOP + plot_h * (1 - share)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart ecdf" viewBox="0 0 {_WIDTH} '
        f'{_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" data-chart="{escape(title)}">',
        f"<title>{escape(title)}: share of runs at or under each time</title>",
        f'<text x="{_LEFT}" y="14" class="heading">{escape(title)} (share of runs at or '
        "under each time)</text>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for share in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{_LEFT - 4}" y="{_n(y(share) + 4)}" text-anchor="end" class="tick">'
            f"{share:.0%}</text>"
        )
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{_n(y(share))}" '
            f'y2="{_n(y(share))}" class="grid"/>'
        )
    for tick in range(5):
        seconds = top * tick / 4
        parts.append(
            f'<text x="{_n(x(seconds))}" y="{_TOP + plot_h + 14}" text-anchor="middle" '
            f'class="tick">{escape(format_seconds(seconds))}</text>'
        )
    legend_y = _TOP + plot_h + 32
    for row, (backend, sample) in enumerate(values.items()):
        colour = _colour(backend)
        ordered = sorted(sample)
        count = len(ordered)
        label = f"{backend}: no runs"
        attributes = f'data-backend="{escape(backend)}" data-count="{count}"'
        if ordered:
            p50, p95 = percentile(ordered, 0.5), percentile(ordered, 0.95)
            attributes += f' data-p50="{p50:.3f}" data-p95="{p95:.3f}"'
            label = (
                f"{backend}: {count} runs, median {format_seconds(p50)}, p95 {format_seconds(p95)}"
            )
            points = [f"{_n(x(0))},{_n(y(0))}"]
            for index, seconds in enumerate(ordered):
                points.append(f"{_n(x(seconds))},{_n(y(index / count))}")
                points.append(f"{_n(x(seconds))},{_n(y((index + 1) / count))}")
            points.append(f"{_n(x(top))},{_n(y(1))}")
            parts.append(
                f'<polyline {attributes} class="line" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{" ".join(points)}"/>'
            )
        else:
            parts.append(f'<g {attributes} class="line empty"></g>')
        parts.append(
            f'<rect x="{_LEFT}" y="{legend_y + row * 14 - 8}" width="10" height="10" '
            f'fill="{colour}"/><text x="{_LEFT + 14}" y="{legend_y + row * 14 + 1}" '
            f'class="legend" data-backend="{escape(backend)}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def failure_chart(counts: Mapping[str, tuple[int, int]]) -> str:
    """Failure rate per backend (``failed, runs``) with its 95% Wilson interval.

    >>> 'data-backend="rq" data-failed="1" data-runs="4" data-rate="0.250000"' in (
    ...     failure_chart({"rq": (1, 4)}))
    True
    """
    rows = len(counts) or 1
    height = _TOP + 26 * rows + 24
    plot_w = 150  # the rest of the width holds the figures
    uppers = [wilson_interval(f, r)[1] for f, r in counts.values() if r]
    top = min(1.0, max(uppers, default=0.0) * 1.1) or 1.0

    def x(rate: float) -> float:
        return 90 + plot_w * rate / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart failures" viewBox="0 0 {_WIDTH} '
        f'{height}" width="{_WIDTH}" height="{height}" role="img" aria-label="failure rate" '
        'data-chart="failure rate">',
        "<title>failure rate per backend, with its 95% interval</title>",
        '<text x="4" y="14" class="heading">failure rate, with its 95% Wilson interval</text>',
    ]
    for row, (backend, (failed, runs)) in enumerate(counts.items()):
        colour = _colour(backend)
        middle = _TOP + 26 * row + 10
        parts.append(
            f'<text x="84" y="{middle + 4}" text-anchor="end" class="legend">'
            f"{escape(backend)}</text>"
        )
        if not runs:
            parts.append(
                f'<text x="90" y="{middle + 4}" class="legend" data-backend="{escape(backend)}" '
                'data-runs="0">no finished runs</text>'
            )
            continue
        rate = failed / runs
        low, high = wilson_interval(failed, runs)
        parts.append(
            f'<g data-backend="{escape(backend)}" data-failed="{failed}" data-runs="{runs}" '
            f'data-rate="{rate:.6f}" data-low="{low:.6f}" data-high="{high:.6f}">'
            f'<rect x="90" y="{middle - 7}" width="{_n(max(x(rate) - 90, 1))}" height="14" '
            f'fill="{colour}" opacity="0.75"/>'
            f'<line x1="{_n(x(low))}" x2="{_n(x(high))}" y1="{middle}" y2="{middle}" '
            'stroke="#222" stroke-width="1.5"/>'
            f'<line x1="{_n(x(low))}" x2="{_n(x(low))}" y1="{middle - 5}" y2="{middle + 5}" '
            'stroke="#222"/>'
            f'<line x1="{_n(x(high))}" x2="{_n(x(high))}" y1="{middle - 5}" y2="{middle + 5}" '
            'stroke="#222"/></g>'
            f'<text x="{_n(x(top) + 4)}" y="{middle + 4}" class="legend">'
            f"{rate:.1%} ({low:.1%} to {high:.1%}) of {runs}</text>"
        )
    parts.append(
        f'<text x="90" y="{height - 6}" class="tick">0%</text>'
        f'<text x="{_n(x(top))}" y="{height - 6}" text-anchor="end" class="tick">{top:.0%}</text>'
        "</svg>"
    )
    return "".join(parts)
