"""Run the shell steps of a GitHub Actions job here, the way a runner would run them.

Why: a workflow's ``run:`` scripts are code that otherwise only ever runs on GitHub. This
replays them on this machine: each step's script goes through ``bash --noprofile --norc -eo
pipefail`` (GitHub's ``shell: bash``), with the job's and the step's ``env:``, the
``${{ ... }}`` expressions substituted first (as the runner does), and ``$GITHUB_ENV`` /
``$GITHUB_OUTPUT`` honoured between steps. Steps that ``uses:`` an action are the caller's job
to stand in for (a checkout is the workspace; setup-python is the Python on PATH).

Only the expressions our workflows use are understood (``env.*``, ``secrets.*``, ``github.*``,
``steps.<id>.outputs.*``, ``needs.<job>.outputs.*``); anything else raises, so a workflow that
grows past this runner fails its test loudly instead of running something else.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_workflow(path: Path) -> dict[str, Any]:
    """The workflow as data; YAML 1.1 reads the ``on:`` key as True, put it back."""
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


@dataclass
class StepResult:
    name: str
    skipped: str | None  # why, when the step was not run here
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class Context:
    env: dict[str, str]
    secrets: Mapping[str, str] = field(default_factory=dict)
    github: Mapping[str, str] = field(default_factory=dict)
    needs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)

    def evaluate(self, expression: str) -> str:
        parts = expression.split(".")
        if len(parts) == 2 and parts[0] in ("env", "secrets", "github"):
            source = {"env": self.env, "secrets": self.secrets, "github": self.github}[parts[0]]
            if parts[1] not in source:
                raise KeyError(f"${{{{ {expression} }}}}: {parts[1]!r} is not set in this run")
            return source[parts[1]]
        if len(parts) == 4 and parts[0] in ("steps", "needs") and parts[2] == "outputs":
            source = self.steps if parts[0] == "steps" else self.needs
            return source[parts[1]][parts[3]]
        raise ValueError(f"expression not supported by tests/actions_runner.py: ${{{{ {expression} }}}}")

    def substitute(self, text: str) -> str:
        return _EXPRESSION.sub(lambda m: self.evaluate(m.group(1)), str(text))


def parse_env_file(text: str) -> dict[str, str]:
    """``$GITHUB_ENV`` / ``$GITHUB_OUTPUT`` syntax: ``K=V`` lines and ``K<<DELIM`` blocks."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            while index < len(lines) and lines[index] != delimiter:
                block.append(lines[index])
                index += 1
            index += 1  # the delimiter
            values[key] = "\n".join(block)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def run_job(
    workflow: Mapping[str, Any],
    job_id: str,
    *,
    workspace: Path,
    runner_temp: Path,
    base_env: Mapping[str, str],
    env_overrides: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    github: Mapping[str, str] | None = None,
    needs: Mapping[str, Mapping[str, str]] | None = None,
    skip: Mapping[str, str] | None = None,
    only: set[str] | None = None,
    timeout: float = 180,
) -> tuple[list[StepResult], Context]:
    """Run the ``run:`` steps of ``job_id``; stop at the first failing one (as GitHub does).

    ``skip`` maps step names to why they do not run here; ``only`` (step names or ids) limits
    the run to those steps. ``env_overrides`` replace job-level env values (e.g. a host:port).
    """
    job = workflow["jobs"][job_id]
    skip = dict(skip or {})
    names = {step.get("name") for step in job["steps"]}
    if set(skip) - names:
        raise AssertionError(f"steps to skip that the job does not have: {sorted(set(skip) - names)}")
    env = {str(k): str(v) for k, v in (workflow.get("env") or {}).items()}
    env.update({str(k): str(v) for k, v in (job.get("env") or {}).items()})
    env.update(env_overrides or {})
    context = Context(env=env, secrets=secrets or {}, github=github or {}, needs=needs or {})
    runner_temp.mkdir(parents=True, exist_ok=True)
    results: list[StepResult] = []
    for number, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or f"step {number}"
        if only is not None and name not in only and step.get("id") not in only:
            results.append(StepResult(name, "not selected"))
            continue
        if "uses" in step:
            results.append(StepResult(name, f"action {step['uses']} (stood in for by the test)"))
            continue
        if name in skip:
            results.append(StepResult(name, skip[name]))
            continue
        step_env = {str(k): context.substitute(v) for k, v in (step.get("env") or {}).items()}
        env_file, output_file = runner_temp / f"env-{number}", runner_temp / f"output-{number}"
        env_file.write_text("")
        output_file.write_text("")
        script = runner_temp / f"step-{number}.sh"
        script.write_text(context.substitute(step["run"]))
        process_env = {
            **base_env,
            **context.env,
            **step_env,
            "GITHUB_ENV": str(env_file),
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(runner_temp),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            **{f"GITHUB_{k.upper()}": v for k, v in context.github.items()},
        }
        cwd = workspace / step["working-directory"] if "working-directory" in step else workspace
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd, env=process_env, capture_output=True, text=True, timeout=timeout,
        )
        results.append(StepResult(name, None, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
        context.env.update(parse_env_file(env_file.read_text()))
        if "id" in step:
            context.steps[step["id"]] = parse_env_file(output_file.read_text())
    return results, context


def describe(results: list[StepResult]) -> str:
    """A log of the run for assertion messages."""
    out = []
    for result in results:
        if result.skipped:
            out.append(f"--- {result.name}: skipped ({result.skipped})")
        else:
            out.append(f"--- {result.name}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return "\n".join(out)
