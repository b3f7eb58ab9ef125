"""The models page."""

from __future__ import annotations

from ownloop.ui._view import View

__all__ = ["models_page"]


def models_page(view: View) -> str:
    raise NotImplementedError
