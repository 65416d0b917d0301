"""Cross-site request forgery: every form of the studio carries a token kept in the session.

A page from another site can make a logged-in browser send a POST here, but it cannot read
the token, so a POST whose ``csrf`` field does not match the session's is refused.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

FIELD = "csrf"
STALE_FORM = "this form is out of date or did not come from the studio: reload the page"


def csrf_token(request: Request) -> str:
    """The session's token for the forms of a page, made on first use.

    Args:
        request: a request with a session.

    Returns:
        The token to put in every form's hidden ``csrf`` field.
    """
    token = request.session.get(FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[FIELD] = token
    return token


def renew_csrf_token(request: Request) -> None:
    """Give the session a new token (at login and logout, so an old page's token dies)."""
    request.session[FIELD] = secrets.token_urlsafe(32)


async def checked_form(request: Request) -> FormData:
    """The POST's form, once its ``csrf`` field matches the session's token.

    Args:
        request: a POST request.

    Returns:
        The parsed form.

    Raises:
        HTTPException: 403 when the field is missing or does not match; the body is not
            read at all when the session holds no token (nothing it says could match), so
            an anonymous upload never reaches the disk. 413 when the body is too large
            (:class:`producer.review.bodies.BodyLimit`).
    """
    kept = request.session.get(FIELD)
    if not isinstance(kept, str) or not kept:
        raise HTTPException(403, STALE_FORM)
    form = await request.form()
    sent = form.get(FIELD)
    if not isinstance(sent, str):
        raise HTTPException(403, STALE_FORM)
    if not hmac.compare_digest(sent.encode(), kept.encode()):
        raise HTTPException(403, STALE_FORM)
    return form
