"""Who is looking: login and logout, the trusted proxy header, and the guards on every route.

A user is known by the signed session cookie set at login, or, when
``settings.review_auth_header`` is set, by the name a reverse proxy that authenticated them
puts in that header; the header is believed only from the peers listed in
``settings.review_trusted_proxies``, since anyone else could simply send it. Either way the
name must be in the users table, whose role is read on every request, so a removed user or a
changed role takes effect at once.

The cookie also holds the user's ``session_epoch`` at login, and is accepted only while the
user's epoch is still the same: logging out, or a new password, raises the epoch and so ends
every session of that user, copies of the cookie included.

With no user at all, a studio bound to the loopback interface shows its pages read-only to
browsers on its own machine; not to requests a proxy forwards, which may come from anyone.
"""

from __future__ import annotations

import functools
import ipaddress
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
from producer.review.throttle import login_keys, wait_text
from producer.review.users import MAX_NAME_CHARS, authenticate, count_users, end_sessions
from producer.review.web import in_session, local_path, render
from tasks.exceptions import UserError

ADD_USER_HINT = "add a user with `farm review add-user NAME`"
READ_ONLY = f"the studio is read-only while it has no users: {ADD_USER_HINT}"
NO_USERS_REMOTE = (
    "the studio has no users: without them it opens read-only only to browsers on its own "
    f"machine, not to other machines or through a proxy: {ADD_USER_HINT}"
)
LOGIN_REQUIRED = "log in first"
BAD_LOGIN = "unknown user or wrong password"
SESSION_USER = "user"
SESSION_EPOCH = "epoch"
# Headers a reverse proxy adds: a request carrying one comes from elsewhere, however local
# the proxy that passed it on.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

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


@dataclass(frozen=True)
class Claims:
    """What a request says about who sends it, before the database is asked."""

    proxy_user: str | None = None  # the trusted header, from a trusted peer only
    session_user: str | None = None  # the name in the session cookie
    session_epoch: int | None = None  # the user's session epoch when the cookie was made
    local: bool = False  # a browser on this machine, on a studio bound to loopback


def identify(session: Session, claims: Claims) -> Viewer | Refusal:
    """The viewer of a request, from what the proxy and the session cookie say.

    Args:
        session: a database session.
        claims: the request's trusted header, cookie and origin.

    Returns:
        The viewer, or why there is none. A cookie whose epoch is not the user's current
        one (they logged out, or got a new password, since) names nobody.
    """
    if claims.proxy_user:
        user = session.scalar(select(User).where(User.name == claims.proxy_user))
        if user is None:
            message = f"the proxy names user {claims.proxy_user!r}, who is not a studio user"
            return Refusal("forbidden", f"{message}: {ADD_USER_HINT}")
        return Viewer(user.name, user.role)
    if claims.session_user:
        user = session.scalar(select(User).where(User.name == claims.session_user))
        if user is not None and user.session_epoch == claims.session_epoch:
            return Viewer(user.name, user.role)
    if count_users(session) == 0:
        return ANONYMOUS if claims.local else Refusal("forbidden", NO_USERS_REMOTE)
    return Refusal("login", LOGIN_REQUIRED)


def trusted_networks(text: str | None) -> tuple[Network, ...]:
    """The networks of ``settings.review_trusted_proxies``: addresses or CIDR networks.

    Args:
        text: comma-separated entries such as ``127.0.0.1, ::1, 10.0.0.0/8``.

    Raises:
        UserError: an entry is not an address or a network.
    """
    networks = []
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as error:
            raise UserError(
                f"FARM_REVIEW_TRUSTED_PROXIES: {entry.strip()!r} is not an IP address or network"
            ) from error
    return tuple(networks)


def peer_address(request: Request) -> Address | None:
    """The address of the connection's other end; None when it is not an IP address."""
    host = request.client.host if request.client else None
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    # A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _from_trusted_proxy(request: Request, peer: Address | None) -> bool:
    """Whether ``peer`` is one of ``FARM_REVIEW_TRUSTED_PROXIES`` and a proxy header is set.

    Without ``FARM_REVIEW_AUTH_HEADER`` no proxy is configured, so no address is one: a
    local proxy's requests count against its address like any other client's.
    """
    if not request.app.state.settings.review_auth_header or peer is None:
        return False
    return any(peer in net for net in request.app.state.trusted_proxies)


