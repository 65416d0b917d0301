"""Fixtures shared by the review studio's unit tests."""

from __future__ import annotations

import pytest

from tests.unit.review_studio import Studio, make_studio


@pytest.fixture
def studio(tmp_path) -> Studio:
    return make_studio(tmp_path)
