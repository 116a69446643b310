"""Bar charts of measured rates for ``queuepipe bench --plot FILE``, with no new dependency.

``.svg`` is written here, as plain text (one ``<rect class="bar">`` per measured row, its label
and value beside it); ``.png`` goes through matplotlib, used only when it is installed
(:func:`check_plot_path` says so before any measuring starts).
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple
from xml.sax.saxutils import escape

# Layout of the SVG, in pixels.
_BAR_HEIGHT = 22
_GAP = 8
_LABEL_WIDTH = 300
_PLOT_WIDTH = 420
_VALUE_WIDTH = 130
_TOP = 40
_FONT = 'font-family="sans-serif" font-size="13"'

#: Fill colour per kind of row: reference limits and measured pipeline trials.
COLOURS = {"limit": "#9e9e9e", "trial": "#1f77b4"}

Bar = Tuple[str, float, str]  # (label, value, kind: a key of COLOURS)


class PlotError(ValueError):
    """A ``--plot`` file that cannot be written as asked (unknown suffix, PNG without matplotlib)."""


def plot_format(path: str) -> str:
    """``"svg"`` or ``"png"`` from the file's suffix; anything else is a :class:`PlotError`."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".svg", ".png"):
        return suffix[1:]
    raise PlotError(f"--plot {path}: the file must end in .svg (written without any extra package) or .png "
                    f"(needs matplotlib)")


def check_plot_path(path: str) -> None:
    """Fail before measuring if ``path`` cannot be written: a suffix other than .svg/.png, or
    .png without matplotlib installed (the error names both ways out)."""
    if plot_format(path) == "png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlotError(f"--plot {path}: writing PNG needs matplotlib, which is not installed; "
                            f"`pip install matplotlib`, or name a .svg file (written without it)") from None


def format_rate(value: float) -> str:
    """``1.23 M``, ``45.6 k`` or ``789`` (samples/s)."""
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def bar_chart_svg(bars: Sequence[Bar], *, title: str, unit: str) -> str:
    """A horizontal bar chart as an SVG document: one ``<rect class="bar">`` per bar, in order,
    scaled to the largest value, with its label on the left and its value on the right."""
    top = max((v for _, v, _ in bars), default=0.0) or 1.0
    width = _LABEL_WIDTH + _PLOT_WIDTH + _VALUE_WIDTH
    height = _TOP + len(bars) * (_BAR_HEIGHT + _GAP) + _GAP
    parts: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="24" {_FONT} font-weight="bold">{escape(title)}</text>',
    ]
    for k, (label, value, kind) in enumerate(bars):
        y = _TOP + k * (_BAR_HEIGHT + _GAP)
        length = max(0.0, value) / top * _PLOT_WIDTH
        text_y = y + _BAR_HEIGHT * 0.7
        parts += [
            f'<text x="{_LABEL_WIDTH - 8}" y="{text_y:.1f}" text-anchor="end" {_FONT}>{escape(label)}</text>',
            f'<rect class="bar" x="{_LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{_BAR_HEIGHT}" '
            f'fill="{COLOURS.get(kind, COLOURS["trial"])}" data-value="{value:.6g}">'
            f'<title>{escape(label)}: {value:.6g} {escape(unit)}</title></rect>',
            f'<text x="{_LABEL_WIDTH + length + 6:.1f}" y="{text_y:.1f}" {_FONT}>'
            f'{escape(format_rate(value))} {escape(unit)}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _write_png(path: str, bars: Sequence[Bar], title: str, unit: str) -> None:
    """The same chart through matplotlib's object API (no pyplot: no global backend or figure state)."""
    check_plot_path(path)
    from matplotlib.figure import Figure
    labels = [b[0] for b in bars][::-1]
    values = [b[1] for b in bars][::-1]
    colours = [COLOURS.get(b[2], COLOURS["trial"]) for b in bars][::-1]
    fig = Figure(figsize=(9, 0.45 * len(bars) + 1.2))
    ax = fig.subplots()
    ax.barh(labels, values, color=colours)
    for y, v in enumerate(values):
        ax.text(v, y, f" {format_rate(v)}", va="center")
    ax.set_xlabel(unit)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_bar_chart(path: str, bars: Sequence[Bar], *, title: str, unit: str) -> None:
    """Write ``bars`` to ``path``: SVG by hand, PNG with matplotlib (:class:`PlotError` if not installed)."""
    if plot_format(path) == "png":
        _write_png(path, bars, title, unit)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(bar_chart_svg(bars, title=title, unit=unit))