def _claims(request: Request) -> Claims:
    state = request.app.state
    peer = peer_address(request)
    header = state.settings.review_auth_header
    trusted = _from_trusted_proxy(request, peer)
    loopback = peer is not None and peer.is_loopback
    user = request.session.get(SESSION_USER)
    epoch = request.session.get(SESSION_EPOCH)
    forwarded = any(name in request.headers for name in FORWARDING_HEADERS)
    return Claims(
        proxy_user=request.headers.get(header) if header and trusted else None,
        session_user=user if isinstance(user, str) else None,
        # Exactly an int: a bool is an int too, but no epoch anybody was given.
        session_epoch=epoch if type(epoch) is int else None,
        local=state.bound_to_loopback and loopback and not forwarded,
    )


async def viewer_of(request: Request) -> Viewer | Refusal:
    """:func:`identify` for a request, run in the thread pool."""
    return await in_session(request, identify, _claims(request))


def _login_redirect(request: Request, target: str | None = None) -> RedirectResponse:
    if target is None:
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
                # Back to the page the form was on: the action's own path takes no GET.
                return _login_redirect(request, local_path(_text(form.get("back"))) or "/")
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


async def _refused_login(
    request: Request, target: str, message: str = BAD_LOGIN, status_code: int = 401
) -> Response:
    has_users = await in_session(request, count_users) > 0
    return _login_form(request, target, message, has_users, status_code=status_code)


def _throttle_keys(request: Request, name: str) -> tuple[str, ...]:
    """The name's counter, and the client's unless it is a configured proxy many people share."""
    peer = peer_address(request)
    shared = _from_trusted_proxy(request, peer)
    return login_keys(name, None if peer is None or shared else str(peer))


async def login(request: Request) -> Response:
    """POST /login: check the name and password, then start the user's session."""
    request.state.html = True
    form = await checked_form(request)
    name = form.get("name")
    password = form.get("password")
    target = local_path(_text(form.get("next"))) or "/"
    if not isinstance(name, str) or not isinstance(password, str):
        return await _refused_login(request, target)
    if len(name.strip()) > MAX_NAME_CHARS:  # no user has such a name: nothing to count
        return await _refused_login(request, target)
    throttle, keys = request.app.state.login_throttle, _throttle_keys(request, name)
    # Counted before the password is checked, so a burst of requests cannot outrun it.
    wait = throttle.reserve(keys)
    if wait > 0:
        message = f"too many failed logins: try again in {wait_text(wait)}"
        return await _refused_login(request, target, message, status_code=429)
    user = await in_session(request, _authenticated, name.strip(), password)
    if user is None:
        return await _refused_login(request, target)
    throttle.succeeded(keys)
    # A new session at login: nothing an attacker planted in the old cookie carries over.
    request.session.clear()
    request.session[SESSION_USER], request.session[SESSION_EPOCH] = user
    renew_csrf_token(request)
    return RedirectResponse(target, status_code=303)


def _authenticated(session: Session, name: str, password: str) -> tuple[str, int] | None:
    """The user's name and current session epoch, when the password is theirs."""
    user = authenticate(session, name, password)
    return None if user is None else (user.name, user.session_epoch)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def logout(request: Request) -> Response:
    """POST /logout: end the user's sessions and show the login form.

    Clearing this browser's cookie is not enough: a copy of it (a shared machine, a stolen
    backup) would stay valid until it expires. Raising the user's session epoch ends every
    session of theirs, this one's copies included, and their other browsers with them.
    """
    request.state.html = True
    await checked_form(request)
    claims = _claims(request)
    if claims.session_user is not None:
        await in_session(request, _end_sessions, claims.session_user, claims.session_epoch)
    request.session.clear()
    renew_csrf_token(request)
    return RedirectResponse("/login", status_code=303)


def _end_sessions(session: Session, name: str, epoch: int | None) -> None:
    # Only a session still valid may end the others: an old cookie replayed must not be
    # able to log its user out everywhere, again and again.
    user = session.scalar(select(User).where(User.name == name))
    if user is not None and user.session_epoch == epoch:
        end_sessions(session, name)
