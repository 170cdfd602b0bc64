"""The Model page's scatter plot: each launched creative's predicted Engagement score against its real engagement.

Drawn here as inline SVG, with no script and nothing to fetch, so it fits the page's
Content-Security-Policy; colours are SVG attributes, which the policy's style rules do not cover.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from scorer.track_record import TrackRecord

WIDTH, HEIGHT = 640, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 16, 16, 52  # margins, in SVG units, for the axes and their labels
_INK, _LINE, _ACCENT = "#1d2733", "#dde3ea", "#1f4e78"


def scatter(track: TrackRecord) -> Markup:
    """An SVG of predicted score (across, 0-100) against likes + comments (up) of the track record's launches:
    the counted ones filled, the others hollow."""
    top = _ceiling(max((launch.total for launch in track.launches), default=0))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x(score: float) -> float:
        return _LEFT + plot_w * score / 100

    def y(total: float) -> float:
        return _TOP + plot_h * (1 - total / top)

    parts = [f'<svg class="scatter" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="scatter-title">',
             '<title id="scatter-title">Predicted Engagement score against real likes + comments</title>',
             f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="{_LINE}"/>']
    for tick in range(0, 101, 25):
        parts.append(_tick_line(x(tick), _TOP, x(tick), _TOP + plot_h))
        parts.append(_text(x(tick), HEIGHT - _BOTTOM + 18, str(tick), "middle"))
    for step in range(5):
        value = top * step / 4
        parts.append(_tick_line(_LEFT, y(value), _LEFT + plot_w, y(value)))
        parts.append(_text(_LEFT - 8, y(value) + 4, f"{value:,.0f}", "end"))
    parts.append(_text(_LEFT + plot_w / 2, HEIGHT - 10, "Engagement score predicted before launch", "middle"))
    parts.append(f'<text x="16" y="{_TOP + plot_h / 2:.1f}" fill="{_INK}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 16 {_TOP + plot_h / 2:.1f})">Real likes + comments</text>')
    for launch in track.launches:
        counted, score = launch.counted(track.settled), launch.creative.score
        parts.append(f'<circle class="launch{" counted" if counted else ""}" '
                     f'cx="{x(score):.1f}" cy="{y(launch.total):.1f}" r="5" fill="{_ACCENT if counted else "none"}" '
                     f'stroke="{_ACCENT}" stroke-width="1.5"><title>{escape(launch.post)}: score '
                     f'{score:.1f}, {launch.total:,} likes + comments</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))  # safe: the only outside text, the post names, went through escape()


def _ceiling(value: float) -> float:
    """A round number at or above value, for the top of the axis (1 when there is nothing to show)."""
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value)) / 2
    return math.ceil(value / step) * step


def _tick_line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{_LINE}"/>'


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" fill="{_INK}" font-size="12" text-anchor="{anchor}">{text}</text>'
