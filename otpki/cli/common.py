"""What every command shares: settings from --data-dir, error translation, output helpers.

Output: `console` and `err_console` never read markup. Names, subjects, file paths, PLC and broker error texts
and config values come from outside and may contain `[...]`; printed through a markup console `[bold]x[/]`
would lose its brackets and a stray `[/]` would crash the command. Our own styling is explicit: `styled()`
pieces, or rich `Text`.

Light at import, like every module of `otpki.cli` (see its docstring): rich's console, the settings and the
engine are imported when a command first uses them.
"""

import gc
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from trustlists.errors import OtpkiError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from otpki.config import Settings
    from trustlists.engine import Engine


class LazyConsole:
    """A rich Console (markup off, emoji codes off: a fingerprint's ":CD:" would print as an emoji), made on first
    use: importing rich.console costs as much as `otpki --help`.

    Stands for the Console everywhere (attributes are the Console's); `rich` is the Console itself, for the
    rich objects that take one (Progress).
    """

    _stderr: bool
    _console: "Console | None"

    def __init__(self, *, stderr: bool = False) -> None:
        object.__setattr__(self, "_stderr", stderr)  # (our own __setattr__ forwards to the Console)
        object.__setattr__(self, "_console", None)

    @property
    def rich(self) -> "Console":
        console = self._console
        if console is None:
            from rich.console import Console

            console = Console(stderr=self._stderr, markup=False, emoji=False)
            object.__setattr__(self, "_console", console)
        return console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.rich.print(*objects, **kwargs)

    # A real property, like the Console's: monkeypatch (tests widen the console) restores it by assignment.
    @property
    def width(self) -> int:
        return self.rich.width

    @width.setter
    def width(self, value: int) -> None:
        self.rich.width = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.rich, name, value)


console = LazyConsole()
err_console = LazyConsole(stderr=True)

EXIT_USAGE = 2  # bad input, the user can fix it
EXIT_PROBLEM = 1  # a check found a problem (audit verify, doctor)

P = ParamSpec("P")
T = TypeVar("T")


class State:
    data_dir: Path | None = None


state = State()


def styled(text: str, style: str) -> "Text":
    """A piece of our own output with a style; the text is taken literally."""
    from rich.text import Text

    return Text(text, style=style)


def line(*parts: "str | Text") -> "Text":
    """One output line from plain strings (taken literally, whatever brackets they hold) and styled pieces."""
    from rich.text import Text

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
        except ValueError as exc:  # pydantic's ValidationError is one too
            raise fail(describe_value_error(exc)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`); typer exits quietly
        except OSError as exc:  # a file that cannot be read or written, a broker that refuses: the user's to fix
            raise fail(describe_os_error(exc)) from None

    return wrapper


def describe_value_error(exc: ValueError) -> str:
    from pydantic import ValidationError  # loaded already whenever one was raised

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(exc)


def describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def settings(*, must_exist: bool = True) -> "Settings":
    from otpki.config import load_settings

    return load_settings(state.data_dir, must_exist=must_exist)


@contextmanager
def _loading() -> Iterator[None]:
    """Importing and opening the engine makes objects that live as long as the process. No garbage collection
    while they are made (every pass walked all of them: 25 ms of `otpki certs list`), and afterwards they stay
    out of every collection's way (gc.freeze)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def engine(*, key_pool: bool = False) -> "Iterator[tuple[Engine, Settings]]":
    with _loading():
        from otpki.runtime import open_engine

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


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]  # \uXXXX, a surrogate pair beyond the BMP


def print_json(data: Any) -> None:
    """`data` as indented JSON, ASCII only (a name's bidi override shows as \\u202e, not reversed text).

    The same text as `json.dumps(data, indent=2, ensure_ascii=True, default=str)`, from pydantic-core's encoder:
    with an indent the standard library's runs in pure Python, 0.2 s for a 10k-certificate inventory.
    """
    from pydantic_core import to_json

    text = to_json(data, indent=2, fallback=str).decode()
    if not text.isascii():
        text = _NON_ASCII.sub(_json_escape, text)
    sys.stdout.write(text + "\n")


def print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table as plain text columns: whole values, two spaces apart, one line per row whatever the width.

    For lists that grow with the plant (the inventory): a rich Table takes ~0.7 ms a row, 7 s for 10k
    certificates, and cuts values to the terminal's width. Values are printed as they are (no markup).
    """
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(header) - 1
    out = ["  ".join(cell if i == last else cell.ljust(widths[i]) for i, cell in enumerate(row))
           for row in (header, *rows)]
    sys.stdout.write("\n".join(out) + "\n")


def read_input_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None


def write_output_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomically write a command's output file; `private` (keys) is 0600 from its first byte."""
    from trustlists.safe_files import private_directory, write_public, write_secret

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
SiteOption = Annotated[str | None, typer.Option(help="Plant site (one of [pki] sites)")]
DnsOption = Annotated[list[str] | None, typer.Option("--dns", help="A registered host name (repeatable)")]
IpOption = Annotated[list[str] | None, typer.Option("--ip", help="A registered IP address (repeatable)")]
