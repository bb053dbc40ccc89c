"""Names that reach the file system or a URL: repo names, project names and dist filenames.

Every name that becomes part of a path goes through here, so path traversal is rejected in one
place. Project names and filenames are parsed with ``packaging`` (PEP 503 normalisation, wheel
and sdist filename grammars) rather than by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from pywharf_core.model.errors import InvalidName

# A repo name becomes a folder under ROOT and the basic-auth username: keep it boring.
_REPO_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
# The packaging specifications' project name (before normalisation), ASCII only. Not
# ``re.IGNORECASE``: with it, ``[A-Z]`` also matches characters that merely case-fold to ASCII
# (U+017F LATIN SMALL LETTER LONG S for "s", U+212A KELVIN SIGN for "k"), so "\u017fix" passed as
# a spelling of "six" while storage, URLs and other tools see a different name.
_PROJECT_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$", re.ASCII)
# Every character a wheel or sdist filename can hold (project, PEP 440 version with its local
# part and epoch, build tag, compatibility tags, suffix): printable ASCII only, so no control,
# bidirectional-override (U+202E) or line-separator (U+2028) character reaches a page, a log
# line or a path.
_DIST_FILENAME_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$", re.ASCII)
# Stored files get companions named ``<filename>.toml`` and ``<filename>.metadata``: with 255
# bytes the longest name most file systems and object stores allow, a filename must leave room
# for the longest suffix, or the file would be stored but its sidecar refused (issue 12).
_MAX_FILENAME = 255 - len(".metadata")
DIST_SUFFIXES = (".whl", ".tar.gz", ".zip")


def validate_repo_name(name: str) -> str:
    """Return ``name`` if it is a valid package repository name, else raise InvalidName."""
    if not isinstance(name, str) or not _REPO_NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"Invalid repo name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def normalize_project(name: str) -> NormalizedName:
    """PEP 503 normalised form of a project name; raises InvalidName for non-PEP 508 names."""
    if not isinstance(name, str) or not _PROJECT_NAME.fullmatch(name):
        raise InvalidName(f"Invalid project name {name!r}")
    return canonicalize_name(name)


@dataclass(frozen=True, slots=True)
class DistFilename:
    """A parsed distribution filename."""

    filename: str
    project: NormalizedName
    version: Version
    filetype: str  # "bdist_wheel" or "sdist", as the legacy upload API names them
    identity: str = ""  # what makes two spellings the same distribution (see dist_identity)


def check_safe_filename(filename: str) -> str:
    """Cheap check that ``filename`` is a plain ASCII name that cannot escape a folder.

    Only the characters the wheel and sdist grammars use: no separator, no control or
    non-ASCII character (``repr`` in the message shows them escaped)."""
    if (
        not isinstance(filename, str)
        or not filename
        or len(filename) > _MAX_FILENAME
        or not _DIST_FILENAME_CHARS.fullmatch(filename)
        or ".." in filename
    ):
        raise InvalidName(f"Invalid distribution filename {filename!r}: use only the ASCII letters, digits "
                          "and '.', '_', '-', '+', '!' of the wheel and sdist filename formats")
    return filename


def parse_dist_filename(filename: str) -> DistFilename:
    """Parse a wheel or sdist filename, rejecting anything that could escape a folder.

    The result's ``identity`` names the distribution whatever the spelling: normalised project,
    version compared as PEP 440 does (``1.0`` = ``1.0.0`` = ``01.0``), and for wheels the build
    tag and the set of tags; every sdist of a version is one identity (PyPI allows one sdist
    per release). A second spelling of a stored identity must be refused, or a published
    release could be replaced by a file pip prefers.

    Accepted: ``*.whl`` (PEP 427/491 grammar) and sdists ``*.tar.gz`` / ``*.zip`` whose project
    part is a valid PEP 508 name.
    """
    check_safe_filename(filename)
    try:
        if filename.endswith(".whl"):
            raw_name = filename.split("-", 1)[0]
            project, version, _build, _tags = parse_wheel_filename(filename)
            filetype = "bdist_wheel"
        elif filename.endswith((".tar.gz", ".zip")):
            stem = filename[: -len(".tar.gz")] if filename.endswith(".tar.gz") else filename[: -len(".zip")]
            raw_name = stem.rpartition("-")[0]
            project, version = parse_sdist_filename(filename)
            filetype = "sdist"
        else:
            raise InvalidName(
                f"Invalid distribution filename {filename!r}: expected .whl, .tar.gz or .zip"
            )
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidName(f"Invalid distribution filename {filename!r}: {exc}") from exc
    if not _PROJECT_NAME.fullmatch(raw_name):
        raise InvalidName(f"Invalid distribution filename {filename!r}: bad project name {raw_name!r}")
    if filetype == "sdist":
        identity = f"{project}|{canonicalize_version(version)}|sdist"
    else:
        tags = ".".join(sorted(str(tag) for tag in _tags))
        identity = f"{project}|{canonicalize_version(version)}|{''.join(map(str, _build))}|{tags}"
    return DistFilename(filename, project, version, filetype, identity)
