"""Relative paths in settings, anchored once where they were given.

A path in otpki.toml is relative to the data directory (the directory otpki.toml lives in); a path from the
environment or the command line is relative to the working directory of the command. Both are made absolute
when the settings are loaded, so a worker process, a generated mosquitto.conf or a later `chdir` all see the
same file. A command (a field marked `Command`) given as a bare name stays a name and is looked up in PATH.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class Command:
    """Metadata marking a path field that names an executable: `Annotated[Path, COMMAND]`."""


COMMAND = Command()


def absolute(path: Path | str, base: Path | None = None) -> Path:
    """`path` (with `~` expanded) against `base` (default: the working directory), normalised, symlinks kept."""
    p = Path(path).expanduser()
    return Path(os.path.abspath(p if base is None or p.is_absolute() else base / p))


def anchor_paths(model: M, base: Path) -> M:
    """A copy of `model` whose relative paths (nested tables, named tables and arrays included) are under `base`."""
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        is_command = any(isinstance(m, Command) for m in field.metadata)
        anchored = _anchor(value, base, is_command=is_command)
        if anchored is not value:
            updates[name] = anchored
    return model.model_copy(update=updates) if updates else model


def _anchor(value: Any, base: Path, *, is_command: bool = False) -> Any:
    if isinstance(value, BaseModel):
        return anchor_paths(value, base)
    if isinstance(value, Path):
        if value.is_absolute() or (is_command and len(value.parts) == 1):
            return value  # a bare command name: PATH decides
        return absolute(value, base)
    if isinstance(value, dict):
        items = {k: _anchor(v, base) for k, v in value.items()}
        return items if any(items[k] is not value[k] for k in value) else value
    if isinstance(value, list):
        entries = [_anchor(v, base) for v in value]
        return entries if any(a is not b for a, b in zip(entries, value, strict=True)) else value
    return value
