"""Charts drawn on the server as SVG: time series with bands, sparklines, histograms on their
true scale, intervals on a shared axis. Pure functions of their data; markup is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup

__all__ = ["Interval", "Series", "bars", "histogram", "intervals", "sparkline", "time_chart"]


@dataclass(frozen=True)
class Series:
    """One line of a time chart: a value per window (None: no value), an optional band."""

    label: str
    times: Sequence[datetime]
    values: Sequence[float | None]
    lower: Sequence[float | None] | None = None
    upper: Sequence[float | None] | None = None


@dataclass(frozen=True)
class Interval:
    """One row of an interval chart: an estimate, its interval and the bound it is held to."""

    label: str
    value: float | None
    lower: float | None
    upper: float | None
    bound: float | None = None
    passed: bool | None = None


def time_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    reference: float | None = None,
    max_points: int = 600,
) -> Markup:
    """A time-series chart; one ``circle.pt`` per plotted window (bucketed past ``max_points``)."""
    raise NotImplementedError


def sparkline(values: Sequence[float | None], *, title: str) -> Markup:
    """A small trend line for a table cell."""
    raise NotImplementedError


def histogram(
    edges: Sequence[float],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
) -> Markup:
    """Reference and current shares per bin, each bin drawn at its real width on a value axis."""
    raise NotImplementedError


def bars(
    labels: Sequence[str], reference: Sequence[float], current: Sequence[float], *, title: str
) -> Markup:
    """Reference and current shares per category."""
    raise NotImplementedError


def intervals(rows: Sequence[Interval], *, title: str, unit: str = "") -> Markup:
    """Estimates with their intervals on one shared, labelled axis, so lengths compare."""
    raise NotImplementedError
