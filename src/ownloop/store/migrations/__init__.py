"""Numbered schema migrations: ``mNNN_<what>.py`` modules, each with ``DESCRIPTION`` and ``upgrade(conn)``.

Migrations are applied in number order inside one write transaction and recorded in
``ownloop_schema``. Each module spells out its own DDL (it never reads the current table
definitions), so an old database upgrades through exactly the steps a new one was built by.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

__all__ = ["Migration", "all_migrations", "latest_version"]


@dataclass(frozen=True)
class Migration:
    number: int
    description: str
    upgrade: Callable[[sa.Connection], None]


def all_migrations() -> list[Migration]:
    found: list[Migration] = []
    for info in pkgutil.iter_modules(__path__):
        match = re.fullmatch(r"m(\d{3})_\w+", info.name)
        if not match:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(Migration(int(match.group(1)), module.DESCRIPTION, module.upgrade))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def latest_version() -> int:
    migrations = all_migrations()
    return migrations[-1].number if migrations else 0
