"""The monitor runs page: the stored runs, newest window first, filtered by a GET form."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from ownloop.errors import InvalidInputError
from ownloop.monitoring import parse_duration
from ownloop.names import validate_name
from ownloop.predlog import ARMS
from ownloop.ui._view import View, render

__all__ = ["PAGE_SIZE", "RunFilter", "parse_filter", "runs_page"]

PAGE_SIZE = 50
_MAX_PAGE = 10_000
# 'default': the runs that counted the default arms (stable and canary)
_ARMS = ("default", *ARMS)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIELDS = ("model", "version", "arm", "since", "until")


@dataclass(frozen=True)
class RunFilter:
    """What the form asked for, checked: every field None when not given."""

    model: str | None = None
    version: int | None = None
    arm: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1


def runs_page(view: View) -> str:
    f = parse_filter(view.query, view.now)
    found = view.ws.monitor.runs(
        f.model,
        version=f.version,
        arm=f.arm,
        since=f.since,
        until=f.until,
        limit=PAGE_SIZE + 1,
        offset=(f.page - 1) * PAGE_SIZE,
    )
    given = {k: view.query[k].strip() for k in _FIELDS if view.query.get(k, "").strip()}
    return render(
        "runs.html",
        view,
        runs=found[:PAGE_SIZE],
        filter=f,
        given=given,
        arms=ARMS,
        models=[m.name for m in view.ws.registry.list_models()],
        first=(f.page - 1) * PAGE_SIZE + 1,
        prev_url=_url(given, f.page - 1) if f.page > 1 else None,
        next_url=_url(given, f.page + 1) if len(found) > PAGE_SIZE else None,
        share=share,
        figure=figure,
    )


def parse_filter(query: Mapping[str, str], now: datetime) -> RunFilter:
    """The form's values checked; a value that is not understood is an InvalidInputError that
    names it and says what to write."""
    q = {k: v.strip() for k, v in query.items() if v.strip()}
    model = q.get("model")
    if model is not None:
        validate_name("model", model)
    arm = q.get("arm")
    if arm is not None and arm not in _ARMS:
        raise InvalidInputError(
            f"arm '{arm[:40]}' is not one of {', '.join(_ARMS)}; pick one, or leave it empty "
            "for runs of any arms"
        )
    since = _time("since", q.get("since"), now)
    until = _time("until", q.get("until"), now)
    if since is not None and until is not None and since >= until:
        raise InvalidInputError(
            f"since {since.isoformat()} is not before until {until.isoformat()}; "
            "swap them or widen the range"
        )
    return RunFilter(
        model=model,
        version=_whole("version", q.get("version"), 1, None),
        arm=arm,
        since=since,
        until=until,
        page=_whole("page", q.get("page"), 1, _MAX_PAGE) or 1,
    )


def _whole(field: str, text: str | None, low: int, high: int | None) -> int | None:
    if text is None:
        return None
    shown = text[:40]
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InvalidInputError(
            f"{field} '{shown}' is not a whole number; write e.g. {field}=2 or leave it empty"
        )
    value = int(text)
    if value < low or (high is not None and value > high):
        top = "" if high is None else f" and at most {high}"
        raise InvalidInputError(f"{field} {value} must be at least {low}{top}")
    return value


def _time(field: str, text: str | None, now: datetime) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a duration before now (7d).
    A date alone is its first moment as ``since`` and its last as ``until``."""
    if text is None:
        return None
    shown = text[:40]
    if _is_duration(text):
        return now - parse_duration(text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{field} '{shown}' is not a time; write an ISO 8601 date or time in UTC "
            f"(e.g. {field}=2026-05-04 or {field}=2026-05-04T08:00) or a duration before now "
            f"(e.g. {field}=7d)"
        ) from None
    try:
        if field == "until" and _DAY.fullmatch(text):  # a day given as 'until' includes that day
            value += timedelta(days=1)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(
            f"{field} '{shown}' is out of range; write a time between the years 1 and 9999"
        ) from None


def _is_duration(text: str) -> bool:
    try:
        float(text[:-1])
    except ValueError:
        return False
    return text[-1:].lower() in ("s", "m", "h", "d", "w")


def _url(given: Mapping[str, str], page: int) -> str:
    query = {**given, "page": str(page)} if page > 1 else dict(given)
    return "/ui/runs" + (f"?{urlencode(query)}" if query else "")


def share(value: Any) -> str:
    """A share in 0..1 as a percentage ('-' for none)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%"


def figure(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"
