"""``GET /metrics`` (issue 16): Prometheus text from a real server, read by prometheus_client's
own parser; the counters move by exactly what was done (an upload with twine, page views,
downloads), the repository gauges describe the index and its sync, the token protects the
route, and nothing a client sends becomes a label value.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import tomli_w
from conftest import Server, client_env, run, tool, wait_for
from distbuilder import DistSpec, build_wheel
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "metrics-token-0123456789"
READ, WRITE = "alpha-read-secret", "alpha-write-secret"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config(storage: Path) -> str:
    return tomli_w.dumps({"alpha": {"type": "file_system", "read_secret": READ, "write_secret": WRITE,
                                    "storage_path": str(storage), "sync_index_interval": 1}})


def scrape(server: Server, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{server.base}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples) -> set[str]:
    return {v for _, labels in samples for _, v in labels}


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    folder = tmp_path / "storage"
    folder.mkdir()
    return folder


def test_counters_move_by_what_was_done(server_factory, storage: Path, tmp_path: Path) -> None:
    server = server_factory(config(storage), "--extra_index_url=", "--metrics_token", TOKEN)
    before = scrape(server)
    wheel = build_wheel(DistSpec("metered", "1.0"), tmp_path / "dist")
    run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/alpha/simple/", "-u", "ci", "-p",
         WRITE, "--non-interactive", "--disable-progress-bar", str(wheel)], client_env(tmp_path), timeout=120)
    auth = ("alpha", READ)
    for _ in range(3):
        assert requests.get(f"{server.base}/repos/alpha/simple/metered/", auth=auth, timeout=10).status_code == 200
    url = f"{server.base}/repos/alpha/simple/metered/{wheel.name}"
    for _ in range(2):
        assert requests.get(url, auth=auth, timeout=10).content == wheel.read_bytes()
    assert requests.head(url, auth=auth, timeout=10).status_code == 200  # not a download
    assert requests.get(url + ".metadata", auth=auth, timeout=10).status_code == 200  # not a download either
    # Client-supplied names: an unknown repository, a hostile path, bad credentials.
    assert requests.get(f"{server.base}/repos/evil-repo/simple/", auth=auth, timeout=10).status_code == 401
    assert requests.get(f"{server.base}/repos/alpha/simple/", auth=("alpha", "wrong-secret"),
                        timeout=10).status_code == 401
    missing = requests.get(f"{server.base}/no-such-route-x9", timeout=10)
    assert missing.status_code == 404
    # With metrics on, their middleware adds the security headers in place of its own (one send wrapper).
    for response in (missing, requests.get(f"{server.base}/repos/alpha/simple/metered/", auth=auth, timeout=10)):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    size = wheel.stat().st_size
    assert moved("pywharf_uploads_total", repository="alpha") == 1
    assert moved("pywharf_upload_bytes_total", repository="alpha") == size
    assert moved("pywharf_downloads_total", repository="alpha") == 2
    assert moved("pywharf_download_bytes_total", repository="alpha") == 2 * size
    assert moved("pywharf_http_requests_total", route="page", repository="alpha", status="200") == 4
    assert moved("pywharf_http_requests_total", route="file", repository="alpha", status="200") == 3  # GET x2, HEAD
    assert moved("pywharf_http_requests_total", route="metadata", repository="alpha", status="200") == 1
    assert moved("pywharf_http_requests_total", route="upload", repository="alpha", status="200") == 1
    assert moved("pywharf_http_requests_total", route="page", repository="", status="401") == 2
    assert moved("pywharf_http_requests_total", route="other", repository="", status="404") == 1
    assert moved("pywharf_http_requests_total", route="metrics", repository="", status="200") == 1  # `before`
    assert moved("pywharf_http_request_duration_seconds_count", route="page") == 6
    assert value(after, "pywharf_http_request_duration_seconds_bucket", route="page", le="+Inf") == \
        value(after, "pywharf_http_request_duration_seconds_count", route="page")
    # Label values are the code's classes and configured repositories only.
    assert label_values(after) & {"evil-repo", "no-such-route-x9", "wrong-secret", "metered"} == set()
    repositories = {v for (name, labels) in after for k, v in labels if k == "repository"}
    assert repositories <= {"", "alpha"}
    assert {v for (_, labels) in after for k, v in labels if k == "route"} <= {
        "page", "file", "metadata", "json", "upload", "yank", "api", "oidc", "ui", "health", "admin", "metrics",
        "other"}

    # Per repository, at scrape time: the index and its sync.
    assert value(after, "pywharf_index_files", repository="alpha") == 1
    assert value(after, "pywharf_index_projects", repository="alpha") == 1
    assert 0 <= value(after, "pywharf_sync_age_seconds", repository="alpha") < 30
    assert value(after, "pywharf_sync_last_success_timestamp_seconds", repository="alpha") <= time.time()
    assert value(after, "pywharf_sync_failing", repository="alpha") == 0
    assert value(after, "pywharf_sync_failures_total", repository="alpha") == 0

    # A sync that fails (a damaged remote index) shows, and the age grows while it does.
    (storage / "index.toml").write_text("this is [[[ not an index\n")

    def failing() -> Samples | None:
        samples = scrape(server)
        return samples if value(samples, "pywharf_sync_failures_total", repository="alpha") >= 2 else None

    failed = wait_for(failing, 15, lambda: f"sync never failed:\n{server.log()}")
    assert value(failed, "pywharf_sync_failing", repository="alpha") == 1
    assert value(failed, "pywharf_index_files", repository="alpha") == 1, "the last good index is served"
    assert value(failed, "pywharf_sync_age_seconds", repository="alpha") >= 1


def test_the_token_protects_metrics(server_factory, storage: Path) -> None:
    server = server_factory(config(storage), "--extra_index_url=", "--metrics_token", TOKEN)
    anonymous = requests.get(f"{server.base}/metrics", timeout=10)
    assert anonymous.status_code == 401 and "Bearer" in anonymous.headers["www-authenticate"]
    assert "pywharf_" not in anonymous.text
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer "):
        response = requests.get(f"{server.base}/metrics", headers={"Authorization": header}, timeout=10)
        assert response.status_code == 401, header
    assert requests.get(f"{server.base}/metrics", auth=("alpha", READ), timeout=10).status_code == 401
    assert scrape(server)  # the right token: 200


def test_metrics_are_off_unless_asked_for(server_factory, storage: Path, tmp_path: Path) -> None:
    off = server_factory(config(storage), "--extra_index_url=")
    assert requests.get(f"{off.base}/metrics", timeout=10).status_code == 404
    assert requests.get(f"{off.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=10).status_code == 404
    other = tmp_path / "open-storage"
    other.mkdir()
    opened = server_factory(config(other), "--extra_index_url=", "--metrics", root_name="open")
    samples = scrape(opened, token=None)  # --metrics without a token: open to whoever reaches the port
    assert ("pywharf_index_files", frozenset({("repository", "alpha")})) in samples


def test_a_short_token_is_refused_at_start(tmp_path: Path) -> None:
    result = run([tool("pywharf"), "server", str(tmp_path / "root"), "--metrics_token", "short"],
                 client_env(tmp_path), timeout=60, check=False)
    assert result.returncode != 0
    assert "--metrics_token must be at least 16 characters" in result.stderr + result.stdout
    assert "short" not in (result.stderr + result.stdout).replace("--metrics_token", ""), "the token is never echoed"
