"""A fake Hugging Face hub: a real local HTTP server serving model repos from memory.

It answers exactly the requests that ``huggingface_hub`` 2.4 makes for
``HfApi.list_repo_files`` and ``snapshot_download``:

* ``GET /api/models/{repo_id}/revision/{revision}``: the repo's info (``sha``, ``siblings``);
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=...``: the file listing;
* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: a file, with the headers the
  client reads (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``Content-Length``,
  ``X-Linked-Size``). No Xet headers are sent, so the client downloads over plain HTTP.

Every request is recorded, so a test can tell which files a client asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files the hub keeps in LFS (their ETag is the content's sha256, as on the real hub).
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".jpeg", ".png", ".spm")

INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class Request:
    """One request the hub received.

    Attributes:
        method: ``GET`` or ``HEAD``.
        path: the URL path, decoded.
        repo_id: the repo it was about, when it was about one.
        filename: for a ``resolve`` request, the file asked for.
    """

    method: str
    path: str
    repo_id: str | None = None
    filename: str | None = None


@dataclass
class Repo:
    """A model repo on the fake hub: the commit ``main`` names, and older ones by id.

    Attributes:
        commit: the commit ``main`` points at.
        files: its files (path in repo → content).
        older: earlier commits' files, by commit id; reachable by their id only.
    """

    commit: str
    files: dict[str, bytes]
    older: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def revisions(self) -> tuple[str, ...]:
        """The revisions that name the commit ``main`` points at."""
        return ("main", self.commit)

    def at(self, revision: str) -> Repo | None:
        """The repo as of ``revision`` (``main``, or a commit id), or ``None``."""
        if revision in self.revisions():
            return self
        if revision in self.older:
            return Repo(revision, self.older[revision])
        return None


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (the hub's ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str) -> bool:
    """Whether the fake hub stores ``name`` in LFS."""
    return name.endswith(LFS_SUFFIXES)


def etag(name: str, data: bytes) -> str:
    """The ETag the hub gives a file: sha256 for an LFS file, the git blob id otherwise."""
    return hashlib.sha256(data).hexdigest() if is_lfs(name) else git_blob_sha1(data)


@dataclass
class FakeHub:
    """A local HTTP server that serves model repos as the Hugging Face hub does.

    Attributes:
        repos: repo id → its one commit of files.
        requests: every request received, in order.
    """

    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_repo(self, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
        """Serve ``files`` (path in repo → content) as ``repo_id`` at ``commit`` (and ``main``)."""
        self.repos[repo_id] = Repo(commit, dict(files))

    def push(self, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
        """Move ``main`` of ``repo_id`` to a new ``commit``; the old one stays by its id."""
        old = self.repos[repo_id]
        self.repos[repo_id] = Repo(commit, dict(files), old.older | {old.commit: old.files})

    def add_folder(self, repo_id: str, commit: str, folder: Path) -> None:
        """Serve every file under ``folder`` (links followed) as ``repo_id`` at ``commit``."""
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        self.add_repo(repo_id, commit, files)

    @property
    def url(self) -> str:
        """The endpoint to give ``HF_ENDPOINT``."""
        assert self._server is not None, "the hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving on a free port of 127.0.0.1.

        Returns:
            The endpoint URL.
        """
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the port (again: nothing)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = self._thread = None

    def record(self, request: Request) -> None:
        """Add a request to the log (thread-safe)."""
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self.requests.clear()

    def file_requests(self, method: str | None = None) -> list[tuple[str, str, str]]:
        """``(method, repo_id, filename)`` of every ``resolve`` request (of ``method`` only)."""
        with self._lock:
            return [
                (r.method, r.repo_id, r.filename)
                for r in self.requests
                if r.filename is not None and (method is None or r.method == method)
            ]

    def repo(self, repo_id: str, revision: str) -> Repo | None:
        """The repo ``repo_id`` as of ``revision`` when it names one of its commits."""
        repo = self.repos.get(repo_id)
        return repo.at(revision) if repo is not None else None


def _tree(repo: Repo, path: str, recursive: bool) -> list[dict]:
    """The tree listing of ``path`` in ``repo``, as ``/api/models/.../tree`` returns it."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    entries: dict[str, dict] = {}
    for name, data in sorted(repo.files.items()):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            folder = prefix + "/".join(parts[:depth])
            if depth == 1 or recursive:
                oid = hashlib.sha1(folder.encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": oid, "size": 0})
        if len(parts) > 1 and not recursive:
            continue
        entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data)}
        if is_lfs(name):
            entry["lfs"] = {"oid": etag(name, data), "size": len(data), "pointerSize": 134}
        entries[name] = entry
    return [{"path": name, **entry} for name, entry in sorted(entries.items())]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_) -> None:  # quiet: the hub keeps its own log
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _send(self, status: int, data: bytes, headers: dict, body: bool) -> None:
            self.send_response(status)
            for name, value in (headers | {"Content-Length": str(len(data))}).items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, status: int, payload, body: bool, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json"} | (headers or {})
            self._send(status, data, headers, body)

        def _not_found(self, code: str, body: bool, headers: dict | None = None) -> None:
            error = {"error": f"{code}: {self.path}"}
            self._json(404, error, body, {"X-Error-Code": code} | (headers or {}))

        def _answer(self, body: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            request = Request(self.command, path)
            hub.record(request)
            if match := INFO.match(path):
                request.repo_id = match["repo"]
                self._info(match["repo"], match["rev"], body)
            elif match := TREE.match(path):
                request.repo_id = match["repo"]
                recursive = parse_qs(url.query).get("recursive", ["false"])[0]
                self._tree(match["repo"], match["rev"], match["path"] or "", recursive, body)
            elif match := RESOLVE.match(path):
                request.repo_id, request.filename = match["repo"], match["file"]
                self._resolve(match["repo"], match["rev"], match["file"], body)
            else:
                self._not_found("EntryNotFound", body)

        def _find(self, repo_id: str, revision: str, body: bool) -> Repo | None:
            if repo_id not in hub.repos:
                self._not_found("RepoNotFound", body)
                return None
            repo = hub.repo(repo_id, revision)
            if repo is None:
                self._not_found("RevisionNotFound", body)
            return repo

        def _info(self, repo_id: str, revision: str, body: bool) -> None:
            if repo := self._find(repo_id, revision, body):
                siblings = [{"rfilename": name} for name in sorted(repo.files)]
                info = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False}
                self._json(200, info | {"siblings": siblings}, body)

        def _tree(self, repo_id: str, revision: str, path: str, recursive: str, body: bool):
            if repo := self._find(repo_id, revision, body):
                self._json(200, _tree(repo, path, recursive.lower() in ("true", "1")), body)

        def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
            repo = self._find(repo_id, revision, body)
            if repo is None:
                return
            commit = {"X-Repo-Commit": repo.commit}
            if filename not in repo.files:
                self._not_found("EntryNotFound", body, commit)
                return
            data = repo.files[filename]
            headers = commit | {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{etag(filename, data)}"',
            }
            if is_lfs(filename):
                headers |= {"X-Linked-Etag": headers["ETag"], "X-Linked-Size": str(len(data))}
            self._send(200, data, headers, body)

    return Handler
