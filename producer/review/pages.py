"""The studio's pages: batches, a batch's contact sheet, an article, and what they poll."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producer.review import article_view, queries, sheet_query
from producer.review.auth import data, page
from producer.review.sheet_query import FILTERS, SheetQuery
from producer.review.web import in_session, path_id, render

# How often the pages ask for news, in seconds: the batches while some run, an article always.
BATCHES_POLL_SECONDS = 5
IDLE_BATCHES_POLL_SECONDS = 30
ARTICLE_POLL_SECONDS = 2


def _batches_context(batches: list[queries.BatchSummary]) -> dict:
    running = any(batch.running for batch in batches)
    return {
        "batches": batches,
        "farm_statuses": queries.FARM_STATUSES,
        "review_statuses": queries.REVIEW_STATUSES,
        "running": running,
        "poll_seconds": BATCHES_POLL_SECONDS if running else IDLE_BATCHES_POLL_SECONDS,
    }


@page
async def batches(request: Request) -> Response:
    """GET /: every batch with its counts and scores, refreshed while work goes on."""
    found = await in_session(request, queries.batch_summaries)
    return render(request, "batches.html", _batches_context(found))


@data
async def batches_fragment(request: Request) -> Response:
    """GET /fragments/batches: the batches table alone, for the page's poller to swap in."""
    found = await in_session(request, queries.batch_summaries)
    return render(request, "_batches_table.html", _batches_context(found))


@page
async def contact_sheet(request: Request) -> Response:
    """GET /batches/{id}: a page of the batch's products (each with its views), filtered by
    status, view and a search of names and keys, sorted, 60 products to a page."""
    batch_id = request.path_params["batch_id"]
    query = SheetQuery.from_params(request.query_params)
    sheet = await in_session(request, sheet_query.contact_sheet, batch_id, query)
    if sheet is None:
        raise HTTPException(404, f"no batch {batch_id}")
    views = list(sheet.batch.views)
    if sheet.query.view and sheet.query.view not in views:
        views.append(sheet.query.view)  # asked for by hand: shown, so it can be put back
    context = {"sheet": sheet, "batch": sheet.batch, "filters": FILTERS, "view_choices": views}
    return render(request, "sheet.html", context)


async def _article(request: Request, walk: bool = True) -> article_view.ArticleView:
    article_id = path_id(request, "article_id", "article")
    found = await in_session(request, _load_article, article_id, request, walk)
    if found is None:
        raise HTTPException(404, f"no article {article_id}")
    return found


def _load_article(session, article_id: int, request: Request, walk: bool = True):
    batch_id = queries.article_batch(session, article_id)
    query = article_view.sheet_query(request.query_params, request.headers.get("referer"), batch_id)
    return article_view.load(session, article_id, query if walk else None)


@page
async def article(request: Request) -> Response:
    """GET /articles/{id}: texts, attributes, prompts, every attempt and the review history.

    The query string is the contact sheet's (``filter``, ``sort``...): previous and next go
    through the cards that sheet shows.
    """
    found = await _article(request)
    context = {"page": found.page, "view": found, "poll_seconds": ARTICLE_POLL_SECONDS}
    return render(request, "article.html", context)


@data
async def article_live(request: Request) -> Response:
    """GET /articles/{id}/live: the article's status and attempts, for the poller to swap in."""
    found = await _article(request, walk=False)
    return render(request, "_article_live.html", {"page": found.page, "view": found})


@data
async def article_state(request: Request) -> Response:
    """GET /articles/{id}/state.json: status, attempt count, latest score and what the farm is
    doing with it, polled; ``version`` changes whenever the live panel would."""
    article_id = path_id(request, "article_id", "article")
    found = await in_session(request, article_view.load, article_id, None)
    if found is None:
        raise HTTPException(404, f"no article {article_id}")
    return JSONResponse(found.page.state | {"version": found.version})
