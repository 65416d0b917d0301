"""Shared fixtures: the tiny model profile, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A model cache folder shared by every test (and worker process) of the session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_profile(model_cache):
    """The tiny random-weight profile, built once."""
    from workers.profiles import resolve_profile

    return resolve_profile("tiny", model_cache)
