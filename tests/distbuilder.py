"""Build real wheels and sdists in-process (no build backend, no network): fast fixtures.

The files follow the wheel spec (PEP 427: METADATA, WHEEL, RECORD) and the sdist spec
(PKG-INFO at ``<name>-<version>/PKG-INFO``), so pip, uv and twine accept them as they would any
other distribution.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name


@dataclass
class DistSpec:
    name: str
    version: str
    summary: str = "A test package"
    requires_python: str = ">=3.8"
    requires_dist: list[str] = field(default_factory=list)
    classifiers: list[str] = field(default_factory=lambda: ["Programming Language :: Python :: 3"])
    project_urls: list[str] = field(default_factory=list)
    description: str = "Long description.\n"
    description_content_type: str = "text/markdown"
    module_body: str = "VALUE = 1\n"
    extra_metadata: list[str] = field(default_factory=list)  # more "Header: value" lines

    @property
    def module(self) -> str:
        return canonicalize_name(self.name).replace("-", "_")

    @property
    def dist_stem(self) -> str:
        return f"{canonicalize_name(self.name).replace('-', '_')}-{self.version}"


def metadata_text(spec: DistSpec) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {spec.name}",
        f"Version: {spec.version}",
        f"Summary: {spec.summary}",
    ]
    if spec.requires_python:
        lines.append(f"Requires-Python: {spec.requires_python}")
    lines += [f"Classifier: {c}" for c in spec.classifiers]
    lines += [f"Requires-Dist: {r}" for r in spec.requires_dist]
    lines += [f"Project-URL: {u}" for u in spec.project_urls]
    lines += spec.extra_metadata
    lines.append(f"Description-Content-Type: {spec.description_content_type}")
    return "\n".join(lines) + "\n\n" + spec.description


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(spec: DistSpec, out_dir: Path, extra_bytes: bytes = b"") -> Path:
    """A pure-Python wheel; ``extra_bytes`` adds a data file (to make two builds differ)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"{spec.dist_stem}.dist-info"
    files = {
        f"{spec.module}/__init__.py": spec.module_body.encode(),
        f"{dist_info}/METADATA": metadata_text(spec).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: distbuilder\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if extra_bytes:
        files[f"{spec.module}/extra.bin"] = extra_bytes
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out_dir / f"{spec.dist_stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


_INLINE_BACKEND = '''\
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = "{stem}.dist-info"
    os.makedirs(os.path.join(metadata_directory, dist_info))
    shutil.copyfile(os.path.join(HERE, "PKG-INFO"), os.path.join(metadata_directory, dist_info, "METADATA"))
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError("download-only test sdist")
'''


def build_sdist(spec: DistSpec, out_dir: Path) -> Path:
    """An sdist with PKG-INFO that pip can download offline.

    pip prepares an sdist's metadata even for ``pip download``; without a ``[build-system]``
    it would fetch setuptools from the index (impossible offline), so the sdist names a tiny
    in-tree backend with ``requires = []`` that copies PKG-INFO as the metadata.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = spec.dist_stem
    pkg_info = metadata_text(spec).replace("Metadata-Version: 2.1", "Metadata-Version: 2.2", 1)
    files = {
        f"{base}/PKG-INFO": pkg_info.encode(),
        f"{base}/pyproject.toml": (
            f'[project]\nname = "{spec.name}"\nversion = "{spec.version}"\n\n'
            '[build-system]\nrequires = []\nbuild-backend = "inline_backend"\nbackend-path = ["."]\n'
        ).encode(),
        f"{base}/inline_backend.py": _INLINE_BACKEND.replace("{stem}", base).encode(),
        f"{base}/{spec.module}/__init__.py": spec.module_body.encode(),
    }
    path = out_dir / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return path
