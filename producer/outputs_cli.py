"""``farm export`` and ``farm report``: a batch's rows as a sheet, and its HTML contact sheet.

Both write only regular files (or standard output, ``--out -``) and refuse a device, FIFO or
symlink at the path (:mod:`producer.writes`, exit 6).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from producer import guards
from producer.export import (
    BINARY_FORMATS,
    EXPORT_FORMATS,
    STDOUT,
    export_rows,
    write_export,
    write_export_stream,
)
from producer.report import write_report
from tasks.exceptions import SelectionError
from tasks.outputs import batch_dir
from tasks.settings import Settings

console = Console(stderr=True, soft_wrap=True)


def _standard_output():
    """Where ``--out -`` writes: standard output as bytes."""
    return sys.stdout.buffer


@click.command("export")
@click.argument("batch")
@click.option(
    "--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="xlsx", show_default=True
)
@click.option(
    "--out",
    type=click.Path(allow_dash=True),
    help="A file, or - for standard output. Default: <output-dir>/<batch>/<batch>.<format>",
)
@click.pass_obj
def export(settings: Settings, batch, fmt, out) -> None:
    """One row per article of BATCH, joined back to its source, as xlsx, csv, jsonl or parquet."""
    guards.output_store(settings)
    stdout = _standard_output() if out == STDOUT else None
    if stdout is not None and fmt in BINARY_FORMATS and stdout.isatty():
        raise click.UsageError(f"{fmt} is binary: redirect standard output to a file or a pipe")
    with guards.database(settings)() as session:
        try:
            rows = export_rows(session, batch, settings.output_dir)
        except LookupError as error:
            raise SelectionError.unknown_batch(batch) from error
    if stdout is not None:
        console.print(f"{write_export_stream(rows, stdout, fmt)} rows written")
        return
    path = Path(out) if out else batch_dir(settings.output_dir, batch) / f"{batch}.{fmt}"
    guards.output_file(path, "export")
    console.print(f"{write_export(rows, path, fmt)} rows written")
    click.echo(path)


@click.command()
@click.argument("batch")
@click.option(
    "--out",
    type=click.Path(allow_dash=True),
    help="A file, or - for standard output. Default: <output-dir>/<batch>/report.html",
)
@click.pass_obj
def report(settings: Settings, batch, out) -> None:
    """A self-contained HTML contact sheet of BATCH, and its clip_statistics.txt."""
    guards.output_store(settings)
    stdout = _standard_output() if out == STDOUT else None
    path = Path(out) if out and stdout is None else None
    if path is not None:
        guards.output_file(path, "report")
    with guards.database(settings)() as session:
        try:
            path = write_report(session, batch, settings.output_dir, path=path, stream=stdout)
        except LookupError as error:
            raise SelectionError.unknown_batch(batch) from error
    if stdout is None:
        click.echo(path)
