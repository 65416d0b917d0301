"""The studio's actions: each POST checks its form, calls :mod:`producer.review.actions` as
the logged-in user, and sends the browser back where it came from with a flash message.

An action the user's role does not allow (``ReviewForbidden``) is a 403; any other
refusal (a busy article, an absent broker, bad input, an article that changed since the
page was shown) is shown on the page it came from.

An article page's forms carry the render attempt the reviewer saw (field ``attempt``), so
a verdict or an edit meant for one picture never lands on a newer one. A verdict may name
where to go once it is given (field ``next``, the next card of the reviewer's filter:
"approve and next"); a refusal always goes back to the page it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from producer.review import actions, queries
from producer.review.auth import action
from producer.review.web import (
    back_to,
    flash,
    in_session,
    local_path,
    parse_id,
    parse_number,
    path_id,
)

ATTRIBUTE_PREFIX = "attr."


def _reviewer(request: Request) -> actions.Reviewer:
    viewer = request.state.viewer
    return actions.Reviewer(name=viewer.name, role=viewer.role)


async def _perform(
    request: Request,
    form: FormData,
    work: Callable[[Session, actions.Reviewer], Any],
    done: Callable[[Any], str],
    default: str,
    onward: str | None = None,
) -> Response:
    """Run one action in a session of its own, then redirect back with its outcome.

    Args:
        request: the POST request.
        form: its checked form.
        work: the action, given a session and the reviewer; it commits.
        done: the flash message for what ``work`` returned.
        default: where to go back to when the form does not say.
        onward: where to go instead when the action was done (a page of this site).
    """
    reviewer = _reviewer(request)

    def run(session: Session) -> Any:
        result = work(session, reviewer)
        session.commit()
        return result

    try:
        result = await in_session(request, run)
    except actions.ReviewRefused as refused:
        if isinstance(refused, actions.ReviewForbidden):
            raise HTTPException(403, str(refused)) from refused
        flash(request, "error", str(refused))
    else:
        flash(request, "ok", done(result))
        target = local_path(onward)
        if target is not None:
            return RedirectResponse(target, status_code=303)
    return back_to(request, form, default)


def _refuse(request: Request, form: FormData, message: str, default: str) -> Response:
    flash(request, "error", message)
    return back_to(request, form, default)


def _article_target(request: Request) -> tuple[int, str]:
    article_id = path_id(request, "article_id", "article")
    return article_id, f"/articles/{article_id}"


def _seen_attempt(form: FormData) -> int | None:
    """The attempt the page showed; None when the form does not say (then nothing is checked)."""
    return parse_id(form.get("attempt"))


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


@action
async def approve_article(request: Request, form: FormData) -> Response:
    """POST /articles/{id}/approve."""
    article_id, here = _article_target(request)
    attempt = _seen_attempt(form)
    seen = None if attempt is None else {article_id: attempt}
    return await _perform(
        request,
        form,
        lambda session, reviewer: actions.approve(session, [article_id], reviewer, seen=seen),
        lambda count: "approved" if count else "already approved",
        here,
        onward=_field(form, "next"),
    )


@action
async def reject_article(request: Request, form: FormData) -> Response:
    """POST /articles/{id}/reject: reject the picture and render a new attempt; field
    ``reason`` (optional) says why, and is kept in the history."""
    article_id, here = _article_target(request)
    attempt = _seen_attempt(form)
    reason = actions.clean_comment(_field(form, "reason"))
    given = {"reason": reason} if reason else {}
    celery_app = request.app.state.celery_app
    return await _perform(
        request,
        form,
        lambda session, reviewer: actions.reject_and_regenerate(
            session, celery_app, article_id, reviewer, seen_attempt=attempt, **given
        ),
        lambda _: "rejected: a new attempt is on its way",
        here,
        onward=_field(form, "next"),
    )


@action
async def edit_attributes(request: Request, form: FormData) -> Response:
    """POST /articles/{id}/attributes: fields ``attr.<name>``; rebuilds the prompts, renders.

    Only the attributes the form sent go on: the action merges them into the stored ones.
    """
    article_id, here = _article_target(request)
    attempt = _seen_attempt(form)
    attributes = {
        name[len(ATTRIBUTE_PREFIX) :]: value.strip()
        for name, value in form.multi_items()
        if name.startswith(ATTRIBUTE_PREFIX) and isinstance(value, str)
    }
    if not attributes:
        return _refuse(request, form, "no attributes were sent", here)
    celery_app = request.app.state.celery_app
    return await _perform(
        request,
        form,
        lambda session, reviewer: actions.edit_attributes(
            session, celery_app, article_id, attributes, reviewer, seen_attempt=attempt
        ),
        lambda _: "attributes saved: a new attempt is on its way",
        here,
    )


@action
async def edit_prompt(request: Request, form: FormData) -> Response:
    """POST /articles/{id}/prompt: field ``prompt``; renders a new attempt from it."""
    article_id, here = _article_target(request)
    attempt = _seen_attempt(form)
    prompt = form.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _refuse(request, form, "the generation prompt is empty", here)
    celery_app = request.app.state.celery_app
    return await _perform(
        request,
        form,
        lambda session, reviewer: actions.edit_prompt(
            session, celery_app, article_id, prompt, reviewer, seen_attempt=attempt
        ),
        lambda _: "prompt saved: a new attempt is on its way",
        here,
    )


def _batch_target(request: Request) -> tuple[str, str]:
    batch_id = request.path_params["batch_id"]
    return batch_id, f"/batches/{batch_id}"


@action
async def approve_selected(request: Request, form: FormData) -> Response:
    """POST /batches/{id}/approve-selected: field ``article`` once per chosen article, as
    ``<id>:<attempt>`` (the attempt its card showed) or a bare ``<id>``."""
    batch_id, here = _batch_target(request)
    seen = dict(
        chosen for chosen in map(_card_choice, form.getlist("article")) if chosen is not None
    )
    if not seen:
        return _refuse(request, form, "select at least one article first", here)

    def work(session: Session, reviewer: actions.Reviewer) -> int:
        # Only this batch's articles: the form's ids come from the browser.
        ids = queries.articles_of_batch(session, batch_id, list(seen))
        if not ids:
            raise actions.ReviewRefused(f"none of the selected articles is in batch {batch_id}")
        attempts = {i: seen[i] for i in ids if seen[i] is not None}
        return actions.approve(session, ids, reviewer, seen=attempts)

    return await _perform(request, form, work, lambda n: f"approved {_articles(n)}", here)


def _card_choice(value: object) -> tuple[int, int | None] | None:
    """A card's checkbox value, ``<id>:<attempt>`` or ``<id>``: (id, attempt or None)."""
    if not isinstance(value, str):
        return None
    article, _, attempt = value.partition(":")
    article_id = parse_id(article)
    if article_id is None:
        return None
    return article_id, parse_id(attempt) if attempt else None


