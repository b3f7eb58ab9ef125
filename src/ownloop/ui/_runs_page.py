"""The runs page."""

from __future__ import annotations

from ownloop.ui._view import View

__all__ = ["runs_page"]


def runs_page(view: View) -> str:
    raise NotImplementedError
