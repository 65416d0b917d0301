"""Request bodies: bounded, and read only when the request may be answered at all.

Starlette spools a multipart body to a temporary file as it parses it, so an unbounded body
fills the disk before any check runs. Every body the studio reads is bounded by
:data:`MAX_BODY_BYTES`: a ``Content-Length`` over it is refused before a byte is read, and a
body without one (chunked) is refused as soon as it grows past it. The CSRF check
(:func:`producer.review.csrf.checked_form`) refuses a request whose session holds no token
before reading its body at all.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The studio's largest form (the ids of a contact sheet's selected cards, an article's
# attributes of at most FARM_MAX_CELL_CHARS each) stays far below this.
MAX_BODY_BYTES = 1024 * 1024
TOO_LARGE = f"the request is larger than the studio accepts ({MAX_BODY_BYTES // 1024} KiB)"


class BodyLimit:
    """Refuse (413) a request body larger than ``max_bytes`` while the app reads it.

    The refusal is raised from ``receive``, inside the endpoint that reads the body, so the
    studio's error page answers it; a request whose body is never read is never refused.

    Args:
        app: the app to pass requests on to.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a ``receive`` that counts the body's bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        read = 0

        async def bounded_receive() -> Message:
            nonlocal read
            # Checked before each read: a declared size over the limit reads nothing.
            if declared is not None and declared > self.max_bytes:
                raise HTTPException(413, TOO_LARGE)
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:
                    raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when there is none (a malformed one counts as too large)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else MAX_BODY_BYTES + 1
    return None
