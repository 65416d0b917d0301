"""``farm status --watch`` into a pipe: one plain block per interval, each read anew."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import update

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch

BATCH = "20261206-040000-c0ffee"
HEADER = "farm status at "


@pytest.fixture
def farm_env(tmp_path):
    """A farm database with one batch of one pending article, and the env that names it."""
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    engine = make_engine(url)
    migrate(engine)
    with session_factory(engine)() as session:
        session.add(Batch(id=BATCH, catalog="watch.csv", profile="tiny"))
        session.add(
            Article(batch_id=BATCH, key="SKU-1", file_stem="sku-1", source_file="watch.csv",
                    source_sheet="", source_row=2, source_text="Bluse",
                    status=ArticleStatus.pending.value)
        )  # fmt: skip
        session.commit()
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return env | {
        "FARM_DATABASE_URL": url,
        "FARM_OUTPUT_DIR": str(tmp_path / "output"),
        "FARM_BROKER_URL": "redis://127.0.0.1:1/0",
        "COLUMNS": "100",
    }


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _until(lines: queue.Queue, seen: list[str], done, timeout: float = 20.0) -> None:
    """Read lines into ``seen`` until ``done(seen)``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done(seen):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"not seen in {timeout}s:\n{''.join(seen)}") from None
        assert line is not None, f"farm status ended early:\n{''.join(seen)}"
        seen.append(line)


def _blocks(seen: list[str]) -> list[str]:
    """The blocks printed so far, each from its header line; the last may be incomplete."""
    return "".join(seen).split(HEADER)[1:]


def test_watch_into_a_pipe_prints_one_plain_block_per_interval(farm_env):
    command = [sys.executable, "-m", "producer.cli", "status", "--watch", "--interval", "0.3"]
    watching = subprocess.Popen(
        command, env=farm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(watching.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        # A block is complete once the next header has come.
        _until(lines, seen, lambda s: len(_blocks(s)) >= 2)
        first = _blocks(seen)[0]
        assert BATCH in first and "in flight 1 (100%)" in first
        with session_factory(make_engine(farm_env["FARM_DATABASE_URL"]))() as session:
            session.execute(update(Article).values(status=ArticleStatus.done.value))
            session.commit()
        _until(lines, seen, lambda s: any("done 1 (100%)" in b for b in _blocks(s)[:-1]))
    finally:
        watching.send_signal(signal.SIGINT)
        _out, err = watching.communicate(timeout=10)
    assert watching.returncode == 0, err
    text = "".join(seen)
    assert "\x1b" not in text  # no colours, no cursor movement: a log reads as it is
    assert len(_blocks(text)) >= 3 and "Traceback" not in err
