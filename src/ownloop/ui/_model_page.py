"""The model page."""

from __future__ import annotations

from ownloop.ui._view import View

__all__ = ["feature_page", "model_page"]


def model_page(view: View, name: str) -> str:
    raise NotImplementedError


def feature_page(view: View, name: str) -> str:
    """One feature's drift over time (``?feature=``): reference vs current, its histograms."""
    raise NotImplementedError
