"""The review studio's web app, through Starlette's test client, on a real SQLite database."""

from __future__ import annotations

import csv
import functools
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from PIL import Image
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, ReviewAction, ReviewStatus, User
from producer.review import actions, downloads
from producer.review.app import create_app
from producer.review.users import add_user
from tasks.exceptions import UserError
from tasks.outputs import view_stem
from tasks.settings import Settings
from tests.unit.test_report import Elements

BATCH = "b1"
ARTICLES = 150
REMOVED = ARTICLES - 1  # index of the article whose row left the catalog
MIN_SCORE = 0.25
HOSTILE_NAME = "<script>alert('name')</script>"
PASSWORD = "correct horse battery"
ADMIN, REVIEWER = "ada", "rolf"


@dataclass(frozen=True)
class Spec:
    """How the test batch's article number ``index`` is stored."""

    index: int

    @property
    def key(self) -> str:
        return f"SKU-{self.index:03d}"

    @property
    def status(self) -> str:
        if self.index % 10 == 9:
            return ArticleStatus.failed.value
        if self.index % 10 == 8:
            return ArticleStatus.needs_review.value
        return ArticleStatus.done.value

    @property
    def score(self) -> float | None:
        if self.status == ArticleStatus.failed.value:
            return None
        return round(0.10 + (self.index % 30) * 0.01, 2)

    @property
    def review(self) -> str | None:
        if self.status == ArticleStatus.failed.value:
            return None
        if self.index % 7 == 0:
            return ReviewStatus.approved.value
        if self.index % 11 == 0:
            return ReviewStatus.rejected.value
        return None

    @property
    def name(self) -> str:
        return HOSTILE_NAME if self.index == 3 else f"Seidenbluse {self.index}"


SPECS = [Spec(i) for i in range(ARTICLES)]
KEPT = [s for s in SPECS if s.index != REMOVED]


@dataclass
class Studio:
    """A studio app over a stored batch, with a client that does not follow redirects."""

    client: TestClient
    sessions: sessionmaker[Session]
    engine: object
    output: Path
    ids: dict[str, int]  # article key -> id


def make_studio(
    tmp_path: Path,
    users: bool = True,
    loopback: bool = True,
    auth_header: str | None = None,
    https_only: bool = False,
    peer: str = "127.0.0.1",
    trusted_proxies: str = "127.0.0.1,::1",
) -> Studio:
    """Batch ``b1`` with 150 articles (one removed), renders with PNGs, and two users.

    Article 0 has three attempts and a review history; failed articles have no render. The
    client's requests come from ``peer``.
    """
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    output = tmp_path / "output"
    with sessions() as session:
        session.add(Batch(id=BATCH, catalog="herbst", profile="tiny", min_clip_score=MIN_SCORE))
        articles = [_store(session, spec, output) for spec in SPECS]
        session.flush()
        ids = {article.key: article.id for article in articles}
        _history(session, ids[SPECS[0].key])
        if users:
            session.add(User(name=ADMIN, password_hash=password_hash(), role="admin"))
            session.add(User(name=REVIEWER, password_hash=password_hash(), role="reviewer"))
        session.commit()
    settings = Settings(
        output_dir=output,
        review_secret="s" * 40,
        review_auth_header=auth_header,
        review_https_only=https_only,
        review_trusted_proxies=trusted_proxies,
    )
    app = create_app(settings, sessions, celery_app=object(), bound_to_loopback=loopback)
    client = TestClient(app, follow_redirects=False, client=(peer, 50000))
    return Studio(client, sessions, engine, output, ids)


def _store(session: Session, spec: Spec, output: Path) -> Article:
    image = output / BATCH / f"stem{spec.index}.png"
    has_picture = spec.status != ArticleStatus.failed.value
    article = Article(
        batch_id=BATCH,
        key=spec.key,
        file_stem=f"stem{spec.index}",
        source_file="herbst.csv",
        source_sheet="csv",
        source_row=spec.index + 2,
        source_text=f"Leichte Seidenbluse Nummer {spec.index} mit Schluppe und langen Ärmeln. " * 4,
        source_columns={"name": spec.name, "description": "Seidenbluse"},
        translation=f"Light silk blouse number {spec.index}",
        attributes={"product_type": "blouse", "color_material_details": "red silk"},
        generation_prompt="a red silk blouse, studio photo",
        clip_prompt="Product image of a blouse",
        status=spec.status,
        clip_score=spec.score,
        image_path=str(image) if has_picture else None,
        review_status=spec.review,
        reviewed_by=ADMIN if spec.review else None,
        removed_at=datetime(2025, 1, 1, tzinfo=timezone.utc) if spec.index == REMOVED else None,
        error="the translation is <empty>" if not has_picture else None,
    )
    session.add(article)
    if has_picture:
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(png((96, 64), (200, spec.index, 40)))
        attempts = 3 if spec.index == 0 else 1
        for attempt in range(1, attempts + 1):
            score = spec.score if attempt == attempts else (spec.score or 0) - 0.05 * attempt
            render = _render(None, attempt, _attempt_png(output, spec, attempt), score)
            article.renders.append(render)
        article.render_attempt = attempts
    return article


