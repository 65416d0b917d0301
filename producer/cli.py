"""The ``farm`` command: submit catalogs, run workers, watch progress, run everything locally."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
from pydantic import SecretStr, ValidationError
from rich.console import Console

from db.models import TERMINAL_STATUSES, ArticleStatus
from producer import guards
from producer import requeue as requeues
from producer.catalog import CatalogError, Notice, parse_column_map, read_catalog
from producer.imports import catalog_name, import_catalog
from producer.local_run import (
    INTERRUPTED_EXIT_CODE,
    end_process,
    free_interrupted,
    serve_locally,
)
from producer.models_cli import doctor, models, require_models
from producer.outputs_cli import export, report
from producer.progress import DEFAULT_HALF_LIFE_MINUTES, batch_details, batch_summaries
from producer.requeue import Selection
from producer.review_cli import review
from producer.run_view import RunProgress, summary_line
from producer.status_view import render_status
from producer.status_view import watch as watch_status
from producer.strength import MIN_FLOWER_PASSWORD_CHARS, PASSPHRASE_CHARS, basic_auth_problem
from producer.submit import BrokerUnavailable, check_broker, send_and_mark
from producer.views import default_views, views_option
from tasks.app import configure
from tasks.exceptions import SelectionError
from tasks.outputs import batch_dir
from tasks.queues import URGENT_PRIORITY
from tasks.registry import ORDER, ROLES
from tasks.settings import Settings

SAMPLE_CATALOG = Path(__file__).parent / "samples" / "catalog.csv"
# soft_wrap: messages stay on one line however narrow the terminal (scripts read them).
console = Console(stderr=True, soft_wrap=True)


class FarmGroup(click.Group):
    """Ends a command with one message and its exit code when a user can fix the error
    (producer.guards); a bug still shows its traceback."""

    def invoke(self, ctx: click.Context):
        with guards.reported():
            try:
                return super().invoke(ctx)
            except click.NoSuchOption as error:
                _hint_global_option(self, ctx, error)
                raise


def _hint_global_option(group: click.Group, ctx: click.Context, error: click.NoSuchOption):
    """Say where a global option (``--device``) goes when it was given after the command."""
    name = error.option_name.partition("=")[0]
    if not any(name in param.opts for param in group.params):
        return
    command = error.ctx.info_name if error.ctx else "COMMAND"
    error.message = (
        f"{error.message.rstrip('.')}: {name} is an option of farm itself and goes before "
        f"the command, as in `farm {name} VALUE {command} ...`"
    )


@click.group(cls=FarmGroup)
@click.option("--database-url", help="SQLAlchemy URL [env FARM_DATABASE_URL].")
@click.option("--broker-url", help="Celery broker URL [env FARM_BROKER_URL].")
@click.option("--output-dir", help="A folder or s3://bucket/prefix [env FARM_OUTPUT_DIR].")
@click.option("--profile", type=click.Choice(["default", "tiny"]), help="[env FARM_PROFILE]")
@click.option("--device", help="auto, cpu, cuda or cuda:N [env FARM_DEVICE].")
@click.pass_context
def main(ctx: click.Context, **flags) -> None:
    """fashion-farm: German catalog descriptions in, catalog product photos out."""
    overrides = {name: value for name, value in flags.items() if value is not None}
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as error:
        guards.fail(guards.settings_problem(error), guards.EXIT_USAGE)


def _read(settings: Settings, files, sheet, columns) -> list:
    notices: list[Notice] = []
    try:
        column_map = parse_column_map(columns) if columns else None
        rows = read_catalog(
            [Path(f) for f in files],
            sheet=sheet,
            columns=column_map,
            max_cell_chars=settings.max_cell_chars,
            notices=notices,
        )
    except CatalogError as error:
        _show_notices(notices)
        console.print(str(error), style="red", markup=False, highlight=False, emoji=False)
        sys.exit(2)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--columns") from error
    _show_notices(notices)
    return rows


def _show_notices(notices: list[Notice], listed: int = 5) -> None:
    """Print what reading noticed: repeated rows counted with a few examples, the rest whole."""
    repeats = [n for n in notices if n.kind == "duplicate"]
    for notice in [n for n in notices if n.kind != "duplicate"]:
        console.print(f"note: {notice}", style="yellow", markup=False, highlight=False, emoji=False)
    if repeats:
        console.print(
            f"note: {plural(len(repeats), 'row')} repeat an earlier row cell for cell and "
            "were imported once, e.g.:",
            style="yellow",
        )
        for notice in repeats[:listed]:
            console.print(f"  {notice}", markup=False, highlight=False, emoji=False)


def _connected_app(settings: Settings):
    app = configure(settings)
    try:
        check_broker(app)
    except BrokerUnavailable as error:
        console.print(str(error), style="red", markup=False, highlight=False, emoji=False)
        sys.exit(3)
    return app


def _sessions(settings: Settings, create: bool = False):
    return guards.database(settings, create=create)


catalog_files = click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
sheet_option = click.option("--sheet", help="Read only this sheet of each workbook.")
columns_option = click.option(
    "--columns", help="Map our columns to yours: description=Beschreibung,name=Titel"
)
min_score_option = click.option(
    "--min-clip-score", type=float, help="Regenerate articles scoring below this CLIP score."
)


@main.command()
@catalog_files
@sheet_option
@columns_option
@click.option("--catalog", help="Catalog name (default: the file names); re-imports into it.")
@click.option("--new-batch", is_flag=True, help="Start a new batch even if the catalog has one.")
@min_score_option
@views_option
@click.pass_obj
def submit(
    settings: Settings, files, sheet, columns, catalog, new_batch, min_clip_score, views
) -> None:
    """Validate catalog FILES, import them into a batch and send a chain per new/changed article.

    Submitting the same catalog again redoes only the rows whose text (or output settings)
    changed; unchanged rows keep their results, rows gone from a file are marked removed.
    """
    rows = _read(settings, files, sheet, columns)
    guards.output_store(settings)  # the workers write there: a wrong URL shows now
    app = _connected_app(settings)
    sessions = _sessions(settings, create=True)
    name = catalog or catalog_name(files)
    result = _import(sessions, settings, rows, name, min_clip_score, new_batch, views)
    sent = send_and_mark(app, sessions.kw["bind"], result.to_send)
    console.print(f"{_import_line(result)}; {plural(sent, 'chain')} sent")
    click.echo(result.batch_id)


def _import_line(result) -> str:
    verb = "created" if result.created else "re-imported into"
    line = (
        f"{verb} batch {result.batch_id}: {result.new} new, {result.changed} changed, "
        f"{result.unchanged} unchanged, {result.removed} removed"
    )
    if len(result.views) > 1:  # the counts are of articles: one per row and view
        line += f" (articles of views {', '.join(result.views)})"
    recheck = result.recheck
    if recheck is not None:
        line += (
            f"; new threshold: {plural(len(recheck.regenerate), 'article')} to render again, "
            f"{recheck.to_review} to needs_review, {recheck.to_done} to done"
        )
    return line


def plural(count: int, noun: str) -> str:
    """``1 chain``, ``2 chains``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _import(
    sessions, settings: Settings, rows, catalog: str, min_clip_score, new_batch, views, resume=False
):
    with sessions() as session:
        return import_catalog(
            session,
            rows,
            catalog,
            settings.output_shape(),
            min_clip_score if min_clip_score is not None else settings.min_clip_score,
            new_batch,
            resume=resume,
            max_attempts=settings.max_attempts,
            views=views,
            default_views=views or default_views(settings),
        )


