"""What every page gets (``View``) and how it becomes HTML (``render``: Jinja2, autoescaped)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from ownloop.access import Actor
from ownloop.workspace import Workspace

__all__ = ["View", "render"]


@dataclass(frozen=True)
class View:
    """One page request: the workspace (acting as the caller), the caller, the query string,
    the form token to put in every POST form, and the time the page is drawn."""

    ws: Workspace
    actor: Actor
    query: Mapping[str, str]
    csrf: str
    now: datetime
    path: str = "/"
    extra: Mapping[str, Any] = field(default_factory=dict)


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ownloop.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def when(value: datetime | None) -> Markup:
    """A time the browser shows in the viewer's time zone (app.js), with UTC on hover."""
    if value is None:
        return Markup("<span class='none'>-</span>")
    utc = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup("<time datetime='{}' title='{}'>{}</time>").format(value.isoformat(), utc, utc)


def render(template: str, view: View, **context: Any) -> str:
    """``template`` (under ``ownloop/ui/templates``) rendered with ``view`` and ``context``."""
    return _env().get_template(template).render(view=view, **context)
