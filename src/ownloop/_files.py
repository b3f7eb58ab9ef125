"""Private files and folders: what ownloop creates is 0600 (files) and 0700 (folders).

Modes are set per file, never through the process umask, so a program that imports ownloop keeps
its own umask. Links inside a root that lead out of it are refused, not followed.
"""

from __future__ import annotations

import os
from pathlib import Path

from ownloop.errors import IntegrityError

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "create_private",
    "inside",
    "private_folder",
    "replace_private_bytes",
    "replace_private_text",
]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(folder: Path) -> Path:
    """Create ``folder`` and any missing parents as 0700; folders that exist keep their mode."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # another process made it first
            continue
    if not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    return folder


def create_private(path: Path) -> Path:
    """Create the empty file ``path`` as 0600 (it must not exist), for a writer that truncates it.

    A writer that opens an existing file (pyarrow, sqlite) keeps its mode, so the file is
    never readable by others, not even for a moment before a chmod.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return path


def inside(root: Path, path: Path) -> Path:
    """``path`` if, with every link resolved, it stays inside ``root``; IntegrityError otherwise."""
    resolved = path.resolve()
    base = root.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise IntegrityError(
            f"{path} leads outside {root} (to {resolved}) through a symbolic link; ownloop does "
            f"not follow links out of its folders: replace the link with a real folder or file"
        )
    return path


def replace_private_text(path: Path, text: str, tmp: Path) -> Path:
    """:func:`replace_private_bytes` of ``text`` as UTF-8."""
    return replace_private_bytes(path, text.encode("utf-8"), tmp)


def replace_private_bytes(path: Path, data: bytes, tmp: Path) -> Path:
    """Write ``data`` to ``path`` through ``tmp`` (created 0600, then renamed over ``path``), so a
    reader sees the old file or the new one, never a part, and nobody else can read either."""
    tmp.unlink(missing_ok=True)
    create_private(tmp)
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
