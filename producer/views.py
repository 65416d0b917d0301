"""The ``--views`` option of ``farm submit``, ``farm run`` and ``farm demo``.

A catalog row is rendered once per view (front, back, side, detail), each view its own
article. The views come from ``--views``, else from the catalog's latest batch, else from
``FARM_VIEWS`` (see :func:`producer.imports.import_catalog`).
"""

from __future__ import annotations

import click

from tasks.settings import Settings
from workers.prompts import VIEWS, parse_views


def _parsed(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--views`` as a tuple of views, None when not given (after checking ``FARM_VIEWS``)."""
    if value is not None:
        try:
            return parse_views(value)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from error
    settings = ctx.find_object(Settings)
    if settings is not None:  # None only when parsed without the group (docs' own checks)
        default_views(settings)
    return None


def default_views(settings: Settings) -> tuple[str, ...]:
    """The views of a new batch submitted without ``--views``: ``FARM_VIEWS``.

    Raises:
        click.BadParameter: ``FARM_VIEWS`` names an unknown view (exit 2).
    """
    try:
        return parse_views(settings.views)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="FARM_VIEWS") from error


views_option = click.option(
    "--views",
    callback=_parsed,
    metavar="VIEW,...",
    help=(
        f"Views to render per row, comma-separated ({', '.join(VIEWS)}); each is its own "
        "article. Default: the catalog's batch's views, else FARM_VIEWS (front)."
    ),
)
