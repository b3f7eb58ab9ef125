"""The ``ownloop`` command: parse, call the library, print. ``OwnloopError`` becomes ``error: ...``."""

from __future__ import annotations

import sys

from ownloop.cli import (  # noqa: F401  (commands register themselves on import)
    _alerts,
    _compact,
    _demo,
    _deploy,
    _drift_files,
    _eval,
    _feedback,
    _monitor,
    _registry,
    _rollback,
    _scorecard,
    _serve,
    _tokens,
)
from ownloop.cli._app import cli

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="ownloop")


if __name__ == "__main__":  # pragma: no cover
    main()
