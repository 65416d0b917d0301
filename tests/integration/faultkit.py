"""Shared pieces of the fault-injection tests: environment, services, tallies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select

from db.engine import make_engine, session_factory
from db.models import TERMINAL_STATUSES, Article, ArticleStatus, Render, StageRun
from tasks.outputs import published_image_path

REPO = Path(__file__).resolve().parents[2]
REPORT_ENV = "FARM_FAULT_REPORT"


# Delivery settings a scenario runs with as shipped, unless it is about one of them.
SHIPPED = ("FARM_TASK_TIME_LIMIT", "FARM_LEASE_SECONDS", "FARM_VISIBILITY_TIMEOUT",
           "FARM_REAPER_SECONDS", "FARM_MAX_STAGE_ATTEMPTS")  # fmt: skip


def fault_env(farm_env: dict, plan: Path, **overrides: str) -> dict:
    """Worker environment with fault-injecting tiny runtimes and the shipped delivery settings.

    Only the setting a scenario is about (the visibility timeout, the time limit) is given
    in ``overrides``.
    """
    env = {name: value for name, value in farm_env.items() if name not in SHIPPED}
    env |= {
        "FARM_RUNTIME_FACTORY": "tests.faults:load",
        "FARM_FAULT_PLAN": str(plan),
        "FARM_DEVICE": "cpu",
        "PYTHONPATH": str(REPO),
    }
    return env | overrides


def sessions(env: dict):
    return session_factory(make_engine(env["FARM_DATABASE_URL"]))


def engine(env: dict):
    return make_engine(env["FARM_DATABASE_URL"])


def wait_for_run(
    env: dict, stage: str, outcome: str = "running", timeout: float = 60, count: int = 1
) -> None:
    """Wait until ``count`` stage runs of ``stage`` with ``outcome`` exist."""
    deadline = time.monotonic() + timeout
    factory = sessions(env)
    while time.monotonic() < deadline:
        with factory() as session:
            found = session.scalar(
                select(func.count())
                .select_from(StageRun)
                .where(StageRun.stage == stage, StageRun.outcome == outcome)
            )
        if found >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} {outcome} {stage} runs within {timeout}s")


def wait_for_fault(plan: Path, count: int = 1, timeout: float = 60) -> None:
    """Wait until ``count`` faults of the plan fired: the model call they sit in is under way.

    A stage run is marked running at its claim, a moment before its model call starts;
    a scenario about a process dying inside the call waits for this instead.
    """

    def fired() -> int:
        try:
            return len(json.loads(plan.read_text())["fired"])
        except ValueError:  # caught while a worker rewrites the plan
            return 0

    _wait(lambda: fired() >= count, "the fault", timeout)


def ok_runs(env: dict) -> dict[tuple[str, str], int]:
    """(article key, stage) → number of successful runs."""
    with sessions(env)() as session:
        rows = session.execute(
            select(Article.key, StageRun.stage, func.count())
            .join(StageRun, StageRun.article_id == Article.id)
            .where(StageRun.outcome == "ok")
            .group_by(Article.key, StageRun.stage)
        ).all()
    return {(key, stage): count for key, stage, count in rows}


def tally(env: dict) -> dict[str, int]:
    """Articles submitted, completed (done), failed with a reason, lost and duplicated."""
    with sessions(env)() as session:
        articles = list(session.scalars(select(Article)))
    runs = ok_runs(env)
    attempts = render_attempts(env)
    ended = {s.value for s in TERMINAL_STATUSES}
    return {
        "submitted": len(articles),
        "completed": sum(a.status == ArticleStatus.done.value for a in articles),
        "failed_with_reason": sum(
            a.status == ArticleStatus.failed.value and bool(a.error) for a in articles
        ),
        "lost": sum(a.status not in ended for a in articles),
        # A stage stored more often than it had work: once for the text stages, once per
        # render attempt for render and score.
        "duplicated": len(
            {
                key
                for (key, stage), count in runs.items()
                if count > (attempts.get(key, 1) if stage in ("render", "score") else 1)
            }
        ),
        "stale_published": len(stale_published(env)),
    }


def stale_published(env: dict) -> list[str]:
    """Articles whose published picture or JSON is not their stored best attempt's.

    The picture under the article's own name must hold the bytes of the attempt the database
    names as best, and its JSON must name that attempt.
    """
    output = Path(env["FARM_OUTPUT_DIR"])
    with sessions(env)() as session:
        rows = session.execute(
            select(Article, Render.image_path).join(
                Render, (Render.article_id == Article.id) & (Render.attempt == Article.best_attempt)
            )  # fmt: skip
        ).all()
    stale = []
    for article, attempt_path in rows:
        picture = published_image_path(output, article.batch_id, article.file_stem, article.view)
        record = picture.with_suffix(".json")
        if not picture.is_file() or picture.read_bytes() != Path(attempt_path).read_bytes():
            stale.append(f"{article.key}: picture is not attempt {article.best_attempt}")
        elif json.loads(record.read_text())["attempt"] != article.best_attempt:
            stale.append(f"{article.key}: JSON names another attempt")
    return stale


def render_attempts(env: dict) -> dict[str, int]:
    """Article key → how many render attempts it has (rows of ``renders``)."""
    with sessions(env)() as session:
        rows = session.execute(
            select(Article.key, func.count()).join(Render).group_by(Article.key)
        ).all()
    return dict(rows)


def runs_per_stage(env: dict) -> dict[tuple[str, str], int]:
    """(article key, stage) → how many times the stage was claimed, whatever the outcome."""
    with sessions(env)() as session:
        rows = session.execute(
            select(Article.key, StageRun.stage, func.count())
            .join(StageRun, StageRun.article_id == Article.id)
            .group_by(Article.key, StageRun.stage)
        ).all()
    return {(key, stage): count for key, stage, count in rows}


def record(scenario: str, counts: dict[str, int]) -> None:
    """Append a scenario's tally to the report file that bench/faults.py reads, if set."""
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "a") as stream:
            stream.write(json.dumps({"scenario": scenario, **counts}) + "\n")


