"""The studio's reads: batch summaries, a contact sheet's page, an article with its attempts.

Read-only, and sized for 10,000-article batches: a contact sheet page costs one COUNT and one
LIMIT/OFFSET query whatever the page (a name search one more, over a row per catalog sheet),
and selects columns rather than objects, so nothing is loaded lazily per article.

A contact sheet shows products: the articles of one catalog row (one key) in each of the
batch's views, on one card. Filters pick views; a product is on the sheet when one of its
views is picked, and shows the picked ones. Counting and paging go by product.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy import case, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    TERMINAL_STATUSES,
    UNREVIEWED,
    Article,
    ArticleStatus,
    Batch,
    Render,
    ReviewAction,
    ReviewStatus,
)
from producer.export import best_render
from workers.prompts import VIEWS

PAGE_SIZE = 60
FILTERS = ("all", "failed", "below", "needs_review", "approved", "rejected", UNREVIEWED)
SORTS = ("catalog", "score", "score_desc")
FARM_STATUSES = tuple(status.value for status in ArticleStatus)
REVIEW_STATUSES = (*(status.value for status in ReviewStatus), UNREVIEWED)
SHORT_TEXT_CHARS = 140
SEARCH_CHARS = 100  # a longer search is cut to this
# Source headers that hold an article's display name, compared in lower case.
NAME_HEADERS = ("name", "model_name")
_TERMINAL = tuple(status.value for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class BatchSummary:
    """One row of the batches page."""

    id: str
    catalog: str
    created_at: datetime
    views: list[str]
    min_clip_score: float | None
    total: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    reviews: dict[str, int] = field(default_factory=dict)
    score_mean: float | None = None
    score_min: float | None = None
    score_max: float | None = None

    @property
    def running(self) -> bool:
        """Whether some article of the batch has not reached an end yet."""
        return any(self.statuses.get(s, 0) for s in FARM_STATUSES if s not in _TERMINAL)


def batch_summaries(session: Session) -> list[BatchSummary]:
    """Every batch, newest first, with its counts and scores (removed articles left out).

    Args:
        session: any session.

    Returns:
        One summary per batch; three queries whatever the number of batches.
    """
    kept = Article.removed_at.is_(None)
    counts = session.execute(
        select(Article.batch_id, Article.status, Article.review_status, func.count())
        .where(kept)
        .group_by(Article.batch_id, Article.status, Article.review_status)
    ).all()
    scores = session.execute(
        select(
            Article.batch_id,
            func.avg(Article.clip_score),
            func.min(Article.clip_score),
            func.max(Article.clip_score),
        )
        .where(kept)
        .group_by(Article.batch_id)
    ).all()
    by_batch: dict[str, dict] = {}
    for batch_id, status, review, count in counts:
        tally = by_batch.setdefault(batch_id, {"total": 0, "statuses": {}, "reviews": {}})
        tally["total"] += count
        tally["statuses"][status] = tally["statuses"].get(status, 0) + count
        review = review or UNREVIEWED
        tally["reviews"][review] = tally["reviews"].get(review, 0) + count
    for batch_id, mean, low, high in scores:
        by_batch.setdefault(batch_id, {}).update(score_mean=mean, score_min=low, score_max=high)
    batches = session.scalars(select(Batch).order_by(Batch.created_at.desc(), Batch.id)).all()
    return [_summary(batch, by_batch.get(batch.id, {})) for batch in batches]


def _summary(batch: Batch, tally: dict) -> BatchSummary:
    return BatchSummary(
        id=batch.id,
        catalog=batch.catalog,
        created_at=batch.created_at,
        views=list(batch.views or ["front"]),
        min_clip_score=batch.min_clip_score,
        **tally,
    )


@dataclass(frozen=True)
class SheetQuery:
    """What a contact sheet shows: a filter, its threshold, a view, a search, an order, a page."""

    filter: str = "all"
    below: float | None = None
    sort: str = "catalog"
    page: int = 1
    view: str = ""  # one of VIEWS: that view of each product only; empty: every view
    search: str = ""  # part of a product's name or key, any case; empty: every product

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SheetQuery:
        """Read the query string; values that make no sense fall back to the defaults.

        Args:
            params: ``filter``, ``below``, ``sort``, ``page``, ``view`` and ``q`` (the
                search), each optional.
        """
        chosen = params.get("filter", "all")
        order = params.get("sort", "catalog")
        view = params.get("view", "")
        return cls(
            filter=chosen if chosen in FILTERS else "all",
            below=_finite(params.get("below")),
            sort=order if order in SORTS else "catalog",
            page=max(1, _whole(params.get("page")) or 1),
            view=view if view in VIEWS else "",
            search=" ".join(params.get("q", "").split())[:SEARCH_CHARS],
        )

    def params(self, **changes: object) -> str:
        """This query, with ``changes``, as a query string (no ``?``); defaults left out."""
        chosen = replace(self, **changes)
        pairs = {
            "filter": chosen.filter,
            "view": chosen.view,
            "q": chosen.search,
            "sort": chosen.sort,
            "page": chosen.page,
        }
        if chosen.filter == "below" and chosen.below is not None:
            pairs["below"] = chosen.below
        defaults = {"filter": "all", "view": "", "q": "", "sort": "catalog", "page": 1}
        return urlencode({k: v for k, v in pairs.items() if defaults.get(k) != v})


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _whole(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Card:
    """One article on a contact sheet."""

    id: int
    key: str
    view: str
    name: str | None
    text: str
    score: float | None
    status: str
    review_status: str | None
    attempt: int  # the current attempt: after a reject, the one not rendered yet
    render_id: int | None
    error: str | None


@dataclass(frozen=True)
class Product:
    """One catalog row on a contact sheet: its views that the filters picked, in view order."""

    key: str
    name: str | None
    text: str
    views: list[Card]


@dataclass(frozen=True)
class SheetPage:
    """A page of a batch's contact sheet: products, each with the views the filters picked."""

    batch: BatchSummary
    query: SheetQuery
    threshold: float | None
    products: list[Product]
    total: int  # products on every page together

    @property
    def cards(self) -> list[Card]:
        """The page's views, product after product."""
        return [card for product in self.products for card in product.views]

    @property
    def pages(self) -> int:
        """How many pages the filtered products fill (at least one)."""
        return max(1, math.ceil(self.total / PAGE_SIZE))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first product among the filtered ones."""
        return (self.query.page - 1) * PAGE_SIZE + 1 if self.products else 0


def contact_sheet(session: Session, batch_id: str, query: SheetQuery) -> SheetPage | None:
    """One page of a batch's products, filtered and sorted, 60 products to a page.

    A product is on the page when some of its views pass the filter, the view and the
    search; it shows those views. It is ranked by its first article (catalog order) or by
    the lowest score among them.

    Args:
        session: any session.
        batch_id: the batch.
        query: the filter, view, search, order and page; a page past the end shows the last.

    Returns:
        The page, or None when there is no such batch.
    """
    batch = session.get(Batch, batch_id)
    if batch is None:
        return None
    threshold = query.below if query.below is not None else batch.min_clip_score
    conditions = _sheet_conditions(batch_id, query.filter, threshold)
    if query.view:
        conditions.append(Article.view == query.view)
    if query.search:
        conditions.append(_search(session, batch_id, query.search))
    total = session.scalar(select(func.count(Article.key.distinct())).where(*conditions)) or 0
    query = replace(query, page=min(query.page, max(1, math.ceil(total / PAGE_SIZE))))
    first_id, lowest = func.min(Article.id), func.min(Article.clip_score)
    chosen = (
        select(Article.key, first_id.label("first_id"), lowest.label("lowest"))
        .where(*conditions)
        .group_by(Article.key)
        .order_by(*_product_order(query.sort, first_id, lowest))
        .limit(PAGE_SIZE)
        .offset((query.page - 1) * PAGE_SIZE)
        .subquery("chosen")
    )
    rows = session.execute(
        select(*_CARD_COLUMNS, _best_render_id().label("render_id"))
        .join(chosen, Article.key == chosen.c.key)
        .where(*conditions)
        .order_by(*_product_order(query.sort, chosen.c.first_id, chosen.c.lowest), Article.id)
    ).all()
    summary = _summary(batch, {})
    return SheetPage(summary, query, threshold, _products(rows), total)


def _product_order(sort: str, first_id, lowest) -> tuple:
    if sort == "catalog":
        return (first_id,)
    # Products without a score last either way: they have nothing to compare yet.
    ranked = lowest.asc() if sort == "score" else lowest.desc()
    return (lowest.is_(None), ranked, first_id)


def _products(rows) -> list[Product]:
    """The rows, ordered product by product, as products with their views in view order."""
    by_key: dict[str, list] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    order = {view: index for index, view in enumerate(VIEWS)}
    products = []
    for key, views in by_key.items():
        views.sort(key=lambda row: (order.get(row.view, len(order)), row.id))
        first = views[0]
        cards = [_card(row) for row in views]
        products.append(Product(key, cards[0].name, shorten(first.source_text), cards))
    return products


def _search(session: Session, batch_id: str, text: str):
    """A condition: the article's key or name holds ``text``, in any case.

    Names are catalog cells under the catalog's own headers (``Name``, ``model_name``...),
    so the headers are read first from one article of each source sheet. The comparison
    is a regular expression built from ``text`` and passed as a parameter: each letter
    as a class of its cases, everything else escaped. It reads the same on SQLite (where
    SQLAlchemy gives REGEXP Python's ``re``) and PostgreSQL, whatever the database's
    locale, and for letters beyond ASCII (``ä`` finds ``Ä``), unlike SQLite's LIKE.
    """
    pattern = _caseless_pattern(text)
    firsts = (
        select(func.min(Article.id))
        .where(Article.batch_id == batch_id)
        .group_by(Article.source_file, Article.source_sheet)
    )
    headers = {
        header
        for cells in session.scalars(select(Article.source_columns).where(Article.id.in_(firsts)))
        for header in (cells or {})
        if str(header).strip().lower() in NAME_HEADERS
    }
    found = [Article.key.regexp_match(pattern)]
    found += [Article.source_columns[h].as_string().regexp_match(pattern) for h in sorted(headers)]
    return or_(*found)


def _caseless_pattern(text: str) -> str:
    """A regular expression finding ``text`` in any case, for Python's ``re`` and PostgreSQL.

    Only letters become classes (``[Ss]``) and only ``re.escape``'s punctuation is escaped,
    with a backslash that both read as "this character".
    """
    parts = []
    for char in text:
        cases = sorted({char, char.lower(), char.upper()} - {""})
        cases = [c for c in cases if len(c) == 1]
        parts.append(f"[{''.join(cases)}]" if len(cases) > 1 else re.escape(char))
    return "".join(parts)


def _sheet_conditions(batch_id: str, chosen: str, threshold: float | None) -> list:
    conditions = [Article.batch_id == batch_id, Article.removed_at.is_(None)]
    if chosen == "failed":
        conditions.append(Article.status == ArticleStatus.failed.value)
    elif chosen == "needs_review":
        conditions.append(Article.status == ArticleStatus.needs_review.value)
    elif chosen in ("approved", "rejected"):
        conditions.append(Article.review_status == chosen)
    elif chosen == UNREVIEWED:
        conditions.append(Article.review_status.is_(None))
    elif chosen == "below":
        # Without a threshold nothing is below it; the page asks for one.
        conditions.append(Article.clip_score < threshold if threshold is not None else false())
    return conditions


_CARD_COLUMNS = (
    Article.id,
    Article.key,
    Article.view,
    Article.source_columns,
    Article.source_text,
    Article.clip_score,
    Article.status,
    Article.review_status,
    Article.render_attempt,
    Article.error,
)


def _best_render_id():
    """The render whose image is published (as :func:`producer.export.best_render` picks it).

    The best scored attempt of the current text, the earlier one on a tie; else its latest.
    """
    render = aliased(Render)
    unscored = render.clip_score.is_(None)
    return (
        select(render.id)
        .where(render.article_id == Article.id, render.attempt >= Article.attempt_base)
        .order_by(
            unscored,
            render.clip_score.desc(),
            case((unscored, -render.attempt), else_=render.attempt),
        )
        .limit(1)
        .correlate(Article)
        .scalar_subquery()
    )


def _card(row) -> Card:
    return Card(
        id=row.id,
        key=row.key,
        view=row.view,
        name=display_name(row.source_columns),
        text=shorten(row.source_text),
        score=row.clip_score,
        status=row.status,
        review_status=row.review_status,
        attempt=row.render_attempt,
        render_id=row.render_id,
        error=row.error,
    )


def display_name(source_columns: dict | None) -> str | None:
    """The article's name from its catalog cells (a ``name`` column), None without one.

    Args:
        source_columns: the cells of its catalog row under the catalog's headers.
    """
    cells = {str(k).strip().lower(): v for k, v in (source_columns or {}).items()}
    for header in NAME_HEADERS:
        value = cells.get(header)
        if value not in (None, ""):
            return str(value)
    return None


def shorten(text: str | None, limit: int = SHORT_TEXT_CHARS) -> str:
    """``text`` on one line, cut at a word before ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0] or flat[: limit - 1]
    return cut + "…"


