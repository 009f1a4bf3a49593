"""File helpers of the run directory: atomic writes, and cleaning up after killed writers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "remove_stale_temp_files"]


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")  # atomic_write's temp files


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files that :func:`atomic_write` left under ``directory`` when its process
    was killed mid-write (SIGKILL, power loss); files of live processes are kept. Returns the
    removed paths. A rerun in the same folder calls this first."""
    removed = []
    for p in Path(directory).rglob(".*.tmp*"):
        m = _TEMP_NAME.match(p.name)
        if m is None or not p.is_file():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):  # in flight (or the pid was reused): leave it
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temp file in the same folder, then ``os.replace``.

    Readers see the old file or the new one, never a torn one (also when the process is killed
    mid-write); on an exception (or an interrupt) the temp file is removed and the old file kept.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
