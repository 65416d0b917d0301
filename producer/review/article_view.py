"""The article page's reading of an article: labelled attempts, a history of changes, where
the farm is with it, and the cards before and after it on the sheet the reviewer came from.

:func:`producer.review.queries.article_page` loads the rows; this module says what they mean
to a merchandiser:

* an attempt is labelled **earlier text** only when the text or prompt changed after it (an
  edit of the attributes or the prompt, a requeue from translation or extraction); one
  turned down by a reject is **rejected**, one set aside by "regenerate all below" is
  **regenerated**; an attempt that landed after the last verdict is **new**, awaiting
  review, and never inherits the rejection of the picture before it;
* a history entry lists only the fields that changed (``prompt: old → new``, an attribute
  at a time), with the reason given;
* the verdict chip reads as the contact sheet's cards do ("new attempt 3 · awaiting
  review" once a rejected picture is replaced), see :mod:`producer.review.verdict`;
* the farm status reads as words ("no GPU worker is online"), see
  :mod:`producer.review.farm_view`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy.orm import Session

from db.models import ReviewAction, ReviewStatus, as_utc
from producer.review import farm_view, queries
from producer.review.queries import ArticlePage
from producer.review.sheet_query import Neighbours, SheetQuery, article_neighbours
from producer.review.verdict import Verdict, judged_attempt, verdict

# Actions whose new attempts are made from other text or prompts.
TEXT_ACTIONS = ("edit_attributes", "edit_prompt")
TEXT_STAGES = ("translate", "extract")
VALUE_CHARS = 400  # a longer value is cut in the history
FIELD_NAMES = {
    "generation_prompt": "prompt",
    "clip_prompt": "CLIP prompt",
    "review_status": "verdict",
    "from_stage": "from stage",
    "clip_score": "score",
}
ACTION_TITLES = {
    "approved": "approved",
    "rejected": "rejected",
    "edit_attributes": "edited the attributes",
    "edit_prompt": "edited the prompt",
    "regenerate": "regenerated (below a threshold)",
    "requeue": "requeued (farm requeue)",
}


@dataclass(frozen=True)
class Label:
    """What an attempt is to the reviewer: ``kind`` for the page's style, ``text`` to read."""

    kind: str  # new, rejected, earlier_text, regenerated, approved, set_aside
    text: str
    comment: str | None = None


@dataclass(frozen=True)
class LabelledAttempt:
    """An attempt of the article page with its labels."""

    attempt: queries.Attempt
    labels: list[Label]

    @property
    def render(self):
        return self.attempt.render

    @property
    def published(self) -> bool:
        return self.attempt.published

    @property
    def kinds(self) -> str:
        """The labels' kinds, space-separated, for a data attribute."""
        return " ".join(label.kind for label in self.labels)


@dataclass(frozen=True)
class Change:
    """One field an action changed."""

    field: str
    before: str
    after: str


@dataclass(frozen=True)
class Entry:
    """One line of the review history."""

    action: ReviewAction
    title: str
    changes: list[Change]
    comment: str | None
    attempt: int | None


@dataclass(frozen=True)
class Landed:
    """The newest attempt, when it landed after the last verdict or action."""

    attempt: int
    at: datetime

    @property
    def iso(self) -> str:
        return as_utc(self.at).isoformat()

    @property
    def clock(self) -> str:
        return as_utc(self.at).strftime("%H:%M UTC")


@dataclass(frozen=True)
class ArticleView:
    """Everything the article page shows beyond :class:`~producer.review.queries.ArticlePage`."""

    page: ArticlePage
    attempts: list[LabelledAttempt]
    history: list[Entry]
    verdict: Verdict
    landed: Landed | None
    progress: farm_view.Progress
    gpu: farm_view.GpuWorkers
    query: SheetQuery
    neighbours: Neighbours | None
    view_cards: list[tuple[int, str, int | None, float | None]]  # id, view, render id, score

    @property
    def context(self) -> str:
        """The sheet's query, for the links to other articles (``?...``, or empty)."""
        params = self.query.params(page=1)
        return f"?{params}" if params else ""

    @property
    def back(self) -> str:
        """The sheet page the article is on, under the reviewer's filter."""
        page = self.neighbours.page if self.neighbours else 1
        params = self.query.params(page=page)
        return f"/batches/{self.page.article.batch_id}" + (f"?{params}" if params else "")

    def link(self, article_id: int | None) -> str | None:
        """The address of another article, keeping the sheet's query."""
        return None if article_id is None else f"/articles/{article_id}{self.context}"

    @property
    def version(self) -> str:
        """Changes whenever the live panel would show something else."""
        return f"{self.page.state['version']}|{self.progress.text}|{self.gpu.online}"


def load(session: Session, article_id: int, query: SheetQuery | None) -> ArticleView | None:
    """The article page's data, or None when there is no such article.

    Args:
        session: any session.
        article_id: the article.
        query: the contact sheet's query the reviewer came from (its defaults otherwise);
            None for a poll, which needs no neighbours (the sheet's query is not run).
    """
    page = queries.article_page(session, article_id)
    if page is None:
        return None
    article = page.article
    history = sorted(page.history, key=lambda a: (as_utc(a.at), a.id))  # oldest first
    attempts = [LabelledAttempt(a, _labels(a, article, history)) for a in page.attempts]
    gpu = farm_view.gpu_workers(session)
    neighbours = None if query is None else article_neighbours(session, article, query)
    return ArticleView(
        page=page,
        attempts=attempts,
        history=[_entry(action) for action in page.history],
        verdict=_verdict(article, page, history),
        landed=_landed(page, history),
        progress=farm_view.progress(article, gpu),
        gpu=gpu,
        query=query or SheetQuery(),
        neighbours=neighbours,
        view_cards=_view_cards(session, page),
    )


