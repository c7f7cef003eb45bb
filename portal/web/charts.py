"""The overview's charts as geometry for server-rendered SVG: pure functions of the figures, no drawing
library and no JavaScript. Coordinates are in each chart's viewBox; the templates draw the shapes and
give every chart a title, a description and a table of its numbers.
"""

from dataclasses import dataclass, field
from datetime import date

# The stacked bars' plot area (viewBox 0 0 BARS_WIDTH BARS_HEIGHT + the axis labels below).
BARS_WIDTH, BARS_HEIGHT = 600, 160
TREND_WIDTH, TREND_HEIGHT = 600, 140


@dataclass
class Segment:
    key: str
    label: str
    count: int
    y: float = 0.0
    height: float = 0.0


@dataclass
class Bar:
    day: date
    x: float
    width: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.segments)


def nice_max(value: int) -> int:
    """The axis' top: the smallest of 1, 2, 5 x 10^n at or above value (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_bars(days: list[date], series: list[tuple[str, str]], counts: dict[tuple, int]) -> tuple[list[Bar], int]:
    """One bar per day, its segments stacked bottom-up in series order. Returns the bars and the axis top."""
    top = nice_max(max((sum(counts.get((day, key), 0) for key, _ in series) for day in days), default=0))
    slot = BARS_WIDTH / max(len(days), 1)
    bars = []
    for n, day in enumerate(days):
        bar = Bar(day=day, x=round(n * slot + slot * 0.15, 2), width=round(slot * 0.7, 2))
        base = BARS_HEIGHT
        for key, label in series:
            count = counts.get((day, key), 0)
            height = round(BARS_HEIGHT * count / top, 2)
            base -= height
            bar.segments.append(Segment(key, label, count, round(base, 2), height))
        bars.append(bar)
    return bars, top


def trend_lines(shares: list[float | None]) -> tuple[list[str], list[dict]]:
    """SVG polyline point lists for shares (0-100) per day, broken where a day has no figure, and a
    dot per day that has one (a lone day shows as its dot)."""
    step = TREND_WIDTH / max(len(shares) - 1, 1)
    lines, current, dots = [], [], []
    for n, share in enumerate(shares):
        if share is None:
            if current:
                lines.append(current)
            current = []
            continue
        x, y = round(n * step, 2), round(TREND_HEIGHT * (1 - share / 100), 2)
        current.append(f"{x},{y}")
        dots.append({"x": x, "y": y})
    if current:
        lines.append(current)
    return [" ".join(points) for points in lines], dots


# Horizontal bars: a label column, then the bar, then the count (viewBox 0 0 ROWS_WIDTH rows x ROW_HEIGHT).
ROWS_WIDTH, ROW_HEIGHT, LABEL_WIDTH, BAR_SPACE = 420, 26, 170, 200


def share_bars(items: list[dict], total: int) -> dict:
    """Horizontal bars for items with a `count`: each bar's length is its share of `total` (the
    machines in scope), so bars of different charts compare."""
    rows = [
        {
            **item,
            "y": n * ROW_HEIGHT,
            "share": round(100 * item["count"] / total, 1) if total else 0,
            "length": round(BAR_SPACE * item["count"] / total, 2) if total else 0,
        }
        for n, item in enumerate(items)
    ]
    for row in rows:
        row["end"] = LABEL_WIDTH + row["length"] + 6
    return {"rows": rows, "height": len(rows) * ROW_HEIGHT, "width": ROWS_WIDTH, "bar_x": LABEL_WIDTH}
