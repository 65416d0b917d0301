"""Tables of the farm: batches, articles, renders (one per attempt) and stage runs."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.clock import server_now


def utcnow() -> datetime:
    """Timezone-aware now, the one clock every row uses."""
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """A stored moment as an aware UTC datetime (SQLite hands them back naive).

    Args:
        moment: a datetime read from the database.

    Returns:
        The same moment, timezone-aware.
    """
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class ArticleStatus(str, Enum):
    """Where an article stands. The happy path runs top to bottom."""

    pending = "pending"
    translated = "translated"
    extracted = "extracted"
    rendered = "rendered"
    done = "done"
    needs_review = "needs_review"
    failed = "failed"


TERMINAL_STATUSES = (ArticleStatus.done, ArticleStatus.needs_review, ArticleStatus.failed)


class ReviewStatus(str, Enum):
    """A merchandiser's verdict on an article's picture, kept beside its farm status."""

    approved = "approved"
    rejected = "rejected"


# What counts and filters call an article no one has judged yet (review_status None).
UNREVIEWED = "unreviewed"


class UserRole(str, Enum):
    """What a review studio user may do: reviewers judge and regenerate, admins also bulk-act."""

    reviewer = "reviewer"
    admin = "admin"


DEFAULT_VIEW = "front"


class Base(DeclarativeBase):
    pass


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    catalog: Mapped[str] = mapped_column(String(255), index=True, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sources: Mapped[list] = mapped_column(JSON, default=list)
    profile: Mapped[str] = mapped_column(String(32))
    min_clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The views rendered per catalog row (front, back, detail, ...); None means front only.
    views: Mapped[list | None] = mapped_column(JSON, nullable=True)

    articles: Mapped[list[Article]] = relationship(back_populates="batch")


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (
        # One article per catalog row and view: a row rendered front and back is two articles.
        UniqueConstraint("batch_id", "key", "view", name="uq_article_batch_key_view"),
        # (status, id), not status alone: "the oldest articles waiting at a stage" then reads
        # only those articles, in id order. With the status index alone PostgreSQL often
        # walks the primary key instead, past every finished article (it assumes the
        # waiting ones are spread evenly), which grows slower as a catalog gets done.
        Index("ix_articles_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    view: Mapped[str] = mapped_column(String(16), default=DEFAULT_VIEW, server_default=DEFAULT_VIEW)
    file_stem: Mapped[str] = mapped_column(String(240))
    source_file: Mapped[str] = mapped_column(Text)
    source_sheet: Mapped[str] = mapped_column(String(255))
    source_row: Mapped[int] = mapped_column(Integer)
    source_text: Mapped[str] = mapped_column(Text)
    # Hash of the model input and the settings that shape the output (re-import skips equal).
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    # The cells read from the source row, under the catalog's own headers (exports show them).
    source_columns: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Set when a re-import no longer found the article's row; it then counts nowhere.
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    translation: Mapped[str | None] = mapped_column(Text, nullable=True)
    attributes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    generation_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    clip_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The text models that made translation and attributes, as the workers that ran those
    # stages loaded them: {"translator": {"repo": ..., "commit": ...}, "extractor": {...}}.
    model_commits: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The render attempt stored as the best, and the one whose picture and JSON were last
    # published under the article's own name; the reaper publishes again where they differ.
    best_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)

    status: Mapped[str] = mapped_column(String(20), default=ArticleStatus.pending.value)
    render_attempt: Mapped[int] = mapped_column(Integer, default=1)
    # First render attempt made for the current text; earlier ones belong to older input.
    attempt_base: Mapped[int] = mapped_column(Integer, default=1)
    stage_attempts: Mapped[int] = mapped_column(Integer, default=0)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The review studio's verdict (ReviewStatus), None until someone judged the picture.
    review_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current lease was taken (the database server's clock).
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the message for the article's next stage was published; None while no message is
    # known to be on its way (just stored, or never sent): the reaper sends those.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Every later change stamps it with the database server's clock (db.clock), which the
    # reaper compares it with; read only in SQL.
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=server_now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    batch: Mapped[Batch] = relationship(back_populates="articles")
    renders: Mapped[list[Render]] = relationship(
        back_populates="article", order_by="Render.attempt"
    )


class Render(Base):
    __tablename__ = "renders"
    __table_args__ = (UniqueConstraint("article_id", "attempt", name="uq_render_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[str] = mapped_column(Text)
    lora: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    image_path: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String(255))
    clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The image models of this attempt: {"renderer": {"repo": ..., "commit": ...}, "lora":
    # ..., "scorer": ...}, the scorer's added by the worker that scored it.
    model_commits: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    article: Mapped[Article] = relationship(back_populates="renders")


class Timer(Base):
    """A farm-wide periodic job's next turn: whoever moves ``due_at`` on runs this turn."""

    __tablename__ = "timers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Mark(Base):
    """A farm-wide value the workers compare against (the broker's epoch)."""

    __tablename__ = "marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StageRun(Base):
    """One execution of one stage on one article: who ran it, how long, how it ended."""

    __tablename__ = "stage_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class User(Base):
    """Someone who may log in to the review studio; the password is stored as an argon2 hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.reviewer.value)
    # Part of every session cookie; raising it (logout, a new password) ends every session.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewAction(Base):
    """One thing a reviewer did to an article: who, when, what, and the values before and after."""

    __tablename__ = "review_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    user: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Why (a reject reason, a note), as the reviewer typed it; None when none was given.
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The render attempt judged, or the first one the action started; None on older rows.
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
