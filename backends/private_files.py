"""Files and folders figway creates on this machine are its own: 0700 and 0600.

The SQLite file holds API key hashes and every run's parameters and outputs; artifact
files hold whole tables. Others on the machine have no business reading either.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "private_file", "seal"]


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents readable by this user only (0700)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask


def private_file(path: Path) -> None:
    """Create the empty file ``path`` (0600) in a private directory, if it is missing.

    SQLite then opens the file as it is, and gives its -wal and -shm files the same mode.
    """
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    os.chmod(path, 0o600)


def seal(path: str | Path) -> None:
    """Make a file this process wrote readable by its user only (0600)."""
    os.chmod(path, 0o600)
