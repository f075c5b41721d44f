"""Settings errors in the words of the file the operator edits: `[gds] endpiont: unknown key (did you mean endpoint?)`.

pydantic reports `gds.endpiont: Extra inputs are not permitted`; an operator looks for a TOML table and a key,
so the location is rendered as one (`[section] key`, `[[array]] #n key` for arrays of tables) and the
message in plain words, with the nearest known key when a name is misspelt.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_LISTED_KEYS = 10


def describe_validation_error(exc: ValidationError, model: type[BaseModel], prefix: Loc = ()) -> str:
    """The first problem of `exc` (raised validating `model` at `prefix` in the file), as one line."""
    # A misspelt key first: it usually explains the "required key is missing" beside it.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc: Loc = tuple(err["loc"])
    text = _message(err, model, loc)
    where = _location((*prefix, *loc), is_table=isinstance(err.get("input"), dict) and err["type"] != "missing")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {text}{more}" if where else f"{text}{more}"


def _message(err: Any, model: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(str(loc[-1]), _known_keys(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    message = str(err["msg"])
    for noise in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(noise)
    return message


def _suggestion(key: str, known: list[str]) -> str:
    if not known:
        return ""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    if len(known) <= _MAX_LISTED_KEYS:
        return f" (known keys: {', '.join(known)})"
    return " (see `otpki config reference` for the known keys)"


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model found at `loc` under `model` (through tables, named tables and arrays)."""
    current: Any = model
    for part in loc:
        table = _as_model(current)
        if table is not None:
            field = table.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            current = field.annotation
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (list, tuple) and args:
            current = args[0]
        else:
            return []
    table = _as_model(current)
    return list(table.model_fields) if table is not None else []


def _as_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _key(part: str | int) -> str:
    text = str(part)
    return text if _BARE_KEY.match(text) else json.dumps(text)


def _location(loc: Loc, *, is_table: bool) -> str:
    """`[a.b] key`, `[[a.b]] #2 key`, `key` at the top level; `[a.b.c]` when the problem is a whole table."""
    # The key is the last name with its value-array indexes (`roles[2]`); everything before it is the table.
    last = max((i for i, p in enumerate(loc) if isinstance(p, str)), default=-1)
    if last < 0:
        return ""
    if is_table and last == len(loc) - 1:
        return _table(loc)
    table, key = loc[:last], _key(loc[last]) + "".join(f"[{int(i) + 1}]" for i in loc[last + 1:])
    return f"{_table(table)} {key}" if table else key


def _table(loc: Loc) -> str:
    if not loc:
        return ""
    if isinstance(loc[-1], int):  # an entry of an array of tables
        return f"[[{_dotted(loc[:-1])}]] #{loc[-1] + 1}"
    return f"[{_dotted(loc)}]"


def _dotted(loc: Loc) -> str:
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out[-1] += f"[{part + 1}]"
        else:
            out.append(_key(part))
    return ".".join(out)