def _articles(count: int) -> str:
    return f"{count} article" if count == 1 else f"{count} articles"


def _in_batch(batch_id: str, work: Callable[[Session, actions.Reviewer], Any]):
    """``work``, first making sure the batch exists (a bulk action on none would do nothing)."""

    def checked(session: Session, reviewer: actions.Reviewer) -> Any:
        if not queries.batch_exists(session, batch_id):
            raise HTTPException(404, f"no batch {batch_id}")
        return work(session, reviewer)

    return checked


def _threshold(form: FormData) -> float | None:
    value = form.get("threshold")
    return parse_number(value) if isinstance(value, str) else None


@action
async def regenerate_below(request: Request, form: FormData) -> Response:
    """POST /batches/{id}/regenerate-below: field ``threshold``; admins only."""
    batch_id, here = _batch_target(request)
    threshold = _threshold(form)
    if threshold is None:
        return _refuse(request, form, "give the threshold as a number", here)
    celery_app = request.app.state.celery_app
    return await _perform(
        request,
        form,
        _in_batch(
            batch_id,
            lambda session, reviewer: actions.regenerate_below(
                session, celery_app, batch_id, threshold, reviewer
            ),
        ),
        lambda n: f"sent {_articles(n)} scoring below {threshold:g} to render again",
        here,
    )


@action
async def approve_above(request: Request, form: FormData) -> Response:
    """POST /batches/{id}/approve-above: field ``threshold``; admins only."""
    batch_id, here = _batch_target(request)
    threshold = _threshold(form)
    if threshold is None:
        return _refuse(request, form, "give the threshold as a number", here)
    return await _perform(
        request,
        form,
        _in_batch(
            batch_id,
            lambda session, reviewer: actions.approve_above(session, batch_id, threshold, reviewer),
        ),
        lambda n: f"approved {_articles(n)} scoring {threshold:g} or more",
        here,
    )
