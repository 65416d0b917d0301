"""The review studio in a real Chromium, driven by Playwright, over a live farm.

One farm serves the module: PostgreSQL, Redis, a tiny-profile worker process and
``farm review serve``. Each test acts on its own articles of one small batch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
import redis
from PIL import Image
from sqlalchemy import func, select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, Render, ReviewAction
from producer.cli import SAMPLE_CATALOG
from tests.integration.conftest import PG_ADMIN, REDIS
from tests.integration.farmproc import WorkerProcess, wait_until_ended
from tests.integration.studio import Studio, add_user, farm

pytestmark = pytest.mark.integration
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
ARTICLES = 6
PASSWORDS = {"rita": ("reviewer", "rita-passwort-1"), "ada": ("admin", "ada-passwort-1")}


def sample_rows(count: int) -> str:
    """The first ``count`` rows of the shipped sample catalog, as CSV text."""
    with SAMPLE_CATALOG.open(encoding="utf-8", newline="") as source:
        rows = list(csv.reader(source))
    out = io.StringIO()
    csv.writer(out).writerows(rows[: count + 1])
    return out.getvalue()


class Farm:
    """What the tests need of the live farm: its environment, database and studio."""

    def __init__(self, env: dict, database_url: str, batch_id: str, studio: Studio):
        self.env = env
        self.database_url = database_url
        self.sessions = session_factory(make_engine(database_url))
        self.batch_id = batch_id
        self.studio = studio
        self.url = studio.url

    def articles(self) -> list[Article]:
        with self.sessions() as session:
            query = select(Article).where(Article.batch_id == self.batch_id).order_by(Article.id)
            return list(session.scalars(query))

    def renders(self, article_id: int) -> int:
        with self.sessions() as session:
            query = select(func.count()).select_from(Render).where(Render.article_id == article_id)
            return session.scalar(query)

    def score_of(self, article_id: int, attempt: int) -> float | None:
        with self.sessions() as session:
            query = select(Render.clip_score).where(
                Render.article_id == article_id, Render.attempt == attempt
            )
            return session.scalar(query)

    def wait_ended(self) -> None:
        wait_until_ended(self.database_url, timeout=180)


@pytest.fixture(scope="module")
def live(tmp_path_factory, model_cache, tiny_profile):
    """A farm with one finished batch of six articles and a studio with two users."""
    tmp = tmp_path_factory.mktemp("studio")
    name = f"farm_studio_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    migrate(make_engine(database_url))
    broker = redis.Redis.from_url(f"{REDIS}/10")
    broker.flushdb()
    env = os.environ | {
        "FARM_DATABASE_URL": database_url,
        "FARM_BROKER_URL": f"{REDIS}/10",
        "FARM_OUTPUT_DIR": str(tmp / "output"),
        "FARM_PROFILE": "tiny",
        "FARM_MODEL_CACHE": str(model_cache),
        "FARM_DEVICE": "cpu",
        "FARM_REVIEW_SECRET": "a-test-secret-of-the-studio-0123456789",
        "HF_HUB_OFFLINE": "1",
    }
    catalog = tmp / "catalog.csv"
    catalog.write_text(sample_rows(ARTICLES), encoding="utf-8")
    worker = WorkerProcess(env, "all", tmp / "worker.log")
    studio = None
    try:
        worker.wait_ready()
        submitted = farm(env, "submit", str(catalog))
        assert submitted.returncode == 0, submitted.stderr
        batch_id = submitted.stdout.split()[-1]
        wait_until_ended(database_url, timeout=240)
        for user, (role, password) in PASSWORDS.items():
            add_user(env, user, password, role)
        studio = Studio(env, tmp / "studio.log").wait_ready()
        yield Farm(env, database_url, batch_id, studio)
    finally:
        if studio is not None:
            studio.stop()
        worker.stop()
        broker.flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", lambda dialog: dialog.accept())  # "Reject this picture...?" and the like
    yield page
    context.close()


def log_in(page, live: Farm, user: str) -> None:
    """Log in through the login form, as a person would."""
    page.goto(f"{live.url}/login")
    page.fill("#login-form input[name=name]", user)
    page.fill("#login-form input[name=password]", PASSWORDS[user][1])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{live.url}/")


def attempts_on(page) -> list[dict]:
    """The attempts an article page shows: number, score and image address."""
    return page.eval_on_selector_all(
        "figure.attempt",
        "els => els.map(e => ({attempt: e.dataset.attempt, score: e.dataset.score,"
        " src: e.querySelector('img') && e.querySelector('img').getAttribute('src')}))",
    )


def wait_for_attempts(page, count: int, timeout: float = 120) -> list[dict]:
    """Wait until the page shows ``count`` attempts, the last one scored (the page updates
    itself; no reload here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = attempts_on(page)
        if len(shown) >= count and shown[-1]["score"]:
            return shown
        page.wait_for_timeout(500)
    raise AssertionError(f"the page shows {attempts_on(page)} after {timeout}s, not {count}")


def test_a_reviewer_logs_in_and_sees_every_article_of_the_batch(page, live):
    log_in(page, live, "rita")
    page.click(f"a[href='/batches/{live.batch_id}']")
    cards = page.locator("article.card")
    cards.first.wait_for()
    assert cards.count() == ARTICLES
    keys = {a.key for a in live.articles()}
    assert {cards.nth(i).get_attribute("data-key") for i in range(ARTICLES)} == keys
    assert all(cards.nth(i).get_attribute("data-score") for i in range(ARTICLES))


def test_rejecting_a_picture_brings_a_new_attempt_with_its_score(page, live):
    article = live.articles()[0]
    log_in(page, live, "rita")
    page.goto(f"{live.url}/articles/{article.id}")
    before = attempts_on(page)
    assert len(before) == 1
    page.click("#reject-form button[type=submit]")
    after = wait_for_attempts(page, 2)
    attempt = int(before[-1]["attempt"]) + 1
    assert after[-1]["attempt"] == str(attempt)
    assert float(after[-1]["score"]) == pytest.approx(live.score_of(article.id, attempt), abs=1e-3)
    with live.sessions() as session:
        actions = session.scalars(
            select(ReviewAction).where(ReviewAction.article_id == article.id)
        ).all()
    assert [(a.user, a.action) for a in actions] == [("rita", "rejected")]
    page.reload()
    assert "rejected" in page.locator("#history").inner_text()


def test_editing_attributes_changes_the_prompt_and_the_image(page, live):
    article = live.articles()[1]
    log_in(page, live, "rita")
    page.goto(f"{live.url}/articles/{article.id}")
    first = attempts_on(page)
    field = page.locator("#attributes-form input[type=text]").first
    field.fill("karierter Wollmantel mit Gürtel")
    page.click("#attributes-form button[type=submit]")
    shown = wait_for_attempts(page, len(first) + 1)
    page.reload()
    prompt = page.locator("#prompt-form textarea").input_value()
    assert "karierter Wollmantel mit Gürtel" in prompt
    old = page.request.get(live.url + first[-1]["src"]).body()
    new = page.request.get(live.url + shown[-1]["src"]).body()
    assert old and new and old != new
    live.wait_ended()
    (edited,) = [a for a in live.articles() if a.id == article.id]
    published = json.loads(Path(edited.image_path).with_suffix(".json").read_text())
    assert published["attempt"] == int(shown[-1]["attempt"])  # the new picture is published
    assert "karierter Wollmantel mit Gürtel" in published["generation_prompt"]


def test_approving_selected_articles_and_downloading_the_zip(page, live):
    chosen = live.articles()[2:4]
    log_in(page, live, "rita")
    page.goto(f"{live.url}/batches/{live.batch_id}")
    for article in chosen:
        page.check(f"article.card[data-article-id='{article.id}'] input[type=checkbox]")
    page.click("#approve-selected-form button[type=submit]")
    page.wait_for_selector(f"article.card[data-article-id='{chosen[0].id}'][data-review=approved]")
    response = page.request.get(f"{live.url}/batches/{live.batch_id}/approved.zip")
    assert response.status == 200
    archive = zipfile.ZipFile(io.BytesIO(response.body()))
    images = [n for n in archive.namelist() if n.endswith(".png")]
    sheets = [n for n in archive.namelist() if n.endswith(".csv")]
    assert len(images) == 2 and len(sheets) == 1
    out = live.studio.log_path.with_name("export.csv")
    exported = farm(live.env, "export", live.batch_id, "--format", "csv", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    approved = {r["key"] for r in rows if r["review_status"] == "approved"}
    assert approved == {a.key for a in chosen}


def test_an_admin_regenerates_every_unapproved_picture_below_a_threshold(page, live):
    live.wait_ended()
    open_ = [a for a in live.articles() if a.review_status != "approved"]
    threshold = statistics.median(a.clip_score for a in open_)
    below = {a.id: live.renders(a.id) for a in open_ if a.clip_score < threshold}
    untouched = {a.id: live.renders(a.id) for a in live.articles() if a.id not in below}
    assert below
    log_in(page, live, "ada")
    page.goto(f"{live.url}/batches/{live.batch_id}")
    page.fill("#bulk-regenerate-form input[name=threshold]", repr(threshold))
    page.click("#bulk-regenerate-form button[type=submit]")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if all(live.renders(i) == n + 1 for i, n in below.items()):
            break
        time.sleep(0.5)
    assert {i: live.renders(i) for i in below} == {i: n + 1 for i, n in below.items()}
    live.wait_ended()
    assert {i: live.renders(i) for i in untouched} == untouched


def test_a_reviewer_may_not_act_on_a_whole_batch(page, live):
    log_in(page, live, "rita")
    page.goto(f"{live.url}/batches/{live.batch_id}")
    token = page.locator("input[name=csrf]").first.input_value()
    approved_before = [a.id for a in live.articles() if a.review_status == "approved"]
    response = page.request.post(
        f"{live.url}/batches/{live.batch_id}/approve-above",
        form={"csrf": token, "threshold": "-1"},
        max_redirects=0,
    )
    assert response.status == 403
    assert [a.id for a in live.articles() if a.review_status == "approved"] == approved_before


def test_an_anonymous_request_and_a_request_without_csrf_token_are_refused(page, live):
    article = live.articles()[4]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{live.url}/batches/{live.batch_id}/approved.zip", timeout=10)
    assert refused.value.code == 401
    page.goto(f"{live.url}/login")  # anyone may fetch the login form and its token
    token = page.locator("#login-form input[name=csrf]").input_value()
    anonymous = page.request.post(
        f"{live.url}/articles/{article.id}/approve", form={"csrf": token}, max_redirects=0
    )
    assert anonymous.status == 303
    assert anonymous.headers["location"].startswith("/login")
    log_in(page, live, "rita")
    forged = page.request.post(
        f"{live.url}/articles/{article.id}/approve", form={}, max_redirects=0
    )
    assert forged.status == 403
    with live.sessions() as session:
        assert session.get(Article, article.id).review_status is None


@pytest.mark.own_services  # over `farm demo`: SQLite, no service
def test_the_screenshot_command_photographs_the_contact_sheet_and_an_article(tmp_path):
    result = subprocess.run(
        [sys.executable, "docs/screenshots.py", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("contact-sheet.png", "article.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.width == 1280 and picture.height >= 800
