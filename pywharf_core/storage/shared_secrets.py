"""Permission from a pair of configured shared secrets (``read_secret`` / ``write_secret``).

Backends that keep no user accounts of their own (``file_system``, ``s3``) let clients in with
one of two secrets from the config. Both comparisons run in constant time and always both run,
so response timing reveals neither a secret nor which one matched.
"""

from __future__ import annotations

import hmac

from pywharf_core.storage.backend import Permission


def shared_secret_permission(secret: str, read_secret: str, write_secret: str) -> Permission:
    given = secret.encode("utf-8", "surrogatepass")
    is_write = hmac.compare_digest(given, write_secret.encode("utf-8", "surrogatepass"))
    is_read = hmac.compare_digest(given, read_secret.encode("utf-8", "surrogatepass"))
    if is_write:
        return Permission.WRITE
    if is_read:
        return Permission.READ
    return Permission.NONE
