"""API tokens kept by a repository's store: create, look up, list, revoke.

Each token's record is one small document, ``.pywharf/tokens/<id>.json`` (the token's sha256,
never the token). Checking a token reads that one document: the cost does not depend on how
many tokens or files exist, and every server sharing the store sees a new token at once and a
revoked one (its document deleted) as soon as its cached verdict expires, which
:class:`~pywharf_core.service.repository.PkgRepo` bounds by the repository's
``sync_index_interval``.

Tokens created over the API are also listed in ``.pywharf/tokens.json`` (their public fields,
updated with compare-and-swap): listing needs no document enumeration, which not every store
offers cheaply (on GitHub a listing is a tree walk). Minted tokens (Trusted Publishing, 15
minutes) are not listed: CI makes them by the hundred.

A minted token's id is derived from its identity token's issuer and ``jti``, and documents are
created create-only: a replayed identity token cannot mint twice, on any server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pywharf_core.model.api_tokens import (
    MAX_DESCRIPTION_CHARS,
    SCOPES,
    TokenRecord,
    format_token,
    is_token_id,
    new_token_id,
    parse_token,
    token_digest,
)
from pywharf_core.model.errors import PywharfError
from pywharf_core.storage.api import Storage, VersionConflict

log = logging.getLogger(__name__)

TOKENS_PREFIX = ".pywharf/tokens/"
LISTING_KEY = ".pywharf/tokens.json"
MINTED_KEY = ".pywharf/tokens-minted.json"
DEFAULT_EXPIRES_IN = 90 * 86400
MAX_EXPIRES_IN = 10 * 365 * 86400
MAX_LISTED_TOKENS = 1000  # live API tokens per repository
LISTING_ATTEMPTS = 20


class TokenError(PywharfError):
    """A token request that cannot be carried out; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenIdTaken(PywharfError):
    """A record with this id exists already (for a minted token: its identity token was used)."""


def record_key(token_id: str) -> str:
    return f"{TOKENS_PREFIX}{token_id}.json"


