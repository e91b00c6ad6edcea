"""The config reference (docs/config-reference.md), generated from the pydantic models.

Every key of a site config, section by section: its type with the limits the model enforces,
its default, and what it is for: the field's description, else the comment above the field in
the model's source (where this code base explains its settings). `lingtan config-reference`
writes the file; a test fails when the committed one is stale.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lingtan.config import SiteConfig
from rules.alerts.config import parse_duration
from telemetry.sample import Ident

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"

_LIMITS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


_IDENT = typing.get_args(Ident)[1].metadata[0].pattern  # site, device and other ids


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """{field: the comment lines right above it} from the source of the class and its bases.

    A field a base class declares (every alert rule's `for`, `repeat`...) keeps its comment.
    """
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            out.update(_own_comments(base))
    return out


def _own_comments(cls: type[BaseModel]) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            line = lines[node.end_lineno - 1] if node.end_lineno else ""
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            if trailing.startswith(("noqa", "type:")):
                trailing = ""
            if above or trailing:
                out[node.target.id] = " ".join([*above, trailing]).strip()
    return out


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
        return
    for arg in typing.get_args(tp):
        yield from _models_in(arg)


def _type(tp: Any) -> str:  # noqa: PLR0911 - one answer per kind of type
    """A reader's name for a field's type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _annotated(args[0], args[1:])
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " | ".join(f"`{m.value}`" for m in tp)
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp)).replace("SecretStr", "secret")


def _annotated(tp: Any, metadata: tuple[Any, ...] | list[Any]) -> str:
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata):
        return "duration (seconds, or `90s`, `15m`, `1h30m`, `2d`)" + _limits(metadata)
    return _type(tp) + _limits(metadata)


def _limits(metadata: tuple[Any, ...] | list[Any]) -> str:
    parts: list[str] = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            parts += [_limits(m.metadata)] if m.metadata else []
            continue
        for kind, attr, sign in _LIMITS:
            if isinstance(m, kind):
                parts.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length > 0:
            parts.append(f"at least {m.min_length} long")
        if isinstance(m, annotated_types.MaxLen):
            parts.append(f"at most {m.max_length} long")
        pattern = getattr(m, "pattern", None)
        if pattern == _IDENT:
            parts.append("an id: letters, digits, _ . -, at most 64")
        elif isinstance(pattern, str):
            parts.append(f"matching `{pattern}`")
    text = ", ".join(p for p in parts if p)
    return f" ({text.strip(' ()')})" if text else ""


def _default(f: FieldInfo) -> str:
    if f.is_required():
        return "**required**"
    value = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        return "see below" if value.model_fields_set else "defaults"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | dict) and not value:
        return "none"
    if value == "":
        return '`""`'

    return f"`{value}`"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def reference() -> str:
    """The whole reference as Markdown."""
    out = [
        "# Site config reference",
        "",
        "Generated from the pydantic models by `lingtan config-reference`; do not edit by "
        "hand. Every section is optional but `site`; a key not listed here is an error. "
        "Secrets are never written in the file: `*_env` names an environment variable and "
        "`*_file` a file that holds them. An annotated example: "
        "[`deploy/examples/site.yaml`](../deploy/examples/site.yaml).",
        "",
    ]
    done: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [
        (name, m) for name, f in SiteConfig.model_fields.items() for m in _models_in(f.annotation)
    ]
    while queue:
        where, model = queue.pop(0)
        if model in done:
            continue
        done.add(model)
        doc = inspect.cleandoc(model.__doc__ or "")
        out += [f"## {model.__name__}", "", f"`{where}`" + (f": {_cell(doc)}" if doc else ""), ""]
        out += ["| key | type | default | what it is |", "|---|---|---|---|"]
        notes = _comments(model)
        for name, f in model.model_fields.items():
            key = f.alias or name
            what = f.description or notes.get(name, "")
            kind = _annotated(f.annotation, f.metadata)
            out.append(f"| `{key}` | {_cell(kind)} | {_cell(_default(f))} | {_cell(what)} |")
            queue += [(f"{where}.{key}", m) for m in _models_in(f.annotation) if m not in done]
        out.append("")
    return "\n".join(out)


def write(path: Path = DEFAULT_PATH) -> bool:
    """Write the reference; True when the file changed."""
    text = reference()
    if path.exists() and path.read_text("utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return True
