"""Text that is not ours is printed as it is: no markup is read from names, paths or error messages."""

from __future__ import annotations

import io

from rich.console import Console

from otpki.demo.display import LiveDisplay
from otpki.demo.report import DemoStep, EndpointTally


def test_demo_step_details_are_verbatim() -> None:
    buf = io.StringIO()
    display = LiveDisplay({"PLCs": EndpointTally(kind="PLCs")}, console=Console(file=buf, width=200))
    # A PLC's error text with what rich would read as tags, the closing one unbalanced.
    display.step_finished(DemoStep(number=3, name="PLCs pushed", ok=False, seconds=1.0,
                                   detail="plc-2: BadSecurityChecksFailed [bold]x[/] [/]"))
    assert "✗ 3. PLCs pushed ... (1.0 s) plc-2: BadSecurityChecksFailed [bold]x[/] [/]" in buf.getvalue()


def test_our_own_output_carries_no_markup_tags() -> None:
    """Consoles read no markup, so a `[bold]..[/]` in a printed string would show its brackets: style with
    `styled()`/`line()` (otpki.cli.common) or rich Text instead. Help texts are typer's and may use markup."""
    import ast
    import re
    from pathlib import Path

    closing_tag = re.compile(r"\[/[a-z ]*\]")
    offenders = []
    for path in sorted((Path(__file__).resolve().parents[2] / "otpki").rglob("*.py")):
        tree = ast.parse(path.read_text())
        help_strings = {id(n) for call in ast.walk(tree) if isinstance(call, ast.Call)
                        for kw in call.keywords if kw.arg == "help" for n in ast.walk(kw.value)}
        help_strings |= {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in help_strings \
                    and closing_tag.search(node.value):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_fingerprints_are_printed_verbatim() -> None:
    """Rich reads `:cd:` and `:ab:` as emoji codes: a fingerprint an operator compares with the one a PLC shows
    must not come out as AA💿83 or AA🆎83."""
    from otpki.cli.common import console, err_console

    fingerprint = "F9:B6:AB:E1:EB:CD:83:5A"
    for out in (console, err_console):
        with out.capture() as captured:
            out.print(f"SHA-256 {fingerprint}", highlight=False)
        assert captured.get() == f"SHA-256 {fingerprint}\n"
