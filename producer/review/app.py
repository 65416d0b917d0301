"""The review studio's web app: its routes, session cookie, error pages and security headers."""

from __future__ import annotations

import secrets

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.review import auth, downloads, pages, posts
from producer.review.bodies import BodyLimit
from producer.review.throttle import LoginThrottle
from producer.review.web import STATIC, make_templates, render
from tasks.settings import Settings

SESSION_COOKIE = "farm_review"
SESSION_SECONDS = 12 * 3600
# Everything the pages use comes from the studio itself: no CDN, no inline script or style,
# so an injected tag could not run even if escaping missed it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    celery_app: Celery,
    bound_to_loopback: bool,
) -> Starlette:
    """Build the review studio.

    Args:
        settings: the farm's settings (``review_secret``, ``review_auth_header``,
            ``review_trusted_proxies``, ``review_https_only``, ``output_dir``).
        sessions: sessions of the farm's database.
        celery_app: the farm's Celery app; the actions send render tasks with it.
        bound_to_loopback: whether the server listens on the loopback interface only; a
            studio without users is then readable, read-only, without logging in, by
            browsers on this machine (not through a proxy).

    Returns:
        The ASGI app.

    Raises:
        UserError: ``review_trusted_proxies`` names something that is not an address.
    """
    # Parsed before anything else, so a typo stops the studio instead of trusting nobody.
    trusted_proxies = auth.trusted_networks(settings.review_trusted_proxies)
    app = Starlette(
        routes=routes(),
        middleware=_middleware(settings),
        exception_handlers={HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.celery_app = celery_app
    app.state.bound_to_loopback = bound_to_loopback
    app.state.trusted_proxies = trusted_proxies
    app.state.templates = make_templates()
    app.state.login_throttle = LoginThrottle()
    return app


def _middleware(settings: Settings) -> list[Middleware]:
    secret = settings.review_secret
    # A random secret logs everyone out when the studio restarts, which is the documented
    # price of not configuring one.
    key = secret.get_secret_value() if secret else secrets.token_urlsafe(32)
    return [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=key,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_SECONDS,
            same_site="lax",
            # Behind a TLS proxy the cookie must never travel over plain HTTP.
            https_only=settings.review_https_only,
        ),
        Middleware(BodyLimit),
    ]


def routes() -> list:
    """Every route of the studio.

    Ids in paths are plain text, checked by :func:`producer.review.web.path_id`: a path of
    thousands of digits would make Starlette's ``int`` convertor fail with a 500.
    """
    post = ["POST"]
    return [
        Route("/", pages.batches),
        Route("/fragments/batches", pages.batches_fragment),
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login", auth.login, methods=post),
        Route("/logout", auth.logout, methods=post),
        Route("/batches/{batch_id}", pages.contact_sheet),
        Route("/batches/{batch_id}/approved.zip", downloads.approved_zip),
        Route("/batches/{batch_id}/approve-selected", posts.approve_selected, methods=post),
        Route("/batches/{batch_id}/regenerate-below", posts.regenerate_below, methods=post),
        Route("/batches/{batch_id}/approve-above", posts.approve_above, methods=post),
        Route("/articles/{article_id}", pages.article),
        Route("/articles/{article_id}/live", pages.article_live),
        Route("/articles/{article_id}/state.json", pages.article_state),
        Route("/articles/{article_id}/approve", posts.approve_article, methods=post),
        Route("/articles/{article_id}/reject", posts.reject_article, methods=post),
        Route("/articles/{article_id}/attributes", posts.edit_attributes, methods=post),
        Route("/articles/{article_id}/prompt", posts.edit_prompt, methods=post),
        Route("/renders/{render_id}/image", downloads.render_image),
        Route("/renders/{render_id}/thumb", downloads.render_thumb),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def http_error(request: Request, error: Exception) -> Response:
    """An error page for browsers; plain JSON for images, archives and polled data."""
    assert isinstance(error, HTTPException)
    headers = dict(error.headers or {})
    if not getattr(request.state, "html", True) or "text/html" not in _accepted(request):
        body = {"error": error.detail, "status": error.status_code}
        return JSONResponse(body, status_code=error.status_code, headers=headers)
    context = {"status": error.status_code, "message": error.detail}
    response = render(request, "error.html", context, status_code=error.status_code)
    response.headers.update(headers)
    return response


def _accepted(request: Request) -> str:
    # A browser navigating asks for text/html; a bare client (curl, a test) asks for
    # nothing in particular and still gets the page.
    accept = request.headers.get("accept", "")
    return accept if accept and accept != "*/*" else "text/html"


class SecurityHeaders:
    """Add the studio's security headers, and keep pages and data out of shared caches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
