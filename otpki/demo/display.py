"""The demo's live view on stderr: the current step with a progress bar, and one row per endpoint kind.

Rows are kinds (GDS, SCADA, PLCs, broker, devices) with counts by certificate state, never one row per
endpoint: 500 devices must fit on a screen. `--json` uses `QuietDisplay`, which shows nothing.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from otpki.demo.report import DemoStep, EndpointTally

STATES = ("factory", "enrolled", "renewed", "revoked", "refused")


class QuietDisplay:
    """The display interface, doing nothing (`--json`, or when stderr is not wanted)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def step_started(self, number: int, name: str, total: int | None = None) -> None: ...

    def set_total(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def step_finished(self, step: DemoStep) -> None: ...

    def note(self, text: str) -> None: ...


class _EndpointTable:
    """Rendered afresh on every refresh of the Live view, from the plant's live tallies."""

    def __init__(self, tallies: dict[str, EndpointTally]) -> None:
        self._tallies = tallies

    def __rich__(self) -> Table:
        table = Table("endpoints", "total", *STATES, box=None, padding=(0, 1), header_style="bold")
        for tally in self._tallies.values():
            cells = [Text(str(getattr(tally, s))) if getattr(tally, s) else Text("·", "dim") for s in STATES]
            table.add_row(tally.kind, str(tally.total), *cells)
        return table


class LiveDisplay(QuietDisplay):
    def __init__(self, tallies: dict[str, EndpointTally], console: Console | None = None) -> None:
        # No markup: step details carry PLC, broker and engine messages, which may hold `[...]`.
        self.console = console or Console(stderr=True, markup=False)
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console)
        self._task: TaskID | None = None
        self._live = Live(Group(self._progress, _EndpointTable(tallies)), console=self.console,
                          refresh_per_second=4, transient=True)

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def step_started(self, number: int, name: str, total: int | None = None) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(f"{number}. {name}", total=total)

    def set_total(self, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def step_finished(self, step: DemoStep) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        mark = Text("✓", "green") if step.ok else Text("✗", "red")
        self.console.print(Text.assemble(mark, f" {step.number}. {step.name} ",
                                         (f"... ({step.seconds:.1f} s)", "dim"), f" {step.detail}"), highlight=False)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)


def final_table(tallies: dict[str, EndpointTally]) -> Table:
    return _EndpointTable(tallies).__rich__()
