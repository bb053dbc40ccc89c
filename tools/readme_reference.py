"""Generate the README's CLI and config reference from the code, so the docs cannot drift.

The CLI reference is built from the same command objects ``pywharf`` hands to ``fire`` (the
core commands plus every ``<backend>.<command>`` of the backends this distribution ships):
their signatures give flags, types and defaults, their Google-style ``Args:`` docstrings give
the meanings. The config reference is built from each backend's config dataclass (fields,
types, defaults) and the ``Attributes:`` sections of its docstrings.

Both land in README.md between marker comments; tests/test_readme.py fails when they are
stale. Refresh with::

    python -m tools.readme_reference --write README.md
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pywharf_core.storage.config import PkgRepoConfig
from pywharf_core.storage.registry import ENTRY_POINT_GROUP, BackendSpec, installed_backends

DISTRIBUTION = "pywharf"
REFRESH_COMMAND = "python -m tools.readme_reference --write README.md"
# Marker name -> what goes between <!-- NAME:start --> and <!-- NAME:end -->.
BLOCKS = ("cli-reference", "config-reference")


# -- docstrings ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Docstring:
    summary: str
    body: str  # paragraphs after the summary, sections removed
    sections: Mapping[str, Mapping[str, str]]  # "args" / "attributes" -> name -> text


_SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Raises|Yields|Note|Notes|Example|Examples):\s*$")


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into summary, body and its name -> text sections.

    Written here rather than taken from ``fire.docstrings`` because fire folds a ``**kwargs:``
    entry into the previous argument's text, and the reference must list it on its own.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary_lines: list[str] = []
    while lines and lines[0].strip():
        summary_lines.append(lines.pop(0).strip())
    body: list[str] = []
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    entry: str | None = None
    for line in lines:
        header = _SECTION.match(line.strip()) if not line.startswith(" ") else None
        if header:
            current = sections.setdefault(header.group(1).lower().replace("arguments", "args"), {})
            entry = None
            continue
        if current is None:
            body.append(line)
            continue
        if not line.strip():
            continue
        if not line.startswith(" "):  # text after a section, back at the margin
            current, entry = None, None
            body.append(line)
            continue
        match = re.match(r"^ {2,8}\**([A-Za-z_][A-Za-z0-9_]*)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if match and (entry is None or len(line) - len(line.lstrip()) <= _indent_of(current, entry)):
            entry = match.group(1)
            current[entry] = match.group(2).strip()
            current[f"\0indent:{entry}"] = str(len(line) - len(line.lstrip()))
        elif entry is not None:
            current[entry] = f"{current[entry]} {line.strip()}".strip()
    cleaned = {
        name: {key: value for key, value in entries.items() if not key.startswith("\0")}
        for name, entries in sections.items()
    }
    return Docstring(" ".join(summary_lines), "\n".join(body).strip(), cleaned)


def _indent_of(section: Mapping[str, str], entry: str) -> int:
    return int(section.get(f"\0indent:{entry}", "4"))


# -- what is documented -------------------------------------------------------------------------


def shipped_backends() -> list[BackendSpec]:
    """Backends registered by this distribution itself (third-party plugins are not ours to
    document, and must not make the README depend on what else is installed)."""
    specs = installed_backends()
    own = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is None or _normalize(dist.metadata["Name"]) != DISTRIBUTION:
            continue
        if ep.name in specs and all(spec.type != ep.name for spec in own):
            own.append(specs[ep.name])
    # file_system first (the default), then alphabetical: stable whatever the discovery order.
    return sorted(own, key=lambda spec: (spec.type != "file_system", spec.type))


def documented_commands() -> dict[str, Callable[..., Any]]:
    from pywharf_core.cli import CORE_COMMANDS

    commands = dict(CORE_COMMANDS)
    for spec in shipped_backends():
        for command_name, function in spec.commands.items():
            commands[f"{spec.type}.{command_name}"] = function
    return commands


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- rendering ----------------------------------------------------------------------------------


def _text(text: str) -> str:
    """Docstring text as markdown: ``<repo>`` outside code spans would be swallowed as an HTML
    tag by GitHub's renderer, so angle brackets there are escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;") for part in parts)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (one line, pipes and angle brackets escaped)."""
    return _text(" ".join(text.split())).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):  # postponed annotations: already the source text
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        # A TOML array (the loader makes it a tuple); of tables when the items are dataclasses.
        item = args[0]
        if dataclasses.is_dataclass(item):
            return f"array of {item.__name__} tables"
        return f"array of {_type_text(item)}"
    return str(annotation).replace("typing.", "")


