"""A worker process's record for its launcher: the last model call and unclaimed messages."""

from __future__ import annotations

import pytest

from tasks import callrecord


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setattr(callrecord.tempfile, "gettempdir", lambda: str(tmp_path))
    yield "gpu0@test-host"
    monkeypatch.setattr(callrecord, "_current", None)


def test_a_received_message_is_on_record_until_its_claim_is_tried(node):
    callrecord.start(node)
    callrecord.received("task-1", 7, "render", "SKU-7")
    callrecord.received("task-2", 8, "render", "SKU-8")
    assert callrecord.read(node) == ([], [[7, "render", "SKU-7"], [8, "render", "SKU-8"]])

    callrecord.claimed("task-1")

    assert callrecord.read(node) == ([], [[8, "render", "SKU-8"]])


def test_each_model_call_replaces_the_last_ones_tokens(node):
    record = callrecord.start(node)
    record.calling(["token-a", None, "token-b"])
    record.calling(["token-c"])
    assert callrecord.read(node) == (["token-c"], [])


def test_a_new_process_starts_from_an_empty_record_and_a_missing_one_reads_empty(node):
    assert callrecord.read(node) == ([], [])
    callrecord.start(node).calling(["token-a"])
    callrecord.start(node)
    assert callrecord.read(node) == ([], [])


def test_a_process_without_a_record_notes_nothing(node):
    callrecord.received("task-1", 7, "render", "SKU-7")
    callrecord.claimed("task-1")
    assert callrecord.read(node) == ([], [])
