"""How ``farm status`` draws batches in a terminal (Rich)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from db.models import ArticleStatus


def render_status(batches: list[dict]) -> Group:
    """A Rich renderable of per-batch counts, throughput, ETA, failures and scores.

    Args:
        batches: summaries from :func:`producer.progress.batch_summaries`, each merged with
            :func:`producer.progress.batch_details`.

    Returns:
        A renderable for ``Console.print`` or ``rich.live.Live``.
    """
    parts = [_counts_table(batches)]
    for batch in batches:
        parts.append(_batch_panel(batch))
    return Group(*parts)


def _counts_table(batches: list[dict]) -> Table:
    table = Table("batch", "total", *[s.value for s in ArticleStatus], title="articles")
    for batch in batches:
        table.add_row(
            batch["id"], str(batch["total"]), *[str(batch[s.value]) for s in ArticleStatus]
        )
    return table


def _batch_panel(batch: dict) -> Group:
    lines = [Text(f"batch {batch['id']}", style="bold")]
    stages = batch.get("stages", {})
    if stages:
        flow = "  ".join(
            f"{stage}: {c['running']} running, {c['queued']} queued" for stage, c in stages.items()
        )
        lines.append(Text(flow))
    eta = batch.get("eta_seconds")
    eta_text = "unknown (nothing ended lately)" if eta is None else _duration(eta)
    lines.append(Text(f"rate: {batch.get('rate_per_hour', 0):.0f} articles/hour, ETA {eta_text}"))
    scores = batch.get("scores") or {}
    if scores:
        lines.append(
            Text(
                "CLIP score: mean {mean:.2f}, median {median:.2f}, min {min:.2f}, "
                "max {max:.2f}".format(**scores)
            )
        )
    for kind, group in (batch.get("failures") or {}).items():
        example = group["example"]
        lines.append(
            Text(
                f"failed {group['count']}× {kind} (e.g. {example['key']} at "
                f"{example['stage']}: {(example['error'] or '')[:120]})",
                style="red",
            )
        )
    return Group(*lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
