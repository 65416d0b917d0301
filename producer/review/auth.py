"""Who is looking: login and logout, the trusted proxy header, and the guards on every route.

A user is known by the signed session cookie set at login, or, when
``settings.review_auth_header`` is set, by the name a reverse proxy that authenticated them
puts in that header. Either way the name must be in the users table, whose role is read on
every request, so a removed user or a changed role takes effect at once. With no user at all,
a studio bound to the loopback interface shows its pages read-only to whoever can reach it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from db.models import User
from producer.review.csrf import checked_form, renew_csrf_token
from producer.review.users import authenticate, count_users
from producer.review.web import in_session, local_path, render

ADD_USER_HINT = "add a user with `farm review add-user NAME`"
READ_ONLY = f"the studio is read-only while it has no users: {ADD_USER_HINT}"
NO_USERS_REMOTE = f"the studio has no users and is reachable from other machines: {ADD_USER_HINT}"
LOGIN_REQUIRED = "log in first"
BAD_LOGIN = "unknown user or wrong password"
SESSION_USER = "user"

Endpoint = Callable[[Request], Awaitable[Response]]
FormEndpoint = Callable[[Request, FormData], Awaitable[Response]]


@dataclass(frozen=True)
class Viewer:
    """The person behind a request: a user, or nobody on a read-only studio without users."""

    name: str
    role: str
    read_only: bool = False

    @property
    def is_admin(self) -> bool:
        """Whether the bulk actions of a batch are offered."""
        return self.role == "admin" and not self.read_only


@dataclass(frozen=True)
class Refusal:
    """Why a request has no viewer: ``login`` (someone should log in) or a message to show."""

    reason: str
    message: str


ANONYMOUS = Viewer(name="anonymous", role="", read_only=True)


def identify(
    session: Session, proxy_user: str | None, session_user: str | None, loopback: bool
) -> Viewer | Refusal:
    """The viewer of a request, from what the proxy and the session cookie say.

    Args:
        session: a database session.
        proxy_user: the trusted header's value, None when the header is not configured or
            not sent.
        session_user: the name the session cookie holds, None when nobody logged in.
        loopback: whether the server listens on the loopback interface only.

    Returns:
        The viewer, or why there is none.
    """
    if proxy_user:
        user = session.scalar(select(User).where(User.name == proxy_user))
        if user is None:
            message = f"the proxy names user {proxy_user!r}, who is not a studio user"
            return Refusal("forbidden", f"{message}: {ADD_USER_HINT}")
        return Viewer(user.name, user.role)
    if session_user:
        user = session.scalar(select(User).where(User.name == session_user))
        if user is not None:
            return Viewer(user.name, user.role)
    if count_users(session) == 0:
        return ANONYMOUS if loopback else Refusal("forbidden", NO_USERS_REMOTE)
    return Refusal("login", LOGIN_REQUIRED)


async def viewer_of(request: Request) -> Viewer | Refusal:
    """:func:`identify` for a request, run in the thread pool."""
    state = request.app.state
    header = state.settings.review_auth_header
    proxy_user = request.headers.get(header) if header else None
    session_user = request.session.get(SESSION_USER)
    if not isinstance(session_user, str):
        session_user = None
    return await in_session(request, identify, proxy_user, session_user, state.bound_to_loopback)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def page(endpoint: Endpoint) -> Endpoint:
    """Guard an HTML page: anonymous browsers are sent to the login page (303)."""
    return _guarded(endpoint, html=True)


def data(endpoint: Endpoint) -> Endpoint:
    """Guard an image, archive, JSON or fragment: anonymous requests get a 401."""
    return _guarded(endpoint, html=False)


def _guarded(endpoint: Endpoint, html: bool) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        request.state.html = html
        viewer = await viewer_of(request)
        if isinstance(viewer, Refusal):
            if viewer.reason != "login":
                raise HTTPException(403, viewer.message)
            if html:
                return _login_redirect(request)
            raise HTTPException(401, LOGIN_REQUIRED)
        request.state.viewer = viewer
        return await endpoint(request)

    return guarded


def action(endpoint: FormEndpoint) -> Endpoint:
    """Guard a POST that changes something: a valid CSRF token, then a user who may write.

    The wrapped endpoint gets the checked form as its second argument.
    """

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        request.state.html = True
        form = await checked_form(request)
        viewer = await viewer_of(request)
        if isinstance(viewer, Refusal):
            if viewer.reason == "login":
                return _login_redirect(request)
            raise HTTPException(403, viewer.message)
        if viewer.read_only:
            raise HTTPException(403, READ_ONLY)
        request.state.viewer = viewer
        return await endpoint(request, form)

    return guarded


async def login_page(request: Request) -> Response:
    """GET /login: the login form (or, for someone logged in already, where they were going)."""
    request.state.html = True
    target = local_path(request.query_params.get("next")) or "/"
    viewer = await viewer_of(request)
    if isinstance(viewer, Viewer) and not viewer.read_only:
        return RedirectResponse(target, status_code=303)
    if isinstance(viewer, Viewer):
        request.state.viewer = viewer
    has_users = await in_session(request, count_users) > 0
    return _login_form(request, target, None, has_users, status_code=200)


def _login_form(
    request: Request, target: str, error: str | None, has_users: bool, status_code: int
) -> Response:
    context = {"next": target, "error": error, "has_users": has_users, "hint": ADD_USER_HINT}
    return render(request, "login.html", context, status_code=status_code)


async def _refused_login(request: Request, target: str) -> Response:
    has_users = await in_session(request, count_users) > 0
    return _login_form(request, target, BAD_LOGIN, has_users, status_code=401)


async def login(request: Request) -> Response:
    """POST /login: check the name and password, then start the user's session."""
    request.state.html = True
    form = await checked_form(request)
    name = form.get("name")
    password = form.get("password")
    target = local_path(_text(form.get("next"))) or "/"
    if not isinstance(name, str) or not isinstance(password, str):
        return await _refused_login(request, target)
    user = await in_session(request, _authenticated_name, name.strip(), password)
    if user is None:
        return await _refused_login(request, target)
    # A new session at login: nothing an attacker planted in the old cookie carries over.
    request.session.clear()
    request.session[SESSION_USER] = user
    renew_csrf_token(request)
    return RedirectResponse(target, status_code=303)


def _authenticated_name(session: Session, name: str, password: str) -> str | None:
    user = authenticate(session, name, password)
    return None if user is None else user.name


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def logout(request: Request) -> Response:
    """POST /logout: end the session and show the login form."""
    request.state.html = True
    await checked_form(request)
    request.session.clear()
    renew_csrf_token(request)
    return RedirectResponse("/login", status_code=303)
