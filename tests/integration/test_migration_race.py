"""Several processes on one farm database at once.

Workers started together on a new database all migrate it: one does, the others wait for
its lock and find the work done (``db.schema.migrate``); ``farm db upgrade`` does it once,
before them. And ``farm run`` on SQLite keeps its writes while ``farm status`` reads the
same file from another process.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from db.engine import MIGRATIONS, make_engine, session_factory
from db.models import Article, ArticleStatus
from tests.integration.farmproc import FARM

pytestmark = pytest.mark.integration

PROCESSES = 3
ROUNDS = 4
STATUS_EVERY_SECONDS = 1.0
ARTICLES = 6
RUN_SECONDS = 150  # a healthy run takes well under this; a broken one retries for minutes


# --- migrations started together ------------------------------------------------------------

# One process as `farm worker` starts: open the database (creating a missing SQLite file) and
# bring its schema to the latest revision. It says "ready" once its imports are done and
# waits for the barrier file, so that every process migrates at the same moment.
RACER = """
import sys, time
from pathlib import Path
from db.engine import ensure_schema, open_database

barrier, url = Path(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
while not barrier.exists():
    time.sleep(0.001)
engine = open_database(url, create=True)
ensure_schema(engine)
engine.dispose()
"""


def race(url: str, barrier: Path) -> list[subprocess.CompletedProcess]:
    """Start :data:`PROCESSES` processes that migrate ``url``, release them at once, wait."""
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(barrier), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for racer in racers:
        assert racer.stdout.readline() == "ready\n", racer.communicate()[1]
    barrier.touch()
    done = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(racer.args, racer.returncode, out, err))
    return done


def heads() -> set[str]:
    """The latest revision(s) of the migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return set(ScriptDirectory.from_config(config).get_heads())


def why(done: subprocess.CompletedProcess) -> str:
    """The exception a racer ended with: the unindented lines of its traceback's end."""
    return " | ".join(line for line in done.stderr.splitlines()[-12:] if line[:1].isalpha())


def assert_all_ended_well(done: list[subprocess.CompletedProcess]) -> None:
    assert [d.returncode for d in done] == [0] * len(done), [why(d) for d in done if d.returncode]


def assert_at_the_latest_revision(url: str) -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        assert set(MigrationContext.configure(connection).get_current_heads()) == heads()
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM batches")).scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_workers_started_together_on_an_empty_postgres_database_all_start(
    empty_pg_url, tmp_path, round_
):
    assert_all_ended_well(race(empty_pg_url, tmp_path / "go"))
    assert_at_the_latest_revision(empty_pg_url)


@pytest.mark.own_services  # SQLite only: runs beside the tests that restart services
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_workers_started_together_on_a_new_sqlite_file_all_start(tmp_path, round_):
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    assert_all_ended_well(race(url, tmp_path / "go"))
    assert_at_the_latest_revision(url)


# --- farm db upgrade -------------------------------------------------------------------------


def db_upgrade(url: str) -> subprocess.CompletedProcess:
    """``farm --database-url URL db upgrade``, with no other setting from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return subprocess.run(
        [*FARM, "--database-url", url, "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.own_services  # SQLite only: runs beside the tests that restart services
def test_farm_db_upgrade_creates_a_missing_sqlite_database_and_prints_its_revisions(tmp_path):
    path = tmp_path / "new" / "farm.db"
    (head,) = heads()
    first = db_upgrade(f"sqlite:///{path}")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{path}: schema revision none → {head}\n"
    again = db_upgrade(f"sqlite:///{path}")
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{path}: schema revision {head} → {head} (already the latest)\n"


def test_farm_db_upgrade_migrates_an_empty_postgres_database(empty_pg_url):
    (head,) = heads()
    done = db_upgrade(empty_pg_url)
    assert_all_ended_well([done])
    assert done.stdout.endswith(f": schema revision none → {head}\n")
    assert_at_the_latest_revision(empty_pg_url)


@pytest.mark.parametrize(
    "url", ["farm.db", "postgresql://postgres@127.0.0.1:5432/farm_test_no_such_database"]
)
def test_farm_db_upgrade_names_a_database_it_cannot_use_in_one_line_and_exits_5(url):
    done = db_upgrade(url)
    assert done.returncode == 5
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- farm run on SQLite, read by farm status ------------------------------------------------


def write_articles(path: Path, count: int) -> Path:
    """A CSV catalog of ``count`` articles."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["name", "description", "model_name", "model_descr"])
        for n in range(1, count + 1):
            writer.writerow([f"Rock Nr. {n}", f"Wollrock mit {n} Falten.", "Rock", f"grau,uni,{n}"])
    return path


@pytest.fixture
def run_env(local_env, tiny_profile):
    """`farm run` alone (SQLite, no service) on the tiny models."""
    return local_env | {"FARM_PROFILE": "tiny"}


def poll_status(env: dict, run: subprocess.Popen, log: Path) -> list[subprocess.CompletedProcess]:
    """Run `farm status` once a second beside ``run``, from its import until it ends (or until
    :data:`RUN_SECONDS` have passed)."""
    deadline = time.monotonic() + RUN_SECONDS
    while run.poll() is None and "batch" not in log.read_text():
        time.sleep(0.2)
    polls = []
    while run.poll() is None and time.monotonic() < deadline:
        polls.append(
            subprocess.run([*FARM, "status"], env=env, capture_output=True, text=True, timeout=60)
        )
        time.sleep(STATUS_EVERY_SECONDS)
    return polls


@pytest.mark.own_services  # SQLite only: runs beside the tests that restart services
def test_farm_run_on_sqlite_keeps_its_writes_while_farm_status_reads_beside_it(run_env, tmp_path):
    catalog = write_articles(tmp_path / "catalog.csv", ARTICLES)
    log = tmp_path / "run.log"
    with open(log, "w") as stream:
        run = subprocess.Popen(
            [*FARM, "run", str(catalog)], env=run_env, stdout=stream, stderr=subprocess.STDOUT
        )
        try:
            polls = poll_status(run_env, run, log)
        finally:
            run.kill()
            run.wait()
    output = log.read_text()
    assert run.returncode == 0, output
    for sign in ("disk I/O error", "malformed", "database away"):
        assert sign not in output
    assert polls, "farm status never ran beside farm run"
    assert [p.stderr for p in polls if p.returncode] == []
    with closing(sqlite3.connect(tmp_path / "farm.db")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with session_factory(make_engine(run_env["FARM_DATABASE_URL"]))() as session:
        statuses = session.scalars(select(Article.status)).all()
    assert statuses == [ArticleStatus.done.value] * ARTICLES
