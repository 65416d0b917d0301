"""Building blocks of the review studio tests: a stored batch, the app over it, and helpers."""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from argon2 import PasswordHasher
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, Render, ReviewAction, ReviewStatus, User
from producer.review.app import create_app
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
            render = new_render(None, attempt, attempt_png(output, spec, attempt), score)
            article.renders.append(render)
        article.render_attempt = attempts
    return article


@functools.cache
def png(size: tuple[int, int], colour: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def attempt_png(output: Path, spec: Spec, attempt: int) -> Path:
    path = output / BATCH / "attempts" / f"stem{spec.index}.{attempt}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png((600, 400), (30 * attempt, 90, 160, 255)))
    return path


def new_render(article_id: int | None, attempt: int, image: Path, score: float | None) -> Render:
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


def add_view(studio: Studio, key: str, view: str, **changes) -> int:
    """A copy of article ``key`` in another view (with ``changes``); returns its id."""
    with studio.sessions() as session:
        front = session.get(Article, studio.ids[key])
        columns = {c.name: getattr(front, c.name) for c in Article.__table__.columns}
        copy = Article(**(columns | {"id": None, "view": view} | changes))
        session.add(copy)
        session.commit()
        return copy.id


def land(studio: Studio, key: str, attempt: int, score: float = 0.3) -> None:
    """A worker's new attempt of article ``key``: its render stored, the article scored and done."""
    spec = SPECS[int(key[-3:])]
    with studio.sessions() as session:
        article = session.get(Article, studio.ids[key])
        image = attempt_png(studio.output, spec, attempt)
        session.add(new_render(article.id, attempt, image, score))
        article.status, article.clip_score = ArticleStatus.done.value, score
        session.commit()
