"""Permission from a pair of configured shared secrets (``read_secret`` / ``write_secret``).

Backends that keep no user accounts of their own (``file_system``, ``s3``) let clients in with
one of two secrets from the config. Both comparisons run in constant time and always both run,
so response timing reveals neither a secret nor which one matched.
"""

from __future__ import annotations

import hmac

from pywharf_core.storage.backend import Permission


def secret_matches(given: str, expected: str | None) -> bool:
    """``given == expected`` in constant time; never true when nothing is expected.

    ``surrogatepass``: a secret from the command line may hold undecodable bytes (Python keeps
    them as surrogates); comparing must not fail on them."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def shared_secret_permission(secret: str, read_secret: str, write_secret: str) -> Permission:
    is_write = secret_matches(secret, write_secret)
    is_read = secret_matches(secret, read_secret)
    if is_write:
        return Permission.WRITE
    if is_read:
        return Permission.READ
    return Permission.NONE
