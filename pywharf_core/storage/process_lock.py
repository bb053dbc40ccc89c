"""A file lock that stays usable in a forked worker process.

``filelock.FileLock`` refuses to be used in a child process that inherited it (its state, such
as an open descriptor and a hold count, belongs to the parent). ``pywharf server --workers N``
builds the repositories once in the supervisor and forks the workers from it, so every lock an
object holds for cross-process exclusion (the local index journal, the file_system documents)
is this one: the same path, a fresh ``FileLock`` per process, made on first use in it.
"""

from __future__ import annotations

import os
from types import TracebackType

from filelock import FileLock


class ProcessFileLock:
    """A ``FileLock`` on ``path`` per process (see the module docstring); a context manager."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._pid = os.getpid()
        self._lock = FileLock(path, timeout=timeout)

    def _current(self) -> FileLock:
        if self._pid != os.getpid():
            self._lock = FileLock(self.path, timeout=self.timeout)
            self._pid = os.getpid()
        return self._lock

    def __enter__(self) -> ProcessFileLock:
        self._current().acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._lock.release()
