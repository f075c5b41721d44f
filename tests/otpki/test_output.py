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
