"""Charts drawn on the server as SVG: time series with bands, sparklines, histograms on their
true scale, intervals on a shared axis. Pure functions of their data; markup is escaped.

Every chart is one ``<svg>`` with a ``viewBox`` and ``width="100%"`` (it scales with its
container), drawn with classes and presentation attributes only: the dashboard's
Content-Security-Policy forbids inline styles. Units on a value axis:

- ``"%"``: values are fractions (0.93) shown as percentages (93%);
- ``"s"``: values are seconds, labelled in ms when the axis stays under a second;
- ``"$"``: a currency prefix; any other unit (``"ms"``, ``"rows"``) is a suffix.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol, TypeGuard

from markupsafe import Markup, escape

from ownloop.errors import InvalidInputError

__all__ = [
    "Interval",
    "Series",
    "StoredBins",
    "StoredFigure",
    "bars",
    "distribution",
    "histogram",
    "intervals",
    "sparkline",
    "time_chart",
]

REFERENCE_COLOUR = "#90a4ae"
CURRENT_COLOUR = "#e65100"
# first colour is "current" orange, as in the drift reports; the rest stay apart from it
PALETTE = ("#e65100", "#1565c0", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457")
FAIL_COLOUR = "#c62828"
PASS_COLOUR = "#2e7d32"
_XMLNS = "http://www.w3.org/2000/svg"


class StoredFigure(Protocol):
    """What a stored figure of one window offers a chart (``ownloop.monitoring.Point`` does)."""

    @property
    def window_end(self) -> datetime: ...
    @property
    def value(self) -> float | None: ...
    @property
    def lower(self) -> float | None: ...
    @property
    def upper(self) -> float | None: ...


class StoredBins(Protocol):
    """A stored histogram of one window (``ownloop.monitoring.Bins`` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def labels(self) -> Sequence[str]: ...
    @property
    def edges(self) -> Sequence[float]: ...
    @property
    def reference(self) -> Sequence[float]: ...
    @property
    def current(self) -> Sequence[float]: ...


@dataclass(frozen=True)
class Series:
    """One line of a time chart: a value per window (None: no value), an optional band."""

    label: str
    times: Sequence[datetime]
    values: Sequence[float | None]
    lower: Sequence[float | None] | None = None
    upper: Sequence[float | None] | None = None

    @classmethod
    def of(cls, label: str, points: Sequence[StoredFigure], *, band: bool = True) -> Series:
        """A series from stored figures, placed at each window's end; ``band`` keeps lower/upper."""
        return cls(
            label,
            [p.window_end for p in points],
            [p.value for p in points],
            [p.lower for p in points] if band else None,
            [p.upper for p in points] if band else None,
        )


@dataclass(frozen=True)
class Interval:
    """One row of an interval chart: an estimate, its interval and the bound it is held to."""

    label: str
    value: float | None
    lower: float | None
    upper: float | None
    bound: float | None = None
    passed: bool | None = None


# --- numbers and axes ---------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """The value as a float, or None for None, NaN and infinities (a gap)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range around lo..hi, so a constant series never divides by zero."""
    if hi - lo > max(abs(lo), abs(hi)) * 1e-9:
        return lo, hi
    # equal, or equal but for float noise: a range around the value itself
    pad = abs(lo) * 0.05 if lo != 0 else 1.0
    return lo - pad, hi + pad


def _nice_step(span: float, count: int) -> float:
    """A 1-2-5 step giving about ``count`` intervals over ``span``."""
    raw = span / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 5.0):
        if raw <= multiple * magnitude * (1 + 1e-9):
            return multiple * magnitude
    return 10.0 * magnitude


def _ticks(lo: float, hi: float, count: int = 5) -> tuple[float, float, list[float]]:
    """A nice domain covering lo..hi and its tick values (multiples of a 1-2-5 step)."""
    lo, hi = _span(lo, hi)
    step = _nice_step(hi - lo, count)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def _number(value: float, step: float, largest: float) -> str:
    """``value`` with as many decimals as the tick step needs; k/M/G/T for large axes."""
    if abs(value) < abs(step) * 1e-6:
        return "0"
    if step < 1e-6:  # fixed decimals would run past six places
        digits = max(0, math.floor(math.log10(largest)) - math.floor(math.log10(step)))
        return f"{value:.{min(digits, 6)}e}"
    divisor, suffix = 1.0, ""
    for size, letter in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if largest >= 10 * size:
            divisor, suffix = size, letter
            break
    decimals = max(0, math.ceil(-math.log10(step / divisor) - 1e-9))
    return f"{value / divisor:.{min(decimals, 12)}f}{suffix}"


