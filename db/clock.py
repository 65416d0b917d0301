"""The database server's clock, as SQL: the one clock every lease, expiry and timer reads.

Workers on several hosts disagree about the time; a worker whose clock runs a minute ahead
would see every other worker's lease as expired, and one behind would keep a dead worker's
leases alive. Every moment that decides who holds an article is therefore taken in the SQL
statement itself, from the database server: ``now()`` on PostgreSQL, ``'now'`` on SQLite
(whose server is the one host all its processes run on). Python's clock only measures
durations on one host.

SQLite stores moments as text; the expressions here write the same ``YYYY-MM-DD
HH:MM:SS.fff`` layout that SQLAlchemy reads back, so stored moments compare as text in
time order.
"""

from __future__ import annotations

from sqlalchemy import DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class server_time(FunctionElement):  # noqa: N801 (an SQL function, named as SQL names them)
    """The database server's current time plus ``seconds`` (negative: in the past).

    Args:
        seconds: the offset from now; 0 for now itself.
    """

    type = DateTime(timezone=True)
    name = "server_time"
    inherit_cache = True

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds), Float))


@compiles(server_time, "postgresql")
def _postgres_time(element: server_time, compiler, **kw) -> str:
    offset = compiler.process(element.clauses, **kw)
    # now() is the transaction's start: one moment for every row a transaction writes.
    return f"(now() + {offset} * interval '1 second')"


@compiles(server_time, "sqlite")
def _sqlite_time(element: server_time, compiler, **kw) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds')"


@compiles(server_time)
def _other_time(element: server_time, compiler, **kw) -> str:
    raise NotImplementedError(f"no server clock for {compiler.dialect.name}")


def server_now() -> server_time:
    """The database server's current time, as an SQL expression."""
    return server_time(0.0)