def received(logs: list[Path], task: str) -> int:
    """How many times workers received ``task``, by their logs ("Task farm.x[id] received")."""
    return sum(
        1
        for log in logs
        for line in log.read_text().splitlines()
        if f"Task {task}[" in line and line.rstrip().endswith("received")
    )


def wait_for_log(log: Path, text: str, timeout: float = 30) -> None:
    """Wait until a worker's log contains ``text``."""
    _wait(lambda: text in log.read_text(), f"{text!r} in {log.name}", timeout)


def redis_stop() -> None:
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False
    )
    _wait(lambda: not _redis_up(), "redis to stop")


def redis_start() -> None:
    if not _redis_up():
        subprocess.run(
            ["redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
             "--appendonly", "no", "--daemonize", "yes"],
            check=True,
        )  # fmt: skip
    _wait(_redis_up, "redis to start")


def _redis_up() -> bool:
    probe = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]
    return subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "PONG"


def postgres_restart() -> None:
    """Restart the PostgreSQL serving 127.0.0.1:5432 (the system cluster or CI's private one)."""
    _pg_ctl("restart")
    _wait(_postgres_up, "postgres to accept connections")


def postgres_stop() -> None:
    """Stop the PostgreSQL serving 127.0.0.1:5432 (fast: open connections are cut)."""
    _pg_ctl("stop")
    _wait(lambda: not _postgres_up(), "postgres to stop")


def postgres_start() -> None:
    """Start it again after :func:`postgres_stop`."""
    _pg_ctl("start")
    _wait(_postgres_up, "postgres to accept connections")


def _pg_ctl(action: str) -> None:
    version = shutil.which("pg_lsclusters") and _system_cluster(online=action != "start")
    if version:
        mode = ["--mode", "fast"] if action != "start" else []
        subprocess.run(["pg_ctlcluster", *mode, version, "main", action], check=True)
        return
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    data = "/tmp/fashion-farm-pg"
    # A start takes the options .ci/services starts it with; a restart keeps them.
    if action == "start":
        options = ["-o", "-h 127.0.0.1 -p 5432", "-l", f"{data}/log"]
    else:
        options = ["-m", "fast"]
    command = [str(pg_ctl), "-D", data, *options, "-w", action]
    subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True)


def _postgres_up() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0


def _system_cluster(online: bool = True) -> str | None:
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if (
            len(fields) >= 4
            and fields[1] == "main"
            and fields[2] == "5432"
            and (fields[3] == "online" or not online)
        ):
            return fields[0]
    return None


def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
