"""Request plumbing the studio's routes share: templates, flash messages, redirects, the database.

Database work runs in Starlette's thread pool: SQLAlchemy sessions are synchronous and a slow
query must not hold up the other browsers polling the same server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jinja2
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from db.models import as_utc
from producer.review.csrf import csrf_token

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

Result = TypeVar("Result")
# Ids are 32-bit integer columns: a longer number would overflow the database's integer
# (a 500) instead of naming no row (a 404).
MAX_ID = 2**31 - 1
MAX_ID_DIGITS = 9


def make_templates() -> Jinja2Templates:
    """The studio's Jinja2 templates, escaping every value they print.

    Returns:
        Templates whose undefined names fail loudly instead of printing nothing.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["score"] = format_score
    env.filters["exact"] = exact_number
    env.filters["moment"] = format_moment
    env.filters["as_text"] = as_text
    return Jinja2Templates(env=env)


def format_score(value: float | None) -> str:
    """A CLIP score for people: four significant digits, an en dash when there is none."""
    return "–" if value is None else f"{value:.4g}"


def exact_number(value: float | None) -> str:
    """A number for a data attribute: the shortest text that reads back as the same float."""
    return "" if value is None else repr(float(value))


def format_moment(value: datetime | None) -> str:
    """A stored moment as ``YYYY-MM-DD HH:MM UTC``; empty when there is none."""
    return "" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def as_text(value: object) -> str:
    """A JSON value as a form field shows it: text as it is, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A template filled with ``context`` and what every page shows.

    Flash messages are taken from the session only by templates that show them, so a polled
    fragment never swallows the message meant for the next page.

    Args:
        request: the request being answered.
        name: the template's file name.
        context: the page's own values.
        status_code: the response's status.

    Returns:
        The HTML response.
    """
    shared = {
        "viewer": getattr(request.state, "viewer", None),
        "csrf": csrf_token(request),
        "here": here(request),
        "take_flashes": lambda: request.session.pop("flash", []),
    }
    templates = request.app.state.templates
    return templates.TemplateResponse(request, name, shared | context, status_code=status_code)


def here(request: Request) -> str:
    """The request's path and query: where a form on the page sends the browser back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def flash(request: Request, kind: str, text: str) -> None:
    """Keep a message for the next page the browser shows.

    Args:
        request: the request whose session holds the message.
        kind: ``ok`` or ``error`` (the message's colour).
        text: the message.
    """
    request.session["flash"] = [*request.session.get("flash", []), {"kind": kind, "text": text}]


def local_path(target: str | None) -> str | None:
    """``target`` when it is a path on this site, else None (an open redirect otherwise).

    Args:
        target: a path with an optional query, as a form or the ``next`` parameter gave it.
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def back_to(request: Request, form: FormData, default: str) -> RedirectResponse:
    """A 303 to the page the form was sent from.

    Args:
        request: the POST request.
        form: its form; its ``back`` field names the page, else the Referer header does.
        default: where to go when neither names a page of this site.

    Returns:
        The redirect.
    """
    target = local_path(_text(form.get("back")))
    if target is None:
        referer = urlsplit(request.headers.get("referer", ""))
        if referer.netloc == request.url.netloc and referer.path:
            query = f"?{referer.query}" if referer.query else ""
            target = local_path(referer.path + query)
    return RedirectResponse(target or default, status_code=303)


def parse_number(text: str | None) -> float | None:
    """A finite number typed into a form, or None when it is empty or not one."""
    try:
        value = float((text or "").strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_id(value: object) -> int | None:
    """A form's id or number: plain ASCII digits, at most nine of them; else None.

    ``str.isdigit`` alone lets through other scripts' digits and superscripts, and an
    unbounded number overflows the database's integer columns.
    """
    if not isinstance(value, str) or len(value) > MAX_ID_DIGITS:
        return None
    return int(value) if value.isascii() and value.isdigit() else None


def path_id(request: Request, name: str, what: str) -> int:
    """The id the path names, answering 404 when it is not one a row can have.

    The routes take ids as text: Starlette's ``int`` convertor turns a path of thousands
    of digits into an error (a 500) and a long one into an overflow of the database's
    integers; both are simply no such row.

    Args:
        request: the request.
        name: the path parameter.
        what: what the id names (``article``, ``render``), for the message.

    Raises:
        HTTPException: 404 for anything but ASCII digits up to :data:`MAX_ID`.
    """
    text = request.path_params[name]
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID))):
        raise HTTPException(404, f"no such {what}")
    value = int(text)
    if value > MAX_ID:
        raise HTTPException(404, f"no {what} {value}")
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def in_session(request: Request, work: Callable[..., Result], *args: Any) -> Result:
    """Run ``work(session, *args)`` in the thread pool with a session of its own.

    Args:
        request: the request; its app holds the session factory.
        work: a function taking a session first; it commits what it changes.
        *args: the rest of its arguments.

    Returns:
        What ``work`` returned. The session is closed (and anything not committed rolled
        back) when it returns or raises.
    """
    sessions = request.app.state.sessions

    def run() -> Result:
        session: Session
        with sessions() as session:
            return work(session, *args)

    return await run_in_threadpool(run)
