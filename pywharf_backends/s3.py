"""The ``s3`` backend: package files in an S3-compatible bucket (AWS S3, Ceph RGW, SeaweedFS, MinIO...).

A storage adapter (``pywharf_core.storage.api``): the layout (``index.toml``, ``<filename>``,
``.pywharf/<filename>.toml`` sidecars, ``.pywharf/<filename>.metadata``, the ``.pywharf/log/``
index log) and every policy are the core's (``pywharf_core.service.package_store``), the same as
``file_system``'s, so either store can be copied into the other. Several pywharf servers can run
over one bucket behind a load balancer: the bucket is the only state.

Correctness rests on two conditional writes the S3 API offers (AWS since 2024, SeaweedFS,
recent MinIO and Ceph; ``pywharf s3.check_engine`` probes a store):

- **create-only** (``If-None-Match: *`` on ``PutObject``, or on ``CompleteMultipartUpload``
  above ``multipart_threshold``): blobs, index log entries and identity claims, so of two
  servers racing on one key exactly one wins. Objects appear whole, so nobody sees a partial file.
- **compare-and-swap** (``If-Match: <ETag>``): sidecars (yanks) and the index base.

An upload costs a bounded number of requests whatever the size of the index (the index is no
longer rewritten per upload), and a sync costs a HEAD of ``index.toml`` plus one GET per new
log entry. Every request has bounded timeouts (``connect_timeout``, ``read_timeout``) and at most
``max_attempts`` tries; a store that does not answer in time is a 503 naming the cause.

An incomplete multipart upload a killed server leaves is invisible; let a bucket lifecycle rule
``AbortIncompleteMultipartUpload`` reclaim it. ``boto3`` is imported lazily, so installing
pywharf without the ``s3`` extra costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar

from pywharf_core.model.errors import BackendUnavailable, ConfigError, InvalidName, PywharfError
from pywharf_core.storage.api import BlobInfo, Document, Storage, VersionConflict
from pywharf_core.storage.backend import (
    BackendContext,
    DownloadTarget,
    Redirect,
    StreamedFile,
)
from pywharf_core.storage.config import ConfigSource, SharedSecretConfig, build_config
from pywharf_core.storage.registry import BackendSpec

if TYPE_CHECKING:  # pragma: no cover
    from botocore.exceptions import ClientError


log = logging.getLogger(__name__)

SIDECAR_DIR = ".pywharf/"  # where check_engine writes its probe objects (the core's companions folder)
MIB = 1 << 20
CHUNK = 1 * MIB  # read/stream granularity
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
# AWS answers 409 when two conditional writes on one key overlap: retry, like a 412.
_CONFLICT_CODES = frozenset({"ConditionalRequestConflict", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, kw_only=True)
class S3Config(SharedSecretConfig):
    # Keys an admin-secret table may hold for this backend (instead of raw/env "ID:SECRET").
    admin_secret_keys: ClassVar[tuple[str, ...]] = ("aws_access_key_id", "aws_secret_access_key")
    # URLs the server signs requests (or presigned redirects) for with its credentials: a config
    # sent over HTTP may only name endpoints the admin allows.
    endpoint_keys: ClassVar[tuple[str, ...]] = ("endpoint_url", "public_endpoint_url")

    bucket: str  # the bucket (it must exist)
    prefix: str = ""  # key prefix, e.g. "team/pkgs": several repositories can share a bucket
    endpoint_url: str | None = None  # the store's URL for non-AWS stores (None: AWS, by region)
    # The URL clients reach the store at, for redirects (default: endpoint_url).
    public_endpoint_url: str | None = None
    region_name: str | None = None  # None: the standard AWS chain (AWS_REGION, ~/.aws/config)
    addressing_style: str = "auto"  # "auto" (path-style when endpoint_url is set), "path" or "virtual"
    max_file_bytes: int = 5 * 1024 * MIB  # largest accepted upload: 5 GiB (multipart allows more)
    # "redirect": 302 to a presigned GET, bytes never pass through pywharf; "stream": pywharf relays them.
    download: str = "redirect"
    presign_expires: int = 900  # seconds a presigned download URL stays valid
    multipart_threshold: int = 64 * MIB  # files at least this big go up as multipart uploads
    multipart_chunksize: int = 16 * MIB  # part size (S3's minimum is 5 MiB; raised to fit 10,000 parts)
    connect_timeout: int = 5  # seconds to connect to the store, per attempt
    read_timeout: int = 30  # seconds a request may wait for the store's next bytes, per attempt
    max_attempts: int = 3  # tries per request (boto3 "standard" retries with backoff); then 503

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if not _BUCKET_RE.fullmatch(self.bucket) or ".." in self.bucket:
            problems.append(("bucket", "must be an S3 bucket name (3-63 of a-z 0-9 . -)"))
        parts = self.prefix.strip("/").split("/") if self.prefix.strip("/") else []
        if "\\" in self.prefix or any(p in ("", ".", "..") for p in parts):
            problems.append(("prefix", "must be a plain key prefix like 'team/pkgs' (no '..', '//', '\\')"))
        for key in ("endpoint_url", "public_endpoint_url"):
            value = getattr(self, key)
            if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
                problems.append((key, "must be an http(s)://host[:port] URL"))
        if self.addressing_style not in ("auto", "path", "virtual"):
            problems.append(("addressing_style", "must be 'auto', 'path' or 'virtual'"))
        if self.download not in ("redirect", "stream"):
            problems.append(("download", "must be 'redirect' or 'stream'"))
        if not 1 <= self.presign_expires <= 604800:
            problems.append(("presign_expires", "must be between 1 and 604800 seconds (SigV4's limit)"))
        if self.multipart_chunksize < 5 * MIB:
            problems.append(("multipart_chunksize", "must be at least 5 MiB (5242880), S3's smallest part"))
        if self.multipart_threshold < self.multipart_chunksize:
            problems.append(("multipart_threshold", "must be at least multipart_chunksize"))
        for key in ("connect_timeout", "read_timeout"):
            if not 1 <= getattr(self, key) <= 600:
                problems.append((key, "must be between 1 and 600 seconds"))
        if not 1 <= self.max_attempts <= 10:
            problems.append(("max_attempts", "must be between 1 and 10"))
        return problems

    @property
    def key_prefix(self) -> str:
        """The prefix as keys start with it: '' or 'a/b/'."""
        stripped = self.prefix.strip("/")
        return f"{stripped}/" if stripped else ""

    def relocated(self, folder: str) -> S3Config:
        """The same bucket and credentials under ``<prefix>/<folder>/`` (see ``PkgRepoConfig.relocated``)."""
        return dataclasses.replace(self, prefix=f"{self.key_prefix}{folder.strip('/')}")


def parse_admin_secret(secret: str | None) -> dict[str, str]:
    """AWS keys from the admin secret: JSON from named keys, or ``ACCESS_KEY_ID:SECRET_ACCESS_KEY``.

    None or empty: no explicit keys, boto3's standard chain applies (env, ~/.aws, instance role).
    """
    if not secret:
        return {}
    if secret.lstrip().startswith("{"):
        try:
            data = json.loads(secret)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("aws_access_key_id") and data.get("aws_secret_access_key"):
            return {k: str(data[k]) for k in ("aws_access_key_id", "aws_secret_access_key")}
    else:
        key_id, sep, key = secret.partition(":")
        if sep and key_id.strip() and key:
            return {"aws_access_key_id": key_id.strip(), "aws_secret_access_key": key}
    raise ConfigError(
        "s3 admin secret: give aws_access_key_id and aws_secret_access_key, or raw/env "
        "'ACCESS_KEY_ID:SECRET_ACCESS_KEY'"
    )


def _boto3() -> Any:
    try:
        import boto3
    except ModuleNotFoundError as exc:
        raise ConfigError("backend 's3' needs boto3: pip install 'pywharf[s3]'") from exc
    return boto3


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is(exc: Exception, codes: frozenset[str], status: int) -> bool:
    """Whether ``exc`` is an S3 error with one of ``codes`` (or ``status`` when it has no code).

    By code first: a missing bucket is a 404 too, and must not pass for a missing key.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = _code(exc)
    return code in codes if code else _status(exc) == status


