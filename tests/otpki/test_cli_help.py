"""Every command, option and argument of `otpki` explains itself in --help."""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.testing import CliRunner

from otpki.cli.main import app


def undocumented() -> list[str]:
    missing: list[str] = []

    def walk(command, path: list[str]) -> None:  # type: ignore[no-untyped-def]
        if not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if isinstance(param, TyperOption) and param.name != "help" and not param.help:
                missing.append(f"{' '.join(path)} {'/'.join(param.opts)}")
            if isinstance(param, TyperArgument) and not param.help:
                missing.append(f"{' '.join(path)} {param.name.upper()}")
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), ["otpki"])
    return missing


def test_every_command_option_and_argument_has_help() -> None:
    assert undocumented() == []


def test_help_runs_for_every_command() -> None:
    runner = CliRunner()
    group = typer.main.get_command(app)

    def paths(command, path: list[str]):  # type: ignore[no-untyped-def]
        yield path
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                yield from paths(sub, [*path, name])

    for path in paths(group, []):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
