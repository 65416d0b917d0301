"""What ``farm run`` shows while a batch goes through this machine (Rich).

On a terminal: a live display with one bar per stage (articles through it, of those that
reach it, and its ETA) and a line of end states, under a header that says "loading models"
until the models are loaded. Anywhere else (a log file, a pipe, CI): plain lines, one when
models load and then one at most every ``plain_every`` seconds while something changed, so
a log gets a readable trail and no cursor control codes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from db.models import TERMINAL_STATUSES, ArticleStatus
from producer.progress import DEFAULT_HALF_LIFE_MINUTES, eta_seconds, ewma_rate, stage_progress
from producer.status_view import duration
from tasks.registry import ORDER

_END_STATES = (
    (ArticleStatus.done.value, "done"),
    (ArticleStatus.needs_review.value, "needs review"),
    (ArticleStatus.failed.value, "failed"),
)


class RunProgress:
    """Progress of one batch served locally, as a context manager.

    Call :meth:`loading` before models load (the display starts that way) and
    :meth:`update` with every summary :func:`producer.progress.wait_for_batch` reports; the
    first update after a :meth:`loading` ends the loading notice. Per-stage ETAs come from
    :func:`producer.progress.ewma_rate` over the moments this view saw articles get through
    each stage.

    Args:
        console: where to draw; live when it is a terminal, plain lines otherwise.
        batch_id: the batch, named in the header.
        total: its article count until the first summary says otherwise.
        half_life: seconds after which a stage's finish weighs half in its rate.
        plain_every: least seconds between two plain lines.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        console: Console,
        batch_id: str,
        total: int,
        *,
        half_life: float = DEFAULT_HALF_LIFE_MINUTES * 60,
        plain_every: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.batch_id = batch_id
        self.half_life = half_life
        self.plain_every = plain_every
        self.clock = clock
        self.live = console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)
        self._lock = threading.Lock()
        self._summary: dict = {"total": total} | {s.value: 0 for s in ArticleStatus}
        self._stages = stage_progress(self._summary)
        self._loading: str | None = "models"
        self._closed = False
        self._seen: dict[str, int | None] = {name: None for name in ORDER}
        self._finishes: dict[str, list[float]] = {name: [] for name in ORDER}
        self._printed: str | None = None  # the counts of the last plain line
        self._spinner = Spinner("dots")  # one instance: it animates from its first frame
        self._printed_at = float("-inf")
        self._display = None

    def __enter__(self) -> RunProgress:
        if self.live:
            # Imported here: rich.live pulls in the terminal machinery plain runs never use.
            from rich.live import Live

            self._display = Live(
                console=self.console, get_renderable=self.__rich__, refresh_per_second=4
            )
            self._display.start()
        elif self._loading:
            self._print(f"batch {self.batch_id}: loading {self._loading}…")
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._closed = True
        if self._display is not None:
            self._display.stop()  # draws the final state once more, without the spinner
            self._display = None
        elif self._printed != self._counts_line():
            self._print(self.plain_line())

    def loading(self, what: str = "models") -> None:
        """Say that ``what`` is loading, until the next :meth:`update`.

        Args:
            what: shown as "loading <what>…" (``models``, ``image models``).
        """
        with self._lock:
            again, self._loading = self._loading == what, what
        if not self.live and not (again and self._printed):
            self._print(f"batch {self.batch_id}: loading {what}…")

    def ready(self) -> None:
        """The models are loaded: drop the loading notice before the first counts arrive."""
        with self._lock:
            self._loading = None

    def update(self, summary: dict, stages: dict[str, dict[str, int]] | None = None) -> None:
        """Take the batch's latest counts; the models are loaded by now.

        Args:
            summary: the batch's summary from :func:`producer.progress.batch_summaries`.
            stages: its per-stage progress; :func:`producer.progress.stage_progress` of
                ``summary`` when None.
        """
        stages = stages or stage_progress(summary)
        now = self.clock()
        with self._lock:
            self._loading = None
            self._summary, self._stages = summary, stages
            for name in ORDER:
                self._note_finishes(name, stages[name], now)
        # A plain line when the counts moved (a new ETA alone is no news), not too often.
        due = not self.live and now - self._printed_at >= self.plain_every
        if due and self._counts_line() != self._printed:
            self._print(self.plain_line())

    def _note_finishes(self, name: str, stage: dict[str, int], now: float) -> None:
        # The first count seen is a baseline: those articles ended before we looked.
        ended = stage["passed"] + stage["failed"]
        seen = self._seen[name]
        if seen is not None and ended > seen:
            self._finishes[name].extend([now] * (ended - seen))
        self._seen[name] = ended

    def stage_eta(self, name: str) -> float | None:
        """Seconds until every article reaching stage ``name`` is through it; None if unknown."""
        stage = self._stages[name]
        remaining = stage["total"] - stage["passed"] - stage["failed"]
        rate = ewma_rate(self._finishes[name], self.clock(), self.half_life)
        return eta_seconds(remaining, rate)

    def _print(self, line: str) -> None:
        # soft_wrap: one log line per state however narrow the console says it is.
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._printed, self._printed_at = self._counts_line(), self.clock()

    def _counts_line(self) -> str:
        with self._lock:
            stages = ", ".join(
                f"{name} {self._stages[name]['passed']}/{self._stages[name]['total']}"
                for name in ORDER
            )
            return f"{stages} · {end_states(self._summary)}"

    def plain_line(self) -> str:
        """The current state as one line of plain text (what a non-terminal gets)."""
        eta = self.stage_eta(ORDER[-1])
        when = "" if eta in (None, 0.0) else f" · ETA {duration(eta)}"
        return self._counts_line() + when

    def __rich__(self) -> RenderableType:
        """The live display: header, one bar per stage, end states."""
        with self._lock:
            ends = _wrapping(Text(end_states(self._summary)))
            return Group(self._header(), self._bars(), ends)

    def _header(self) -> RenderableType:
        header = Text(f"batch {self.batch_id}: {self._summary['total']} articles")
        if self._loading:
            header.append(f" · loading {self._loading}…", style="yellow")
        _wrapping(header)
        if self._closed:
            return header
        # In a grid, not as the spinner's text, which would lose the wrapping.
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(self._spinner, header)
        return grid

    def _bars(self) -> Table:
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(no_wrap=True)
        for name in ORDER:
            stage = self._stages[name]
            ended = stage["passed"] + stage["failed"]
            bar = ProgressBar(total=max(stage["total"], 1), completed=ended, finished_style="green")
            grid.add_row(name, bar, f"{stage['passed']}/{stage['total']}", self._note(name))
        return grid

    def _note(self, name: str) -> Text:
        stage = self._stages[name]
        note = Text()
        if stage["failed"]:
            note.append(f"{stage['failed']} failed ", style="red")
        if stage["passed"] + stage["failed"] >= stage["total"]:
            return note.append("finished", style="green")
        eta = self.stage_eta(name)
        if eta is not None:
            return note.append(f"ETA {duration(eta)}")
        # No rate yet: nothing got through, or too little to time.
        return note.append("waiting" if not self._finishes[name] else "ETA …", style="dim")


def _wrapping(text: Text) -> Text:
    # Wrap even on a console that never does (soft_wrap): a line wider than the terminal
    # would break the live redraw.
    text.no_wrap, text.overflow = False, "fold"
    return text


def end_states(summary: dict) -> str:
    """``done 7 · needs review 1 · failed 0 · in flight 2`` (no in flight when none is)."""
    ended = sum(summary[s.value] for s in TERMINAL_STATUSES)
    parts = [f"{label} {summary[status]}" for status, label in _END_STATES]
    if summary["total"] > ended:
        parts.append(f"in flight {summary['total'] - ended}")
    return " · ".join(parts)


def summary_line(summary: dict, seconds: float | None = None) -> str:
    """The batch's closing line: ``batch <id>: 10 articles in 12.3s: done 7 · ...``.

    Args:
        summary: the batch's final summary.
        seconds: how long the run took, when it should say so.
    """
    took = "" if seconds is None else f" in {seconds:.1f}s"
    return f"batch {summary['id']}: {summary['total']} articles{took}: {end_states(summary)}"
