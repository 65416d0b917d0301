"""A worker process's record for its launcher: the last model call and unclaimed messages."""

from __future__ import annotations

import pytest

from tasks import callrecord

NODE = "gpu0-4711-9f3a@test-host"


@pytest.fixture
def path(tmp_path, monkeypatch):
    """The record file a launcher would name; no record is current after the test."""
    yield tmp_path / "launcher" / f"{NODE}.calls.json"
    monkeypatch.setattr(callrecord, "_current", None)


def test_a_received_message_is_on_record_until_its_claim_is_tried(path):
    callrecord.start(NODE, path)
    callrecord.received("task-1", 7, "render", "SKU-7")
    callrecord.received("task-2", 8, "render", "SKU-8")
    assert callrecord.read(path) == ([], [[7, "render", "SKU-7"], [8, "render", "SKU-8"]])

    callrecord.claimed("task-1")

    assert callrecord.read(path) == ([], [[8, "render", "SKU-8"]])


def test_each_model_call_replaces_the_last_ones_tokens(path):
    record = callrecord.start(NODE, path)
    record.calling(["token-a", None, "token-b"])
    record.calling(["token-c"])
    assert callrecord.read(path) == (["token-c"], [])


def test_a_new_process_starts_from_an_empty_record_and_a_missing_one_reads_empty(path):
    assert callrecord.read(path) == ([], [])
    callrecord.start(NODE, path).calling(["token-a"])
    callrecord.start(NODE, path)
    assert callrecord.read(path) == ([], [])


def test_two_processes_of_one_node_name_keep_apart_in_the_files_their_launchers_name(tmp_path):
    first, second = tmp_path / "a" / "record.json", tmp_path / "b" / "record.json"
    callrecord.start(NODE, first).calling(["token-of-the-first"])
    callrecord.start(NODE, second).calling(["token-of-the-second"])
    assert callrecord.read(first) == (["token-of-the-first"], [])
    assert callrecord.read(second) == (["token-of-the-second"], [])


def test_a_process_no_launcher_named_a_file_for_writes_none(path, tmp_path):
    record = callrecord.start(NODE, None)
    record.calling(["token-a"])
    callrecord.received("task-1", 7, "render", "SKU-7")
    assert record.call == ["token-a"]
    assert list(tmp_path.rglob("*")) == []


def test_a_process_without_a_record_notes_nothing(path):
    callrecord.received("task-1", 7, "render", "SKU-7")
    callrecord.claimed("task-1")
    assert callrecord.read(path) == ([], [])