@dataclass(frozen=True)
class Attempt:
    """One render attempt of an article, as the article page shows it."""

    render: Render
    published: bool
    superseded: bool  # made for earlier text or prompts; it no longer competes


@dataclass(frozen=True)
class ArticlePage:
    """Everything the article page shows; plain loaded rows, safe to use after the session."""

    article: Article
    batch: Batch
    name: str | None
    attempts: list[Attempt]
    history: list[ReviewAction]
    state: dict
    views: list[tuple[int, str]]  # (article id, view) of every view of its row, itself too


def article_page(session: Session, article_id: int) -> ArticlePage | None:
    """An article with its batch, every render attempt and its review history.

    Args:
        session: any session.
        article_id: the article.

    Returns:
        The page's data, or None when there is no such article (or it was removed).
    """
    article = session.get(Article, article_id)
    if article is None or article.removed_at is not None:
        return None
    batch = session.get(Batch, article.batch_id)
    by_attempt = select(Render).where(Render.article_id == article_id).order_by(Render.attempt)
    renders = list(session.scalars(by_attempt))
    best = best_render(renders, article.attempt_base)
    attempts = [
        Attempt(r, best is not None and r.id == best.id, r.attempt < article.attempt_base)
        for r in renders
    ]
    history = list(
        session.scalars(
            select(ReviewAction)
            .where(ReviewAction.article_id == article_id)
            .order_by(ReviewAction.at.desc(), ReviewAction.id.desc())
        )
    )
    name = display_name(article.source_columns)
    state = _state(article, renders)
    return ArticlePage(article, batch, name, attempts, history, state, _views(session, article))


