"""What every command shares: settings from --data-dir, error translation, output helpers.

Output: `console` and `err_console` never read markup. Names, subjects, file paths, PLC and broker error texts
and config values come from outside and may contain `[...]`; printed through a markup console `[bold]x[/]`
would lose its brackets and a stray `[/]` would crash the command. Our own styling is explicit: `styled()`
pieces, or rich `Text`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from otpki.config import Settings, load_settings
from otpki.runtime import open_engine
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.safe_files import private_directory, write_public, write_secret

# No markup and no emoji codes: rich would turn the ":CD:" and ":AB:" of a fingerprint into emoji.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

EXIT_USAGE = 2  # bad input, the user can fix it
EXIT_PROBLEM = 1  # a check found a problem (audit verify, doctor)

P = ParamSpec("P")
T = TypeVar("T")


class State:
    data_dir: Path | None = None


state = State()


def styled(text: str, style: str) -> Text:
    """A piece of our own output with a style; the text is taken literally."""
    return Text(text, style=style)


def line(*parts: str | Text) -> Text:
    """One output line from plain strings (taken literally, whatever brackets they hold) and styled pieces."""
    return Text.assemble(*parts)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    # soft_wrap: one line whatever the terminal width, so scripts and logs get the whole message
    err_console.print(line(styled("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn the engine's typed errors into one line on stderr and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except OtpkiError as exc:
            raise fail(exc.message) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`); typer exits quietly
        except OSError as exc:  # a file that cannot be read or written, a broker that refuses: the user's to fix
            raise fail(describe_os_error(exc)) from None

    return wrapper


def describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def settings(*, must_exist: bool = True) -> Settings:
    return load_settings(state.data_dir, must_exist=must_exist)


@contextmanager
def engine(*, key_pool: bool = False) -> Iterator[tuple[Engine, Settings]]:
    s = settings()
    eng = open_engine(s, key_pool=key_pool)
    try:
        yield eng, s
    finally:
        eng.close()


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration; use e.g. 30d, 12h, 2w")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def read_input_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None


def write_output_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomically write a command's output file; `private` (keys) is 0600 from its first byte."""
    try:
        if private:
            private_directory(path.parent)
            write_secret(path, data)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_public(path, data)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None


# Parameters many commands share, described once so every --help says the same thing.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
SerialArg = Annotated[str, typer.Argument(help="Certificate serial number (hex, as `otpki certs list` shows it)")]
GroupArg = Annotated[str, typer.Argument(help="Certificate group, e.g. opcua-application or mqtt-device")]
GroupOption = Annotated[str | None, typer.Option(help="Only this certificate group")]
SiteOption = Annotated[str | None, typer.Option(help="Plant site (one of \\[pki] sites)")]
DnsOption = Annotated[list[str] | None, typer.Option("--dns", help="A registered host name (repeatable)")]
IpOption = Annotated[list[str] | None, typer.Option("--ip", help="A registered IP address (repeatable)")]