@main.command()
@click.argument("role", type=click.Choice(["text", "gpu", "all"]))
@click.option("--gpus", help="Comma-separated GPU indices; one worker process per GPU.")
@click.option(
    "--concurrency", type=click.IntRange(1), help="Messages per process (default: its batches)."
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(settings: Settings, role, gpus, concurrency, loglevel) -> None:
    """Start worker processes for ROLE: text (translate, extract) or gpu (render, score)."""
    from tasks.launcher import check_devices, plan_workers, recovery, run_workers

    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else []
    if gpu_list and settings.device == "cpu":
        raise click.UsageError("--gpus and --device cpu exclude each other")
    require_models(settings, ROLES[role])
    check_devices(settings.device, gpu_list)
    if role in ("gpu", "all"):  # they write the images
        guards.writable_folder(settings.output_dir)
    else:  # a text worker that fails a batch's last article writes its statistics
        guards.output_store(settings)
    _sessions(settings, create=True)  # the schema is current before any worker takes work
    processes = plan_workers(role, settings, gpu_list, concurrency, loglevel)
    sys.exit(run_workers(processes, on_death=recovery(settings)))


@main.command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch",
    is_flag=True,
    help="Show it again every --interval until Ctrl-C: redrawn on a terminal, one plain "
    "block per interval into a pipe or file.",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between two readings with --watch.",
)
@click.option(
    "--half-life",
    default=DEFAULT_HALF_LIFE_MINUTES,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Minutes after which a finished article weighs half in the rate and ETA of a batch "
    "in flight (an ended batch's rate is taken over its active time).",
)
@click.pass_obj
def status(settings: Settings, batch, as_json, watch, interval, half_life) -> None:
    """Per batch (or only BATCH): counts per status and stage, rate, ETA, failures, scores."""
    sessions = _sessions(settings)

    def collect() -> list[dict]:
        with sessions() as session:
            summaries = batch_summaries(session, [batch] if batch else None)
            return [s | batch_details(session, s, half_life) for s in summaries]

    batches = collect()
    if batch and not batches:
        raise SelectionError.unknown_batch(batch)
    if as_json:
        click.echo(json.dumps(batches, indent=2))
        return
    if not watch:
        Console().print(render_status(batches))
        return
    try:
        watch_status(collect, Console(), interval, first=batches)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `farm status --watch | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit


@main.command()
@click.option("--batch", help="Only this batch.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in ArticleStatus]),
    help="Only articles in this status (repeatable).",
)
@click.option("--below", type=float, help="Only articles whose best CLIP score is below this.")
@click.option("--articles", help="Only these article keys, comma-separated.")
@click.option("--stuck", is_flag=True, help="Only in-flight articles without progress for a lease.")
@click.option(
    "--from-stage",
    type=click.Choice(list(ORDER)),
    help="Restart here (default: the first stage not done; render for finished articles).",
)
@click.option(
    "--all-batches", is_flag=True, help="Select in every batch (without --batch, required)."
)
@click.option("--dry-run", is_flag=True, help="Show what would be requeued; change nothing.")
@click.pass_obj
def requeue(
    settings: Settings, batch, statuses, below, articles, stuck, from_stage, all_batches, dry_run
):
    """Reset selected articles to a stage and send their chains again, ahead of other work."""
    keys = [k.strip() for k in articles.split(",") if k.strip()] if articles else []
    if not (batch or statuses or below is not None or keys or stuck):
        raise click.UsageError(
            "name at least one of --batch, --status, --below, --articles, --stuck"
        )
    if batch and all_batches:
        raise click.UsageError("--batch and --all-batches exclude each other")
    if not batch and not all_batches:
        raise click.UsageError(
            "name the batch with --batch BATCH (`farm status` lists them), or pass "
            "--all-batches to select in every batch"
        )
    selection = Selection(batch, statuses, below, keys, stuck)
    sessions = _sessions(settings)
    with sessions() as session:
        chosen = requeues.select_articles(session, selection, settings.lease_seconds)
        plans = requeues.plan(chosen, from_stage)
    for item in plans:
        console.print(f"{item.batch_id} {item.key}: {item.status} → from {item.from_stage}")
    if dry_run or not plans:
        verb = "would be requeued" if dry_run else "requeued"
        console.print(f"{plural(len(plans), 'article')} {verb}")
        return
    app = _connected_app(settings)
    with sessions() as session:
        to_send = requeues.apply(session, plans)
    sent = send_and_mark(app, sessions.kw["bind"], to_send, priority=URGENT_PRIORITY)
    console.print(f"{plural(sent, 'article')} requeued")


# What a FARM_FLOWER_BASIC_AUTH password must be (producer.strength.weakness); the README's
# settings table says the same words.
FLOWER_PASSWORD_RULES = (
    f"a password of {MIN_FLOWER_PASSWORD_CHARS} characters or more, enough of them different, "
    "not a common one or the example's, not mostly a run (aaaa, 1234), mixing letters with "
    f"digits or signs unless it has {PASSPHRASE_CHARS} or more"
)
FLOWER_AUTH_MISSING = (
    "refusing to start Flower without authentication: set FARM_FLOWER_BASIC_AUTH to "
    f"user:password ({FLOWER_PASSWORD_RULES}), or pass --localhost-only to serve it on "
    "127.0.0.1 without auth"
)


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True)
@click.option(
    "--localhost-only",
    is_flag=True,
    help="Allow running without FARM_FLOWER_BASIC_AUTH, bound to 127.0.0.1 only.",
)
@click.pass_obj
def flower(settings: Settings, address, port, localhost_only) -> None:
    """Start the real Flower on the farm's broker, with basic auth (FARM_FLOWER_BASIC_AUTH)."""
    auth = settings.flower_basic_auth
    if localhost_only:
        address = "127.0.0.1"
    elif auth is None:
        raise click.UsageError(FLOWER_AUTH_MISSING)
    problem = None if auth is None else basic_auth_problem(auth.get_secret_value())
    if problem:
        raise click.UsageError(problem)
    env = os.environ | settings.as_env()
    if auth is not None:
        # Through the environment, so the password never shows in the process list.
        env["FLOWER_BASIC_AUTH"] = auth.get_secret_value()
    argv = [sys.executable, "-m", "celery", "-A", "tasks.worker", "flower"]
    argv += [f"--address={address}", f"--port={port}"]
    os.execve(sys.executable, argv, env)


@main.group("db")
def database_commands() -> None:
    """The farm's database: bring its schema up to date before the workers start."""


@database_commands.command()
@click.pass_obj
def upgrade(settings: Settings) -> None:
    """Migrate the database to this version's latest schema revision.

    A missing SQLite file is created, as `submit` does. Workers and commands migrate on
    start too; deployments run this once before them. It prints the revision before and
    after.
    """
    where, before, after = guards.upgrade_database(settings)
    unchanged = " (already the latest)" if before == after else ""
    click.echo(f"{where}: schema revision {before or 'none'} → {after}{unchanged}")


new_batch_option = click.option(
    "--new-batch", is_flag=True, help="Start a new batch instead of continuing the catalog's."
)


@main.command()
@catalog_files
@sheet_option
@columns_option
@min_score_option
@new_batch_option
@views_option
@click.pass_obj
def run(settings: Settings, files, sheet, columns, min_clip_score, new_batch, views) -> None:
    """Run the whole farm on this machine: SQLite, in-process broker and worker.

    Running the same FILES again continues their batch: finished articles are kept, the
    rest is done. Ctrl-C stops cleanly (exit 130).
    """
    _run_local(settings, files, sheet, columns, min_clip_score, new_batch, views)


@main.command()
@min_score_option
@new_batch_option
@views_option
@click.pass_obj
def demo(settings: Settings, min_clip_score, new_batch, views) -> None:
    """`farm run` on the shipped sample catalog with the tiny random-weight models."""
    if "profile" not in settings.model_fields_set:
        settings = settings.model_copy(update={"profile": "tiny"})
    _run_local(settings, [SAMPLE_CATALOG], None, None, min_clip_score, new_batch, views)


def _run_local(settings: Settings, files, sheet, columns, min_clip_score, new_batch, views) -> None:
    started = time.perf_counter()
    rows = _read(settings, files, sheet, columns)
    require_models(settings)
    guards.writable_folder(settings.output_dir)
    settings = settings.model_copy(
        update={"broker_url": SecretStr("memory://"), "worker_role": "all"}
    )
    app = configure(settings)
    sessions = _sessions(settings, create=True)
    name = catalog_name(files)
    submitted = _import(
        sessions, settings, rows, name, min_clip_score, new_batch, views, resume=not new_batch
    )
    console.print(_import_line(submitted))
    if not submitted.to_send and _ended(sessions, submitted.batch_id):
        console.print(
            f"batch {submitted.batch_id} has ended; nothing to do (--new-batch starts over)"
        )
        click.echo(submitted.batch_id)
        return
    try:
        articles = submitted.new + submitted.changed + submitted.unchanged
        with RunProgress(console, submitted.batch_id, articles) as view:
            summary = serve_locally(
                app, sessions, submitted, view.update, on_ready=view.ready, on_loading=view.loading
            )
    except KeyboardInterrupt:  # the worker has stopped: nothing claims an article any more
        freed = free_interrupted(sessions, submitted.batch_id)
        console.print(freed.line(submitted.batch_id), style="yellow")
        end_process(INTERRUPTED_EXIT_CODE, at_once=True)
    elapsed = time.perf_counter() - started
    out = batch_dir(settings.output_dir, submitted.batch_id)
    out = out.resolve() if isinstance(out, Path) else out
    console.print(summary_line(summary, elapsed))
    console.print(f"outputs: {out}")
    click.echo(submitted.batch_id)
    end_process(1 if summary[ArticleStatus.failed.value] else 0)


def _ended(sessions, batch_id: str) -> bool:
    with sessions() as session:
        (summary,) = batch_summaries(session, [batch_id])
    ended = sum(summary[s.value] for s in TERMINAL_STATUSES)
    return ended == summary["total"]


main.add_command(models)
main.add_command(doctor)
main.add_command(review)
main.add_command(export)
main.add_command(report)

if __name__ == "__main__":
    main()