F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """botocore's errors as one-line BackendUnavailable (503), after boto3's own retries."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        message = str(exc.response.get("Error", {}).get("Message") or "")
        raise BackendUnavailable(f"S3 {what}: {_code(exc) or _status(exc)} {message}".strip()) from exc
    except BotoCoreError as exc:
        raise BackendUnavailable(f"S3 {what}: {exc}") from exc


def _reports_unavailable(what: str) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _unavailable(what):
                return method(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class _Exists(Exception):
    """A create-only write lost: the key already holds an object."""


class _FileSlice(io.RawIOBase):
    """A seekable read-only window on a file: one multipart part, streamed from disk, not memory."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._offset, self._length, self._pos = offset, length, 0
        self._handle.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        self._handle.seek(self._offset + self._pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = self._handle.readinto(view[: max(0, min(len(view), self._length - self._pos))])
        self._pos += count or 0
        return count or 0

    def close(self) -> None:
        self._handle.close()
        super().close()


class _BodyChunks(Iterator[bytes]):
    """An S3 GET body as 1 MiB chunks; closing it (or exhausting it) returns the connection."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._chunks = body.iter_chunks(CHUNK)

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()

    def __del__(self) -> None:
        self.close()


class S3Backend(Storage):
    config: S3Config

    def __init__(self, config: S3Config, context: BackendContext) -> None:  # type: ignore[override]
        super().__init__(config, context)
        boto3 = _boto3()
        from botocore.config import Config

        credentials = parse_admin_secret(context.admin_secret)
        style = config.addressing_style
        if style == "auto" and config.endpoint_url:
            style = "path"  # what S3-compatible stores reliably support
        client_config = Config(
            s3={"addressing_style": style},
            signature_version="s3v4",
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            # boto3 >= 1.36 adds CRC checksums by default, which several S3-compatible stores
            # reject; pywharf checks sha256 itself.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(region_name=config.region_name, **credentials)
        self.s3 = session.client("s3", endpoint_url=config.endpoint_url, config=client_config)
        public = config.public_endpoint_url
        self.presigner = (
            session.client("s3", endpoint_url=public, config=client_config)
            if public and public != config.endpoint_url
            else self.s3
        )
        self.bucket = config.bucket
        self.prefix = config.key_prefix
        self._staging = Path(context.root) / "cache" / config.name / "staging"
        self._existing: set[str] = set()  # blob keys known to exist (blobs are immutable)
        self._etag_unquoted = False  # the store wants If-Match ETags without quotes
        self._lock = threading.Lock()

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "\\" in key or ".." in key.split("/"):
            raise InvalidName(f"invalid storage key {key!r}")
        return self.prefix + key

    # -- blobs -----------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """Uploads are received on local disk (hashed, size-checked) before going to the bucket."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    @_reports_unavailable("upload")
    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        full = self._key(key)
        if size >= self.config.multipart_threshold and self._head(full) is not None:
            return False  # skip sending gigabytes only to lose the conditional write
        args = {"Bucket": self.bucket, "Key": full, "ContentType": _content_type(key), "Metadata": {"sha256": sha256}}

        def put() -> None:
            if size < self.config.multipart_threshold:
                with open(source, "rb") as body:
                    self.s3.put_object(Body=body, ContentLength=size, IfNoneMatch="*", **args)
            else:
                self._multipart_create_only(args, source, size)

        try:
            _retrying_overlaps(put)
        except Exception as exc:
            if _is(exc, _PRECONDITION_CODES, 412):
                return False
            raise
        self._remember(full)
        return True

    def _multipart_create_only(self, args: Mapping[str, Any], source: Path, size: int) -> None:
        """Parts straight from disk (4 at a time), then a completion that is the create-only write.

        Until the completion nothing is visible under the key; on any failure the upload is
        aborted (a killed server leaves an invisible incomplete upload for the lifecycle rule).
        """
        part_size = max(self.config.multipart_chunksize, -(-size // 10_000))
        upload_id = self.s3.create_multipart_upload(**args)["UploadId"]
        bucket, key = args["Bucket"], args["Key"]
        try:
            def send(number: int) -> dict[str, Any]:
                offset = (number - 1) * part_size
                length = min(part_size, size - offset)
                with _FileSlice(source, offset, length) as body:
                    etag = self.s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=body, ContentLength=length,
                    )["ETag"]
                return {"PartNumber": number, "ETag": etag}

            count = max(1, -(-size // part_size))
            with ThreadPoolExecutor(max_workers=min(4, count), thread_name_prefix="pywharf-s3-part") as pool:
                parts = list(pool.map(send, range(1, count + 1)))
            self.s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def _head(self, full: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None
            raise

    def _remember(self, full: str) -> None:
        with self._lock:
            if len(self._existing) > 100_000:
                self._existing.clear()
            self._existing.add(full)

    @_reports_unavailable("read")
    def has_blob(self, key: str) -> bool:
        full = self._key(key)
        if full in self._existing:
            return True
        if self._head(full) is None:
            return False
        self._remember(full)
        return True

    @_reports_unavailable("read")
    def blob_sha256(self, key: str) -> str | None:
        """From the object's metadata (written atomically with it), else by reading the object."""
        head = self._head(self._key(key))
        if head is None:
            return None
        stored = head.get("Metadata", {}).get("sha256")
        if stored:
            return str(stored)
        digest = hashlib.sha256()
        body = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        with contextlib.closing(body):
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @_reports_unavailable("download")
    def locate(self, key: str) -> DownloadTarget | None:
        full = self._key(key)
        if self.config.download == "stream":
            try:
                response = self.s3.get_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                if _is(exc, _MISSING_CODES, 404):
                    return None
                raise
            return StreamedFile(_BodyChunks(response["Body"]), int(response["ContentLength"]))
        # Redirect: the client fetches the bytes from the store; pywharf only signs a URL.
        if full not in self._existing:
            if self._head(full) is None:
                return None
            self._remember(full)
        url = self.presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=self.config.presign_expires
        )
        return Redirect(url)

    @_reports_unavailable("read")
    def open_blob(self, key: str) -> BinaryIO | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None
            raise

    def list_blobs(self) -> Iterator[BlobInfo]:
        with _unavailable("listing"):
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix):]
                    if rel and "/" not in rel and not rel.startswith("."):
                        yield BlobInfo(rel, int(obj["Size"]), obj.get("LastModified"))

    @_reports_unavailable("delete")
    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._lock:
            self._existing.discard(full)
        self.s3.delete_object(Bucket=self.bucket, Key=full)

    # -- documents -------------------------------------------------------------------------------

    @_reports_unavailable("read")
    def document_version(self, key: str) -> str | None:
        head = self._head(self._key(key))
        return str(head["ETag"]) if head is not None else None

    @_reports_unavailable("read")
    def read_document(self, key: str) -> Document | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _is(exc, _MISSING_CODES, 404):
                return None
            raise
        with contextlib.closing(response["Body"]) as body:
            return Document(body.read(), str(response["ETag"]))

    @_reports_unavailable("write")
    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        full = self._key(key)
        while True:  # at most twice: the second time with the ETag unquoted
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": self._etag_form(expected)}
            try:
                response = _retrying_overlaps(functools.partial(
                    self.s3.put_object, Bucket=self.bucket, Key=full, Body=data, ContentType=_content_type(key),
                    **condition))
                return str(response.get("ETag") or self.document_version(key) or "")
            except Exception as exc:
                if not (_is(exc, _PRECONDITION_CODES, 412) or (expected is not None and _is(exc, _MISSING_CODES, 404))):
                    raise
            if (expected is not None and _is_quoted(expected) and not self._etag_unquoted
                    and self.document_version(key) == expected):
                log.info("s3 %s: the store rejects quoted ETags in If-Match; sending them unquoted", self.bucket)
                self._etag_unquoted = True
                continue
            raise VersionConflict(f"{self.describe(key)}: {'exists' if expected is None else 'changed'}")

    def _etag_form(self, etag: str) -> str:
        return etag.strip('"') if self._etag_unquoted else etag


R = TypeVar("R")
OVERLAP_ATTEMPTS = 5


def _retrying_overlaps(call: Callable[[], R]) -> R:
    """``call()``, retried (with jitter) while AWS answers 409 ConditionalRequestConflict: two
    conditional writes on one key overlapped; neither has won yet, so the question is still open."""
    for attempt in range(OVERLAP_ATTEMPTS):
        try:
            return call()
        except Exception as exc:
            if not _is(exc, _CONFLICT_CODES, 409) or attempt == OVERLAP_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.2))
    raise AssertionError("unreachable")  # pragma: no cover


