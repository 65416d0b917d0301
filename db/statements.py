"""The statements of a stage's bookkeeping, each built once per database dialect.

Every stage task claims its article and later stores its outputs, so these two transactions
are the farm's hot path. On PostgreSQL each is one statement (data-modifying CTEs): the claim
updates the article, inserts its stage run and returns the row; completion updates the
article, closes the run and writes the render row, all only while the claim's lease token
holds. SQLite has no data-modifying CTEs, so there the same steps are separate statements in
one transaction (``db.transitions`` runs them).
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import aliased

from db.models import Article, Render, StageRun

ARTICLES = Article.__table__
RUNS = StageRun.__table__
RENDERS = Render.__table__
# A render row is inserted by the render stage with every column; the score stage only
# updates its attempt's score.
RENDER_ROW = frozenset({"attempt", "seed", "model_id", "width", "height", "steps"})
_NOW = bindparam("p_now", type_=DateTime(timezone=True))
_RUN_COLUMNS = ["article_id", "stage", "attempt", "worker", "outcome", "started_at"]


def one_statement(dialect: str) -> bool:
    """Whether claim and completion are single statements on this dialect.

    Args:
        dialect: the engine's dialect name.

    Returns:
        True on PostgreSQL.
    """
    return dialect == "postgresql"


def _claimable():
    return (
        update(Article)
        .where(
            Article.id == bindparam("p_id"),
            Article.status == bindparam("p_status"),
            Article.stage_attempts < bindparam("p_max_attempts"),
            or_(
                Article.lease_expires_at.is_(None),
                Article.lease_expires_at < _NOW,
                # A retried task taking back the leases its earlier tries held.
                Article.lease_token.in_(bindparam("p_takeover", expanding=True)),
            ),
        )
        .values(
            lease_token=bindparam("p_token"),
            lease_stage=bindparam("p_stage"),
            lease_expires_at=bindparam("p_expires"),
            stage_attempts=Article.stage_attempts + 1,
            # Explicit: a column's Python-side ``onupdate`` is not applied inside a CTE.
            updated_at=_NOW,
        )
    )


@lru_cache(maxsize=4)
def claim(dialect: str):
    """The claim: take the lease if the article waits at the stage and is free.

    Parameters: ``p_id``, ``p_status``, ``p_max_attempts``, ``p_now``, ``p_token``,
    ``p_takeover`` (a list of lease tokens that may be taken over although live),
    ``p_stage``, ``p_expires``, and ``p_worker`` on PostgreSQL.

    Args:
        dialect: the engine's dialect name.

    Returns:
        On PostgreSQL a SELECT of (Article, stage run id) that also inserts the run; elsewhere
        an ORM UPDATE returning the Article (the run is inserted by :data:`start_run`).
        Either yields no row when the article could not be claimed.
    """
    if not one_statement(dialect):
        return _claimable().returning(Article)
    claimed = _claimable().returning(*ARTICLES.c).cte("claimed")
    run = (
        insert(RUNS)
        .from_select(
            _RUN_COLUMNS,
            select(
                claimed.c.id,
                bindparam("p_stage", type_=String),
                claimed.c.stage_attempts,
                bindparam("p_worker", type_=String),
                literal("running", String),
                _NOW,
            ),
        )
        .returning(RUNS.c.id)
        .cte("run")
    )
    return select(aliased(Article, claimed), run.c.id).select_from(claimed.join(run, true()))


start_run = insert(RUNS).returning(RUNS.c.id)
finish_run = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("p_run"))
    .values(
        outcome=bindparam("p_outcome"), error=bindparam("p_error"), seconds=bindparam("p_seconds")
    )
)


def completion_params(values: dict, render: dict | None) -> dict:
    """The parameters of :func:`store_article` and :func:`complete` for these outputs.

    Args:
        values: article column → value.
        render: render-row column → value, or None.

    Returns:
        ``v_<column>`` for each article value and ``r_<column>`` for each render value.
    """
    params = {f"v_{name}": value for name, value in values.items()}
    params.update({f"r_{name}": value for name, value in (render or {}).items()})
    return params


def _bound(table, prefix: str, columns: tuple[str, ...]) -> dict:
    return {name: bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in columns}


@lru_cache(maxsize=64)
def store_article(columns: tuple[str, ...]):
    """The article's side of completion: outputs and status, only while the lease holds.

    Parameters: ``p_id``, ``p_token`` and ``v_<column>`` (:func:`completion_params`).

    Args:
        columns: the article columns to set.

    Returns:
        An UPDATE of the article.
    """
    return (
        update(ARTICLES)
        .where(ARTICLES.c.id == bindparam("p_id"), ARTICLES.c.lease_token == bindparam("p_token"))
        .values(_bound(ARTICLES, "v_", columns))
    )


@lru_cache(maxsize=64)
def complete(columns: tuple[str, ...], render: tuple[str, ...] | None):
    """PostgreSQL's completion in one statement: article, stage run and render row.

    Parameters: ``p_id``, ``p_token``, ``p_run``, ``p_seconds`` and those of
    :func:`completion_params`.

    Args:
        columns: the article columns to set.
        render: the render row's columns (keyed by ``attempt``), or None.

    Returns:
        A SELECT of the number of articles written: 0 when the lease was lost, and then
        neither the run nor the render row changed.
    """
    stored = store_article(columns).returning(ARTICLES.c.id).cte("stored")
    run = (
        update(RUNS)
        .where(RUNS.c.id == bindparam("p_run"), exists(select(stored.c.id)))
        .values(outcome="ok", error=None, seconds=bindparam("p_seconds"))
        .returning(RUNS.c.id)
        .cte("finished_run")
    )
    statement = select(func.count()).select_from(stored).add_cte(run)
    if render is not None:
        statement = statement.add_cte(_render_row(stored, render))
    return statement


def _render_row(stored, columns: tuple[str, ...]):
    """A new attempt's row (replacing one left by a lost lease), or its score."""
    values = _bound(RENDERS, "r_", columns)
    if not set(columns) >= RENDER_ROW:
        article_id = select(stored.c.id).scalar_subquery()
        return (
            update(RENDERS)
            .where(RENDERS.c.article_id == article_id, RENDERS.c.attempt == values["attempt"])
            .values(values)
            .returning(RENDERS.c.id)
            .cte("render_row")
        )
    row = pg_insert(RENDERS).from_select(
        ["article_id", *columns], select(stored.c.id.cast(Integer), *values.values())
    )
    return (
        row.on_conflict_do_update(
            constraint="uq_render_attempt", set_={name: row.excluded[name] for name in columns}
        )
        .returning(RENDERS.c.id)
        .cte("render_row")
    )