def _views(session: Session, article: Article) -> list[tuple[int, str]]:
    """The articles of the same row in the batch's other views, in the batch's view order."""
    rows = session.execute(
        select(Article.id, Article.view).where(
            Article.batch_id == article.batch_id,
            Article.key == article.key,
            Article.removed_at.is_(None),
        )
    ).all()
    order = {view: index for index, view in enumerate(VIEWS)}
    return sorted(((r.id, r.view) for r in rows), key=lambda pair: order.get(pair[1], len(order)))


def article_state(session: Session, article_id: int) -> dict | None:
    """What the article page polls for: enough to notice a new attempt or verdict.

    Args:
        session: any session.
        article_id: the article.

    Returns:
        ``status``, ``review_status``, ``clip_score``, ``renders`` (how many attempts),
        ``latest_attempt``, ``latest_score`` and ``version``, a text that changes whenever
        any of them does; None when there is no such article.
    """
    article = session.get(Article, article_id)
    if article is None or article.removed_at is not None:
        return None
    renders = list(session.scalars(select(Render).where(Render.article_id == article_id)))
    return _state(article, renders)


def _state(article: Article, renders: list[Render]) -> dict:
    latest = max(renders, key=lambda r: r.attempt, default=None)
    state = {
        "id": article.id,
        "status": article.status,
        "review_status": article.review_status,
        "clip_score": article.clip_score,
        "renders": len(renders),
        "latest_attempt": latest.attempt if latest else None,
        "latest_score": latest.clip_score if latest else None,
    }
    state["version"] = "|".join(str(state[k]) for k in sorted(state))
    return state