def _unit_scale(unit: str, largest: float) -> tuple[float, str, str]:
    """(factor, prefix, suffix) that turn a raw value into its label."""
    if unit == "%":
        return 100.0, "", "%"
    if unit == "s":
        return (1000.0, "", " ms") if largest < 1 else (1.0, "", " s")
    if unit == "$":
        return 1.0, "$", ""
    return 1.0, "", f" {unit}" if unit else ""


def _tick_labeller(unit: str, ticks: Sequence[float]) -> Callable[[float], str]:
    """Labels for one axis: a shared step, scale and unit, so the labels read as one scale."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(ticks[0]) or 1.0
    largest = max(abs(t) for t in ticks) or step
    factor, prefix, suffix = _unit_scale(unit, largest)

    def label(value: float) -> str:
        text = _number(abs(value) * factor, step * factor, largest * factor)
        sign = "-" if value < 0 and text != "0" else ""
        return f"{sign}{prefix}{text}{suffix}"

    return label


def _value_text(value: float, unit: str) -> str:
    """One value for a tooltip, with four significant digits and its unit."""
    factor, prefix, suffix = _unit_scale(unit, abs(value))
    scaled = value * factor
    sign = "-" if scaled < 0 else ""
    return f"{sign}{prefix}{abs(scaled):.4g}{suffix}"


_CLOCK_MINUTES = (1, 5, 15, 30, 60, 120, 180, 360, 720)  # each divides a day: round clock times
_CALENDAR_DAYS = (1, 2, 7, 14, 28, 91, 182, 364)
_TIME_STEPS = (*(timedelta(minutes=m) for m in _CLOCK_MINUTES), *map(timedelta, _CALENDAR_DAYS))
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)


def _time_ticks(start: datetime, end: datetime, count: int = 6) -> list[tuple[datetime, str]]:
    """Ticks on whole minutes/hours/days (UTC) between start and end, with short labels."""
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    while span / step > count:  # beyond a few years: whole multiples of a year
        step += _TIME_STEPS[-1]
    # steps up to a day divide a day, so ticks fall on round UTC clock times; weeks start Monday
    anchor = _MONDAY if step >= timedelta(days=7) else datetime(1970, 1, 1, tzinfo=UTC)
    moment = anchor + step * math.ceil((start - anchor) / step)
    ticks: list[tuple[datetime, str]] = []
    previous_day = None
    while moment <= end:
        if step < timedelta(days=1):
            text = moment.strftime("%H:%M")
            if moment.date() != previous_day:
                text = moment.strftime("%b %d ") + text
        else:
            text = moment.strftime("%b %d" if span < timedelta(days=300) else "%Y-%m-%d")
        previous_day = moment.date()
        ticks.append((moment, text))
        moment += step
    return ticks


def _stamp(moment: datetime) -> float:
    """Seconds since the epoch (a naive datetime is taken to be UTC already)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt(x: float) -> str:
    """A coordinate: two decimals are below a pixel at any sensible size."""
    return f"{x:.2f}".rstrip("0").rstrip(".") if x else "0"


def _open_svg(kind: str, width: int, height: int, title: str, attrs: str = "") -> str:
    label = escape(title)
    return (
        f'<svg xmlns="{_XMLNS}" class="chart {kind}" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{label}"{attrs}><title>{label}</title>'
    )


def _no_data(title: str, why: str = "no data") -> Markup:
    return Markup(f'<p class="none">{escape(title)}: {escape(why)}</p>')


# --- time chart ---------------------------------------------------------------------------

_W, _H = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 34, 34


class _Point(NamedTuple):
    """One plotted value: a window or a bucket of windows (times in seconds since the epoch)."""

    start: float
    end: float
    value: float | None
    lower: float | None
    upper: float | None
    windows: int


class _Columns(NamedTuple):
    """A series' windows as columns, oldest first; non-finite values already None."""

    times: list[float]
    values: list[float | None]
    lower: list[float | None] | None
    upper: list[float | None] | None


def _clean(column: Sequence[float | None]) -> list[float | None]:
    isfinite = math.isfinite
    return [v if v is not None and isfinite(v) else None for v in column]


