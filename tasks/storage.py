"""Where the farm's files live: a local folder, or an object store named by a URL.

``FARM_OUTPUT_DIR`` is either a folder (``./output``) or a URL that fsspec knows
(``s3://bucket/prefix``, ``memory://scratch``). A place under it is a :class:`~pathlib.Path`
for a folder and an :class:`ObjectURL` for a store; both join with ``/`` and know their
``name``, ``suffix`` and ``parent``, so the layout (:mod:`tasks.outputs`) is written once.

An object is written in one put of its whole content: it appears whole or not at all, as a
local file renamed into place does. Every error of a store comes out as
:class:`~tasks.exceptions.StorageUnavailable`, an ``OSError``, so a stage retries it as it
retries a full disk. Credentials and endpoint come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), read by botocore itself.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, TypeVar

from tasks.exceptions import StorageUnavailable

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
SETTING = "FARM_OUTPUT_DIR"
T = TypeVar("T")


def is_url(value: object) -> bool:
    """Whether ``value`` names an object store (``scheme://...``) rather than a folder.

    ``file://`` counts as a folder: it is one.
    """
    if isinstance(value, ObjectURL):
        return True
    match = _SCHEME.match(str(value)) if isinstance(value, str) else None
    return match is not None and match.group(1).lower() != "file"


def output_location(value: object) -> object:
    """``FARM_OUTPUT_DIR`` as the settings keep it: a URL as text, anything else as a Path.

    A URL must stay text: ``Path("s3://b/p")`` would collapse the ``//``.
    """
    if isinstance(value, str) and _SCHEME.match(value) and not is_url(value):
        return Path(value.split("://", 1)[1])  # file:///srv/out is /srv/out
    if isinstance(value, str) and not is_url(value):
        return Path(value)
    return value


class ObjectURL:
    """An object's URL in a store, with the few path operations the output layout uses.

    Args:
        url: ``scheme://bucket/key...``; trailing slashes are dropped.
    """

    __slots__ = ("scheme", "key")

    def __init__(self, url: str) -> None:
        scheme, _, rest = str(url).partition("://")
        self.scheme = scheme.lower()
        self.key = PurePosixPath("/" + rest.strip("/")) if rest.strip("/") else PurePosixPath("/")

    def __str__(self) -> str:
        return f"{self.scheme}://{str(self.key).lstrip('/')}"

    def __repr__(self) -> str:
        return f"ObjectURL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectURL) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: str) -> ObjectURL:
        joined = posixpath.normpath(str(self.key / str(part)))
        inside = str(self.key).rstrip("/") + "/"
        if not joined.startswith(inside):  # "..": stay inside, as a folder would
            raise ValueError(f"{part!r} leaves {self}")
        return ObjectURL(f"{self.scheme}://{joined.lstrip('/')}")

    @property
    def name(self) -> str:
        """The last part of the key."""
        return self.key.name

    @property
    def suffix(self) -> str:
        """The name's extension, with its dot."""
        return self.key.suffix

    @property
    def parent(self) -> ObjectURL:
        """The URL one level up (the bucket at most)."""
        return ObjectURL(f"{self.scheme}://{str(self.key.parent).lstrip('/')}")

    def with_suffix(self, suffix: str) -> ObjectURL:
        """The same URL with another extension."""
        return ObjectURL(f"{self.scheme}://{str(self.key.with_suffix(suffix)).lstrip('/')}")

    def with_name(self, name: str) -> ObjectURL:
        """The same URL with another last part."""
        return ObjectURL(f"{self.scheme}://{str(self.key.with_name(name)).lstrip('/')}")


Place = Path | ObjectURL


def place(value: str | os.PathLike | ObjectURL) -> Place:
    """A folder, a file or an object as a :data:`Place`.

    Args:
        value: a path, a URL, or a place already (a path or URL stored in the database).
    """
    if isinstance(value, (Path, ObjectURL)):
        return value
    if is_url(value):
        return ObjectURL(str(value))
    return Path(output_location(os.fspath(value)))


def _filesystem(scheme: str):
    """The fsspec file system of a scheme, made once per process (a forked worker process
    makes its own: a client's connections and event loop do not survive a fork)."""
    return _filesystem_of(scheme, os.getpid())


@lru_cache(maxsize=8)
def _filesystem_of(scheme: str, pid: int):
    """For ``s3`` the endpoint comes from ``AWS_ENDPOINT_URL`` (MinIO, a test server), which
    older botocore releases do not read themselves."""
    import fsspec  # imported here: a local folder never needs it

    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if scheme in ("s3", "s3a") and endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    try:
        return fsspec.filesystem(scheme, **options)
    except (ImportError, ValueError) as error:
        raise StorageUnavailable(
            f"{SETTING}: no storage for {scheme}:// URLs ({error})", scheme
        ) from error


def _fs_path(url: ObjectURL) -> str:
    return str(url.key).lstrip("/")


def _call(url: ObjectURL, doing: str, action: Callable[..., T]) -> T:
    """Run ``action(fs, path)``; any failure of the store as :class:`StorageUnavailable`."""
    fs = _filesystem(url.scheme)
    try:
        return action(fs, _fs_path(url))
    except StorageUnavailable:
        raise
    except Exception as error:  # botocore and aiohttp errors are not all OSErrors
        raise StorageUnavailable(f"cannot {doing} {url}: {describe_error(error)}", url) from error


def describe_error(error: BaseException) -> str:
    """What went wrong with a store, in a few words, for a message."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError):
        return f"not found ({text})"
    if isinstance(error, PermissionError):
        return f"access denied, check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ({text})"
    if "connect" in type(error).__name__.lower() or "connect" in text.lower():
        return f"the endpoint cannot be reached, check AWS_ENDPOINT_URL ({text})"
    return f"{type(error).__name__}: {text}"


def put_bytes(url: ObjectURL, data: bytes) -> None:
    """Write a whole object in one put: it appears whole or not at all.

    Raises:
        StorageUnavailable: the store refused or could not be reached.
    """
    _call(url, "write", lambda fs, path: fs.pipe_file(path, data))


def put_file(source: Path, url: ObjectURL) -> None:
    """Upload a finished local file as one object (a multipart upload completes at once)."""
    _call(url, "write", lambda fs, path: fs.put_file(str(source), path))


def read_bytes(where: Place) -> bytes:
    """The whole content of a file or object.

    Raises:
        OSError: it cannot be read (:class:`StorageUnavailable` for a store).
    """
    if isinstance(where, Path):
        return where.read_bytes()
    return _call(where, "read", lambda fs, path: fs.cat_file(path))


def open_read(where: Place) -> IO[bytes]:
    """A binary reader of a file or object (the caller closes it)."""
    if isinstance(where, Path):
        return open(where, "rb")  # noqa: SIM115  (returned to the caller)
    return _call(where, "read", lambda fs, path: fs.open(path, "rb"))


def is_file(where: Place) -> bool:
    """Whether a file or object exists there; an unreadable place counts as missing."""
    try:
        if isinstance(where, Path):
            return where.is_file()
        return bool(_call(where, "look up", _fresh_isfile))
    except OSError:
        return False


def _fresh_isfile(fs, path: str) -> bool:
    fs.invalidate_cache(path)  # another process may have written it since this one listed
    return fs.isfile(path)


def signature(url: ObjectURL) -> tuple:
    """What tells one version of an object from another: its size and tag (or time)."""
    info = _call(url, "look up", lambda fs, path: (fs.invalidate_cache(path), fs.info(path))[1])
    return info.get("size"), info.get("ETag") or info.get("LastModified") or info.get("created")


def copy(source: ObjectURL, target: ObjectURL) -> None:
    """Copy one object to another in the same store (server side where the store can)."""
    if source.scheme == target.scheme:
        _call(target, "write", lambda fs, path: fs.cp_file(_fs_path(source), path))
    else:
        put_bytes(target, read_bytes(source))


def remove(url: ObjectURL) -> None:
    """Delete an object; one already gone is no error."""
    _call(url, "delete", lambda fs, path: fs.rm_file(path) if fs.exists(path) else None)


def check(url: ObjectURL) -> ObjectURL:
    """Prove that objects can be written under ``url``: put a probe object and delete it.

    Returns:
        ``url``.

    Raises:
        StorageUnavailable: one message naming ``FARM_OUTPUT_DIR`` and what is wrong (no
            such store, no bucket, bad credentials, the endpoint unreachable).
    """
    probe = url / f".farm-write-check.{uuid.uuid4().hex}"
    try:
        put_bytes(probe, b"\0")
        remove(probe)
    except StorageUnavailable as error:
        reason = str(error).split(": ", 1)[-1]
        raise StorageUnavailable(f"{SETTING}={url}: cannot write there: {reason}", url) from error
    return url
