"""Exceptions shared across pywharf.

Each carries a message meant for a human: the CLI prints it as one line, the HTTP layer sends
it as the response body (never a traceback).
"""

from __future__ import annotations


class PywharfError(Exception):
    """Base class for errors pywharf reports to a user."""


class ConfigError(PywharfError):
    """A config or admin-secret file is malformed; the message names the file, table and key."""


class InvalidName(PywharfError):
    """A repository name, project name or filename is not acceptable (e.g. path traversal)."""


class InvalidDigest(InvalidName):
    """A record's sha256 is not 64 hex digits. Digests go into pages unescaped-by-design
    (``#sha256=``, ``data-core-metadata``), so anything else would let whoever can write the
    storage or the remote index inject markup; like a bad filename, the entry is unusable."""


class UploadRejected(PywharfError):
    """An upload is refused; ``status`` is the HTTP status code to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FileConflict(PywharfError):
    """A file with the same name but different content is already stored."""


class BackendUnavailable(PywharfError):
    """The storage backend could not be reached or answered with an error."""
