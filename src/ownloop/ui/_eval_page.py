"""The eval page."""

from __future__ import annotations

from ownloop.ui._view import View

__all__ = ["eval_page"]


def eval_page(view: View, eval_id: int) -> str:
    raise NotImplementedError