@functools.cache
def png(size: tuple[int, int], colour: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _attempt_png(output: Path, spec: Spec, attempt: int) -> Path:
    path = output / BATCH / "attempts" / f"stem{spec.index}.{attempt}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png((600, 400), (30 * attempt, 90, 160, 255)))
    return path


def _render(article_id: int | None, attempt: int, image: Path, score: float | None) -> Render:
    return Render(
        article_id=article_id,
        attempt=attempt,
        seed=1000 + attempt,
        model_id="tiny-flux",
        lora="fashion-lora",
        width=600,
        height=400,
        steps=2,
        image_path=str(image),
        seconds=0.1,
        worker="gpu@host",
        clip_score=score,
    )


def _history(session: Session, article_id: int) -> None:
    session.add(
        ReviewAction(
            batch_id=BATCH,
            article_id=article_id,
            user=REVIEWER,
            action="edit_prompt",
            before={"generation_prompt": "a blouse"},
            after={"generation_prompt": "a red silk blouse, studio photo"},
        )
    )


@functools.cache
def password_hash() -> str:
    """The argon2 hash of the tests' password, made once: hashing takes a noticeable while."""
    return PasswordHasher().hash(PASSWORD)


@pytest.fixture
def studio(tmp_path) -> Studio:
    return make_studio(tmp_path)


@pytest.mark.parametrize("https_only", [False, True])
def test_the_session_cookie_is_http_only_and_secure_when_served_through_https(tmp_path, https_only):
    studio = make_studio(tmp_path, https_only=https_only)
    cookie = studio.client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert ("secure" in cookie.split("; ")) is https_only


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(studio: Studio, name: str = ADMIN, password: str = PASSWORD):
    page = studio.client.get("/login")
    return studio.client.post(
        "/login", data={"csrf": csrf_of(page.text), "name": name, "password": password}
    )


def post(studio: Studio, path: str, data: dict | None = None, page: str = "/"):
    """POST a form with the token of ``page``, as a browser on that page does."""
    token = csrf_of(studio.client.get(page).text)
    return studio.client.post(path, data={"csrf": token, **(data or {})})


def cards(html: str) -> list[dict]:
    return Elements(html).find("article", "card")


def total_of(html: str) -> int:
    count = [a for t, a in Elements(html).tags if a.get("id") == "sheet-count"][0]
    return int(count["data-total"])


def flashes(studio: Studio, page: str) -> str:
    return " ".join(
        re.findall(r'class="flash flash-\w+"[^>]*>([^<]*)<', studio.client.get(page).text)
    )


# Logging in and out


def test_a_user_with_the_right_password_is_logged_in_and_sees_their_name_and_role(studio):
    with studio.sessions() as session:
        add_user(session, "grete", "another good password", role="admin")
    response = login(studio, "grete", "another good password")
    assert response.status_code == 303 and response.headers["location"] == "/"
    page = studio.client.get("/")
    assert page.status_code == 200
    user = [a for t, a in Elements(page.text).tags if a.get("id") == "current-user"][0]
    assert (user["data-name"], user["data-role"]) == ("grete", "admin")
    assert 'id="logout-form"' in page.text


def test_a_wrong_password_or_an_unknown_name_shows_the_form_again_without_a_session(studio):
    for name, password in ((ADMIN, "wrong password"), ("nobody", PASSWORD)):
        response = login(studio, name, password)
        assert response.status_code == 401
        assert "unknown user or wrong password" in response.text
        assert 'id="login-form"' in response.text
    assert studio.client.get("/").status_code == 303


def test_login_goes_on_to_the_page_asked_for_but_never_to_another_site(studio):
    for target, expected in (("/batches/b1", "/batches/b1"), ("//evil.example", "/")):
        studio.client.cookies.clear()
        page = studio.client.get("/login")
        data = {"csrf": csrf_of(page.text), "name": ADMIN, "password": PASSWORD, "next": target}
        response = studio.client.post("/login", data=data)
        assert response.headers["location"] == expected


def replay(studio: Studio, cookies: dict, path: str = "/"):
    """GET ``path`` with exactly these cookies, as a copy of an old cookie would."""
    studio.client.cookies.clear()
    studio.client.cookies.update(cookies)
    return studio.client.get(path)


def test_logging_out_ends_the_session_and_every_copy_of_its_cookie(studio):
    login(studio)
    copied = dict(studio.client.cookies)
    assert replay(studio, copied).status_code == 200
    response = post(studio, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert studio.client.get("/").status_code == 303
    assert replay(studio, copied).status_code == 303
    assert replay(studio, copied, "/fragments/batches").status_code == 401


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(studio):
    login(studio, REVIEWER)
    copied = dict(studio.client.cookies)
    with studio.sessions() as session:
        add_user(session, REVIEWER, "a brand new password", role="reviewer", replace=True)
    assert replay(studio, copied).status_code == 303
    login(studio, REVIEWER, "a brand new password")
    assert studio.client.get("/").status_code == 200


def test_an_old_cookie_replayed_at_logout_does_not_end_the_users_new_session(studio):
    login(studio)
    stale = dict(studio.client.cookies)
    post(studio, "/logout")
    login(studio)
    fresh = dict(studio.client.cookies)
    token = csrf_of(replay(studio, stale, "/login").text)
    studio.client.post("/logout", data={"csrf": token})
    assert replay(studio, fresh).status_code == 200


def test_anonymous_browsers_go_to_login_and_anonymous_data_requests_get_401(studio):
    page = studio.client.get("/batches/b1?page=2")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fbatches%2Fb1%3Fpage%3D2"
    article_id = studio.ids["SKU-000"]
    for path in (
        "/renders/1/thumb",
        "/renders/1/image",
        f"/articles/{article_id}/state.json",
        f"/articles/{article_id}/live",
        "/batches/b1/approved.zip",
        "/fragments/batches",
    ):
        assert studio.client.get(path).status_code == 401, path


POSTS = [
    "/login",
    "/logout",
    "/articles/{id}/approve",
    "/articles/{id}/reject",
    "/articles/{id}/attributes",
    "/articles/{id}/prompt",
    "/batches/b1/approve-selected",
    "/batches/b1/regenerate-below",
    "/batches/b1/approve-above",
]


def test_an_anonymous_post_with_a_valid_csrf_token_is_sent_to_login_and_changes_nothing(studio):
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    token = csrf_of(studio.client.get("/login").text)  # the anonymous session's own token
    response = studio.client.post(f"{page}/approve", data={"csrf": token, "back": page})
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=%2Farticles%2F{article_id}"
    with studio.sessions() as session:
        assert session.get(Article, article_id).review_status is None
        assert session.scalars(select(ReviewAction.action)).all() == ["edit_prompt"]


@pytest.mark.parametrize("path", POSTS)
def test_every_post_without_the_session_csrf_token_is_refused(studio, path):
    login(studio)
    path = path.format(id=studio.ids["SKU-001"])
    form = {"name": ADMIN, "password": PASSWORD, "threshold": "0.5", "article": "1"}
    assert studio.client.post(path, data=form).status_code == 403
    assert studio.client.post(path, data=form | {"csrf": "forged"}).status_code == 403
    with studio.sessions() as session:
        assert session.scalars(select(ReviewAction.action)).all() == ["edit_prompt"]


# The batches page


def test_the_batches_page_counts_farm_and_review_statuses_and_scores(studio):
    login(studio)
    page = studio.client.get("/")
    rows = Elements(page.text).find("tr", "batch")
    assert [(r["data-batch-id"], r["data-total"], r["data-running"]) for r in rows] == [
        (BATCH, str(len(KEPT)), "false")
    ]
    chips = {(a.get("data-status") or a.get("data-review")): a["data-count"]
             for a in Elements(page.text).find("span", "chip")}  # fmt: skip
    assert chips["failed"] == str(sum(s.status == "failed" for s in KEPT))
    assert chips["approved"] == str(sum(s.review == "approved" for s in KEPT))
    assert chips["unreviewed"] == str(sum(s.review is None for s in KEPT))
    scores = [s.score for s in KEPT if s.score is not None]
    assert f"{min(scores):.4g}" in page.text and f"{max(scores):.4g}" in page.text
    assert "herbst" in page.text


def test_the_batches_table_is_polled_as_a_fragment_that_says_when_batches_run(studio):
    login(studio)
    with studio.sessions() as session:
        session.get(Article, studio.ids["SKU-002"]).status = ArticleStatus.extracted.value
        session.commit()
    fragment = studio.client.get("/fragments/batches")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'data-running="true"' in fragment.text and 'data-poll-seconds="5"' in fragment.text
    assert 'data-poll-url="/fragments/batches"' in studio.client.get("/").text


# The contact sheet


def expected(keep) -> list[str]:
    return [s.key for s in KEPT if keep(s)]


FILTERS = {
    "all": lambda s: True,
    "failed": lambda s: s.status == "failed",
    "below": lambda s: s.score is not None and s.score < MIN_SCORE,
    "needs_review": lambda s: s.status == "needs_review",
    "approved": lambda s: s.review == "approved",
    "rejected": lambda s: s.review == "rejected",
    "unreviewed": lambda s: s.review is None,
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_of_the_contact_sheet_counts_and_pages_its_articles(studio, name):
    login(studio)
    keys = expected(FILTERS[name])
    shown = []
    for number in range(1, 4):
        page = studio.client.get(f"/batches/b1?filter={name}&page={number}")
        count = [a for t, a in Elements(page.text).tags if a.get("id") == "sheet-count"][0]
        assert int(count["data-total"]) == len(keys)
        shown += [c["data-key"] for c in cards(page.text)][: 60 if number < 3 else None]
        if int(count["data-pages"]) == number:
            break
    assert shown == keys


def test_the_contact_sheet_shows_60_cards_a_page_and_the_rest_on_the_last(studio):
    login(studio)
    sizes = [len(cards(studio.client.get(f"/batches/b1?page={n}").text)) for n in (1, 2, 3)]
    assert sizes == [60, 60, len(KEPT) - 120]
    past_the_end = cards(studio.client.get("/batches/b1?page=99").text)
    assert [c["data-key"] for c in past_the_end] == [s.key for s in KEPT[120:]]
    assert "SKU-149" not in studio.client.get("/batches/b1?page=3").text  # removed


def test_sorting_by_score_puts_unscored_articles_last_both_ways(studio):
    login(studio)
    scored = sorted((s for s in KEPT if s.score is not None), key=lambda s: (s.score, s.index))
    ascending = cards(studio.client.get("/batches/b1?sort=score").text)
    assert [float(c["data-score"]) for c in ascending] == [s.score for s in scored[:60]]
    descending = cards(studio.client.get("/batches/b1?sort=score_desc").text)
    assert float(descending[0]["data-score"]) == max(s.score for s in scored)
    last = cards(studio.client.get("/batches/b1?sort=score_desc&page=3").text)
    assert last[-1]["data-score"] == "" and last[-1]["data-status"] == "failed"


def test_the_below_filter_takes_a_threshold_else_the_batch_minimum(studio):
    login(studio)
    page = studio.client.get("/batches/b1?filter=below&below=0.15")
    assert [c["data-key"] for c in cards(page.text)] == expected(
        lambda s: s.score is not None and s.score < 0.15
    )
    assert all("below" in c["class"].split() for c in cards(page.text))
    nonsense = studio.client.get("/batches/b1?filter=below&below=abc&sort=nope&page=x")
    assert nonsense.status_code == 200
    assert total_of(nonsense.text) == len(expected(FILTERS["below"]))


def test_cards_carry_name_text_key_score_status_review_attempt_and_a_thumbnail(studio):
    login(studio)
    card = cards(studio.client.get("/batches/b1").text)[0]
    first = studio.client.get("/batches/b1").text.split('<article class="card')[1]
    assert re.search(r'<dt>attempt</dt><dd class="attempt">3</dd>', first)
    assert card == card | {
        "data-article-id": str(studio.ids["SKU-000"]),
        "data-key": "SKU-000",
        "data-score": "0.1",
        "data-status": "done",
        "data-review": "approved",
    }
    text = studio.client.get("/batches/b1").text
    assert "Seidenbluse 0" in text and "Leichte Seidenbluse Nummer 0" in text
    thumbs = [a["src"] for a in Elements(text).find("img", "thumb")]
    with studio.sessions() as session:
        best = session.scalar(
            select(Render.id).where(Render.article_id == studio.ids["SKU-000"], Render.attempt == 3)
        )
    assert thumbs[0] == f"/renders/{best}/thumb"


def test_catalog_text_is_escaped_everywhere(studio):
    login(studio)
    for path in ("/batches/b1", f"/articles/{studio.ids['SKU-003']}"):
        text = studio.client.get(path).text
        assert HOSTILE_NAME not in text
        assert "&lt;script&gt;alert(" in text


def test_a_contact_sheet_page_reads_the_articles_with_one_count_and_one_page_query(studio):
    login(studio)
    statements = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(studio.engine, "before_cursor_execute", listen)
    try:
        for number in (1, 3):
            statements.clear()
            assert studio.client.get(f"/batches/b1?page={number}&sort=score").status_code == 200
            reading_articles = [s for s in statements if "articles" in s]
            assert len(reading_articles) == 2, reading_articles
            assert "count(" in reading_articles[0].lower()
            assert "LIMIT" in reading_articles[1]
    finally:
        event.remove(studio.engine, "before_cursor_execute", listen)


def test_reviewers_get_the_approve_selected_form_and_only_admins_the_bulk_forms(studio):
    login(studio, REVIEWER)
    text = studio.client.get("/batches/b1").text
    assert 'id="approve-selected-form"' in text and 'id="bulk-regenerate-form"' not in text
    assert 'href="/batches/b1/approved.zip"' in text
    studio.client.cookies.clear()
    login(studio, ADMIN)
    text = studio.client.get("/batches/b1").text
    assert 'id="bulk-regenerate-form"' in text and 'id="bulk-approve-form"' in text


# The article page


def test_the_article_page_shows_texts_attributes_prompts_attempts_and_history(studio):
    login(studio)
    article_id = studio.ids["SKU-000"]
    page = studio.client.get(f"/articles/{article_id}")
    assert page.status_code == 200
    elements = Elements(page.text)
    attempts = elements.find("figure", "attempt")
    assert [a["data-attempt"] for a in attempts] == ["1", "2", "3"]
    assert attempts[2]["data-score"] == "0.1" and "published" in attempts[2]["class"]
    assert "seed 1003" in page.text and "tiny-flux + fashion-lora" in page.text
    inputs = {a["name"]: a["value"] for t, a in elements.tags if t == "input" and "name" in a}
    assert inputs["attr.product_type"] == "blouse"
    assert inputs["attr.color_material_details"] == "red silk"
    for form in ("approve-form", "reject-form", "attributes-form", "prompt-form"):
        assert f'id="{form}"' in page.text
        inside = page.text.split(f'id="{form}"')[1].split("</form>")[0]
        assert '<input type="hidden" name="attempt" value="3">' in inside, form
    assert "Leichte Seidenbluse" in page.text and "Light silk blouse number 0" in page.text
    assert "Product image of a blouse" in page.text
    history = elements.find("tr", "history-entry")
    assert [(h["data-action"], h["data-user"]) for h in history] == [("edit_prompt", REVIEWER)]
    assert "a blouse" in page.text


def test_the_article_state_says_status_attempts_and_latest_score_and_changes_with_them(studio):
    login(studio)
    article_id = studio.ids["SKU-000"]
    first = studio.client.get(f"/articles/{article_id}/state.json").json()
    assert first | {"version": None} == {
        "id": article_id,
        "status": "done",
        "review_status": "approved",
        "clip_score": 0.1,
        "renders": 3,
        "latest_attempt": 3,
        "latest_score": 0.1,
        "version": None,
    }
    with studio.sessions() as session:
        image = _attempt_png(studio.output, SPECS[0], 4)
        session.add(_render(article_id, 4, image, 0.33))
        session.commit()
    later = studio.client.get(f"/articles/{article_id}/state.json").json()
    assert (later["renders"], later["latest_score"]) == (4, 0.33)
    assert later["version"] != first["version"]
    live = studio.client.get(f"/articles/{article_id}/live").text
    assert [a["data-attempt"] for a in Elements(live).find("figure", "attempt")][-1] == "4"
    assert studio.client.get("/articles/999999/state.json").status_code == 404


def test_an_unknown_or_removed_article_or_batch_is_a_404(studio):
    login(studio)
    assert studio.client.get("/articles/999999").status_code == 404
    assert studio.client.get(f"/articles/{studio.ids['SKU-149']}").status_code == 404
    assert studio.client.get("/batches/nope").status_code == 404


@pytest.mark.parametrize("article_id", [str(2**31), str(2**63), "9" * 5000, "abc", "١٢", "-1"])
def test_ids_in_paths_that_no_row_can_have_are_a_404_not_a_server_error(studio, article_id):
    login(studio)
    for path in ("/articles/{}", "/articles/{}/state.json", "/renders/{}/thumb"):
        assert studio.client.get(path.format(article_id)).status_code == 404, path
    assert post(studio, f"/articles/{article_id}/approve").status_code == 404


# Images and the archive


def test_thumbnails_are_256_pixel_jpegs_cached_under_the_output_folder(studio):
    login(studio)
    with studio.sessions() as session:
        render = session.scalar(select(Render).where(Render.article_id == studio.ids["SKU-000"]))
    response = studio.client.get(f"/renders/{render.id}/thumb")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 171))
    cached = list((studio.output / ".thumbs").glob("*.jpg"))
    assert len(cached) == 1
    assert studio.client.get(f"/renders/{render.id}/thumb").content == cached[0].read_bytes()
    full = studio.client.get(f"/renders/{render.id}/image")
    assert full.headers["content-type"] == "image/png"
    assert full.content == Path(render.image_path).read_bytes()


def test_a_missing_render_or_image_file_is_a_404(studio):
    login(studio)
    with studio.sessions() as session:
        render = session.scalar(select(Render).where(Render.article_id == studio.ids["SKU-001"]))
    Path(render.image_path).unlink()
    assert studio.client.get(f"/renders/{render.id}/thumb").status_code == 404
    assert studio.client.get(f"/renders/{render.id}/image").status_code == 404
    assert studio.client.get("/renders/999999/thumb").status_code == 404


def test_the_approved_zip_holds_the_approved_pictures_and_their_export_sheet(studio):
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    approved = [s for s in KEPT if s.review == "approved"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = sorted(bundle.namelist())
        assert names == sorted(["approved.csv", *(f"images/stem{s.index}.png" for s in approved)])
        sheet = bundle.read("approved.csv").decode("utf-8-sig")
        picture = bundle.read(f"images/stem{approved[0].index}.png")
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert [r["key"] for r in rows] == [s.key for s in approved]
    assert {r["reviewed_by"] for r in rows} == {ADMIN}
    assert picture == (studio.output / BATCH / f"stem{approved[0].index}.png").read_bytes()
    assert not list(studio.output.glob(".review-zip-*"))  # the scratch folder is gone


def add_view(studio: Studio, key: str, view: str, **changes) -> int:
    """A copy of article ``key`` in another view (with ``changes``); returns its id."""
    with studio.sessions() as session:
        front = session.get(Article, studio.ids[key])
        columns = {c.name: getattr(front, c.name) for c in Article.__table__.columns}
        copy = Article(**(columns | {"id": None, "view": view} | changes))
        session.add(copy)
        session.commit()
        return copy.id


def test_an_article_page_links_to_the_other_views_of_its_row(studio):
    key = KEPT[0].key
    detail, back = add_view(studio, key, "detail"), add_view(studio, key, "back")
    login(studio)
    page = studio.client.get(f"/articles/{studio.ids[key]}").text
    views = re.search(r'<nav class="views" id="views">(.*?)</nav>', page, re.S).group(1)
    assert re.findall(r'href="/articles/(\d+)" data-view="(\w+)"', views) == [
        (str(back), "back"),
        (str(detail), "detail"),
    ]
    assert "<strong>front</strong>" in views
    alone = studio.client.get(f"/articles/{studio.ids[KEPT[1].key]}").text
    assert 'id="views"' not in alone


def test_the_zip_keeps_both_views_of_a_row_under_their_own_names(studio):
    key = next(s.key for s in KEPT if s.review == "approved")
    with studio.sessions() as session:
        front = session.get(Article, studio.ids[key])
    back_stem = view_stem(front.file_stem, "back")
    back_image = studio.output / BATCH / f"{back_stem}.png"
    back_image.write_bytes(png((32, 32), (1, 2, 3)))
    add_view(studio, key, "back", image_path=str(back_image))
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = set(bundle.namelist())
        assert f"images/{front.file_stem}.png" in names
        assert bundle.read(f"images/{back_stem}.png") == back_image.read_bytes()


def test_the_zip_pairs_sheet_rows_with_articles_by_key_and_view_not_by_position(
    studio, monkeypatch
):
    export_rows = downloads.export_rows
    monkeypatch.setattr(downloads, "export_rows", lambda s, b: export_rows(s, b)[::-1])
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        rows = list(csv.DictReader(io.StringIO(bundle.read("approved.csv").decode("utf-8-sig"))))
    by_key = {s.key: s for s in KEPT}
    assert [r["key"] for r in rows] == [s.key for s in KEPT if s.review == "approved"]
    assert all(r["archive_image"] == f"images/stem{by_key[r['key']].index}.png" for r in rows)


def test_the_zip_is_written_after_the_database_session_is_closed(studio, monkeypatch):
    write_archive = downloads.write_archive
    open_connections = []

    def spying(*args):
        open_connections.append(studio.engine.pool.checkedout())
        return write_archive(*args)

    monkeypatch.setattr(downloads, "write_archive", spying)
    login(studio)
    assert studio.client.get("/batches/b1/approved.zip").status_code == 200
    assert open_connections == [0]


# Actions


def test_approving_selected_articles_records_the_verdict_and_goes_back_with_a_message(studio):
    login(studio, REVIEWER)
    ids = [studio.ids["SKU-001"], studio.ids["SKU-002"]]
    back = "/batches/b1?filter=unreviewed"
    response = post(
        studio, "/batches/b1/approve-selected", {"article": ids, "back": back}, page=back
    )
    assert response.status_code == 303 and response.headers["location"] == back
    assert "approved 2 articles" in flashes(studio, back)
    with studio.sessions() as session:
        for article_id in ids:
            article = session.get(Article, article_id)
            assert (article.review_status, article.reviewed_by) == ("approved", REVIEWER)


def test_a_refused_action_is_flashed_on_the_page_it_came_from(studio):
    login(studio)
    article_id = studio.ids["SKU-009"]  # failed: no picture to approve
    page = f"/articles/{article_id}"
    response = post(studio, f"{page}/approve", {"back": page}, page=page)
    assert response.status_code == 303 and response.headers["location"] == page
    assert "nothing to approve" in flashes(studio, page)


def test_a_reviewer_may_not_act_on_a_whole_batch(studio):
    login(studio, REVIEWER)
    response = post(studio, "/batches/b1/approve-above", {"threshold": "0.2"})
    assert response.status_code == 403 and "not allowed" in response.text
    response = post(studio, "/batches/b1/regenerate-below", {"threshold": "0.2"})
    assert response.status_code == 403


def test_an_admin_approves_everything_above_a_threshold(studio):
    login(studio, ADMIN)
    response = post(studio, "/batches/b1/approve-above", {"threshold": "0.38"}, page="/batches/b1")
    assert response.status_code == 303
    should = [s for s in KEPT if s.score is not None and s.score >= 0.38 and s.review != "approved"]
    assert f"approved {len(should)} articles scoring 0.38 or more" in flashes(studio, "/batches/b1")
    nonsense = post(studio, "/batches/b1/approve-above", {"threshold": "lots"})
    assert nonsense.status_code == 303
    assert "threshold as a number" in flashes(studio, "/")


@pytest.fixture
def sent(monkeypatch) -> list:
    """The chains the actions send, recorded instead of going to a broker."""
    chains = []
    monkeypatch.setattr(actions, "check_broker", lambda app: None)
    monkeypatch.setattr(
        actions, "send_and_mark", lambda app, engine, items, priority: chains.extend(items)
    )
    return chains


def test_rejecting_renders_a_new_attempt_and_records_the_verdict(studio, sent):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    response = post(studio, f"{page}/reject", {"back": page}, page=page)
    assert response.status_code == 303 and response.headers["location"] == page
    assert sent == [(article_id, "SKU-001", "render")]
    assert "a new attempt is on its way" in flashes(studio, page)
    with studio.sessions() as session:
        article = session.get(Article, article_id)
        assert (article.review_status, article.render_attempt) == ("rejected", 2)
    history = Elements(studio.client.get(page).text).find("tr", "history-entry")
    assert [h["data-action"] for h in history] == ["rejected"]


def test_edited_attributes_and_prompt_go_to_the_actions_as_sent(studio, monkeypatch):
    calls = []
    monkeypatch.setattr(
        actions,
        "edit_attributes",
        lambda s, app, i, attributes, r, seen_attempt: calls.append((i, attributes, seen_attempt)),
    )
    monkeypatch.setattr(
        actions,
        "edit_prompt",
        lambda s, app, i, prompt, r, seen_attempt: calls.append((i, prompt, r, seen_attempt)),
    )
    login(studio)
    article_id = studio.ids["SKU-005"]
    page = f"/articles/{article_id}"
    form = {"attr.product_type": " skirt ", "other": "x", "attempt": "1"}
    assert post(studio, f"{page}/attributes", form, page=page).status_code == 303
    prompt = {"prompt": "a pleated skirt", "attempt": "1"}
    assert post(studio, f"{page}/prompt", prompt, page=page).status_code == 303
    assert calls == [
        (article_id, {"product_type": "skirt"}, 1),  # only what was sent: the rest is kept
        (article_id, "a pleated skirt", actions.Reviewer(ADMIN, "admin"), 1),
    ]


@pytest.mark.parametrize(
    ("sent_attempt", "passed"),
    [("3", 3), ("", None), ("x", None), ("٣", None), ("³", None), ("1234567890", None)],
)
def test_the_attempt_a_form_carries_reaches_the_actions_when_it_is_a_plain_number(
    studio, monkeypatch, sent_attempt, passed
):
    calls = []
    record = lambda *args, **kwargs: calls.append(kwargs) or 1  # noqa: E731
    monkeypatch.setattr(actions, "approve", record)
    monkeypatch.setattr(actions, "reject_and_regenerate", record)
    login(studio)
    article_id = studio.ids["SKU-000"]
    page = f"/articles/{article_id}"
    form = {"attempt": sent_attempt}
    post(studio, f"{page}/approve", form, page=page)
    post(studio, f"{page}/reject", form, page=page)
    seen = None if passed is None else {article_id: passed}
    assert calls == [{"seen": seen}, {"seen_attempt": passed}]


def test_approving_a_picture_that_changed_since_the_page_was_shown_is_refused(studio):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    shown = re.search(r'name="attempt" value="(\d+)"', studio.client.get(page).text).group(1)
    with studio.sessions() as session:
        session.get(Article, article_id).render_attempt = int(shown) + 1  # a new picture
        session.commit()
    response = post(studio, f"{page}/approve", {"back": page, "attempt": shown}, page=page)
    assert response.status_code == 303
    assert "changed meanwhile" in flashes(studio, page)
    with studio.sessions() as session:
        assert session.get(Article, article_id).review_status is None


def test_approve_selected_takes_only_plain_ids_and_checks_no_attempt(studio, monkeypatch):
    calls = []
    monkeypatch.setattr(
        actions, "approve", lambda s, ids, r, **kwargs: calls.append((ids, kwargs)) or len(ids)
    )
    login(studio, REVIEWER)
    ids = [studio.ids["SKU-001"], studio.ids["SKU-002"]]
    odd = ["٣", "²", "1" * 10, "-4", " 5", str(2**40)]
    post(studio, "/batches/b1/approve-selected", {"article": [*map(str, ids), *odd]})
    assert calls == [(ids, {"seen": None})]
    calls.clear()
    post(studio, "/batches/b1/approve-selected", {"article": odd})
    assert calls == []
    assert "select at least one article first" in flashes(studio, "/")


# Without users, and behind a proxy


def test_without_users_a_loopback_studio_is_readable_but_every_action_is_refused(tmp_path):
    studio = make_studio(tmp_path, users=False)
    page = studio.client.get("/batches/b1")
    assert page.status_code == 200 and 'id="read-only-banner"' in page.text
    assert 'id="approve-selected-form"' not in page.text
    assert studio.client.get("/renders/1/thumb").status_code == 200
    article = f"/articles/{studio.ids['SKU-000']}"
    response = post(studio, f"{article}/approve", page=article)
    assert response.status_code == 403
    assert "farm review add-user NAME" in response.text


def test_without_users_a_studio_reachable_from_other_machines_shows_nothing(tmp_path):
    studio = make_studio(tmp_path, users=False, loopback=False)
    response = studio.client.get("/batches/b1")
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


@pytest.mark.parametrize("peer", ["203.0.113.7", "testclient", "::ffff:10.0.0.1"])
def test_without_users_a_loopback_studio_shows_nothing_to_another_machine(tmp_path, peer):
    studio = make_studio(tmp_path, users=False, peer=peer)
    response = studio.client.get("/batches/b1")
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


@pytest.mark.parametrize(
    "header",
    [{"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "::2"}],
)
def test_without_users_requests_a_local_proxy_forwards_are_refused(tmp_path, header):
    studio = make_studio(tmp_path, users=False, peer="::1")
    assert studio.client.get("/batches/b1").status_code == 200
    response = studio.client.get("/batches/b1", headers=header)
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


def test_the_trusted_proxy_header_names_a_user_who_must_exist(tmp_path):
    studio = make_studio(tmp_path, auth_header="X-Forwarded-User")
    known = studio.client.get("/", headers={"X-Forwarded-User": REVIEWER})
    assert known.status_code == 200 and f'data-name="{REVIEWER}"' in known.text
    unknown = studio.client.get("/", headers={"X-Forwarded-User": "mallory"})
    assert unknown.status_code == 403
    assert studio.client.get("/").status_code == 303


PROXY_HEADER = "X-Forwarded-User"


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("10.1.2.3", "10.0.0.0/8"), ("::ffff:10.1.2.3", "10.0.0.0/8"), ("fd00::5", "::1, fd00::/64")],
)
def test_the_proxy_header_is_believed_from_a_trusted_network(tmp_path, peer, trusted):
    studio = make_studio(tmp_path, auth_header=PROXY_HEADER, peer=peer, trusted_proxies=trusted)
    page = studio.client.get("/", headers={"X-Forwarded-User": ADMIN})
    assert page.status_code == 200 and f'data-name="{ADMIN}"' in page.text


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("203.0.113.7", "127.0.0.1,::1"), ("testclient", "127.0.0.1"), ("127.0.0.1", "")],
)
def test_the_proxy_header_from_an_untrusted_peer_is_ignored(tmp_path, peer, trusted):
    studio = make_studio(tmp_path, auth_header=PROXY_HEADER, peer=peer, trusted_proxies=trusted)
    assert studio.client.get("/", headers={"X-Forwarded-User": ADMIN}).status_code == 303
    login(studio, REVIEWER)  # the cookie still works
    page = studio.client.get("/", headers={"X-Forwarded-User": ADMIN})
    assert page.status_code == 200 and f'data-name="{REVIEWER}"' in page.text


def test_the_proxy_header_is_ignored_when_none_is_configured(studio):
    assert studio.client.get("/", headers={"X-Forwarded-User": ADMIN}).status_code == 303
    assert studio.client.get("/", headers={"Remote-User": ADMIN}).status_code == 303


def test_a_trusted_proxy_that_is_not_an_address_stops_the_studio(tmp_path):
    with pytest.raises(UserError, match="not-an-ip"):
        make_studio(tmp_path, trusted_proxies="127.0.0.1, not-an-ip")


def test_pages_send_security_headers_and_load_nothing_from_elsewhere(studio):
    login(studio)
    page = studio.client.get(f"/articles/{studio.ids['SKU-000']}")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/studio.css", "/static/studio.js"):
        assert studio.client.get(asset).status_code == 200
