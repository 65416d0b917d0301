"""A batch's contact sheet: the query behind it (filter, view, search, order, page), one page
of its products, and where an article stands among its cards (the article page's walk).

A contact sheet shows products: the articles of one catalog row (one key) in each of the
batch's views, on one card. Filters pick views; a product is on the sheet when one of its
views is picked, and shows the picked ones. Counting and paging go by product.

Sized for 10,000-article batches: a page costs one COUNT and one LIMIT/OFFSET query whatever
the page (a name search one more, over a row per catalog sheet), and selects columns rather
than objects, so nothing is loaded lazily per article.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from db.models import UNREVIEWED, Article, ArticleStatus, Batch
from producer.review import verdict
from producer.review.queries import (
    NAME_HEADERS,
    BatchSummary,
    batch_summary,
    best_render_id,
    display_name,
    shorten,
)
from producer.review.verdict import Verdict
from workers.prompts import VIEWS

PAGE_SIZE = 60
# "rejected": turned down, and nothing has replaced the picture yet; "new_attempt": the
# attempt that replaced a rejected picture has landed and awaits review.
FILTERS = (
    "all",
    "failed",
    "below",
    "needs_review",
    "approved",
    "rejected",
    "new_attempt",
    UNREVIEWED,
)
SORTS = ("catalog", "score", "score_desc")
SEARCH_CHARS = 100  # a longer search is cut to this


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
    verdict: Verdict  # what the review status means for the picture shown now
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
    threshold = _threshold(batch, query)
    conditions = _query_conditions(session, batch, query)
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
        select(*_CARD_COLUMNS, best_render_id().label("render_id"))
        .join(chosen, Article.key == chosen.c.key)
        .where(*conditions)
        .order_by(*_product_order(query.sort, chosen.c.first_id, chosen.c.lowest), Article.id)
    ).all()
    return SheetPage(batch_summary(batch, {}), query, threshold, _products(rows), total)


def _threshold(batch: Batch, query: SheetQuery) -> float | None:
    """The score "below" compares with: the query's, else the batch's minimum."""
    return query.below if query.below is not None else batch.min_clip_score


def _query_conditions(session: Session, batch: Batch, query: SheetQuery) -> list:
    """The conditions an article of the batch meets to be one of the sheet's cards."""
    conditions = _sheet_conditions(batch.id, query.filter, _threshold(batch, query))
    if query.view:
        conditions.append(Article.view == query.view)
    if query.search:
        conditions.append(_search(session, batch.id, query.search))
    return conditions


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
    pattern = caseless_pattern(text)
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


def caseless_pattern(text: str) -> str:
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
    elif chosen == "approved":
        conditions.append(Article.review_status == chosen)
    elif chosen == "rejected":
        conditions.append(verdict.still_rejected())
    elif chosen == "new_attempt":
        conditions.append(verdict.awaiting_review())
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
    verdict.latest_attempt().label("latest_attempt"),
    verdict.rejected_attempt().label("rejected_attempt"),
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
        verdict=verdict.verdict(row.review_status, row.latest_attempt, row.rejected_attempt),
        attempt=row.render_attempt,
        render_id=row.render_id,
        error=row.error,
    )


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
    conditions = _query_conditions(session, batch, query)
    keys, cards, at = _products_around(session, conditions, article, query.sort)
    by_key = _views_of(session, conditions, keys[max(0, at - 1) : at + 2])
    mine = by_key.get(article.key, [])
    me = (VIEWS.index(article.view) if article.view in VIEWS else len(VIEWS), article.id)
    picked = me in mine
    if not picked:
        mine = sorted([*mine, me])
    index = mine.index(me)
    before = [card for _, card in mine[:index]]
    after = [card for _, card in mine[index + 1 :]]
    if not before and at > 0:
        before = [card for _, card in by_key.get(keys[at - 1], [])]
    if not after and at + 1 < len(keys):
        after = [card for _, card in by_key.get(keys[at + 1], [])]
    position = index + 1 + sum(cards[key] for key in keys[:at]) if picked else None
    return Neighbours(
        previous=before[-1] if before else None,
        next=after[0] if after else None,
        position=position,
        total=sum(cards.values()),
        page=at // PAGE_SIZE + 1,
    )


def _products_around(session: Session, conditions: list, article: Article, sort: str):
    """Every picked product's key in the sheet's order (the article's own one too, where it
    would stand when none of its views is picked), their picked cards' counts by key, and
    the index of the article's product."""
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
        .order_by(*_product_order(sort, first_id, lowest))
    ).all()
    keys = [row.key for row in products]
    cards = {row.key: row.cards for row in products}
    if article.key in keys:
        return keys, cards, keys.index(article.key)
    # Where its product would stand, by its own first id and score.
    at = _insertion(products, (article.key, article.id, article.clip_score), sort)
    keys.insert(at, article.key)
    return keys, cards, at


def _views_of(session: Session, conditions: list, keys: list[str]) -> dict[str, list[tuple]]:
    """The picked cards of these products: key -> sorted (place in view order, article id)."""
    order = {view: index for index, view in enumerate(VIEWS)}
    by_key: dict[str, list[tuple]] = {}
    for row in session.execute(
        select(Article.id, Article.key, Article.view).where(*conditions, Article.key.in_(keys))
    ):
        by_key.setdefault(row.key, []).append((order.get(row.view, len(order)), row.id))
    return {key: sorted(views) for key, views in by_key.items()}


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
