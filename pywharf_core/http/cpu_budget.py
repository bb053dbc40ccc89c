"""How many CPUs this process may use: the default of ``pywharf server --workers``.

The affinity mask alone overcounts in a container: ``docker run --cpus=2`` (or a Kubernetes CPU
limit, or systemd's ``CPUQuota=``) leaves the mask at every host CPU and grants two CPUs' time
through a cgroup quota. A worker per host CPU there would mean 96 processes sharing 2 CPUs, each
with its page caches. So the quota of the process's own cgroup, and of every cgroup above it up
to the mount's root, caps the count (the smallest wins), read the way the JVM and Go runtimes do:

- the process's cgroups from ``/proc/self/cgroup`` (``0::/path`` for cgroup v2, ``N:cpu,...:/path``
  for the v1 ``cpu`` controller);
- where each hierarchy is mounted, and which of its folders the mount shows, from
  ``/proc/self/mountinfo`` (a container with its own cgroup namespace sees its cgroup as ``/``);
- v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``); v1: ``cpu.cfs_quota_us``
  (``-1``: none) over ``cpu.cfs_period_us``; a quota of 1.5 CPUs counts as 2.

Anything unreadable counts as no quota: the affinity mask stands.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

MAX_DEFAULT_WORKERS = 256  # the bound an explicit --workers has too


def usable_cpus(proc: Path = Path("/proc/self")) -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroups' CPU quotas."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(proc)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def cgroup_cpu_limit(proc: Path = Path("/proc/self")) -> int | None:
    """Whole CPUs the tightest CPU quota on the way from this process's cgroups to the root
    grants (rounded up); None without a quota or where it cannot be read."""
    try:
        memberships = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in memberships:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            folder = _folder_of(mounts, "cgroup2", None, path)
            if folder is not None:
                limits += _walk_up(folder[0], folder[1], _v2_limit)
        elif "cpu" in controllers.split(","):
            folder = _folder_of(mounts, "cgroup", "cpu", path)
            if folder is not None:
                limits += _walk_up(folder[0], folder[1], _v1_limit)
    return min(limits) if limits else None


def _folder_of(mounts: list[str], fstype: str, controller: str | None, path: str) -> tuple[Path, Path] | None:
    """``(folder of the cgroup at path, its mount point)`` from mountinfo lines, or None."""
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) < 5 or len(extra) < 3 or extra[0] != fstype:
            continue
        if controller is not None and controller not in extra[2].split(","):
            continue
        root, mount_point = parts[3], Path(parts[4])
        if root == "/":
            relative = path.lstrip("/")
        elif path == root or path.startswith(root.rstrip("/") + "/"):
            relative = path[len(root):].lstrip("/")
        else:  # the mount shows another part of the hierarchy (a cgroup namespace): ours is its root
            relative = ""
        return mount_point / relative, mount_point
    return None


def _walk_up(folder: Path, top: Path, limit_of: Callable[[Path], int | None]) -> list[int]:
    found = []
    while True:
        limit = limit_of(folder)
        if limit is not None:
            found.append(limit)
        if folder == top or top not in folder.parents:
            return found
        folder = folder.parent


def _v2_limit(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):  # "max": no quota
        return None


def _v1_limit(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota / period)) if quota > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None
