"""The dashboard: server-rendered pages over stored results, charts drawn as SVG on the server.

``ownloop serve`` mounts it at ``/``; ``ownloop ui`` starts a loopback server and opens it. Pages
read what the monitor, the gate, deploy, alerts and the scorecard stored; they never recompute a
window. State changes (acknowledge, resolve, promote, abort) are POST forms with a CSRF token,
checked with the same permissions as the CLI.
"""

from __future__ import annotations

from ownloop.ui._app import SESSION_COOKIE, UI_ROUTES, Dashboard, UiRoute, UiState, local_next

__all__ = ["SESSION_COOKIE", "UI_ROUTES", "Dashboard", "UiRoute", "UiState", "local_next"]
