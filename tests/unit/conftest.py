"""Fixtures shared by the review studio's unit tests."""

from __future__ import annotations

import pytest

from producer.review import actions
from tests.unit.review_studio import Studio, make_studio


@pytest.fixture
def studio(tmp_path) -> Studio:
    return make_studio(tmp_path)


@pytest.fixture
def sent(monkeypatch) -> list:
    """The chains the actions send, recorded instead of going to a broker."""
    chains = []
    monkeypatch.setattr(actions, "check_broker", lambda app: None)
    monkeypatch.setattr(
        actions, "send_and_mark", lambda app, engine, items, priority: chains.extend(items)
    )
    return chains