def _columns(series: Series) -> _Columns:
    """The series' windows as clean columns in time order, checking the lengths agree."""
    count = len(series.times)
    for name, column in (
        ("values", series.values),
        ("lower", series.lower),
        ("upper", series.upper),
    ):
        if column is not None and len(column) != count:
            raise InvalidInputError(
                f"chart series {series.label!r} has {count} times but {len(column)} {name}; "
                "give one entry per window (None for a gap)"
            )
    times = [_stamp(t) for t in series.times]
    columns = [series.values, series.lower, series.upper]
    if any(b < a for a, b in itertools.pairwise(times)):
        order = sorted(range(count), key=times.__getitem__)
        times = [times[i] for i in order]
        columns = [None if c is None else [c[i] for i in order] for c in columns]
    values, lower, upper = (None if c is None else _clean(c) for c in columns)
    return _Columns(times, values or [], lower, upper)


def _bucket(columns: _Columns, max_points: int) -> list[_Point]:
    """At most ``max_points`` points: the mean per bucket of consecutive windows, min..max as band."""
    times, values = columns.times, columns.values
    count = len(times)
    nothing: list[float | None] = [None] * count
    lower = columns.lower or nothing
    upper = columns.upper or nothing
    if count <= max_points:
        return [
            _Point(t, t, v, lo, up, 1)
            for t, v, lo, up in zip(times, values, lower, upper, strict=True)
        ]
    buckets: list[_Point] = []
    for i in range(max_points):
        first, last = i * count // max_points, (i + 1) * count // max_points
        present = [v for v in values[first:last] if v is not None]
        low = [
            lo if lo is not None else v
            for v, lo in zip(values[first:last], lower[first:last], strict=True)
        ]
        high = [
            up if up is not None else v
            for v, up in zip(values[first:last], upper[first:last], strict=True)
        ]
        lows = [x for x in low if x is not None]
        highs = [x for x in high if x is not None]
        buckets.append(
            _Point(
                times[first],
                times[last - 1],
                math.fsum(present) / len(present) if present else None,
                min(lows) if lows else None,
                max(highs) if highs else None,
                last - first,
            )
        )
    return buckets


def _mid(point: _Point) -> float:
    return (point.start + point.end) / 2


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive (x, y) with y present: a None breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


def _line_path(run: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{_fmt(x)} {_fmt(y)}" for x, y in run)


def _point_title(label: str, point: _Point, unit: str) -> str:
    if point.windows == 1:
        when = _when(point.start)
        text = f"{when} · {label}: {_value_text(point.value or 0.0, unit)}"
        if point.lower is not None and point.upper is not None:
            text += f" [{_value_text(point.lower, unit)} – {_value_text(point.upper, unit)}]"
        return text
    text = f"{_when(point.start)} – {_when(point.end)} · {label}: mean "
    text += f"{_value_text(point.value or 0.0, unit)} of {point.windows} windows"
    if point.lower is not None and point.upper is not None:
        text += f" (range {_value_text(point.lower, unit)} – {_value_text(point.upper, unit)})"
    return text


def time_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    reference: float | None = None,
    max_points: int = 600,
) -> Markup:
    """A time-series chart; one ``circle.pt`` per plotted window (bucketed past ``max_points``).

    On the ``<svg>``, ``data-windows`` counts the distinct windows of all series and
    ``data-points`` the positions plotted on the time axis: the same number unless windows were
    bucketed, then the number of buckets. A position whose value is missing is a gap, not a
    circle. Each ``<g class="series">`` carries its own ``data-windows``, ``data-points`` and
    ``data-values`` (its circles).

    >>> from datetime import datetime, timezone
    >>> t = [datetime(2026, 1, 1, h, tzinfo=timezone.utc) for h in range(3)]
    >>> svg = time_chart([Series("accuracy", t, [0.91, None, 0.93])], title="Accuracy", unit="%")
    >>> 'data-windows="3" data-points="3"' in svg, svg.count('class="pt"')
    (True, 2)
    """
    if max_points < 1:
        raise InvalidInputError(f"max_points must be at least 1, not {max_points}")
    raw = [_columns(s) for s in series]
    plotted = [_bucket(columns, max_points) for columns in raw]
    values = [
        x
        for points in plotted
        for p in points
        for x in (p.value, p.lower, p.upper)
        if x is not None and p.value is not None
    ]
    if not values:
        windows = len({t for columns in raw for t in columns.times})
        return _no_data(title, f"no data in {windows} windows" if windows else "no data")
    reference = _finite(reference)
    y_lo, y_hi, y_ticks = _ticks(
        min(values + ([reference] if reference is not None else [])),
        max(values + ([reference] if reference is not None else [])),
    )
    t_lo = min(columns.times[0] for columns in raw if columns.times)
    t_hi = max(columns.times[-1] for columns in raw if columns.times)
    if t_hi == t_lo:
        t_lo, t_hi = t_lo - 1800, t_hi + 1800
    inner_w, inner_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x_of(stamp: float) -> float:
        return _LEFT + inner_w * (stamp - t_lo) / (t_hi - t_lo)

    def y_of(value: float) -> float:
        return _TOP + inner_h * (1 - (value - y_lo) / (y_hi - y_lo))

    windows = len({t for columns in raw for t in columns.times})
    positions = max(len(points) for points in plotted)
    parts = [
        _open_svg("time", _W, _H, title, f' data-windows="{windows}" data-points="{positions}"'),
        f'<text class="chart-title" x="{_LEFT}" y="18" font-size="13" font-weight="600">'
        f"{escape(title)}</text>",
        _y_axis(y_ticks, y_of, unit),
        _x_axis(t_lo, t_hi, x_of),
    ]
    if reference is not None:
        y = _fmt(y_of(reference))
        parts.append(
            f'<line class="ref" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y}" y2="{y}" '
            f'stroke="{REFERENCE_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4">'
            f"<title>reference {escape(_value_text(reference, unit))}</title></line>"
            f'<text class="ref-label" x="{_W - _RIGHT - 2}" y="{y}" dy="-4" font-size="10" '
            f'text-anchor="end" fill="#607d8b">reference {escape(_value_text(reference, unit))}'
            "</text>"
        )
    for index, (s, points, source) in enumerate(zip(series, plotted, raw, strict=True)):
        parts.append(_series_group(index, s.label, points, len(source.times), unit, x_of, y_of))
    if len(series) > 1:
        parts.append(_legend([s.label for s in series]))
    parts.append("</svg>")
    return Markup("".join(parts))