def minted_token_id(issuer: str, jti: str) -> str:
    return hashlib.sha256(f"{issuer}\x00{jti}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str  # shown once
    record: TokenRecord


class TokenStore:
    def __init__(self, storage: Storage, repo: str, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.repo = repo
        self.clock = clock

    # -- checking --------------------------------------------------------------------------------

    def find(self, text: str) -> TokenRecord | None:
        """The live record of token ``text`` of this repository, or None (blocking: one read)."""
        parsed = parse_token(text)
        if parsed is None or parsed.repo != self.repo:
            return None
        document = self.storage.read_document(record_key(parsed.token_id))
        if document is None:
            return None
        try:
            record = TokenRecord.from_json(document.data)
        except ValueError as exc:
            log.error("repo %r: token record %s is unreadable, token refused: %s", self.repo,
                      record_key(parsed.token_id), exc)
            return None
        if record.token_id != parsed.token_id or not record.matches(text):
            return None
        now = self.clock()
        if record.expired(now):
            if record.kind == "oidc" and now >= max(record.expires, record.keep_until):
                with contextlib.suppress(Exception):  # tidy-up only: a failure changes nothing
                    self.storage.delete(record_key(record.token_id))
            return None
        return record

    # -- creating --------------------------------------------------------------------------------

    def create(
        self,
        scope: str,
        *,
        projects: tuple[str, ...] = (),
        expires_in: int | None = None,
        description: str = "",
        kind: str = "api",
        token_id: str | None = None,
        claims: dict[str, str] | None = None,
        keep_until: int = 0,
    ) -> NewToken:
        """A new token and its stored record. Raises :class:`TokenError` for bad parameters,
        :class:`TokenIdTaken` when ``token_id`` exists."""
        if scope not in SCOPES:
            raise TokenError(400, f"scope must be one of: {', '.join(SCOPES)}")
        if projects and scope != "upload":
            raise TokenError(400, "projects limit what a token may upload: only an upload token takes them")
        seconds = DEFAULT_EXPIRES_IN if expires_in is None else expires_in
        if not 0 < seconds <= MAX_EXPIRES_IN:
            raise TokenError(400, f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        if len(description) > MAX_DESCRIPTION_CHARS or not description.isprintable():
            raise TokenError(400, f"description must be printable text of at most {MAX_DESCRIPTION_CHARS} characters")
        token_id = token_id or new_token_id()
        text = format_token(self.repo, token_id)
        now = int(self.clock())
        record = TokenRecord(
            token_id=token_id, sha256=token_digest(text), scope=scope, expires=now + seconds, created=now,
            kind=kind, description=description, projects=projects, claims=dict(claims or {}), keep_until=keep_until,
        )
        try:
            self.storage.write_document(record_key(token_id), record.to_json(), None)
        except VersionConflict:
            raise TokenIdTaken(f"token id {token_id} exists") from None
        if kind == "api":
            try:
                self._update_listing(lambda records: self._with_new(records, record))
            except BaseException:
                with contextlib.suppress(Exception):
                    self.storage.delete(record_key(token_id))  # not listed: not created
                raise
        else:
            try:
                self._note_minted(record)
            except TokenError as exc:  # the token is valid; only the tidy-up list was not updated
                log.warning("repo %r: minted token %s not added to the sweep list: %s", self.repo, token_id, exc)
        return NewToken(text, record)

    def _with_new(self, records: list[TokenRecord], record: TokenRecord) -> list[TokenRecord]:
        now = self.clock()
        live = [r for r in records if not r.expired(now)]
        for gone in records:
            if gone.expired(now):
                with contextlib.suppress(Exception):
                    self.storage.delete(record_key(gone.token_id))
        if len(live) >= MAX_LISTED_TOKENS:
            raise TokenError(409, f"repository {self.repo!r} has {len(live)} live tokens: revoke some first")
        return [*live, record]

    # -- listing and revoking ---------------------------------------------------------------------

    def list(self) -> list[TokenRecord]:
        """The repository's API tokens that have not expired, oldest first."""
        records, _ = self._read_listing()
        now = self.clock()
        return [r for r in records if not r.expired(now)]

    def revoke(self, token_id: str) -> TokenRecord | None:
        """End the token ``token_id`` (refused from then on); None if unknown."""
        if not is_token_id(token_id):
            return None
        document = self.storage.read_document(record_key(token_id))
        found: TokenRecord | None = None
        if document is not None:
            with contextlib.suppress(ValueError):
                found = TokenRecord.from_json(document.data)
            if found is not None:
                self._end(found)
            else:
                self.storage.delete(record_key(token_id))  # unreadable: refused anyway, now gone
        listed: list[TokenRecord] = []

        def without(records: list[TokenRecord]) -> list[TokenRecord]:
            listed[:] = [r for r in records if r.token_id == token_id]
            return [r for r in records if r.token_id != token_id]

        self._update_listing(without)
        return found or (listed[0] if listed else None)

    def burn(self, text: str) -> TokenRecord | None:
        """End token ``text`` now, on behalf of whoever holds it (uv asks this after publishing
        with a minted token: ``POST /_/oidc/burn-token``). None when ``text`` is no live token
        of this repository."""
        record = self.find(text)
        if record is None:
            return None
        self._end(record)
        if record.kind == "api":
            self._update_listing(lambda records: [r for r in records if r.token_id != record.token_id])
        return record

    def _end(self, record: TokenRecord) -> None:
        """An API token's record is deleted. A minted token's record is kept, expired, until its
        ``keep_until``: it is the replay guard of the identity token it was minted for (deleting
        it would let that identity token mint again); the sweep of :meth:`_note_minted` removes it."""
        key = record_key(record.token_id)
        if record.kind == "api":
            self.storage.delete(key)
            return
        for _ in range(LISTING_ATTEMPTS):
            document = self.storage.read_document(key)
            if document is None:
                return
            try:
                current = TokenRecord.from_json(document.data)
            except ValueError:
                return  # unreadable: refused by find() anyway, and still a replay guard
            ended = dataclasses.replace(current, expires=min(current.expires, int(self.clock())))
            try:
                self.storage.write_document(key, ended.to_json(), document.version)
                return
            except VersionConflict:
                continue
        raise TokenError(503, "the token record keeps changing: retry")

    # -- minted tokens: a sweep list, so their records do not pile up ------------------------------

    def _note_minted(self, record: TokenRecord) -> None:
        """Add a minted token to ``.pywharf/tokens-minted.json`` and delete the records of those
        past their ``keep_until`` (nothing else would: uv burns its token and never presents it
        again). The document holds only the minted tokens of the last ``keep_until`` window."""
        now = self.clock()
        done: list[str] = []

        def change(entries: list[Any]) -> list[Any]:
            valid = [(e[0], e[1]) for e in entries if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                     and is_token_id(e[0]) and isinstance(e[1], int)]
            done[:] = [token_id for token_id, until in valid if until <= now]
            return [[token_id, until] for token_id, until in valid if until > now] + [
                [record.token_id, max(record.expires, record.keep_until)]]

        self._update_json_list(MINTED_KEY, "minted", change)
        for token_id in done:
            with contextlib.suppress(Exception):  # tidy-up only
                self.storage.delete(record_key(token_id))

    # -- the listing document ---------------------------------------------------------------------

    def _read_listing(self) -> tuple[list[TokenRecord], str | None]:
        entries, version = self._read_json_list(LISTING_KEY, "tokens")
        try:
            return [TokenRecord.from_json(json.dumps(entry).encode()) for entry in entries], version
        except ValueError as exc:
            where = self.storage.describe(LISTING_KEY)
            raise TokenError(503, f"the token listing {where} is unreadable: {exc}") from None

    def _update_listing(self, change: Callable[[list[TokenRecord]], list[TokenRecord]]) -> None:
        def change_entries(entries: list[Any]) -> list[Any]:
            try:
                records = [TokenRecord.from_json(json.dumps(entry).encode()) for entry in entries]
            except ValueError as exc:
                raise TokenError(503, f"the token listing {self.storage.describe(LISTING_KEY)} is unreadable: "
                                      f"{exc}") from None
            return [json.loads(r.to_json()) for r in change(records)]

        self._update_json_list(LISTING_KEY, "tokens", change_entries)

    # -- small JSON documents holding one list, changed with compare-and-swap -----------------------

    def _read_json_list(self, key: str, field: str) -> tuple[list[Any], str | None]:
        document = self.storage.read_document(key)
        if document is None:
            return [], None
        try:
            raw: Any = json.loads(document.data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raw = None
        entries = raw.get(field) if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            # Never overwrite what cannot be read: the operator repairs it (tokens still work).
            raise TokenError(503, f"{self.storage.describe(key)} is unreadable: no {field!r} list")
        return entries, document.version

    def _update_json_list(self, key: str, field: str, change: Callable[[list[Any]], list[Any]]) -> None:
        for attempt in range(LISTING_ATTEMPTS):
            entries, version = self._read_json_list(key, field)
            updated = change(entries)
            if updated == entries:
                return
            data = json.dumps({field: updated}, sort_keys=True, indent=1)
            try:
                self.storage.write_document(key, data.encode(), version)
                return
            except VersionConflict:
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # another writer: read again
        raise TokenError(503, f"{self.storage.describe(key)} keeps changing: retry")
