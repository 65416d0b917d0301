"""How ``farm status`` draws batches in a terminal (Rich): one block per batch.

Each block fits the terminal's width, 80 columns included: the batch id is never cut (people
copy it into other commands), a long catalog name loses its middle, and the counts sit in a
narrow per-stage table instead of one column per status. ``--watch`` redraws it in place on
a terminal and prints it again, under a line with the time, anywhere else (:func:`watch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console, ConsoleOptions, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from db.models import DEFAULT_VIEW, TERMINAL_STATUSES, UNREVIEWED, ArticleStatus
from producer.progress import stage_progress
from tasks.registry import ORDER, STAGES

ELLIPSIS = "…"
_INDENT = 2  # a batch's details sit under its id
# Below this many columns beside the batch id, the catalog name gets a line of its own.
_MIN_CATALOG = 16
_END_LABELS = {
    ArticleStatus.done.value: "done",
    ArticleStatus.needs_review.value: "needs review",
    ArticleStatus.failed.value: "failed",
}
# The review studio's verdicts, as the review line names them.
_REVIEW_LABELS = {"approved": "approved", "rejected": "rejected", UNREVIEWED: "unreviewed"}


def render_status(batches: list[dict]) -> StatusView:
    """A Rich renderable of each batch: counts per stage and end state, rate, ETA, scores,
    failures.

    Args:
        batches: summaries from :func:`producer.progress.batch_summaries`, each merged with
            :func:`producer.progress.batch_details`.

    Returns:
        A renderable for ``Console.print`` or ``rich.live.Live``; it lays itself out for the
        width it is drawn at.
    """
    return StatusView(batches)


def watch(
    collect: Callable[[], list[dict]],
    console: Console,
    interval: float = 2.0,
    first: list[dict] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show the batches every ``interval`` seconds until interrupted (Ctrl-C ends it).

    On a terminal the view is redrawn in place. Anywhere else (a pipe, a log file) a
    redraw would be cursor codes nobody reads, and a live display prints nothing before it
    stops: each interval prints one plain block instead, under a ``farm status at <time>``
    line, flushed at once.

    Args:
        collect: reads the batches (summaries merged with their details) anew.
        console: where to show them.
        interval: seconds between two readings.
        first: the batches already read, shown first.
        sleep: waits between readings (tests pass a fake one).
    """
    batches = collect() if first is None else first
    if console.is_terminal and not console.is_dumb_terminal:
        # Imported here: the plain output never needs the terminal machinery.
        from rich.live import Live

        with Live(render_status(batches), console=console, refresh_per_second=1) as live:
            while True:
                sleep(interval)
                live.update(render_status(collect()))
    while True:
        console.print(f"farm status at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", style="bold")
        console.print(render_status(batches))
        console.print()
        sleep(interval)
        batches = collect()


