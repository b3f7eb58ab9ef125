"""The dashboard's SVG charts: parsed as XML, coordinates checked against known inputs."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from markupsafe import Markup

from ownloop.errors import InvalidInputError
from ownloop.ui._charts import (
    Interval,
    Series,
    bars,
    distribution,
    histogram,
    intervals,
    sparkline,
    time_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>\"onload='x'&"


def parse(markup: Markup) -> ET.Element:
    """The chart as an XML tree (fails on anything not well-formed)."""
    assert isinstance(markup, Markup)
    return ET.fromstring(str(markup))


def every(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    found = root.iter(SVG + tag)
    return [e for e in found if cls is None or cls in (e.get("class") or "").split()]


def times(count: int, step: timedelta = timedelta(minutes=5)) -> list[datetime]:
    return [T0 + step * i for i in range(count)]


def no_inline_style(markup: Markup) -> None:
    text = str(markup)
    assert "style=" not in text and "<style" not in text and "<script" not in text


def line_runs(root: ET.Element) -> list[str]:
    return [p.get("d") or "" for p in every(root, "path", "line")]


def tick_labels(root: ET.Element, axis: str) -> list[str]:
    group = next(g for g in every(root, "g", "axis") if axis in (g.get("class") or "").split())
    return [t.text or "" for t in every(group, "text", "tick")]


# --- time_chart ---------------------------------------------------------------------------


def test_time_chart_one_point_per_window_with_a_title_each() -> None:
    svg = time_chart(
        [Series("accuracy", times(12), [0.9 + 0.005 * i for i in range(12)])],
        title="Accuracy",
        unit="%",
    )
    root = parse(svg)
    assert root.get("class") == "chart time"
    assert root.get("viewBox") == "0 0 720 260" and root.get("width") == "100%"
    assert root.get("data-windows") == "12" and root.get("data-points") == "12"
    points = every(root, "circle", "pt")
    assert len(points) == 12
    first = points[0].find(SVG + "title")
    assert first is not None and first.text == "2026-11-30 00:00 UTC · accuracy: 90%"
    no_inline_style(svg)


def test_time_chart_coordinates_are_linear_in_time_and_value() -> None:
    # uneven times and values: pixel differences must be proportional to data differences
    moments = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=3), T0 + timedelta(hours=7)]
    values = [1.0, 3.0, 2.0, 10.0]
    root = parse(time_chart([Series("v", moments, values)], title="v"))
    xs = [float(c.get("cx") or 0) for c in every(root, "circle", "pt")]
    ys = [float(c.get("cy") or 0) for c in every(root, "circle", "pt")]
    per_hour = (xs[1] - xs[0]) / 1
    assert xs[2] - xs[0] == pytest.approx(3 * per_hour, abs=0.02)
    assert xs[3] - xs[0] == pytest.approx(7 * per_hour, abs=0.02)
    per_unit = (ys[1] - ys[0]) / (3.0 - 1.0)
    assert per_unit < 0  # larger values are drawn higher
    assert ys[3] - ys[0] == pytest.approx(9 * per_unit, abs=0.02)
    assert ys[2] - ys[0] == pytest.approx(1 * per_unit, abs=0.02)


def test_time_chart_value_ticks_are_nice_and_carry_the_unit() -> None:
    root = parse(
        time_chart([Series("p99", times(5), [0.12, 0.2, 0.31, 0.18, 0.25])], title="p99", unit="s")
    )
    labels = tick_labels(root, "y")
    assert labels == ["100 ms", "150 ms", "200 ms", "250 ms", "300 ms", "350 ms"]
    percent = parse(time_chart([Series("a", times(3), [0.9, 0.95, 0.97])], title="a", unit="%"))
    assert tick_labels(percent, "y") == ["90%", "92%", "94%", "96%", "98%"]
    cost = parse(time_chart([Series("c", times(3), [0, 12.0, 40.0])], title="c", unit="$"))
    assert tick_labels(cost, "y") == ["$0", "$10", "$20", "$30", "$40"]


def test_time_chart_tick_labels_sit_at_their_values() -> None:
    root = parse(time_chart([Series("v", times(3), [0.0, 5.0, 10.0])], title="v"))
    ys = [float(c.get("cy") or 0) for c in every(root, "circle", "pt")]
    group = next(g for g in every(root, "g", "axis") if "y" in (g.get("class") or "").split())
    ticks = {t.text: float(t.get("y") or 0) for t in every(group, "text", "tick")}
    assert ticks["0"] == pytest.approx(ys[0]) and ticks["10"] == pytest.approx(ys[2])


def test_time_chart_time_ticks_fall_on_round_utc_hours() -> None:
    start = T0 + timedelta(minutes=17)
    root = parse(
        time_chart([Series("v", [start, start + timedelta(hours=25)], [1.0, 2.0])], title="v")
    )
    # the date is written where the day starts (and on the first tick)
    assert tick_labels(root, "x") == ["Nov 30 06:00", "12:00", "18:00", "Dec 01 00:00"]
    days = parse(time_chart([Series("v", [T0, T0 + timedelta(days=30)], [1.0, 2.0])], title="v"))
    assert tick_labels(days, "x") == ["Nov 30", "Dec 07", "Dec 14", "Dec 21", "Dec 28"]  # Mondays


def test_time_chart_gaps_break_the_line_at_none_nan_and_inf() -> None:
    values: list[float | None] = [1.0, 2.0, None, 3.0, 4.0, math.nan, 5.0, 6.0, math.inf, 7.0, 8.0]
    root = parse(time_chart([Series("v", times(len(values)), values)], title="v"))
    assert len(every(root, "circle", "pt")) == 8
    # every window has its position on the axis; the gaps have no circle
    assert root.get("data-windows") == "11" and root.get("data-points") == "11"
    assert every(root, "g", "series")[0].get("data-values") == "8"
    runs = line_runs(root)
    assert len(runs) == 4
    assert all(d.count("M") == 1 and d.count("L") == 1 for d in runs)


def test_time_chart_band_follows_lower_and_upper() -> None:
    values = [0.5, 0.6, 0.7, 0.6]
    series = Series("est", times(4), values, [v - 0.1 for v in values], [v + 0.1 for v in values])
    root = parse(time_chart([series], title="est"))
    bands = every(root, "path", "band")
    assert len(bands) == 1
    coords = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", bands[0].get("d") or "")]
    band_ys = coords[1::2]
    point_ys = [float(c.get("cy") or 0) for c in every(root, "circle", "pt")]
    # upper edge then lower edge (reversed): each 0.1 above and below its point
    half = (point_ys[0] - point_ys[1]) / (0.6 - 0.5) * 0.1
    assert band_ys[:4] == pytest.approx([y - half for y in point_ys], abs=0.02)
    assert band_ys[4:] == pytest.approx([y + half for y in reversed(point_ys)], abs=0.02)


def test_time_chart_draws_the_reference_line_within_the_axis() -> None:
    root = parse(time_chart([Series("v", times(3), [0.8, 0.85, 0.9])], title="v", reference=0.7))
    refs = every(root, "line", "ref")
    assert len(refs) == 1
    assert [t.text for t in every(root, "text", "ref-label")] == ["reference 0.7"]
    y_ref = float(refs[0].get("y1") or 0)
    ys = [float(c.get("cy") or 0) for c in every(root, "circle", "pt")]
    per_unit = (ys[1] - ys[0]) / 0.05
    assert y_ref - ys[0] == pytest.approx(-0.1 * per_unit, abs=0.02)


def test_time_chart_several_series_share_one_axis_and_get_a_legend() -> None:
    a = Series("estimated", times(3), [0.5, 0.5, 0.5])
    b = Series("realised", times(3), [1.0, 1.0, 1.0])
    root = parse(time_chart([a, b], title="accuracy"))
    groups = every(root, "g", "series")
    assert [g.get("data-label") for g in groups] == ["estimated", "realised"]
    assert root.get("data-windows") == "3" and root.get("data-points") == "3"
    assert len(every(root, "circle", "pt")) == 6
    legend = every(root, "g", "legend")
    assert len(legend) == 1 and [t.text for t in every(legend[0], "text")] == [
        "estimated",
        "realised",
    ]
    ya = {c.get("cy") for c in every(groups[0], "circle", "pt")}
    yb = {c.get("cy") for c in every(groups[1], "circle", "pt")}
    assert len(ya) == 1 and len(yb) == 1 and ya != yb
    colours = {c.get("fill") for c in every(groups[0], "circle")} | {
        c.get("fill") for c in every(groups[1], "circle")
    }
    assert len(colours) == 2


def test_time_chart_counts_distinct_windows_over_series() -> None:
    hourly = Series("hourly", times(4, timedelta(hours=1)), [1.0, 2.0, 3.0, 4.0])
    daily = Series("sparse", [T0, T0 + timedelta(minutes=90)], [2.0, 2.5])
    root = parse(time_chart([hourly, daily], title="v"))
    assert root.get("data-windows") == "5" and root.get("data-points") == "4"
    groups = every(root, "g", "series")
    assert [g.get("data-windows") for g in groups] == ["4", "2"]
    assert [g.get("data-values") for g in groups] == ["4", "2"]


def test_time_chart_buckets_past_max_points_with_mean_and_min_max_band() -> None:
    # 30 days of 5-minute windows; each bucket of 12 windows holds values k .. k+11
    count = 8640
    values = [float(i) for i in range(count)]
    root = parse(time_chart([Series("v", times(count), values)], title="v", max_points=720))
    points = every(root, "circle", "pt")
    assert len(points) == 720
    assert root.get("data-windows") == "8640" and root.get("data-points") == "720"
    first = points[0].find(SVG + "title")
    assert first is not None and "mean 5.5 of 12 windows" in (first.text or "")
    assert "range 0 – 11" in (first.text or "")
    assert len(every(root, "path", "band")) == 1


def test_time_chart_bucket_with_only_gaps_stays_a_gap() -> None:
    values: list[float | None] = [1.0] * 10 + [None] * 10 + [2.0] * 10
    root = parse(time_chart([Series("v", times(30), values)], title="v", max_points=3))
    assert len(every(root, "circle", "pt")) == 2
    assert root.get("data-points") == "3" and root.get("data-windows") == "30"
    assert every(root, "g", "series")[0].get("data-values") == "2"
    assert len(line_runs(root)) == 0  # two single points, no line across the gap


def test_time_chart_constant_series_and_single_point_draw() -> None:
    flat = parse(time_chart([Series("v", times(5), [0.0] * 5)], title="flat"))
    assert len(every(flat, "circle", "pt")) == 5
    one = parse(time_chart([Series("v", [T0], [3.0])], title="one"))
    circle = every(one, "circle", "pt")[0]
    assert float(circle.get("cx") or 0) == pytest.approx(64 + (720 - 64 - 16) / 2)


@pytest.mark.parametrize("value", [1e12, -1e-12, 1e-9, -3.5e7])
def test_time_chart_extreme_values_get_finite_coordinates_and_readable_ticks(value: float) -> None:
    root = parse(time_chart([Series("v", times(3), [value, value * 1.5, value])], title="v"))
    for circle in every(root, "circle", "pt"):
        assert math.isfinite(float(circle.get("cx") or "nan"))
        assert math.isfinite(float(circle.get("cy") or "nan"))
    labels = tick_labels(root, "y")
    assert len(set(labels)) == len(labels) >= 2
    assert all(len(label) <= 10 for label in labels)


def test_time_chart_without_values_says_no_data() -> None:
    assert str(time_chart([], title="Latency")) == '<p class="none">Latency: no data</p>'
    gaps = time_chart([Series("v", times(3), [None, math.nan, None])], title="Latency")
    assert str(gaps) == '<p class="none">Latency: no data in 3 windows</p>'


def test_time_chart_rejects_series_of_different_lengths() -> None:
    with pytest.raises(InvalidInputError, match="3 times but 2 values"):
        time_chart([Series("v", times(3), [1.0, 2.0])], title="v")


def test_time_chart_escapes_titles_and_labels() -> None:
    series = [Series(HOSTILE, times(2), [1.0, 2.0]), Series(HOSTILE + "2", times(2), [1.0, 3.0])]
    svg = time_chart(series, title=HOSTILE, unit=HOSTILE)
    root = parse(svg)
    assert "<script>" not in str(svg)
    assert root.get("aria-label") == HOSTILE
    heading = root.find(SVG + "title")
    assert heading is not None and heading.text == HOSTILE
    assert every(root, "g", "series")[0].get("data-label") == HOSTILE
    assert every(root, "script") == [] and all(
        not name.startswith("on") for e in root.iter() for name in e.attrib
    )
    none = time_chart([], title=HOSTILE)
    assert "<script>" not in str(none) and "&lt;script&gt;" in str(none)


# --- sparkline ----------------------------------------------------------------------------


def test_sparkline_marks_the_last_value_and_breaks_at_gaps() -> None:
    svg = sparkline([0.2, 0.3, None, 0.25, 0.4, math.nan], title="p99", unit="s")
    root = parse(svg)
    assert root.get("class") == "spark" and root.get("data-points") == "4"
    points = every(root, "circle", "pt")
    assert len(points) == 1
    lines = every(root, "path", "line")
    assert len(lines) == 2
    # the dot sits at the last present value (index 4 of 6, the top of the range)
    assert float(points[0].get("cx") or 0) == pytest.approx(3 + 94 * 4 / 5)
    assert float(points[0].get("cy") or 0) == pytest.approx(3)
    title = root.find(SVG + "title")
    assert title is not None and title.text == "p99: last 400 ms"
    no_inline_style(svg)


def test_sparkline_constant_single_and_empty() -> None:
    flat = parse(sparkline([5.0, 5.0, 5.0], title="flat"))
    assert math.isfinite(float(every(flat, "circle", "pt")[0].get("cy") or "nan"))
    one = parse(sparkline([1e12], title="one"))
    assert float(every(one, "circle", "pt")[0].get("cx") or 0) == pytest.approx(50)
    empty = sparkline([None, None], title=HOSTILE)
    assert 'class="none' in str(empty) and "<script>" not in str(empty)
    parse(Markup(f"<x>{empty}</x>"))


# --- histogram and bars -------------------------------------------------------------------


def rect_spans(root: ET.Element, kind: str) -> list[tuple[float, float, float]]:
    """(x, width, height) of each bin of ``kind`` (ref or cur)."""
    return [
        (float(r.get("x") or 0), float(r.get("width") or 0), float(r.get("height") or 0))
        for r in every(root, "rect", "bin")
        if kind in (r.get("class") or "").split()
    ]


def test_histogram_draws_bins_at_their_real_widths() -> None:
    # quantile-like bins: the third is twice as wide as the first, the last ten times
    edges = [0.0, 1.0, 2.0, 4.0, 14.0]
    shares = [0.25, 0.25, 0.25, 0.25]
    root = parse(histogram(edges, shares, [0.1, 0.2, 0.3, 0.4], title="age"))
    assert root.get("class") == "chart histogram" and root.get("data-bins") == "4"
    ref = rect_spans(root, "ref")
    cur = rect_spans(root, "cur")
    assert len(ref) == 4 and len(cur) == 4
    unit = ref[0][1]
    assert [w for _, w, _ in ref] == pytest.approx([unit, unit, 2 * unit, 10 * unit], abs=0.02)
    # bins are adjacent on a linear axis: each starts where the value says
    assert [x - ref[0][0] for x, _, _ in ref] == pytest.approx(
        [0, unit, 2 * unit, 4 * unit], abs=0.02
    )
    assert [x for x, _, _ in cur] == pytest.approx([x for x, _, _ in ref])
    # equal shares: area is the share, so a bin twice as wide is half as high
    assert ref[2][2] == pytest.approx(ref[0][2] / 2, abs=0.02)
    areas = [w * h for _, w, h in cur]
    assert [a / sum(areas) for a in areas] == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-3)


def test_histogram_tick_labels_are_values_at_their_positions() -> None:
    root = parse(histogram([10.0, 20.0, 50.0], [0.5, 0.5], [0.5, 0.5], title="x", unit="ms"))
    labels = tick_labels(root, "x")
    assert labels == ["10 ms", "20 ms", "30 ms", "40 ms", "50 ms"]
    ref = rect_spans(root, "ref")
    group = next(g for g in every(root, "g", "axis") if "x" in (g.get("class") or "").split())
    at = {t.text: float(t.get("x") or 0) for t in every(group, "text", "tick")}
    assert at["10 ms"] == pytest.approx(ref[0][0], abs=0.02)
    assert at["20 ms"] == pytest.approx(ref[1][0], abs=0.02)
    assert at["50 ms"] == pytest.approx(ref[1][0] + ref[1][1], abs=0.02)


def test_histogram_with_a_zero_width_bin_falls_back_to_shares() -> None:
    root = parse(histogram([0.0, 0.0, 1.0], [0.5, 0.5], [0.2, 0.8], title="ties"))
    heights = [h for _, _, h in rect_spans(root, "cur")]
    assert heights[1] == pytest.approx(4 * heights[0], abs=0.02)
    assert "share per bin" in ET.tostring(root, encoding="unicode")


def test_histogram_extreme_and_bad_input() -> None:
    big = parse(histogram([-1e12, 0.0, 1e12], [0.5, 0.5], [0.5, 0.5], title="big"))
    assert all(len(label) <= 8 for label in tick_labels(big, "x"))
    tiny = parse(histogram([-1e-12, 0.0, 1e-12], [0.5, 0.5], [0.5, 0.5], title="tiny"))
    assert len(set(tick_labels(tiny, "x"))) == len(tick_labels(tiny, "x")) >= 2
    assert str(histogram([], [], [], title="none")) == '<p class="none">none: no data</p>'
    with pytest.raises(InvalidInputError, match="ascending"):
        histogram([0.0, 2.0, 1.0], [0.5, 0.5], [0.5, 0.5], title="bad")
    with pytest.raises(InvalidInputError, match="ascending"):
        histogram([0.0, math.inf], [1.0], [1.0], title="bad")
    with pytest.raises(InvalidInputError, match="one share per bin"):
        histogram([0.0, 1.0, 2.0], [1.0], [0.5, 0.5], title="bad")


def test_bars_put_reference_and_current_side_by_side() -> None:
    root = parse(bars(["a", "b", "c"], [0.5, 0.3, 0.2], [0.25, 0.25, 0.5], title="region"))
    ref, cur = rect_spans(root, "ref"), rect_spans(root, "cur")
    assert len(ref) == 3 and len(cur) == 3
    assert all(c[0] == pytest.approx(r[0] + r[1], abs=0.02) for r, c in zip(ref, cur, strict=True))
    assert cur[2][2] == pytest.approx(ref[0][2]) and ref[0][2] == pytest.approx(2 * cur[0][2])
    assert [t.text for t in every(root, "text", "tick") if t.text in {"a", "b", "c"}] == [
        "a",
        "b",
        "c",
    ]
    assert str(bars([], [], [], title="none")) == '<p class="none">none: no data</p>'


# --- intervals ----------------------------------------------------------------------------


def test_intervals_axis_covers_every_value_interval_and_bound() -> None:
    rows = [
        Interval("accuracy", 0.91, 0.89, 0.93, bound=0.95, passed=False),
        Interval("latency", 0.12, 0.08, 0.16, bound=0.2, passed=True),
    ]
    root = parse(intervals(rows, title="gate"))
    labels = [float(t) for t in tick_labels(root, "x")]
    assert labels[0] <= 0.08 and labels[-1] >= 0.95
    group = next(g for g in every(root, "g", "axis") if "x" in (g.get("class") or "").split())
    at = {float(t.text or 0): float(t.get("x") or 0) for t in every(group, "text", "tick")}
    per_unit = (at[labels[-1]] - at[labels[0]]) / (labels[-1] - labels[0])
    x0 = at[labels[0]]
    ci = every(root, "line", "ci")
    assert float(ci[1].get("x1") or 0) == pytest.approx(
        x0 + (0.08 - labels[0]) * per_unit, abs=0.05
    )
    assert float(ci[0].get("x2") or 0) == pytest.approx(
        x0 + (0.93 - labels[0]) * per_unit, abs=0.05
    )
    bound = every(root, "line", "bound")[0]
    assert float(bound.get("x1") or 0) == pytest.approx(
        x0 + (0.95 - labels[0]) * per_unit, abs=0.05
    )


def test_intervals_equal_intervals_have_equal_pixel_lengths_across_rows() -> None:
    rows = [
        Interval("a", 0.8, 0.75, 0.85, bound=0.7),
        Interval("b", 0.4, 0.35, 0.45, bound=0.5, passed=False),
        Interval("c", 0.1, 0.0, 0.2),
    ]
    root = parse(intervals(rows, title="gate", unit="%"))
    lines = every(root, "line", "ci")
    spans = [float(line.get("x2") or 0) - float(line.get("x1") or 0) for line in lines]
    assert spans[0] == pytest.approx(spans[1], abs=0.02) and spans[2] == pytest.approx(2 * spans[0])
    bounds = [float(b.get("x1") or 0) for b in every(root, "line", "bound")]
    assert bounds[0] - bounds[1] == pytest.approx(2 * spans[0], abs=0.02)  # 0.7 vs 0.5
    assert tick_labels(root, "x")[0] == "0%" and tick_labels(root, "x")[-1] == "100%"


def test_intervals_mark_failed_rows_and_rows_without_values() -> None:
    rows = [
        Interval("ok", 0.9, 0.85, 0.95, bound=0.8, passed=True),
        Interval("bad", 0.6, 0.55, 0.65, bound=0.8, passed=False),
        Interval("missing", None, None, None, bound=0.8),
    ]
    root = parse(intervals(rows, title="gate"))
    states = [g.get("class") for g in every(root, "g", "row")]
    assert states == ["row pass", "row fail", "row unknown"]
    fail = every(root, "g", "fail")[0]
    assert [t.text for t in every(fail, "text", "label")] == ["✗ bad"]
    assert every(fail, "line", "ci")[0].get("stroke") == "#c62828"
    assert len(every(root, "circle", "pt")) == 2 and len(every(root, "line", "bound")) == 3
    assert (
        str(intervals([Interval("x", None, None, None)], title="t"))
        == '<p class="none">t: no data</p>'
    )


# --- escaping across every chart ----------------------------------------------------------


def test_every_chart_escapes_text_from_data() -> None:
    charts = [
        time_chart([Series(HOSTILE, times(2), [1.0, 2.0])], title=HOSTILE, unit=HOSTILE),
        sparkline([1.0, 2.0], title=HOSTILE, unit=HOSTILE),
        histogram([0.0, 1.0, 2.0], [0.5, 0.5], [0.5, 0.5], title=HOSTILE, unit=HOSTILE),
        bars([HOSTILE, "b"], [0.5, 0.5], [0.5, 0.5], title=HOSTILE),
        intervals(
            [Interval(HOSTILE, 1.0, 0.0, 2.0, bound=1.5, passed=False)], title=HOSTILE, unit=HOSTILE
        ),
    ]
    for chart in charts:
        root = parse(chart)
        assert "<script>" not in str(chart)
        assert root.get("aria-label", "").startswith(HOSTILE)
        texts = "".join(e.text or "" for e in root.iter())
        assert "<script>alert(1)</script>" in texts  # shown as text, not markup
        assert every(root, "script") == []
        assert not [name for e in root.iter() for name in e.attrib if name.lower().startswith("on")]
        no_inline_style(chart)


def test_series_of_stored_figures_uses_window_ends_and_the_band() -> None:
    @dataclass(frozen=True)
    class Figure:
        window_end: datetime
        value: float | None
        lower: float | None
        upper: float | None

    figures = [Figure(T0, 0.9, 0.85, 0.95), Figure(T0 + timedelta(hours=1), None, None, None)]
    series = Series.of("estimated", figures)
    assert series.times == [T0, T0 + timedelta(hours=1)] and series.values == [0.9, None]
    assert series.lower == [0.85, None] and series.upper == [0.95, None]
    assert Series.of("estimated", figures, band=False).lower is None


def test_float_noise_on_a_constant_reads_as_a_constant() -> None:
    root = parse(time_chart([Series("v", times(2), [0.5, 0.5 + 1e-13])], title="v"))
    labels = tick_labels(root, "y")
    assert len(set(labels)) == len(labels) and all(len(label) <= 5 for label in labels)


def test_histogram_of_a_single_value_stays_visible() -> None:
    root = parse(histogram([3.0, 3.0, 3.0], [0.5, 0.5], [0.5, 0.5], title="one value"))
    assert all(w >= 1.0 and h > 0 for _, w, h in rect_spans(root, "cur"))
    assert "3.00" in tick_labels(root, "x")


def test_distribution_draws_numeric_bins_on_their_scale_and_categories_as_bars() -> None:
    @dataclass(frozen=True)
    class Bins:
        kind: str
        labels: tuple[str, ...]
        edges: tuple[float, ...]
        reference: tuple[float, ...]
        current: tuple[float, ...]

    numeric = Bins("numeric", ("[0, 1)", "[1, 3)"), (0.0, 1.0, 3.0), (0.5, 0.5), (0.2, 0.8))
    root = parse(distribution(numeric, title="tenure"))
    assert root.get("class") == "chart histogram"
    widths = [w for _, w, _ in rect_spans(root, "ref")]
    assert widths[1] == pytest.approx(2 * widths[0], abs=0.02)
    categorical = Bins("categorical", ("fr", "de"), (), (0.5, 0.5), (0.9, 0.1))
    assert parse(distribution(categorical, title="country")).get("class") == "chart bars"


def test_time_chart_band_stops_where_the_value_is_missing() -> None:
    values: list[float | None] = [0.5, 0.6, None, 0.6, 0.5]
    lower = [0.4, 0.5, 0.0, 0.5, 0.4]  # a bound without its value must not stretch the axis
    upper = [0.6, 0.7, 9.0, 0.7, 0.6]
    root = parse(time_chart([Series("est", times(5), values, lower, upper)], title="est"))
    assert len(every(root, "path", "band")) == 2
    assert tick_labels(root, "y")[-1] == "0.7"
