"""The ``farm`` command: submit catalogs, run workers, watch progress, run everything locally."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from db.engine import make_engine, migrate, session_factory
from db.models import ArticleStatus
from producer.catalog import CatalogError, parse_column_map, read_catalog
from producer.progress import batch_summaries, wait_for_batch
from producer.submit import BrokerUnavailable, check_broker, send_chains, store_batch
from tasks.app import configure
from tasks.settings import Settings

SAMPLE_CATALOG = Path(__file__).parent / "samples" / "catalog.csv"
console = Console(stderr=True)


@click.group()
@click.option("--database-url", help="SQLAlchemy URL [env FARM_DATABASE_URL].")
@click.option("--broker-url", help="Celery broker URL [env FARM_BROKER_URL].")
@click.option("--output-dir", type=click.Path(path_type=Path), help="[env FARM_OUTPUT_DIR]")
@click.option("--profile", type=click.Choice(["default", "tiny"]), help="[env FARM_PROFILE]")
@click.option("--device", help="auto, cpu, cuda or cuda:N [env FARM_DEVICE].")
@click.pass_context
def main(ctx: click.Context, **flags) -> None:
    """fashion-farm: German catalog descriptions in, catalog product photos out."""
    overrides = {name: value for name, value in flags.items() if value is not None}
    ctx.obj = Settings(**overrides)


def _read(settings: Settings, files, sheet, columns) -> list:
    try:
        column_map = parse_column_map(columns) if columns else None
        return read_catalog(
            [Path(f) for f in files],
            sheet=sheet,
            columns=column_map,
            max_cell_chars=settings.max_cell_chars,
        )
    except CatalogError as error:
        console.print(f"[red]{error}[/red]", markup=False, highlight=False)
        sys.exit(2)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--columns") from error


def _sessions(settings: Settings):
    engine = make_engine(settings.database_url)
    migrate(engine)
    return session_factory(engine)


catalog_files = click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
sheet_option = click.option("--sheet", help="Read only this sheet of each workbook.")
columns_option = click.option(
    "--columns", help="Map our columns to yours: description=Beschreibung,name=Titel"
)


@main.command()
@catalog_files
@sheet_option
@columns_option
@click.pass_obj
def submit(settings: Settings, files, sheet, columns) -> None:
    """Validate catalog FILES, store them as one batch and send a chain per article."""
    rows = _read(settings, files, sheet, columns)
    app = configure(settings)
    try:
        check_broker(app)
    except BrokerUnavailable as error:
        console.print(f"[red]{error}[/red]")
        sys.exit(3)
    sessions = _sessions(settings)
    with sessions() as session:
        submitted = store_batch(session, rows, settings.profile, settings.min_clip_score)
    sent = send_chains(app, submitted.articles)
    console.print(f"batch {submitted.batch_id}: {sent} articles sent")
    click.echo(submitted.batch_id)


@main.command()
@click.argument("role", type=click.Choice(["text", "gpu", "all"]))
@click.option("--gpus", help="Comma-separated GPU indices; one worker process per GPU.")
@click.option("--concurrency", default=1, show_default=True, help="Pool children (no GPU).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(settings: Settings, role, gpus, concurrency, loglevel) -> None:
    """Start worker processes for ROLE: text (translate, extract) or gpu (render, score)."""
    from workers.launcher import plan_workers, run_workers

    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else []
    if gpu_list and settings.device == "cpu":
        raise click.UsageError("--gpus and --device cpu exclude each other")
    processes = plan_workers(role, settings, gpu_list, concurrency, loglevel)
    sys.exit(run_workers(processes))


@main.command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(settings: Settings, batch, as_json) -> None:
    """Counts per status for each batch (or only BATCH)."""
    sessions = _sessions(settings)
    with sessions() as session:
        summaries = batch_summaries(session, [batch] if batch else None)
    if batch and not summaries:
        raise click.ClickException(f"no batch {batch!r}")
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    table = Table("batch", "total", *[s.value for s in ArticleStatus])
    for summary in summaries:
        table.add_row(
            summary["id"], str(summary["total"]), *[str(summary[s.value]) for s in ArticleStatus]
        )
    Console().print(table)


@main.command()
@catalog_files
@sheet_option
@columns_option
@click.pass_obj
def run(settings: Settings, files, sheet, columns) -> None:
    """Run the whole farm on this machine: SQLite, in-process broker and worker."""
    _run_local(settings, files, sheet, columns)


@main.command()
@click.pass_obj
def demo(settings: Settings) -> None:
    """`farm run` on the shipped sample catalog with the tiny random-weight models."""
    if "profile" not in settings.model_fields_set:
        settings = settings.model_copy(update={"profile": "tiny"})
    _run_local(settings, [SAMPLE_CATALOG], None, None)


def _run_local(settings: Settings, files, sheet, columns) -> None:
    from workers.embedded import embedded_worker

    started = time.perf_counter()
    rows = _read(settings, files, sheet, columns)
    settings = settings.model_copy(
        update={"broker_url": SecretStr("memory://"), "worker_role": "all"}
    )
    app = configure(settings)
    sessions = _sessions(settings)
    with sessions() as session:
        submitted = store_batch(session, rows, settings.profile, settings.min_clip_score)
    console.print(f"batch {submitted.batch_id}: {len(rows)} articles, loading models...")
    with embedded_worker(app) as worker_alive:
        send_chains(app, submitted.articles)
        with console.status("rendering") as spinner:
            summary = wait_for_batch(
                sessions,
                submitted.batch_id,
                on_progress=lambda s: spinner.update(_progress_line(s)),
                alive=worker_alive,
            )
    elapsed = time.perf_counter() - started
    out = Path(settings.output_dir).resolve() / submitted.batch_id
    console.print(f"{_progress_line(summary)} in {elapsed:.1f}s")
    console.print(f"outputs: {out}")
    click.echo(submitted.batch_id)
    if summary[ArticleStatus.failed.value]:
        sys.exit(1)


def _progress_line(summary: dict) -> str:
    counts = ", ".join(f"{s.value} {summary[s.value]}" for s in ArticleStatus if summary[s.value])
    return f"batch {summary['id']}: {summary['total']} articles ({counts})"


if __name__ == "__main__":
    main()