def _y_axis(ticks: Sequence[float], y_of: Callable[[float], float], unit: str) -> str:
    label = _tick_labeller(unit, ticks)
    parts = ['<g class="axis y">']
    for tick in ticks:
        y = _fmt(y_of(tick))
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y}" y2="{y}" '
            'stroke="#eceff1" stroke-width="1"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{y}" dy="4" font-size="11" '
            f'text-anchor="end" fill="#546e7a">{escape(label(tick))}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _x_axis(start: float, end: float, x_of: Callable[[float], float]) -> str:
    base = _H - _BOTTOM
    parts = [
        f'<g class="axis x"><line class="axis-line" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{base}" '
        f'y2="{base}" stroke="#90a4ae" stroke-width="1"/>'
    ]
    ticks = _time_ticks(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    for moment, text in ticks:
        x = _fmt(x_of(moment.timestamp()))
        parts.append(
            f'<line class="tick-mark" x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}" '
            'stroke="#90a4ae" stroke-width="1"/>'
            f'<text class="tick" x="{x}" y="{base + 16}" font-size="11" text-anchor="middle" '
            f'fill="#546e7a">{escape(text)}</text>'
        )
    parts.append(
        f'<text class="axis-note" x="{_W - _RIGHT}" y="{_H - 4}" font-size="10" '
        'text-anchor="end" fill="#90a4ae">UTC</text></g>'
    )
    return "".join(parts)


def _series_group(
    index: int,
    label: str,
    points: Sequence[_Point],
    windows: int,
    unit: str,
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
) -> str:
    colour = PALETTE[index % len(PALETTE)]
    drawn = [p for p in points if p.value is not None]
    parts = [
        f'<g class="series s{index}" data-label="{escape(label)}" data-windows="{windows}" '
        f'data-points="{len(points)}" data-values="{len(drawn)}">'
    ]
    # a band only where its value is drawn: the value axis was fitted to those points
    banded = [(p, p.lower, p.upper) if p.value is not None else (p, None, None) for p in points]
    for run in _band_runs(banded):
        upper = " L".join(f"{_fmt(x_of(_mid(p)))} {_fmt(y_of(hi))}" for p, _, hi in run)
        lower = " L".join(f"{_fmt(x_of(_mid(p)))} {_fmt(y_of(lo))}" for p, lo, _ in reversed(run))
        parts.append(
            f'<path class="band" d="M{upper} L{lower} Z" fill="{colour}" opacity="0.18" '
            'stroke="none"/>'
        )
    xy = [(x_of(_mid(p)), None if p.value is None else y_of(p.value)) for p in points]
    radius = "2.5" if len(drawn) <= 120 else "1.6"  # dense series: the line reads, dots stay apart
    for line in _runs(xy):
        if len(line) > 1:
            parts.append(
                f'<path class="line" d="{_line_path(line)}" fill="none" stroke="{colour}" '
                'stroke-width="1.5"/>'
            )
    for p, (x, y) in zip(points, xy, strict=True):
        if y is not None:
            parts.append(
                f'<circle class="pt" cx="{_fmt(x)}" cy="{_fmt(y)}" r="{radius}" fill="{colour}">'
                f"<title>{escape(_point_title(label, p, unit))}</title></circle>"
            )
    parts.append("</g>")
    return "".join(parts)


def _band_runs(
    rows: Sequence[tuple[_Point, float | None, float | None]],
) -> list[list[tuple[_Point, float, float]]]:
    """Consecutive points with both bounds (two or more, so the band has an area)."""
    runs: list[list[tuple[_Point, float, float]]] = [[]]
    for point, lo, hi in rows:
        if lo is None or hi is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((point, lo, hi))
    return [run for run in runs if len(run) > 1]


def _legend(labels: Sequence[str]) -> str:
    parts = ['<g class="legend">']
    x = float(_W - _RIGHT)
    entries = []
    for index, label in reversed(list(enumerate(labels))):
        text = label if len(label) <= 24 else label[:23] + "…"
        x -= 7 * len(text) + 22
        entries.append(
            f'<rect x="{_fmt(x)}" y="9" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>'
            f'<text x="{_fmt(x + 14)}" y="18" font-size="11" fill="#37474f">{escape(text)}</text>'
        )
    parts.extend(reversed(entries))
    parts.append("</g>")
    return "".join(parts)


# --- sparkline ----------------------------------------------------------------------------


def sparkline(values: Sequence[float | None], *, title: str, unit: str = "") -> Markup:
    """A small trend line for a table cell; a dot marks the last value.

    >>> 'class="pt"' in sparkline([0.2, 0.3, None, 0.25], title="p99", unit="s")
    True
    """
    clean = [_finite(v) for v in values]
    present = [v for v in clean if v is not None]
    if not present:
        return Markup(
            f'<span class="none spark-none" title="{escape(title)}: no data">no data</span>'
        )
    width, height, pad = 100, 24, 3
    lo, hi = _span(min(present), max(present))
    step = width - 2 * pad
    count = max(len(clean) - 1, 1)

    def x_of(i: int) -> float:
        return pad + step * i / count if len(clean) > 1 else width / 2

    def y_of(v: float) -> float:
        return pad + (height - 2 * pad) * (1 - (v - lo) / (hi - lo))

    xy = [(x_of(i), None if v is None else y_of(v)) for i, v in enumerate(clean)]
    last_index = max(i for i, v in enumerate(clean) if v is not None)
    last = clean[last_index]
    assert last is not None  # the index was chosen among present values
    label = escape(f"{title}: last {_value_text(last, unit)}")
    lines = "".join(
        f'<path class="line" d="{_line_path(run)}" fill="none" stroke="{PALETTE[1]}" '
        'stroke-width="1.2"/>'
        for run in _runs(xy)
        if len(run) > 1
    )
    return Markup(
        f'<svg xmlns="{_XMLNS}" class="spark" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{label}" data-points="{len(present)}">'
        f"<title>{label}</title>{lines}"
        f'<circle class="pt" cx="{_fmt(x_of(last_index))}" cy="{_fmt(y_of(last))}" r="2" '
        f'fill="{PALETTE[0]}"/></svg>'
    )


# --- histogram and bars -------------------------------------------------------------------

_HW, _HH = 720, 240
_HLEFT, _HRIGHT, _HTOP, _HBOTTOM = 56, 20, 34, 44


def _shares(name: str, values: Sequence[float], count: int) -> list[float]:
    if len(values) != count:
        raise InvalidInputError(
            f"chart {name} shares: {len(values)} given for {count} bins; give one share per bin"
        )
    shares = [_finite(v) for v in values]
    if any(v is None or v < 0 for v in shares):
        raise InvalidInputError(f"chart {name} shares must be finite and not negative: {values!r}")
    return [float(v or 0.0) for v in shares]


def _inner_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """1-2-5 ticks that lie inside lo..hi (the axis keeps the data's own ends)."""
    step = _nice_step(hi - lo, count)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _legend_pair(right: float) -> str:
    """The reference/current key, right-aligned at ``right``."""
    return (
        f'<g class="legend"><rect x="{_fmt(right - 150)}" y="9" width="10" height="10" '
        f'fill="{REFERENCE_COLOUR}"/><text x="{_fmt(right - 136)}" y="18" font-size="11" '
        f'fill="#37474f">reference</text><rect x="{_fmt(right - 66)}" y="9" width="10" '
        f'height="10" fill="{CURRENT_COLOUR}"/><text x="{_fmt(right - 52)}" y="18" '
        'font-size="11" fill="#37474f">current</text></g>'
    )


def _share_axis(top: float, ticks: Sequence[float], y_of: Callable[[float], float]) -> str:
    label = _tick_labeller("%", ticks)
    parts = ['<g class="axis y">']
    for tick in ticks:
        y = _fmt(y_of(tick))
        parts.append(
            f'<line class="grid" x1="{_HLEFT}" x2="{_HW - _HRIGHT}" y1="{y}" y2="{y}" '
            'stroke="#eceff1" stroke-width="1"/>'
            f'<text class="tick" x="{_HLEFT - 6}" y="{y}" dy="4" font-size="11" '
            f'text-anchor="end" fill="#546e7a">{escape(label(tick))}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _ascending(cuts: Sequence[float | None]) -> TypeGuard[list[float]]:
    """True when every edge is a finite number and none is below the one before it."""
    if any(c is None for c in cuts):
        return False
    return all(b >= a for a, b in itertools.pairwise(c or 0.0 for c in cuts))


def histogram(
    edges: Sequence[float],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    unit: str = "",
) -> Markup:
    """Reference and current shares per bin, each bin drawn at its real width on a value axis.

    Heights are densities scaled to the average bin width, so a bin's area is its share:
    equal-width bins read as plain shares, and a quantile bin twice as wide as another is drawn
    twice as wide and half as high for the same share. Ticks on the value axis are values.
    """
    count = len(edges) - 1
    if count < 1:
        return _no_data(title)
    cuts = [_finite(e) for e in edges]
    if not _ascending(cuts):
        raise InvalidInputError(
            f"histogram {title!r}: edges must be finite and ascending, got {list(edges)!r}"
        )
    ref, cur = _shares("reference", reference, count), _shares("current", current, count)
    lo, hi = _span(cuts[0], cuts[-1])
    widths = [b - a for a, b in itertools.pairwise(cuts)]
    mean_width = (cuts[-1] - cuts[0]) / count
    by_area = mean_width > 0 and all(w > 0 for w in widths)
    scale = [mean_width / w if by_area else 1.0 for w in widths]
    heights = [s * k for s, k in zip(ref + cur, scale + scale, strict=True)]
    _, y_hi, y_ticks = _ticks(0.0, max(heights) or 0.01)
    inner_w, inner_h = _HW - _HLEFT - _HRIGHT, _HH - _HTOP - _HBOTTOM

    def x_of(value: float) -> float:
        return _HLEFT + inner_w * (value - lo) / (hi - lo)

    def y_of(share: float) -> float:
        return _HTOP + inner_h * (1 - share / y_hi)

    value_label = _tick_labeller(unit, _inner_ticks(lo, hi) or [lo, hi])
    parts = [
        _open_svg("histogram", _HW, _HH, title, f' data-bins="{count}"'),
        f'<text class="chart-title" x="{_HLEFT}" y="18" font-size="13" font-weight="600">'
        f"{escape(title)}</text>",
        _share_axis(_HTOP, y_ticks, y_of),
    ]
    for kind, shares, colour, opacity in (
        ("ref", ref, REFERENCE_COLOUR, "0.55"),
        ("cur", cur, CURRENT_COLOUR, "0.3"),
    ):
        for i, share in enumerate(shares):
            left = x_of(cuts[i])
            right = max(x_of(cuts[i + 1]), left + 1.0)  # a bin of tied values stays visible
            top = y_of(share * scale[i])
            name = "reference" if kind == "ref" else "current"
            tip = (
                f"[{_value_text(cuts[i], unit)}, {_value_text(cuts[i + 1], unit)}): "
                f"{name} {_value_text(share, '%')}"
            )
            parts.append(
                f'<rect class="bin {kind}" x="{_fmt(left)}" y="{_fmt(top)}" '
                f'width="{_fmt(right - left)}" height="{_fmt(_HTOP + inner_h - top)}" '
                f'fill="{colour}" fill-opacity="{opacity}" stroke="{colour}" stroke-width="1.5">'
                f"<title>{escape(tip)}</title></rect>"
            )
    parts.append(_value_axis(_inner_ticks(lo, hi), x_of, value_label))
    note = (
        f"bins at their real widths: a bar's area is its share of rows "
        f"(height: share per {_value_text(mean_width, unit)} of value)"
        if by_area
        else "height: share per bin"
    )
    parts.append(
        f'<text class="axis-note" x="{_HW - _HRIGHT}" y="{_HH - 4}" font-size="10" '
        f'text-anchor="end" fill="#90a4ae">{escape(note)}</text>'
    )
    parts.append(_legend_pair(_HW - _HRIGHT))
    parts.append("</svg>")
    return Markup("".join(parts))


def _value_axis(
    ticks: Sequence[float], x_of: Callable[[float], float], label: Callable[[float], str]
) -> str:
    base = _HH - _HBOTTOM
    parts = [
        f'<g class="axis x"><line class="axis-line" x1="{_HLEFT}" x2="{_HW - _HRIGHT}" '
        f'y1="{base}" y2="{base}" stroke="#90a4ae" stroke-width="1"/>'
    ]
    for tick in ticks:
        x = _fmt(x_of(tick))
        parts.append(
            f'<line class="tick-mark" x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}" '
            'stroke="#90a4ae" stroke-width="1"/>'
            f'<text class="tick" x="{x}" y="{base + 16}" font-size="11" text-anchor="middle" '
            f'fill="#546e7a">{escape(label(tick))}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bars(
    labels: Sequence[str], reference: Sequence[float], current: Sequence[float], *, title: str
) -> Markup:
    """Reference and current shares per category, side by side."""
    count = len(labels)
    if count == 0:
        return _no_data(title)
    ref, cur = _shares("reference", reference, count), _shares("current", current, count)
    _, y_hi, y_ticks = _ticks(0.0, max(ref + cur) or 0.01)
    inner_w, inner_h = _HW - _HLEFT - _HRIGHT, _HH - _HTOP - _HBOTTOM
    group = inner_w / count
    bar = group * 0.38
    slanted = count > 8

    def y_of(share: float) -> float:
        return _HTOP + inner_h * (1 - share / y_hi)

    parts = [
        _open_svg("bars", _HW, _HH + (40 if slanted else 0), title, f' data-bins="{count}"'),
        f'<text class="chart-title" x="{_HLEFT}" y="18" font-size="13" font-weight="600">'
        f"{escape(title)}</text>",
        _share_axis(_HTOP, y_ticks, y_of),
    ]
    base = _HTOP + inner_h
    for i, label in enumerate(labels):
        left = _HLEFT + group * i + group * 0.1
        for offset, kind, share, colour in (
            (0.0, "ref", ref[i], REFERENCE_COLOUR),
            (bar, "cur", cur[i], CURRENT_COLOUR),
        ):
            top = y_of(share)
            name = "reference" if kind == "ref" else "current"
            tip = f"{label}: {name} {_value_text(share, '%')}"
            parts.append(
                f'<rect class="bin {kind}" x="{_fmt(left + offset)}" y="{_fmt(top)}" '
                f'width="{_fmt(bar)}" height="{_fmt(base - top)}" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        centre = _HLEFT + group * (i + 0.5)
        turn = f' transform="rotate(-30 {_fmt(centre)} {base + 14})"' if slanted else ""
        anchor = "end" if slanted else "middle"
        parts.append(
            f'<text class="tick" x="{_fmt(centre)}" y="{base + 14}" font-size="11" '
            f'text-anchor="{anchor}" fill="#546e7a"{turn}>{escape(_short(label, 16))}'
            f"<title>{escape(label)}</title></text>"
        )
    parts.append(_legend_pair(_HW - _HRIGHT))
    parts.append("</svg>")
    return Markup("".join(parts))


def distribution(bins: StoredBins, *, title: str, unit: str = "") -> Markup:
    """A stored histogram drawn as it was binned: numeric bins on their value axis, else bars."""
    if bins.kind == "numeric" and len(bins.edges) == len(bins.reference) + 1:
        return histogram(bins.edges, bins.reference, bins.current, title=title, unit=unit)
    return bars(bins.labels, bins.reference, bins.current, title=title)


# --- intervals ----------------------------------------------------------------------------

_ILEFT, _IRIGHT, _ITOP, _IROW, _IBOTTOM = 200, 24, 34, 26, 40


def intervals(rows: Sequence[Interval], *, title: str, unit: str = "") -> Markup:
    """Estimates with their intervals on one shared, labelled axis, so lengths compare.

    The axis spans every value, interval end and bound of all rows; each row draws its
    interval as ``line.ci``, its estimate as ``circle.pt`` and its bound as ``line.bound``;
    a failed row (``passed=False``) is marked ✗ and drawn in red.
    """
    numbers = [
        x
        for row in rows
        for x in (_finite(row.value), _finite(row.lower), _finite(row.upper), _finite(row.bound))
        if x is not None
    ]
    if not numbers:
        return _no_data(title)
    lo, hi, ticks = _ticks(min(numbers), max(numbers), 6)
    width, height = 720, _ITOP + _IROW * len(rows) + _IBOTTOM
    inner_w = width - _ILEFT - _IRIGHT

    def x_of(value: float) -> float:
        return _ILEFT + inner_w * (value - lo) / (hi - lo)

    label = _tick_labeller(unit, ticks)
    base = _ITOP + _IROW * len(rows)
    parts = [
        _open_svg("intervals", width, height, title, f' data-rows="{len(rows)}"'),
        f'<text class="chart-title" x="8" y="18" font-size="13" font-weight="600">'
        f"{escape(title)}</text>",
        '<g class="axis x">',
    ]
    for tick in ticks:
        x = _fmt(x_of(tick))
        parts.append(
            f'<line class="grid" x1="{x}" x2="{x}" y1="{_ITOP}" y2="{base}" stroke="#eceff1" '
            f'stroke-width="1"/><text class="tick" x="{x}" y="{base + 16}" font-size="11" '
            f'text-anchor="middle" fill="#546e7a">{escape(label(tick))}</text>'
        )
    parts.append(
        f'<line class="axis-line" x1="{_ILEFT}" x2="{width - _IRIGHT}" y1="{base}" y2="{base}" '
        'stroke="#90a4ae" stroke-width="1"/></g>'
    )
    for i, row in enumerate(rows):
        parts.append(_interval_row(row, _ITOP + _IROW * (i + 0.5), unit, x_of))
    parts.append(
        f'<text class="axis-note" x="{width - _IRIGHT}" y="{height - 4}" font-size="10" '
        'text-anchor="end" fill="#90a4ae">dot: estimate · line: interval · dashed: bound</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def _interval_row(row: Interval, y: float, unit: str, x_of: Callable[[float], float]) -> str:
    value, lower, upper, bound = (
        _finite(row.value),
        _finite(row.lower),
        _finite(row.upper),
        _finite(row.bound),
    )
    state = {True: "pass", False: "fail", None: "unknown"}[row.passed]
    colour = {"pass": "#37474f", "fail": FAIL_COLOUR, "unknown": "#37474f"}[state]
    mark = {"pass": "✓ ", "fail": "✗ ", "unknown": ""}[state]
    tip = f"{row.label}: " + (_value_text(value, unit) if value is not None else "no value")
    if lower is not None or upper is not None:
        ends = [_value_text(e, unit) if e is not None else "…" for e in (lower, upper)]
        tip += f" [{ends[0]} – {ends[1]}]"
    if bound is not None:
        tip += f", bound {_value_text(bound, unit)}"
    if row.passed is not None:
        tip += ", passed" if row.passed else ", failed"
    y_text = _fmt(y)
    parts = [
        f'<g class="row {state}"><title>{escape(tip)}</title>'
        f'<text class="label" x="{_ILEFT - 8}" y="{y_text}" dy="4" font-size="12" '
        f'text-anchor="end" fill="{colour}">{escape(mark + _short(row.label, 28))}</text>'
    ]
    left = lower if lower is not None else value
    right = upper if upper is not None else value
    if left is not None and right is not None:
        parts.append(
            f'<line class="ci" x1="{_fmt(x_of(left))}" x2="{_fmt(x_of(right))}" y1="{y_text}" '
            f'y2="{y_text}" stroke="{colour}" stroke-width="3" stroke-linecap="butt"/>'
        )
    if bound is not None:
        x = _fmt(x_of(bound))
        parts.append(
            f'<line class="bound" x1="{x}" x2="{x}" y1="{_fmt(y - 9)}" y2="{_fmt(y + 9)}" '
            'stroke="#263238" stroke-width="1.5" stroke-dasharray="3 2"/>'
        )
    if value is not None:
        parts.append(
            f'<circle class="pt" cx="{_fmt(x_of(value))}" cy="{y_text}" r="4" fill="#ffffff" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    else:
        parts.append(
            f'<text class="none" x="{_ILEFT + 4}" y="{y_text}" dy="4" font-size="11" '
            'fill="#90a4ae">no value</text>'
        )
    parts.append("</g>")
    return "".join(parts)
