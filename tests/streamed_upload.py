"""A big legacy-upload body generated while it is sent (the tests' 1 GiB uploads).

Neither the test nor the server may hold the file in memory: the body is produced piece by
piece with an explicit Content-Length (no chunked encoding, like twine), and the sha256 field
follows the file part (the server validates fields only once the whole form is in).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

MIB = 1 << 20

BOUNDARY = "pywharf-streamed-upload-boundary-5b0e"


class StreamedWheel:
    """A legacy-upload body for a big pseudo-random "wheel", generated while it is sent.

    The sha256 field follows the file part (the server validates fields only once the whole
    form is in), so neither side ever holds the file in memory.
    """

    def __init__(self, name: str, size: int, seed: int = 7) -> None:
        self.name, self.size, self.seed = name, size, seed
        self.filename = f"{name}-1.0-py3-none-any.whl"
        self.sha256 = hashlib.sha256()
        fields = [(":action", "file_upload"), ("protocol_version", "1"), ("name", name), ("version", "1.0"),
                  ("filetype", "bdist_wheel"), ("pyversion", "py3"), ("metadata_version", "2.1")]
        self.head = b"".join(self._field(k, v) for k, v in fields) + (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{self.filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail_length = len(self._tail("0" * 64))

    @staticmethod
    def _field(name: str, value: str) -> bytes:
        return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()

    def _tail(self, digest: str) -> bytes:
        return b"\r\n" + self._field("sha256_digest", digest) + f"--{BOUNDARY}--\r\n".encode()

    @property
    def content_length(self) -> int:
        return len(self.head) + self.size + self.tail_length

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        rng = random.Random(self.seed)
        remaining = self.size
        while remaining:
            chunk = rng.randbytes(min(MIB, remaining))
            self.sha256.update(chunk)
            remaining -= len(chunk)
            yield chunk
        yield self._tail(self.sha256.hexdigest())
