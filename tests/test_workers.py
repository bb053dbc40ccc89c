"""``pywharf server --workers N`` (issue 17): worker processes on one port, read-your-writes
across them, one sync per server, supervision.

Every test runs a real server with two workers and spreads its reads over fresh connections
until both workers have answered (the access log names the process of each line), so "the
other worker saw it" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from conftest import Server, client_env, fs_config, run, start_server, tool, wait_for
from test_upload_rules import make_wheel

from pywharf_core.http.cpu_budget import cgroup_cpu_limit, usable_cpus
from pywharf_core.http.web.secret_check import worker_share

REPO, READ, WRITE = "local", "read-secret-123", "write-secret-123"
_LINE = re.compile(r"\[(\d+)\] INFO pywharf\.access: .*?\"(?:GET|HEAD|POST|DELETE) (\S+)")


def start(tmp_path: Path, name: str = "root", workers: int = 2, **config: object) -> Server:
    server = start_server(tmp_path / name, fs_config(REPO, READ, WRITE, **config), "--extra_index_url=",
                          "--access_log", f"--workers={workers}")
    server.repos[REPO] = (READ, WRITE)
    return server


def worker_pids(server: Server) -> set[int]:
    started = re.findall(r"serving with \d+ worker processes: ([\d, ]+)", server.log())[-1]
    return {int(pid) for pid in started.split(", ")}


def answered_by(server: Server, path_part: str) -> Counter[int]:
    return Counter(int(pid) for pid, path in _LINE.findall(server.log()) if path_part in path)


def spread(server: Server, method: str, path: str, until_each: int = 3, limit: int = 400, **kwargs) -> list:
    """``method path`` on fresh connections until every worker answered ``until_each`` times."""
    responses = []
    pids = worker_pids(server)
    for _ in range(limit):
        responses.append(requests.request(method, f"{server.base}{path}", timeout=10, **kwargs))
        if len(responses) % 10 == 0:
            seen = answered_by(server, path.split("?")[0])
            if set(seen) >= pids and min(seen.values()) >= until_each:
                return responses
    raise AssertionError(f"not every worker answered {path}: {answered_by(server, path)} of {pids}")


def twine_upload(server: Server, dist_path: Path, tmp_path: Path) -> None:
    run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/{REPO}/simple/",
         "--disable-progress-bar", "--non-interactive", str(dist_path)],
        {**client_env(tmp_path), "TWINE_USERNAME": REPO, "TWINE_PASSWORD": WRITE}, timeout=120)


def upload_seen_by_every_worker(server: Server, tmp_path: Path, project: str):  # type: ignore[no-untyped-def]
    """twine uploads ``project`` 1.0 through one worker; with no wait, every read of its page,
    whichever of the two workers takes it, shows the file. Returns the uploaded wheel."""
    assert len(worker_pids(server)) == 2
    dist = make_wheel(tmp_path, project, "1.0")
    twine_upload(server, dist.path, tmp_path)
    pages = spread(server, "GET", f"/repos/{REPO}/simple/{project}/", auth=(REPO, READ))
    assert all(r.status_code == 200 and dist.filename in r.text for r in pages)
    return dist


def test_an_upload_yank_and_revocation_through_one_worker_are_seen_by_the_other_at_once(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        dist = upload_seen_by_every_worker(server, tmp_path, "rywlib")
        files = spread(server, "GET", f"/repos/{REPO}/simple/rywlib/{dist.filename}", auth=(REPO, READ))
        assert all(r.status_code == 200 and r.content == dist.data for r in files)
        run([tool("pywharf"), "yank", "rywlib", "1.0", "--reason", "broken", "--url", server.base,
             "--repo", REPO, "--secret", WRITE], client_env(tmp_path), timeout=60)
        documents = spread(server, "GET", f"/repos/{REPO}/pypi/rywlib/json", auth=(REPO, READ))
        assert all(json.loads(r.text)["urls"][0]["yanked"] for r in documents)
        second = make_wheel(tmp_path, "rywlib", "2.0")
        twine_upload(server, second.path, tmp_path)
        run([tool("pywharf"), "delete", "rywlib", "1.0", "--url", server.base, "--repo", REPO, "--secret", WRITE],
            client_env(tmp_path), timeout=60)
        gone = spread(server, "GET", f"/repos/{REPO}/simple/rywlib/{dist.filename}", auth=(REPO, READ))
        assert all(r.status_code == 404 for r in gone)
        run([tool("pywharf"), "status", "rywlib", "quarantined", "--url", server.base, "--repo", REPO,
             "--secret", WRITE], client_env(tmp_path), timeout=60)
        quarantined = spread(server, "GET", f"/repos/{REPO}/simple/rywlib/?q", auth=(REPO, READ),
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert all(r.json()["project-status"]["status"] == "quarantined" and r.json()["files"] == []
                   for r in quarantined)

        created = requests.post(f"{server.base}/_/tokens/{REPO}", auth=(REPO, WRITE),
                                data={"description": "ci", "scope": "read"}, timeout=10)
        assert created.status_code in (200, 201), created.text
        token = created.json()["token"]
        warm = spread(server, "GET", f"/repos/{REPO}/simple/rywlib/?warm", auth=("__token__", token))
        assert all(r.status_code == 200 for r in warm)  # both workers now hold a cached verdict
        revoked = requests.delete(f"{server.base}/_/tokens/{REPO}/{created.json()['id']}", auth=(REPO, WRITE),
                                  timeout=10)
        assert revoked.status_code == 200, revoked.text
        after = spread(server, "GET", f"/repos/{REPO}/simple/rywlib/?after", auth=("__token__", token))
        # Refused by every worker (401; 429 once the failures used up a worker's budget), never 200.
        assert after[0].status_code == 401 and {r.status_code for r in after} <= {401, 429}
        assert "Traceback" not in server.log()
    finally:
        assert server.stop() == 0


def test_pip_installs_right_after_twine_upload_and_one_worker_syncs(tmp_path: Path) -> None:
    server = start(tmp_path, sync_index_interval=1)
    other = start(tmp_path, "other", workers=1)  # another server on its own ROOT and folder
    try:
        env = client_env(tmp_path)
        for version in ("1.0", "2.0", "3.0"):
            dist = make_wheel(tmp_path, "freshlib", version)
            twine_upload(server, dist.path, tmp_path)
            target = tmp_path / f"pip-{version}"
            run([tool("python"), "-m", "pip", "install", "--no-deps", "--target", str(target), "--index-url",
                 f"http://{REPO}:{READ}@127.0.0.1:{server.port}/repos/{REPO}/simple/", f"freshlib=={version}"],
                env, timeout=120)
            assert any(p.name.startswith(f"freshlib-{version}") for p in target.iterdir())
        time.sleep(3)  # three sync intervals
        log = server.log()
        syncing = set(re.findall(r"\[(\d+)\] INFO pywharf_core\.service\.sync: this worker \(pid \d+\) syncs", log))
        assert len(syncing) == 1, syncing
        assert other.log().count("syncs the indexes") == 0  # one worker: it syncs, no election
    finally:
        other.stop()
        assert server.stop() == 0


def test_a_dead_worker_is_replaced_and_sigterm_stops_all(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        first = worker_pids(server)
        victim = max(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "replaced" in server.log(), 10, server.log)
        assert f"(pid {victim}) was killed by signal 9" in server.log()
        for _ in range(20):
            assert requests.get(f"{server.base}/repos/{REPO}/simple/", auth=(REPO, READ), timeout=10).status_code == 200
        children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2 and str(victim) not in children
    finally:
        assert server.stop() == 0
    assert subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True).returncode == 1


@pytest.mark.parametrize(("flags", "message", "config_text"), [
    (["--workers", "0"], "--workers must be between 1 and 256", fs_config(REPO, READ, WRITE)),
    (["--workers", "many"], "--workers must be a whole number", fs_config(REPO, READ, WRITE)),
    (["--workers", "2"], "repository 'scratch' keeps its store in this process's memory",
     fs_config(REPO, READ, WRITE) + '[scratch]\ntype = "memory"\nread_secret = "read-secret-123"\n'
                                    'write_secret = "write-secret-123"\n'),
])
def test_bad_worker_flags_stop_with_one_line(tmp_path: Path, flags: list[str], message: str, config_text: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    args = ["--workers", "2", *flags] if "--workers" not in flags else flags
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), "--config", str(config), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr + result.stdout


def test_workers_need_a_config_file_and_no_initialize_token(tmp_path: Path) -> None:
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), "--workers", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--workers needs --config" in result.stderr + result.stdout
    config = tmp_path / "config.toml"
    config.write_text(fs_config(REPO, READ, WRITE))
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), "--config", str(config),
                             "--workers", "2", "--initialize_token", "x" * 20], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "no --initialize_token" in result.stderr + result.stdout


def test_the_failure_budget_holds_across_workers(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=", "--access_log",
                          "--workers=2", "--auth_failure_limit=6")
    try:
        answers = spread(server, "GET", f"/repos/{REPO}/simple/", until_each=4, auth=(REPO, "wrong-secret-000"))
        statuses = [r.status_code for r in answers]
        assert statuses.count(401) <= 6 and set(statuses) == {401, 429}, statuses
        # Spent on every worker: the right secret is refused too, whichever worker answers.
        right = spread(server, "GET", f"/repos/{REPO}/simple/?again", until_each=2, auth=(REPO, READ))
        assert {r.status_code for r in right} == {429}
    finally:
        assert server.stop() == 0


def test_waitress_serves_with_workers_too(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=", "--access_log",
                          "--workers=2", "--server=waitress")
    try:
        upload_seen_by_every_worker(server, tmp_path, "waitresslib")
        assert "Traceback" not in server.log()
    finally:
        assert server.stop() == 0
    assert subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True).returncode == 1


def test_the_default_is_a_worker_per_usable_cpu_with_a_config_and_one_process_without(tmp_path: Path) -> None:
    expected = usable_cpus()
    configured = start_server(tmp_path / "root", fs_config(REPO, READ, WRITE), workers=None)
    try:
        if expected > 1:
            assert len(worker_pids(configured)) == expected
        else:
            assert "worker processes" not in configured.log()
    finally:
        assert configured.stop() == 0
    unconfigured = start_server(tmp_path / "bare", None, workers=None)
    try:
        assert "worker processes" not in unconfigured.log()
        assert subprocess.run(["pgrep", "-P", str(unconfigured.proc.pid)], capture_output=True).returncode == 1
    finally:
        unconfigured.stop()


def fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def write_files(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_dot_", ".")).write_text(text)


def test_usable_cpus_follow_the_affinity_mask_and_the_tightest_cgroup_quota(tmp_path: Path) -> None:
    """The JVM's and Go's reading of a CPU limit: the process's own cgroup (from /proc/self/cgroup),
    where its hierarchy is mounted (mountinfo), and every cgroup above it."""
    v2 = tmp_path / "v2"
    # cgroup v2 without a namespace (systemd CPUQuota= on a slice): the quota is on a parent.
    write_files(v2, cpu_dot_max="max 100000\n")
    write_files(v2 / "system.slice", cpu_dot_max="250000 100000\n")
    write_files(v2 / "system.slice" / "pywharf.service", cpu_dot_max="max 100000\n")
    proc = fake_proc(tmp_path, "0::/system.slice/pywharf.service\n",
                     f"30 1 0:26 / {v2} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroup_cpu_limit(proc) == 3
    # A container with its own cgroup namespace: its cgroup is the mount's root.
    write_files(v2, cpu_dot_max="150000 100000\n")
    proc = fake_proc(tmp_path, "0::/\n", f"30 1 0:26 /kubepods/pod1 {v2} rw - cgroup2 cgroup2 rw\n")
    assert cgroup_cpu_limit(proc) == 2
    # cgroup v1 (docker --cpus=2 on an older host), a hybrid layout like this machine's.
    v1 = tmp_path / "v1"
    write_files(v1 / "docker" / "abc", cpu_dot_cfs_quota_us="200000\n", cpu_dot_cfs_period_us="100000\n")
    write_files(v1, cpu_dot_cfs_quota_us="-1\n", cpu_dot_cfs_period_us="100000\n")
    proc = fake_proc(tmp_path, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
                     f"40 1 0:33 / {v1} rw - cgroup cgroup rw,cpu,cpuacct\n"
                     f"41 1 0:34 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n")
    assert cgroup_cpu_limit(proc) == 2
    # No quota anywhere, or nothing readable: no limit (the affinity mask stands).
    write_files(v1 / "docker" / "abc", cpu_dot_cfs_quota_us="-1\n")
    assert cgroup_cpu_limit(proc) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
    assert usable_cpus(proc) == min(len(os.sched_getaffinity(0)), 256)


def test_uv_publish_check_url_sees_an_upload_through_the_other_worker(tmp_path: Path) -> None:
    """``uv publish --check-url`` (issue 17's example): uv asks the index before uploading and
    skips a file it already holds. Each round uploads a new version, then publishes it again
    with ``--check-url``: the check must find it, whichever worker answers; rounds go on until
    one check was answered by another worker than the upload's (the access log names both)."""
    server = start(tmp_path)
    env = client_env(tmp_path)
    check_url = f"http://{REPO}:{READ}@127.0.0.1:{server.port}/repos/{REPO}/simple/"
    try:
        for round_number in range(1, 21):
            dist = make_wheel(tmp_path / f"round-{round_number}", "uvcheck", f"1.{round_number}")
            publish = [tool("uv"), "publish", "--publish-url", f"{server.base}/repos/{REPO}/simple/", "-u", REPO,
                       "-p", WRITE, str(dist.path)]
            assert "Uploading" in run(publish, env, timeout=120).stderr
            checks_before = answered_by(server, "/simple/uvcheck/")
            again = run([*publish, "--check-url", check_url], env, timeout=120)
            assert f"File {dist.filename} already exists, skipping" in again.stderr, again.stderr
            uploader = re.findall(rf"\[(\d+)\] INFO pywharf_core\.http\.app: repo '{REPO}': created "
                                  rf"{re.escape(dist.filename)}", server.log())
            checkers = set(answered_by(server, "/simple/uvcheck/") - checks_before)
            assert len(uploader) == 1 and checkers, (uploader, checkers)
            if checkers - {int(uploader[0])}:
                break  # the check reached the worker that did not take the upload, and saw it
        else:
            raise AssertionError("20 rounds: every check was answered by the uploading worker")
        assert server.log().count("POST /repos/local/simple/") == round_number  # every re-publish skipped
    finally:
        assert server.stop() == 0


def test_a_workers_share_of_a_failure_limit_is_never_below_three() -> None:
    """A worker per CPU: 16 workers sharing --auth_failure_limit 10 each allow 3 (not 1: one typo
    would lock a client out of that worker), 2 workers 5 each, and a limit under 3 stays whole."""
    assert worker_share(10, 1) == 10 and worker_share(10, 2) == 5 and worker_share(10, 4) == 3
    assert worker_share(10, 16) == 3 and worker_share(100, 16) == 7
    assert worker_share(2, 16) == 2 and worker_share(1, 2) == 1
