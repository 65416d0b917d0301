"""Farm-wide periodic turns and marks: what every worker shares besides the articles.

A periodic job (the reaper) runs on one worker per interval: every worker asks
:func:`take_turn`, and the first to move the job's due time on wins. A mark is a named value
the workers compare against (:func:`swap_mark`): the reaper keeps the broker's epoch there.
Both read the database server's clock (:mod:`db.clock`).
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from db.clock import server_now, server_time
from db.models import Mark, Timer

TIMERS = Timer.__table__
MARKS = Mark.__table__


def take_turn(engine: Engine, name: str, interval_seconds: float) -> bool:
    """Whether this caller runs this turn of a farm-wide periodic job.

    Every worker asks every interval; the first to move the timer's due time on wins.

    Args:
        engine: the farm's database.
        name: the job (``reaper``).
        interval_seconds: how long until the next turn.
    """
    due = server_time(interval_seconds * 0.9)
    try:
        with engine.begin() as connection:
            moved = connection.execute(
                update(TIMERS)
                .where(TIMERS.c.name == name, TIMERS.c.due_at <= server_now())
                .values(due_at=due)
            ).rowcount
            if moved:
                return True
            if connection.scalar(select(TIMERS.c.name).where(TIMERS.c.name == name)) is None:
                connection.execute(insert(TIMERS).values(name=name, due_at=due))
                return True
    except IntegrityError:
        pass  # another worker created the timer first: this turn is theirs
    return False


def swap_mark(engine: Engine, name: str, value: str) -> str | None:
    """Store ``value`` under ``name``; return the value it replaced, if it changed one.

    A compare-and-set: of callers racing to store the same new value, one sees the old
    value and the others None.

    Args:
        engine: the farm's database.
        name: the mark.
        value: its new value.

    Returns:
        The value before, or None when the mark is new or held ``value`` already.
    """
    try:
        with engine.begin() as connection:
            before = connection.scalar(select(MARKS.c.value).where(MARKS.c.name == name))
            if before is None:
                connection.execute(insert(MARKS).values(name=name, value=value))
                return None
            if before == value:
                return None
            changed = connection.execute(
                update(MARKS)
                .where(MARKS.c.name == name, MARKS.c.value == before)
                .values(value=value)
            ).rowcount
            return before if changed else None
    except IntegrityError:
        return None  # another caller stored the mark first


def keep_mark(engine: Engine, name: str, value: str) -> None:
    """Store ``value`` under ``name`` unless the mark holds a value already.

    Args:
        engine: the farm's database.
        name: the mark.
        value: its first value.
    """
    try:
        with engine.begin() as connection:
            if connection.scalar(select(MARKS.c.name).where(MARKS.c.name == name)) is None:
                connection.execute(insert(MARKS).values(name=name, value=value))
    except IntegrityError:
        pass  # another caller stored the mark first