class StatusView:
    """One block per batch, separated by blank lines, laid out at draw time."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.batches:
            yield Text("no batches", style="dim")
        for index, batch in enumerate(self.batches):
            if index:
                yield Text("")
            title, *body = batch_block(batch, options.max_width - _INDENT)
            yield title
            for part in body:
                yield Padding(part, (0, 0, 0, _INDENT), expand=False)


def batch_block(batch: dict, width: int) -> list:
    """The renderables describing one batch at ``width`` columns.

    Args:
        batch: a summary merged with its details (details may be missing).
        width: the columns available.

    Returns:
        The title line (id and catalog), then the size, stage table, end states, review
        verdicts and views, rate and ETA, scores and failures.
    """
    parts = [_title(batch, width), _size_line(batch), _stage_table(batch)]
    parts.append(_end_line(batch))
    parts += _review_lines(batch, width)
    if "eta_seconds" in batch:
        parts.append(_rate_line(batch))
    scores = batch.get("scores") or {}
    if scores:
        parts.append(
            Text(
                "CLIP score: mean {mean:.2f}, median {median:.2f}, min {min:.2f}, "
                "max {max:.2f}".format(**scores)
            )
        )
    parts += _failure_lines(batch)
    return parts


def _title(batch: dict, width: int) -> Text:
    # The title is not indented, so it has the indent's columns too.
    title = Text(batch["id"], style="bold")
    catalog = batch.get("catalog") or ""
    room = width + _INDENT - len(batch["id"]) - 2
    if catalog and room >= min(_MIN_CATALOG, len(catalog)):
        title.append("  ").append(shorten_middle(catalog, room), style="cyan")
    elif catalog:
        title.append("\n").append(shorten_middle(catalog, width + _INDENT), style="cyan")
    return title


def shorten_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with an ellipsis.

    Both ends stay: catalog names share a prefix and differ in their numbers and suffix
    (``article_descriptions_1.xlsx+article_descriptions_2.xlsx``).
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail :]


def _size_line(batch: dict) -> Text:
    line = Text(f"{batch['total']} articles")
    if batch.get("removed"):
        line.append(f", {batch['removed']} removed", style="yellow")
    created = batch.get("created_at")
    if created:
        moment = datetime.fromisoformat(created)
        line.append(f" · created {moment:%Y-%m-%d %H:%M} UTC")
    return line


def _stage_table(batch: dict) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold dim")
    for header in ("stage", "waiting", "running", "passed", "failed"):
        table.add_column(header, justify="left" if header == "stage" else "right", no_wrap=True)
    details = batch.get("stages") or {}
    progress = stage_progress(batch)
    total = batch["total"]
    for name in ORDER:
        flow = details.get(name) or {}
        # Without live details every article waiting at the stage counts as queued.
        queued = flow.get("queued", batch[STAGES[name].input.value])
        failed = progress[name]["failed"]
        table.add_row(
            name,
            str(queued),
            str(flow.get("running", "-")),
            f"{progress[name]['passed']} {share(progress[name]['passed'], total):>4}",
            Text(str(failed), style="red" if failed else ""),
        )
    return table


def share(count: int, total: int) -> str:
    """``count`` as a whole percentage of ``total`` that never reads 0 % or 100 % falsely.

    Returns:
        ``"37%"``; ``"<1%"`` for a few of many; ``">99%"`` for all but a few.
    """
    if not total or not count:
        return "0%"
    value = 100.0 * count / total
    if value < 1:
        return "<1%"
    if value > 99 and count < total:
        return ">99%"
    return f"{round(value)}%"


def _end_line(batch: dict) -> Text:
    total = batch["total"]
    line = Text()
    for status, label in _END_LABELS.items():
        count = batch[status]
        style = "red" if status == ArticleStatus.failed.value and count else ""
        line.append(f"{label} {count} ({share(count, total)})", style=style).append(" · ")
    in_flight = total - sum(batch[s.value] for s in TERMINAL_STATUSES)
    return line.append(f"in flight {in_flight} ({share(in_flight, total)})")


def _review_lines(batch: dict, width: int) -> list[Text]:
    """The review studio's verdicts, and the views per row when there are more than the
    front; the views go on a line of their own when both do not fit ``width``."""
    review = batch.get("review") or {}
    words = [f"{label} {review.get(key, 0)}" for key, label in _REVIEW_LABELS.items()]
    line = "review: " + " · ".join(words) if review else ""
    views = batch.get("views") or [DEFAULT_VIEW]
    if views == [DEFAULT_VIEW]:
        return [Text(line)] if line else []
    shown = "views: " + ", ".join(views)
    if line and len(line) + 3 + len(shown) <= width:
        return [Text(f"{line} · {shown}")]
    return [Text(part) for part in (line, shown) if part]


def _rate_line(batch: dict) -> Text:
    rate = f"rate {batch.get('rate_per_hour', 0):.0f} articles/hour"
    eta = batch["eta_seconds"]
    in_flight = batch["total"] - sum(batch[s.value] for s in TERMINAL_STATUSES)
    if not in_flight:
        return Text(f"{rate} · every article ended")
    if eta is None:
        return Text(f"{rate} · ETA unknown (no article ended lately)")
    return Text(f"{rate} · ETA {duration(eta)}")


def _failure_lines(batch: dict) -> list[Text]:
    lines = []
    for kind, group in (batch.get("failures") or {}).items():
        example = group["example"]
        error = " ".join((example["error"] or "").split())
        lines.append(
            Text(
                f"failed {group['count']}× {kind} (e.g. {example['key']} at "
                f"{example['stage']}: {error})",
                style="red",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    return lines


def duration(seconds: float) -> str:
    """A short human duration: ``42s``, ``4m10s``, ``1h05m``, ``3d04h``."""
    total = int(round(seconds))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
