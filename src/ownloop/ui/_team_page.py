"""The team page."""

from __future__ import annotations

from ownloop.ui._view import View

__all__ = ["team_page"]


def team_page(view: View, team: str) -> str:
    raise NotImplementedError
