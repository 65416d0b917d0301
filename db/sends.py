"""Sends: which articles' next messages are on their way, and which no message will move on.

An article's ``sent_at`` records that its next stage's message was published and not yet
claimed (:func:`mark_sent`; the claim clears it). The reaper reads it to find the articles
that no message will move on (:func:`stuck`, :func:`take_stuck`) and forgets the sends of
messages that a cut-off worker holds or that vanished on their way (:func:`unmark_unclaimed`,
:func:`unmark_vanished`). Every moment is the database server's (:mod:`db.clock`).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, and_, bindparam, or_, select, true, update

from db.clock import server_now, server_time
from db.transitions import ARTICLES, free_or_expired

IDS_PER_STATEMENT = 500


def mark_sent(engine: Engine, article_ids: list[int], status: str | None = None) -> None:
    """Record that the next message of these articles was published, until it is claimed.

    The claim clears the record, and no record is made for an article claimed already: a
    send noted after the claim would tell the reaper that another message is on its way.

    Args:
        engine: the farm's database.
        article_ids: the articles.
        status: only while they are still in this status (a fast next stage may have moved
            the article on meanwhile, and its own next message is not sent yet).
    """
    with engine.begin() as connection:
        for chunk in _chunks(article_ids):
            query = update(ARTICLES).where(
                ARTICLES.c.id.in_(chunk),
                ARTICLES.c.sent_at.is_(None),
                ARTICLES.c.lease_token.is_(None),
            )
            if status is not None:
                query = query.where(ARTICLES.c.status == status)
            connection.execute(query.values(sent_at=server_now()))


def _chunks(article_ids: list[int]) -> Iterator[list[int]]:
    # Bounded IN lists: SQLite allows a limited number of bound parameters per statement.
    for start in range(0, len(article_ids), IDS_PER_STATEMENT):
        yield article_ids[start : start + IDS_PER_STATEMENT]


def _lost(grace_seconds: float, quiet_seconds: float | None = None, everything: bool = False):
    """The rule for an in-flight article that no message will move on (see :func:`stuck`)."""
    unleased = ARTICLES.c.lease_token.is_(None)
    expired = and_(ARTICLES.c.lease_token.is_not(None), ARTICLES.c.lease_expires_at < server_now())
    if everything:
        return or_(unleased, expired)
    lost = [
        # Unless sent again since its claim: that message is on its way.
        and_(
            expired,
            or_(ARTICLES.c.sent_at.is_(None), ARTICLES.c.sent_at <= ARTICLES.c.claimed_at),
        ),
        and_(unleased, ARTICLES.c.sent_at.is_(None),
             ARTICLES.c.updated_at < server_time(-grace_seconds)),
    ]  # fmt: skip
    if quiet_seconds is not None:
        lost.append(and_(unleased, ARTICLES.c.updated_at < server_time(-quiet_seconds)))
    return or_(*lost)


def stuck(
    connection, statuses: list[str], grace_seconds: float, quiet_seconds: float | None = None
) -> list:
    """Articles in flight that no message will move on.

    That is: a lease that ran out without completion and was not sent again since, or no
    lease and no message sent for more than ``grace_seconds``; with ``quiet_seconds``, also
    any article without a lease and without progress for that long (``farm requeue
    --stuck``).

    Args:
        connection: a Connection or Session.
        statuses: the in-flight statuses (the stages' inputs).
        grace_seconds: how long a stored stage may wait for its next message to be sent.
        quiet_seconds: see above; None leaves such articles alone.

    Returns:
        Rows of (id, key, status, batch_id), by id.
    """
    query = (
        select(ARTICLES.c.id, ARTICLES.c.key, ARTICLES.c.status, ARTICLES.c.batch_id)
        # The statuses written into the SQL: a prepared statement's generic plan would not
        # know them, and would read every finished article of the table.
        .where(ARTICLES.c.status.in_(_literal_list(statuses)), _lost(grace_seconds, quiet_seconds))
        .order_by(ARTICLES.c.id)
    )
    return list(connection.execute(query))


def _literal_list(values: list[str]):
    return bindparam("statuses", values, expanding=True, literal_execute=True)


def take_stuck(
    engine: Engine, statuses: list[str], grace_seconds: float, everything: bool = False
) -> list:
    """Mark the stuck articles as sent, in one statement, and return them to be sent.

    Marking before sending keeps a claim from racing the reaper: an article taken here
    stays free to claim (an expired lease keeps its token, so its worker may still store a
    late result until a claim replaces it) and is not taken again until its new lease runs
    out. A send that fails is undone with :func:`unmark_sent`.

    Args:
        engine: the farm's database.
        statuses: the in-flight statuses.
        grace_seconds: see :func:`stuck`.
        everything: take every in-flight article that no live lease holds (the broker came
            back empty: no message of theirs is left).

    Returns:
        Rows of (id, key, status, batch_id), by id.
    """
    with engine.begin() as connection:
        rows = connection.execute(
            update(ARTICLES)
            .where(
                ARTICLES.c.status.in_(_literal_list(statuses)),
                _lost(grace_seconds, everything=everything),
            )
            # Sending is no progress: updated_at stays, so that a send undone is due again.
            .values(sent_at=server_now(), updated_at=ARTICLES.c.updated_at)
            .returning(ARTICLES.c.id, ARTICLES.c.key, ARTICLES.c.status, ARTICLES.c.batch_id)
        ).all()
    return sorted(rows, key=lambda row: row.id)


def unmark_sent(engine: Engine, article_ids: list[int]) -> None:
    """Forget that messages were sent for these articles (the send failed): the reaper
    finds them again on its next turn."""
    with engine.begin() as connection:
        for chunk in _chunks(article_ids):
            connection.execute(
                update(ARTICLES)
                .where(ARTICLES.c.id.in_(chunk))
                .values(sent_at=None, updated_at=ARTICLES.c.updated_at)
            )


def _unclaimed_since_sent():
    """The rule for an article whose message was sent and has not been claimed since."""
    articles = ARTICLES.c
    return and_(
        articles.sent_at.is_not(None),
        or_(articles.claimed_at.is_(None), articles.claimed_at < articles.sent_at),
    )


def unmark_unclaimed(engine: Engine, waiting: list[tuple[int, str]]) -> int:
    """Forget the sends of messages a dead process received and never claimed.

    Their articles hold no lease, and their messages would come back from the broker only
    after its visibility timeout; unmarked, the reaper sends them on a turn. An article
    claimed since its message was sent, or held, is left alone.

    Args:
        engine: the farm's database.
        waiting: (article id, the status it waited in) for each unclaimed message.

    Returns:
        How many articles were unmarked.
    """
    unmarked = 0
    articles = ARTICLES.c
    with engine.begin() as connection:
        for article_id, status in waiting:
            unmarked += connection.execute(
                update(ARTICLES)
                .where(
                    articles.id == article_id,
                    articles.status == status,
                    _unclaimed_since_sent(),
                    free_or_expired(),
                )
                .values(sent_at=None, updated_at=articles.updated_at)
            ).rowcount
    return unmarked


def unmark_vanished(
    engine: Engine, statuses: list[str], older_than_seconds: float, held_ids: set[int]
) -> int:
    """Forget the sends of messages that are nowhere: their queue is empty and no worker
    holds them (the caller looked at the broker).

    Args:
        engine: the farm's database.
        statuses: the statuses whose stage's queue is empty.
        older_than_seconds: how long ago the message must have been sent (by the server's
            clock), so that a message a worker is receiving right now is not taken for lost.
        held_ids: the articles of the messages workers hold; left alone.

    Returns:
        How many articles were unmarked, for the reaper to send on its turn.
    """
    if not statuses:
        return 0
    articles = ARTICLES.c
    with engine.begin() as connection:
        return connection.execute(
            update(ARTICLES)
            .where(
                articles.status.in_(_literal_list(statuses)),
                _unclaimed_since_sent(),
                articles.sent_at < server_time(-older_than_seconds),
                free_or_expired(),
                articles.id.not_in(sorted(held_ids)) if held_ids else true(),
            )
            .values(sent_at=None, updated_at=articles.updated_at)
        ).rowcount
