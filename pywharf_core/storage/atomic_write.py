"""Crash-safe file replacement: write a temp file beside the target, fsync, rename.

A reader (or a crash) sees either the old content or the new, never a mix.

File modes: files are created with ``FILE_MODE`` (0o666) and the kernel applies the process
umask, as for any program's files (0o644 under the usual 022, 0o600 under 077): an operator
who runs the server under ``umask 077`` gets no world-readable package, sidecar or index.
Secret files pass ``SECRET_FILE_MODE``. Directories are created with ``mkdir``'s 0o777, umask
applied. Where a file's inode comes from elsewhere (a staged upload hard-linked into place),
``umask_file_mode`` says the mode to give it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

FILE_MODE = 0o666  # the kernel applies the umask
SECRET_FILE_MODE = 0o600  # keys and secrets: never more than the owner, whatever the umask

_UMASK_LOCK = threading.Lock()
_TEMP_ATTEMPTS = 100
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def process_umask() -> int:
    """The process umask, read without changing it where Linux reports it (``/proc/self/status``,
    kernel 4.7+). Elsewhere it can only be read by setting it: done under a lock with 0o077 set
    for that instant, so a file another thread creates meanwhile is at worst more private than
    intended, never less."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def umask_file_mode() -> int:
    """The mode a new file gets in this process: ``FILE_MODE`` with the umask applied."""
    return FILE_MODE & ~process_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename or link inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fully(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a short write (full disk, signal) is not an end."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than returning 0
            raise OSError("short write")
        view = view[written:]


def create_temp(folder: Path, *, prefix: str = ".", suffix: str = ".tmp", mode: int = FILE_MODE) -> tuple[int, Path]:
    """A new uniquely named file in ``folder``, open for writing: ``(fd, path)``.

    Like ``tempfile.mkstemp`` but created with ``mode`` (umask applied) instead of 0o600
    followed by a ``chmod`` that ignored the umask."""
    for _ in range(_TEMP_ATTEMPTS):
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, _CREATE_FLAGS, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {folder}")


def write_synced_temp(folder: Path, data: bytes, *, prefix: str = ".", suffix: str = ".tmp",
                      mode: int = FILE_MODE) -> Path:
    """``data`` in a new uniquely named file in ``folder``, fsynced: ready to be linked or renamed
    into place. Removed again if writing fails."""
    fd, path = create_temp(folder, prefix=prefix, suffix=suffix, mode=mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return path


def write_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_synced_temp(path.parent, data, prefix=f".{path.name}.", mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
