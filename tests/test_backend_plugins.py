"""A third-party backend registers through the ``pywharf.backends`` entry-point group and
appears in the CLI (``pywharf <type>.<command>``) and in config validation.

The plugin is a real distribution (a ``.dist-info`` with ``entry_points.txt``) on PYTHONPATH,
so this exercises importlib.metadata discovery exactly as an installed package would.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from conftest import tool

PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass

    from pywharf_backends.file_system import FileSystemBackend, FileSystemConfig
    from pywharf_core.storage.registry import BackendSpec


    @dataclass(frozen=True, kw_only=True)
    class EchoConfig(FileSystemConfig):
        colour: str = "blue"


    def hello(name: str = "world") -> None:
        """Say hello from the echo backend."""
        print(f"hello {name} from echo")


    BACKEND = BackendSpec(type="echo", config_class=EchoConfig, backend_class=FileSystemBackend,
                          commands={"hello": hello})
    '''
)


def make_plugin(site: Path) -> dict[str, str]:
    site.mkdir()
    (site / "echo_backend.py").write_text(PLUGIN)
    dist_info = site / "echo_backend-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[pywharf.backends]\necho = echo_backend:BACKEND\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_plugin_commands_are_listed_and_runnable(tmp_path: Path):
    env = make_plugin(tmp_path / "site")
    listing = subprocess.run([tool("pywharf"), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    assert "echo.hello" in listing.stdout and "Say hello from the echo backend." in listing.stdout
    ran = subprocess.run([tool("pywharf"), "echo.hello", "--name", "pywharf"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "hello pywharf from echo" in ran.stdout


def test_plugin_config_is_validated_with_its_own_keys(tmp_path: Path):
    env = make_plugin(tmp_path / "site")
    config = tmp_path / "config.toml"
    config.write_text('[mine]\ntype = "echo"\nread_secret = "read-secret-00"\nwrite_secret = "write-secret"\n'
                      'colour = 5\n')
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), "--config", str(config),
                             "--port", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{config}: [mine] key 'colour': must be a string, got int" in result.stderr
    # Without the plugin on the path, the type itself is unknown.
    plain = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), "--config", str(config),
                             "--port", "1"], env=plain, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown backend type 'echo'" in result.stderr