def _content_type(key: str) -> str:
    if key.endswith(".toml"):
        return "application/toml"
    if key.endswith(".json"):
        return "application/json"
    if key.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _is_quoted(etag: str) -> bool:
    return len(etag) >= 2 and etag.startswith('"') and etag.endswith('"')


# -- CLI: pywharf s3.check_engine ---------------------------------------------------------------


def check_engine(
    bucket: str,
    endpoint_url: str | None = None,
    prefix: str = "",
    region_name: str | None = None,
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Probe an S3 store for the conditional writes the s3 backend relies on.

    Writes and deletes a few small objects under PREFIX/.pywharf/. Exits 1 if the store lets a
    second create-only write or a stale compare-and-swap through.

    Args:
        bucket: The bucket (it must exist).
        endpoint_url: The store's endpoint, for non-AWS stores.
        prefix: The key prefix pywharf will use.
        region_name: The region (default: the standard AWS chain).
        secret: AWS keys as ACCESS_KEY_ID:SECRET_ACCESS_KEY (default: the standard AWS chain).
        secret_env: Name of an environment variable holding that secret, instead of --secret.
    """
    if secret_env:
        secret = os.environ.get(str(secret_env))
        if not secret:
            raise PywharfError(f"environment variable {secret_env!r} is not set")
    table: dict[str, Any] = {"type": "s3", "bucket": str(bucket), "prefix": str(prefix or ""),
                             "read_secret": "unused-by-check-engine", "write_secret": "unused-by-check-engine"}
    if endpoint_url:
        table["endpoint_url"] = str(endpoint_url)
    if region_name:
        table["region_name"] = str(region_name)
    config = build_config(S3Config, "check", table, ConfigSource("<command line>"))
    backend = S3Backend(config, BackendContext(root=Path(tempfile.gettempdir()), admin_secret=secret or None))
    results = probe_conditional_writes(backend)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not all(ok for _, ok, _ in results):
        raise PywharfError("this store does not honour the conditional writes pywharf needs")


def probe_conditional_writes(backend: S3Backend) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for each conditional-request behaviour the backend depends on."""
    s3, bucket = backend.s3, backend.bucket
    key = f"{backend.prefix}{SIDECAR_DIR}probe-{uuid.uuid4().hex}"
    results: list[tuple[str, bool, str]] = []

    def outcome(call: Callable[[], Any]) -> str:
        try:
            call()
        except Exception as exc:
            if _is(exc, _PRECONDITION_CODES, 412):
                return "412"
            if _is(exc, frozenset({"304", "NotModified"}), 304):
                return "304"
            return f"error {type(exc).__name__}: {exc}"
        return "200"

    try:
        first = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*"))
        results.append(("PutObject If-None-Match: * (new key)", first == "200", first))
        second = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*"))
        results.append(("PutObject If-None-Match: * (existing key)", second == "412", f"{second} (want 412)"))
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        stale = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch='"0"'))
        results.append(("PutObject If-Match (stale ETag)", stale == "412", f"{stale} (want 412)"))
        fresh = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag))
        if fresh != "200":
            fresh_unquoted = outcome(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag.strip('"')))
            fresh = f"{fresh}; unquoted: {fresh_unquoted}"
        results.append(("PutObject If-Match (current ETag)", fresh.endswith("200"), fresh))
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        cached = outcome(lambda: s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag))
        results.append(("GetObject If-None-Match (unchanged)", cached == "304", f"{cached} (want 304; optional)"))
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"5")["ETag"]
        complete = outcome(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, IfNoneMatch="*",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]},
        ))
        with contextlib.suppress(Exception):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        results.append(("CompleteMultipartUpload If-None-Match: * (existing key)", complete == "412",
                        f"{complete} (want 412)"))
    finally:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
    # The GET 304 is an optimisation (sync falls back to comparing ETags): never a failure.
    return [(n, ok or "optional" in d, d) for n, ok, d in results]


BACKEND = BackendSpec(
    type="s3", config_class=S3Config, backend_class=S3Backend, commands={"check_engine": check_engine}
)
