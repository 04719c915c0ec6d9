"""
The request-rate chart of the status pages: an inline SVG bar chart with a y axis in
requests per second, an x axis in minutes before now, grid lines and labelled ticks.  Pure:
numbers in, markup out.  Everything in it is a number or text the code wrote, so nothing
needs escaping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Tick spacings of the time axis, in seconds; the first that gives at most 6 ticks is used.
_TIME_STEPS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

BAR_COLOUR = "#3a7bd5"


def niceCeiling(value: float) -> float:
    """
    The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least C{value} (the top
    of the y axis); 1 for nothing.
    """
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10.0 * power  # pragma: no cover (10 * power always is)


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _ago(seconds: float) -> str:
    seconds = round(seconds)
    if seconds <= 0:
        return "now"
    minutes, rest = divmod(seconds, 60)
    if minutes == 0:
        return f"-{rest} s"
    if minutes < 120 and not rest:
        return f"-{minutes} min"
    if minutes < 120:
        return f"-{minutes} min {rest} s"
    return f"-{seconds / 3600:g} h"


def rateChart(
    series: Sequence[tuple[float, float]],
    interval: float,
    width: int = 640,
    height: int = 220,
) -> str:
    """
    The chart of C{series} ((bucket start, requests per second), oldest first, the current
    bucket last): one bar per bucket, the y axis from 0 to a round number at least the
    peak, the x axis labelled in minutes before the current bucket.

    @param interval: the width of a bucket, in seconds.
    """
    left, right, top, bottom = 52, 10, 12, 44
    plotWidth, plotHeight = width - left - right, height - top - bottom
    baseline = top + plotHeight
    peak = max((rate for _, rate in series), default=0.0)
    ceiling = niceCeiling(peak)
    count = max(len(series), 1)
    barWidth = plotWidth / count
    span = count * interval
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rate-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="requests per second over the last {span / 60:g} minutes, '
        f'in bars of {interval:g} seconds" data-peak="{peak:.3f}" '
        f'data-buckets="{len(series)}" data-interval="{interval:g}" '
        f'font-family="sans-serif" font-size="11">'
    ]
    # Grid and y axis: 0, 1/4 ... 4/4 of the ceiling.
    parts.append('<g class="y-axis" stroke="#d8dde6">')
    labels = []
    for quarter in range(5):
        value = ceiling * quarter / 4
        y = baseline - plotHeight * quarter / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>')
        labels.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(value)}</text>'
        )
    parts.append("</g>")
    parts.append(f'<g class="y-labels" fill="#444">{"".join(labels)}</g>')
    parts.append(
        f'<text class="y-title" x="12" y="{top + plotHeight / 2:.1f}" fill="#444" '
        f'text-anchor="middle" transform="rotate(-90 12 {top + plotHeight / 2:.1f})">'
        "requests/s</text>"
    )
    # The bars.
    scale = plotHeight / ceiling
    bars = []
    for index, (_, rate) in enumerate(series):
        barHeight = rate * scale
        ago = (count - 1 - index) * interval
        bars.append(
            f'<rect x="{left + index * barWidth:.1f}" y="{baseline - barHeight:.1f}" '
            f'width="{max(barWidth - 1, 1):.1f}" height="{barHeight:.1f}">'
            f"<title>{_ago(ago)}: {rate:.2f} requests/s</title></rect>"
        )
    parts.append(f'<g class="bars" fill="{BAR_COLOUR}">{"".join(bars)}</g>')
    # The x axis: ticks at round times before the current bucket.
    step = next((s for s in _TIME_STEPS if span / s <= 6), _TIME_STEPS[-1])
    ticks = ['<g class="x-axis" stroke="#444">']
    ticks.append(f'<line x1="{left}" y1="{baseline}" x2="{width - right}" y2="{baseline}"/>')
    tickLabels = []
    ago = 0.0
    while ago < span:
        x = left + plotWidth - (ago / interval + 0.5) * barWidth
        ticks.append(f'<line x1="{x:.1f}" y1="{baseline}" x2="{x:.1f}" y2="{baseline + 4}"/>')
        tickLabels.append(
            f'<text x="{x:.1f}" y="{baseline + 16}" text-anchor="middle">{_ago(ago)}</text>'
        )
        ago += step
    ticks.append("</g>")
    parts.extend(ticks)
    parts.append(f'<g class="x-labels" fill="#444">{"".join(tickLabels)}</g>')
    parts.append(
        f'<text class="x-title" x="{left + plotWidth / 2:.1f}" y="{height - 6}" fill="#444" '
        f'text-anchor="middle">time before now (one bar per {interval:g} s)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