def _default_text(value: Any) -> str:
    return _code(repr(value))


def render_command(name: str, function: Callable[..., Any]) -> str:
    from pywharf_core.cli import ENV_PREFIX

    doc = parse_docstring(inspect.getdoc(function))
    params = list(inspect.signature(function).parameters.values())
    positional = [p for p in params if p.default is inspect.Parameter.empty and p.kind not in _VARIADIC]
    synopsis = " ".join(["pywharf", name, *(p.name.upper() for p in positional)])
    if len(positional) < len(params):
        synopsis += " [FLAGS]"
    out = [f"### `pywharf {name}`", "", _text(doc.summary) or "(undocumented)", ""]
    if doc.body:
        out += [_text(doc.body), ""]
    out += ["```text", synopsis, "```", ""]
    if params:
        args = doc.sections.get("args", {})
        out += [
            "| argument | environment mode | type | default | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for param in params:
            meaning = _cell(args.get(param.name, ""))
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                out.append(f"| `--<any flag>` | | | | {meaning} |")
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                out.append(f"| `{param.name.upper()}...` | | | | {meaning} |")
                continue
            label = param.name.upper() if param in positional else f"--{param.name}"
            default = "required" if param.default is inspect.Parameter.empty else _default_text(param.default)
            env = f"{ENV_PREFIX}_{param.name.upper()}"
            type_text = _type_text(param.annotation)
            out.append(
                f"| `{label}` | `{env}` | {_code(type_text) if type_text else ''} | {default} | {meaning} |"
            )
        out.append("")
    return "\n".join(out)


_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def render_cli_reference(commands: Mapping[str, Callable[..., Any]] | None = None) -> str:
    from pywharf_core.cli import usage

    commands = documented_commands() if commands is None else commands
    out = [
        "`pywharf --help` (core commands, then each backend's `<type>.<command>`):",
        "",
        "```text",
        usage(commands),
        "```",
        "",
        "Arguments in capitals are required: give them in order or as flags (`--root PATH`). Every",
        "flag can also be written `--flag=value`. In **environment mode** (no arguments at all)",
        "`PYWHARF_COMMAND` names the command and each argument comes from the variable in the",
        "*environment mode* column.",
        "",
    ]
    for name, function in commands.items():
        out.append(render_command(name, function))
    return "\n".join(out).rstrip() + "\n"


def _config_docs(config_class: type) -> dict[str, str]:
    """Each key's meaning, the most derived class winning: an ``Attributes:`` docstring entry,
    else the comments on and right above the field's line (how the backends document keys)."""
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        docs.update({k: v for k, v in field_comments(klass).items() if v})
        if klass.__doc__:
            docs.update(parse_docstring(klass.__doc__).sections.get("attributes", {}))
    return docs


def field_comments(klass: type) -> dict[str, str]:
    """Field name -> the comment lines right above its declaration plus its trailing comment.

    Read with ``tokenize``, so a ``#`` inside a string default is never taken for a comment.
    """
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # no source (e.g. a class built at run time)
        return {}
    lines = source.splitlines()
    comments: dict[int, tuple[bool, str]] = {}  # line index -> (whole line?, text)
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                whole = not token.line[: token.start[1]].strip()
                comments[token.start[0] - 1] = (whole, token.string.lstrip("#").strip())
    except (tokenize.TokenError, SyntaxError):
        return {}
    own = set(inspect.get_annotations(klass))
    start = next((i for i, ln in enumerate(lines) if ln.startswith("class ")), 0)
    body_indent = next((len(ln) - len(ln.lstrip()) for ln in lines[start + 1 :] if ln.strip()), 4)
    docs: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = re.match(rf"^ {{{body_indent}}}([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
        if not match or match.group(1) not in own:
            continue
        above: list[str] = []
        cursor = index - 1
        while cursor >= 0 and comments.get(cursor, (False, ""))[0]:
            above.insert(0, comments[cursor][1])
            cursor -= 1
        trailing = comments.get(index)
        parts = above + ([trailing[1]] if trailing and not trailing[0] else [])
        docs[match.group(1)] = " ".join(parts)
    return docs


def config_rows(config_class: type[PkgRepoConfig]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key a ``[name]`` table may hold."""
    hints = typing.get_type_hints(config_class)
    docs = _config_docs(config_class)
    rows = []
    for field in dataclasses.fields(config_class):
        if field.name == "name":  # the table's own name, never a key
            continue
        if field.default is not dataclasses.MISSING:
            default = _default_text(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = _default_text(field.default_factory())
        else:
            default = "required"
        rows.append((field.name, _type_text(hints[field.name]), default, docs.get(field.name, "")))
    # Required keys first, each group in declaration order.
    return sorted(rows, key=lambda row: row[2] != "required")


def render_config_reference(specs: Iterable[BackendSpec] | None = None) -> str:
    specs = shipped_backends() if specs is None else list(specs)
    out = []
    for spec in specs:
        admin_keys = ["`raw`", "`env`"]
        own_keys = getattr(spec.config_class, "admin_secret_keys", ())
        admin = " or ".join(admin_keys) + "".join(f", or `{key}`" for key in own_keys[:1])
        admin += "".join(f" + `{key}`" for key in own_keys[1:])
        needed = "required for index sync" if spec.admin_secret_required else "optional"
        out += [
            f'`type = "{spec.type}"` (admin secret: {needed}; its table holds `type` and {admin})',
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for key, type_text, default, meaning in config_rows(spec.config_class):
            if key == "type":
                default, meaning, type_text = "required", "selects this backend", f'"{spec.type}"'
            out.append(f"| `{key}` | {_code(type_text)} | {default} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_blocks() -> dict[str, str]:
    return {"cli-reference": render_cli_reference(), "config-reference": render_config_reference()}


# -- README splicing ----------------------------------------------------------------------------


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def block_of(text: str, name: str) -> str | None:
    """What the README holds between a block's markers (None when the markers are missing)."""
    start, end = _markers(name)
    begin = text.find(start)
    finish = text.find(end, begin + len(start)) if begin >= 0 else -1
    if begin < 0 or finish < 0:
        return None
    return text[begin + len(start) : finish].strip("\n") + "\n"


def splice(text: str, blocks: Mapping[str, str]) -> str:
    """``text`` with each block's content replaced; a missing marker pair is an error (the
    README decides where the reference goes, this module never guesses)."""
    for name, content in blocks.items():
        start, end = _markers(name)
        begin = text.find(start)
        finish = text.find(end, begin + len(start)) if begin >= 0 else -1
        if begin < 0 or finish < 0:
            raise ValueError(f"README has no {start} ... {end} markers")
        text = f"{text[: begin + len(start)]}\n{content.rstrip()}\n{text[finish:]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.readme_reference", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="refresh the marked blocks of this file in place")
    group.add_argument("--check", metavar="README", help="exit 1 if the marked blocks of this file are stale")
    args = parser.parse_args(argv)
    blocks = render_blocks()
    if args.write or args.check:
        path = Path(args.write or args.check)
        text = path.read_text(encoding="utf-8")
        try:
            updated = splice(text, blocks)
        except ValueError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        if args.check:
            if updated != text:
                print(f"{path}: the generated reference is stale; run: {REFRESH_COMMAND}", file=sys.stderr)
                return 1
            return 0
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"{path}: reference refreshed")
        return 0
    for name in BLOCKS:
        sys.stdout.write(f"<!-- {name} -->\n{blocks[name]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