def articles_of_batch(session: Session, batch_id: str, article_ids: list[int]) -> list[int]:
    """Those of ``article_ids`` that belong to the batch (a form may name any id)."""
    if not article_ids:
        return []
    return list(
        session.scalars(
            select(Article.id)
            .where(Article.batch_id == batch_id, Article.id.in_(article_ids))
            .order_by(Article.id)
        )
    )


def article_exists(session: Session, article_id: int) -> bool:
    """Whether the article exists and was not removed from its catalog."""
    found = session.scalar(
        select(Article.id).where(Article.id == article_id, Article.removed_at.is_(None))
    )
    return found is not None


def batch_exists(session: Session, batch_id: str) -> bool:
    """Whether the batch exists."""
    return session.get(Batch, batch_id) is not None


@dataclass(frozen=True)
class Neighbours:
    """Where an article stands among the cards of a contact sheet's filter and order."""

    previous: int | None  # the card before it, as the sheet shows them
    next: int | None  # the card after it
    position: int | None  # 1-based, among the filtered cards; None when it is not one of them
    total: int  # how many cards the filter picks
    page: int  # the sheet's page its product is on (or would be)


def article_neighbours(session: Session, article: Article, query: SheetQuery) -> Neighbours | None:
    """The cards before and after ``article`` on its batch's contact sheet under ``query``.

    The same filter, view, search and product order as :func:`contact_sheet`, cards in
    the same order too (product after product, each product's views in view order), so that
    "next" on an article page is the card to the right of it on the sheet. An article the
    filter no longer picks (just approved, under "not reviewed") keeps its place: its
    neighbours are the cards around where it stood.

    Args:
        session: any session.
        article: the article (its batch, key, view, id and score are read).
        query: the sheet's query; its page is ignored.

    Returns:
        The neighbours, or None when the batch is gone.
    """
    batch = session.get(Batch, article.batch_id)
    if batch is None:
        return None
    threshold = query.below if query.below is not None else batch.min_clip_score
    conditions = _sheet_conditions(article.batch_id, query.filter, threshold)
    if getattr(query, "view", ""):
        conditions.append(Article.view == query.view)
    if getattr(query, "search", ""):
        conditions.append(_search(session, article.batch_id, query.search))
    first_id, lowest = func.min(Article.id), func.min(Article.clip_score)
    products = session.execute(
        select(
            Article.key,
            first_id.label("first_id"),
            lowest.label("lowest"),
            func.count().label("cards"),
        )
        .where(*conditions)
        .group_by(Article.key)
        .order_by(*_product_order(query.sort, first_id, lowest))
    ).all()
    keys = [row.key for row in products]
    cards = {row.key: row.cards for row in products}
    if article.key in keys:
        at = keys.index(article.key)
    else:  # where its product would stand, by its own first id and score
        own = (article.key, article.id, article.clip_score)
        at = _insertion(products, own, query.sort)
        keys.insert(at, article.key)
    near = keys[max(0, at - 1) : at + 2]
    order = {view: index for index, view in enumerate(VIEWS)}
    by_key: dict[str, list[tuple]] = {}
    for row in session.execute(
        select(Article.id, Article.key, Article.view).where(*conditions, Article.key.in_(near))
    ):
        by_key.setdefault(row.key, []).append((order.get(row.view, len(order)), row.id))
    mine = sorted(by_key.get(article.key, []))
    me = (order.get(article.view, len(order)), article.id)
    picked = me in mine
    if not picked:
        mine = sorted([*mine, me])
    index = mine.index(me)
    before = [card for _, card in mine[:index]]
    after = [card for _, card in mine[index + 1 :]]
    if not before and at > 0:
        before = [card for _, card in sorted(by_key.get(keys[at - 1], []))]
    if not after and at + 1 < len(keys):
        after = [card for _, card in sorted(by_key.get(keys[at + 1], []))]
    total = sum(cards.values())
    position = index + 1 + sum(cards[key] for key in keys[:at]) if picked else None
    return Neighbours(
        previous=before[-1] if before else None,
        next=after[0] if after else None,
        position=position,
        total=total,
        page=at // PAGE_SIZE + 1,
    )


