"""``pywharf status``, ``pywharf delete`` and ``pywharf retention``: a project's PEP 792 status
and the deletion of files, versions or projects (by hand or by the repository's retention
rules), through a running server (which persists them in storage, so ``update_index`` keeps
them, and serves them at once; other servers after a sync)."""

from __future__ import annotations

from urllib.parse import quote

from pywharf_core.cli.server_calls import call, secret_from
from pywharf_core.model.errors import PywharfError
from pywharf_core.model.lifecycle import STATUSES


def status(
    project: str,
    status: str,
    reason: str = "",
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Set a project's PEP 792 status: active, archived, quarantined or deprecated.

    archived: no more uploads (403 with the reason). quarantined: no uploads, and no file is
    offered (pip and uv find nothing to install). deprecated: a marker only.

    Args:
        project: Project name.
        status: active, archived, quarantined or deprecated.
        reason: Free text shown in the simple API (pypi:project-status-reason) and in 403s.
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret, or an API token that may upload to the project.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
    """
    if str(status) not in STATUSES:
        raise PywharfError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    secret = secret_from(secret, secret_env)
    target = f"{str(url).rstrip('/')}/status/{quote(str(project), safe='')}"
    response = call("status", "POST", target, data={"status": str(status), "reason": str(reason or "")},
                    auth=(str(repo), secret))
    print(f"status: {response.text.strip()}")


def delete(
    project: str,
    file_or_version: str | None = None,
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
) -> None:
    """Delete one file, every file of a version, or (without FILE_OR_VERSION) a whole project.

    The bytes go from storage and the files from every index. A deleted filename can never be
    uploaded again with different bytes (as on pypi.org) unless the repository sets
    allow_reupload_of_deleted = true; the same bytes may come back.

    Args:
        project: Project name.
        file_or_version: A filename, or a version (all its files); omit it to delete the project.
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret, or an API token that may upload to the project.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
    """
    secret = secret_from(secret, secret_env)
    target = f"{str(url).rstrip('/')}/delete/{quote(str(project), safe='')}"
    if file_or_version is not None and str(file_or_version) != "":
        target += f"/{quote(str(file_or_version), safe='')}"
    response = call("delete", "POST", target, auth=(str(repo), secret))
    for filename in response.text.split():
        print(f"delete: {filename}")


def retention(
    url: str = "http://127.0.0.1:8888",
    repo: str = "local",
    secret: str | None = None,
    secret_env: str | None = None,
    dry_run: bool = False,
) -> None:
    """Apply the repository's retention rules now, or (--dry_run) print what they would delete.

    The rules are the retention_* keys of the repository's config. Each file is printed with
    the rule that deletes it; a dry run prints exactly what a run at that moment deletes.

    Args:
        url: The pywharf server's base URL.
        repo: Package repository name.
        secret: The repository's write secret.
        secret_env: Name of an environment variable holding the secret, instead of --secret.
        dry_run: Print what would be deleted, delete nothing.
    """
    # Arguments arrive verbatim (strings): "--dry_run=False" must not mean a dry run's opposite by accident.
    dry = dry_run if isinstance(dry_run, bool) else str(dry_run).strip().lower() in ("1", "true", "yes")
    secret = secret_from(secret, secret_env)
    target = f"{str(url).rstrip('/')}/retention"
    response = call("retention", "POST", target, data={"dry_run": "1" if dry else ""}, auth=(str(repo), secret))
    verb = "would delete" if dry else "deleted"
    lines = [line for line in response.text.splitlines() if line]
    for line in lines:
        filename, _, why = line.partition("\t")
        print(f"{verb}: {filename} ({why})")
    if not lines:
        print("retention: nothing to delete")
