"""The PostgreSQL engine's connection checks: a ping only after a connection sat idle."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text

from db import engine as farm_engine
from tests.integration.conftest import PG_ADMIN

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url, monkeypatch):
    monkeypatch.setattr(farm_engine, "IDLE_PING_SECONDS", 0.5)  # the test's own pace
    engine = farm_engine.make_engine(pg_url)
    pings = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or ping(conn))
    engine.pings = pings
    yield engine
    engine.dispose()


def backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT pg_backend_pid()"))


def test_a_connection_in_steady_use_is_not_pinged_and_an_idle_one_is(engine):
    first = backend_pid(engine)
    assert backend_pid(engine) == first
    assert engine.pings == []
    time.sleep(0.6)
    assert backend_pid(engine) == first
    assert len(engine.pings) == 1


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(engine):
    dropped = backend_pid(engine)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (dropped,))
    time.sleep(0.6)
    assert backend_pid(engine) != dropped  # no error: the failed ping swapped the connection


def test_the_server_probes_each_session_so_a_client_gone_silent_loses_its_locks_in_seconds(
    engine,
):
    # A worker host cut off mid-transaction keeps its row locks until the server ends its
    # session; the server's own keepalive settings bound that (see db.engine).
    with engine.connect() as connection:
        shown = {
            name: connection.scalar(text(f"SHOW {name}"))
            for name in (
                "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        }  # fmt: skip
    assert shown == {
        "tcp_keepalives_idle": str(farm_engine.KEEPALIVE_IDLE_SECONDS),
        "tcp_keepalives_interval": str(farm_engine.KEEPALIVE_INTERVAL_SECONDS),
        "tcp_keepalives_count": str(farm_engine.KEEPALIVE_COUNT),
        "tcp_user_timeout": str(farm_engine.UNACKNOWLEDGED_MS),
    }