def _insertion(products: list, own: tuple, sort: str) -> int:
    """Where a product of (key, first id, lowest score) stands among ``products``."""

    def rank(first: int, low: float | None) -> tuple:
        if sort == "catalog":
            return (first,)
        if low is None:
            return (1, 0.0, first)
        return (0, low if sort == "score" else -low, first)

    mine = rank(own[1], own[2])
    for index, row in enumerate(products):
        if rank(row.first_id, row.lowest) > mine:
            return index
    return len(products)


def view_pictures(
    session: Session, article_ids: list[int]
) -> list[tuple[int, str, int | None, float | None]]:
    """Each of these articles (the views of one catalog row) with the render it publishes.

    Args:
        session: any session.
        article_ids: the articles, in the order wanted.

    Returns:
        (article id, view, render id or None, score) per article, in the order given.
    """
    if not article_ids:
        return []
    rows = session.execute(
        select(
            Article.id, Article.view, Article.clip_score, _best_render_id().label("render_id")
        ).where(Article.id.in_(article_ids), Article.removed_at.is_(None))
    ).all()
    by_id = {row.id: (row.id, row.view, row.render_id, row.clip_score) for row in rows}
    return [by_id[i] for i in article_ids if i in by_id]


def article_batch(session: Session, article_id: int) -> str | None:
    """The batch of an article, or None when there is no such article."""
    return session.scalar(select(Article.batch_id).where(Article.id == article_id))
