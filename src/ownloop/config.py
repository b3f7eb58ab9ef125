"""The one place that reads configuration (environment variables, with defaults)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Config"]


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid-{os.getuid()}"


@dataclass(frozen=True)
class Config:
    """Where ownloop keeps its state and who is acting.

    >>> Config.from_env({"OWNLOOP_HOME": "/tmp/x"}).db_url
    'sqlite:////tmp/x/ownloop.db'
    """

    home: Path
    db_url_override: str | None = None
    user: str = "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        home = Path(env.get("OWNLOOP_HOME") or ".ownloop").expanduser().absolute()
        return cls(
            home=home,
            db_url_override=env.get("OWNLOOP_DB_URL") or None,
            user=env.get("OWNLOOP_USER") or _default_user(),
        )

    def with_home(self, home: Path | str) -> Config:
        return replace(self, home=Path(home).expanduser().absolute())

    @property
    def db_url(self) -> str:
        return self.db_url_override or f"sqlite:///{self.home / 'ownloop.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def predictions_dir(self) -> Path:
        return self.home / "predictions"
