"""Request bodies: refused before they are read without a session, and bounded with one."""

from __future__ import annotations

import asyncio

import pytest

from producer.review.bodies import MAX_BODY_BYTES
from tests.unit.review_studio import login, make_studio

CHUNK = 64 * 1024
BOUNDARY = b"farmboundary"


class Upload:
    """A multipart body of ``total`` bytes sent in chunks, counting what the app reads."""

    def __init__(self, total: int):
        head = (
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        self.chunks = [head] + [b"x" * CHUNK] * (total // CHUNK)
        self.read = 0

    async def receive(self) -> dict:
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        self.read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def send_upload(app, upload: Upload, path: str, cookie: str = "", length: int | None = None):
    """Call the ASGI app directly, so nothing but the app decides how much is read."""
    headers = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": headers, "client": ("203.0.113.9", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    started = []

    async def send(message):
        if message["type"] == "http.response.start":
            started.append(message["status"])

    asyncio.run(app(scope, upload.receive, send))
    return started[0]


@pytest.fixture
def studio(tmp_path):
    return make_studio(tmp_path, peer="203.0.113.9", loopback=False)


@pytest.mark.parametrize("path", ["/login", "/articles/1/approve", "/batches/b1/approve-above"])
def test_an_anonymous_upload_of_100_mb_is_refused_before_its_body_is_read(studio, path):
    upload = Upload(100 * 1024 * 1024)
    assert send_upload(studio.client.app, upload, path) == 403
    assert upload.read == 0


def test_a_body_declared_larger_than_the_limit_is_refused_before_it_is_read(studio):
    assert login(studio).status_code == 303
    cookie = "; ".join(f"{k}={v}" for k, v in studio.client.cookies.items())
    upload = Upload(100 * 1024 * 1024)
    status = send_upload(studio.client.app, upload, "/articles/1/approve", cookie, 10**11)
    assert status == 413
    assert upload.read == 0


def test_a_logged_in_streamed_body_is_cut_off_just_past_the_limit(studio):
    assert login(studio).status_code == 303
    cookie = "; ".join(f"{k}={v}" for k, v in studio.client.cookies.items())
    upload = Upload(100 * 1024 * 1024)
    assert send_upload(studio.client.app, upload, "/articles/1/approve", cookie) == 413
    assert upload.read <= MAX_BODY_BYTES + 2 * CHUNK
