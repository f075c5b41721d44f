"""The `otpki` command line.

Light at import, because typer builds every command on every run (even `otpki --help`): a module here imports
typer, the standard library and light modules (`otpki.cli.common`, `trustlists.enums`, `trustlists.errors`) at
the top, and the settings, the engine and the fronts inside the commands that use them. The option types the
commands declare must be importable that way too. No `from __future__ import annotations` here: typer would
evaluate every annotation string again, twice, on each run (names only for type checking stay quoted).
tests/otpki/test_cli_imports.py holds the rule; bench/cli_startup.py measures it.
"""
