"""Small SVG charts for the HTML report: lines, bands, markers, a heatmap. Plain SVG, no script,
so the report is one self-contained file that any browser opens without fetching anything."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, MARGIN = 900, 260, 48


@dataclass(frozen=True)
class Scale:
    """Maps data (x, y) into the chart's pixels, y upwards."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float

    @classmethod
    def of(cls, x: np.ndarray, *ys: np.ndarray) -> Scale:
        values = np.concatenate([np.asarray(y, np.float64)[np.isfinite(y)] for y in ys])
        low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
        if high == low:
            low, high = low - 1.0, high + 1.0
        pad = (high - low) * 0.05
        x_low, x_high = float(np.min(x)), float(np.max(x))
        return cls(x_low, x_high if x_high > x_low else x_low + 1.0, low - pad, high + pad)

    def x(self, value: np.ndarray) -> np.ndarray:
        span = WIDTH - 2 * MARGIN
        return MARGIN + (np.asarray(value, np.float64) - self.x_min) / (
            self.x_max - self.x_min) * span

    def y(self, value: np.ndarray) -> np.ndarray:
        span = HEIGHT - 2 * MARGIN
        return HEIGHT - MARGIN - (np.asarray(value, np.float64) - self.y_min) / (
            self.y_max - self.y_min) * span


def _points(scale: Scale, x: np.ndarray, y: np.ndarray) -> str:
    keep = np.isfinite(y)
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(scale.x(x[keep]), scale.y(y[keep]),
                                                          strict=True))


def _frame(scale: Scale, title: str, y_format: str, body: Sequence[str]) -> str:
    ticks = []
    for fraction in (0.0, 0.5, 1.0):
        value = scale.y_min + (scale.y_max - scale.y_min) * fraction
        pixel = float(scale.y(np.array([value]))[0])
        ticks.append(f'<text x="4" y="{pixel + 4:.1f}" class="tick">'
                     f"{html.escape(format(value, y_format))}</text>"
                     f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{pixel:.1f}" '
                     f'y2="{pixel:.1f}" class="grid"/>')
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">'
            f'<text x="{MARGIN}" y="20" class="title">{html.escape(title)}</text>'
            + "".join(ticks) + "".join(body) + "</svg>")


def line_chart(title: str, x: np.ndarray, series: Sequence[tuple[str, np.ndarray, str]],
               y_format: str = ",.0f") -> str:
    """Lines (label, values, color) over a shared x."""
    scale = Scale.of(x, *(values for _, values, _ in series))
    body = [f'<polyline points="{_points(scale, x, values)}" fill="none" stroke="{color}" '
            f'stroke-width="1.5"><title>{html.escape(label)}</title></polyline>'
            for label, values, color in series]
    return _frame(scale, title, y_format, body)


def band_chart(title: str, x: np.ndarray, bands: Sequence[tuple[np.ndarray, np.ndarray, str]],
               middle: np.ndarray, y_format: str = ".2f") -> str:
    """Filled bands (low, high, color) and a middle line: a fan."""
    scale = Scale.of(x, *(edge for low, high, _ in bands for edge in (low, high)), middle)
    body = []
    for low, high, color in bands:
        upper = _points(scale, x, high)
        lower = _points(scale, x[::-1], low[::-1])
        body.append(f'<polygon points="{upper} {lower}" fill="{color}" stroke="none"/>')
    body.append(f'<polyline points="{_points(scale, x, middle)}" fill="none" stroke="#1f4e79" '
                'stroke-width="1.5"/>')
    return _frame(scale, title, y_format, body)


def price_with_trades(title: str, x: np.ndarray, price: np.ndarray,
                      entries: Sequence[tuple[float, float, int]],
                      exits: Sequence[tuple[float, float, float]]) -> str:
    """A price line with entries (time, price, side: green up, red down) and exits (time,
    price, pnl: filled by the trade's outcome)."""
    scale = Scale.of(x, price)
    body = [f'<polyline points="{_points(scale, x, price)}" fill="none" stroke="#555" '
            'stroke-width="1"/>']
    for ts, level, side in entries:
        px, py = float(scale.x(np.array([ts]))[0]), float(scale.y(np.array([level]))[0])
        tip = py - 6 if side > 0 else py + 6
        color = "#2e7d32" if side > 0 else "#c62828"
        body.append(f'<polygon points="{px - 4:.1f},{py:.1f} {px + 4:.1f},{py:.1f} '
                    f'{px:.1f},{tip:.1f}" fill="{color}"/>')
    for ts, level, pnl in exits:
        px, py = float(scale.x(np.array([ts]))[0]), float(scale.y(np.array([level]))[0])
        color = "#2e7d32" if pnl > 0 else "#c62828"
        body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="white" stroke="{color}" '
                    f'stroke-width="1.5"><title>pnl {pnl:,.2f}</title></circle>')
    return _frame(scale, title, ",.0f", body)


def heatmap(title: str, months: Sequence[tuple[str, float]]) -> str:
    """Monthly returns as a year x month table of colored cells (green up, red down)."""
    by_year: dict[str, dict[int, float]] = {}
    for month, value in months:
        year, month_text = month.split("-")
        by_year.setdefault(year, {})[int(month_text)] = value
    header = "".join(f"<th>{name}</th>" for name in (
        "", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))
    rows = []
    for year in sorted(by_year):
        cells = [f"<th>{year}</th>"]
        for number in range(1, 13):
            cell = by_year[year].get(number)
            if cell is None or not math.isfinite(cell):
                cells.append("<td></td>")
                continue
            strength = min(1.0, abs(cell) / 0.10)
            color = (f"rgba(46,125,50,{0.15 + 0.85 * strength:.2f})" if cell >= 0
                     else f"rgba(198,40,40,{0.15 + 0.85 * strength:.2f})")
            cells.append(f'<td style="background:{color}">{cell:.2%}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="heatmap" aria-label="{html.escape(title)}"><tr>{header}</tr>'
            + "".join(rows) + "</table>")
