"""A live review studio for browser tests: ``farm review serve`` as a subprocess."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.farmproc import FARM, farm

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_user(env: dict, name: str, password: str, role: str = "reviewer") -> None:
    """Add a studio user through the CLI, the password on standard input."""
    result = subprocess.run(
        [*FARM, "review", "add-user", name, "--role", role],
        env=env,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


class Studio:
    """``farm review serve`` on a free port, its log in a file; stop() ends it."""

    def __init__(self, env: dict, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [*FARM, "review", "serve", "--port", str(self.port), *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> Studio:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"studio exited:\n{self.log_path.read_text()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                urllib.request.urlopen(f"{self.url}/login", timeout=2).close()
                return self
            time.sleep(0.2)
        raise AssertionError(f"studio not up in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


__all__ = ["CHROMIUM", "Studio", "add_user", "farm", "free_port"]