def sheet_query(params, referer: str | None, batch_id: str | None = None) -> SheetQuery:
    """The sheet query an article page works in: its own query string, else the Referer's
    when the browser came from the contact sheet of the article's batch."""
    if any(name in params for name in ("filter", "sort", "below", "view", "q")):
        return SheetQuery.from_params(params)
    if referer and batch_id is not None:
        parts = urlsplit(referer)
        if parts.path == f"/batches/{batch_id}" and parts.query:
            return SheetQuery.from_params(dict(parse_qsl(parts.query)))
    return SheetQuery()


def _before(action: ReviewAction) -> dict:
    return action.before if isinstance(action.before, dict) else {}


def _changes_text(action: ReviewAction) -> bool:
    if action.action in TEXT_ACTIONS:
        return True
    after = action.after if isinstance(action.after, dict) else {}
    return action.action == "requeue" and after.get("from_stage") in TEXT_STAGES


def _labels(attempt: queries.Attempt, article, history: list[ReviewAction]) -> list[Label]:
    render = attempt.render
    labels = []
    made = as_utc(render.created_at) if render.created_at else None
    for action in history:
        about = judged_attempt(action)
        if action.action == "rejected" and about == render.attempt:
            labels.append(Label("rejected", "rejected", action.comment))
        elif action.action == "regenerate" and render.attempt == _before(action).get("attempt"):
            labels.append(Label("regenerated", "regenerated below a threshold"))
    if attempt.superseded and _text_changed_after(render.attempt, made, history):
        labels.append(Label("earlier_text", "earlier text"))
    approved = article.review_status == ReviewStatus.approved.value
    # An approval is of the published picture: the best attempt, which need not be the newest.
    published = article.best_attempt or article.render_attempt
    if approved and render.attempt == published:
        labels.append(Label("approved", "approved"))
    if not attempt.superseded and not approved and _after_last_action(render, history):
        labels.append(Label("new", "new · awaiting review"))
    if attempt.superseded and not labels:
        labels.append(Label("set_aside", "earlier attempt"))
    return labels


def _text_changed_after(number: int, made: datetime | None, history: list) -> bool:
    """Whether an action after attempt ``number`` changed the text or prompts."""
    for action in history:
        if not _changes_text(action):
            continue
        if action.attempt is not None:
            if action.attempt > number:
                return True
        elif made is not None and as_utc(action.at) > made:  # older rows: by time
            return True
    return False


def _after_last_action(render, history: list[ReviewAction]) -> bool:
    """Whether the attempt landed after the latest action on the article (there was one):
    after the picture a verdict judged, or from the attempt an edit or requeue started."""
    if not history:
        return False
    latest = history[-1]
    if latest.action in ("rejected", "approved"):
        judged = judged_attempt(latest)
        if judged is not None:
            return render.attempt > judged
    elif latest.attempt is not None:
        return render.attempt >= latest.attempt
    made = render.created_at
    return made is not None and as_utc(made) > as_utc(latest.at)


def _verdict(article, page: ArticlePage, history: list[ReviewAction]) -> Verdict:
    latest = max((a.render.attempt for a in page.attempts), default=None)
    rejections = (judged_attempt(a) for a in reversed(history) if a.action == "rejected")
    return verdict(article.review_status, latest, next(rejections, None))


def _landed(page: ArticlePage, history: list[ReviewAction]) -> Landed | None:
    """The newest attempt, when it landed after the latest action (a reject, an edit...)."""
    renders = [a.render for a in page.attempts]
    if not renders:
        return None
    newest = max(renders, key=lambda r: r.attempt)
    if newest.created_at is None or not _after_last_action(newest, history):
        return None
    return Landed(newest.attempt, newest.created_at)


def _entry(action: ReviewAction) -> Entry:
    before = action.before if isinstance(action.before, dict) else {}
    after = action.after if isinstance(action.after, dict) else {}
    return Entry(
        action=action,
        title=ACTION_TITLES.get(action.action, action.action.replace("_", " ")),
        changes=changes(before, after),
        comment=action.comment,
        attempt=judged_attempt(action),
    )


def changes(before: dict, after: dict) -> list[Change]:
    """The fields that differ between ``before`` and ``after``, an attribute at a time.

    A field only one side has counts as changed from or to nothing (``–``).
    """
    found = []
    for field in dict.fromkeys([*before, *after]):
        old, new = before.get(field), after.get(field)
        if old == new:
            continue
        if field == "attributes" and isinstance(old, dict | None) and isinstance(new, dict | None):
            old, new = old or {}, new or {}
            for name in dict.fromkeys([*old, *new]):
                if old.get(name) != new.get(name):
                    label = name.replace("_", " ")
                    found.append(Change(label, _shown(old.get(name)), _shown(new.get(name))))
            continue
        label = FIELD_NAMES.get(field, field.replace("_", " "))
        found.append(Change(label, _shown(old), _shown(new)))
    return found


def _shown(value: object) -> str:
    if value is None or value == "":
        return "–"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _view_cards(session: Session, page: ArticlePage) -> list[tuple]:
    """Each view of the article's row with its published (or latest) render and score."""
    if len(page.views) < 2:
        return []
    return queries.view_pictures(session, [article_id for article_id, _ in page.views])
