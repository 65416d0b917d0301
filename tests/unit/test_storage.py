"""The output store: a local folder as before, or an object store through fsspec (here its
in-memory file system, ``memory://``)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from producer import guards
from tasks import outputs, storage
from tasks.exceptions import StorageUnavailable
from tasks.handoff import RecentImages
from tasks.publish import write_published
from tasks.settings import Settings
from tasks.storage import ObjectURL


@pytest.fixture
def store():
    """A fresh prefix in fsspec's in-memory file system, removed after the test."""
    root = f"memory://farm-{uuid.uuid4().hex[:8]}/output"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root.removeprefix("memory://")):
        fs.rm(root.removeprefix("memory://"), recursive=True)


def picture(color="red") -> Image.Image:
    return Image.new("RGB", (8, 8), color)


def test_a_url_stays_a_url_in_the_settings_and_a_folder_stays_a_path():
    assert Settings(output_dir="s3://bucket/prefix").output_dir == "s3://bucket/prefix"
    assert Settings(output_dir="out/images").output_dir == Path("out/images")
    assert Settings(output_dir="file:///srv/out").output_dir == Path("/srv/out")
    assert Settings().output_dir == Path("output")
    assert Settings(output_dir="s3://b/p").as_env()["FARM_OUTPUT_DIR"] == "s3://b/p"


def test_the_output_dir_flag_keeps_a_url_whole(monkeypatch):
    from click.testing import CliRunner

    from producer.cli import main

    seen = {}

    @main.command("probe-output")
    @__import__("click").pass_obj
    def probe(settings):
        seen["output"] = settings.output_dir

    try:
        result = CliRunner().invoke(main, ["--output-dir", "s3://bucket/pre", "probe-output"])
    finally:
        main.commands.pop("probe-output")
    assert result.exit_code == 0, result.output
    assert seen["output"] == "s3://bucket/pre"


def test_an_object_url_joins_names_and_changes_suffixes_like_a_path():
    root = ObjectURL("s3://bucket/prefix/")
    image = root / "batch" / "attempts" / "a.1.png"
    assert str(image) == "s3://bucket/prefix/batch/attempts/a.1.png"
    assert image.name == "a.1.png" and image.suffix == ".png"
    assert str(image.with_suffix(".json")) == "s3://bucket/prefix/batch/attempts/a.1.json"
    assert image.parent.parent == root / "batch"
    assert storage.place(str(image)) == image
    with pytest.raises(ValueError, match="leaves"):
        root / "../other"


def test_a_folder_is_a_path_and_a_url_an_object_url(tmp_path):
    assert storage.place(str(tmp_path)) == tmp_path
    assert storage.place("memory://x/y") == ObjectURL("memory://x/y")
    assert not storage.is_url(str(tmp_path)) and not storage.is_url("file:///tmp/x")
    assert storage.is_url("s3://bucket") and storage.is_url(ObjectURL("gs://b/p"))


def test_the_layout_is_the_same_in_a_folder_and_in_a_store(tmp_path, store):
    local = outputs.attempt_image_path(tmp_path, "b1", "sku", 2)
    remote = outputs.attempt_image_path(store, "b1", "sku", 2)
    assert local == tmp_path / "b1" / "attempts" / "sku.2.png"
    assert str(remote) == f"{store}/b1/attempts/sku.2.png"


def test_images_json_and_statistics_are_written_whole_into_a_store(store):
    image_url = outputs.published_image_path(store, "b1", "sku", "back")
    outputs.save_png(picture(), image_url)
    outputs.write_json(image_url.with_suffix(".json"), {"key": "sku"})
    stats = outputs.batch_dir(store, "b1") / "clip_statistics.txt"
    outputs.write_clip_statistics(stats, [0.5])
    with Image.open(io.BytesIO(storage.read_bytes(image_url))) as written:
        assert written.size == (8, 8)
    assert json.loads(storage.read_bytes(image_url.with_suffix(".json"))) == {"key": "sku"}
    assert b"Total Samples: 1" in storage.read_bytes(stats)
    assert str(image_url).endswith("/b1/sku@back.png")


def test_a_failed_put_leaves_no_object_and_raises_an_os_error(store, monkeypatch):
    url = storage.place(store) / "b1" / "x.png"

    def refuse(self, path, value, **kwargs):
        raise ConnectionError("Could not connect to the endpoint URL")

    monkeypatch.setattr(type(fsspec.filesystem("memory")), "pipe_file", refuse)
    with pytest.raises(StorageUnavailable, match="endpoint cannot be reached") as raised:
        outputs.save_png(picture(), url)
    assert isinstance(raised.value, OSError)
    assert not storage.is_file(url)


def test_a_scratch_file_is_uploaded_only_when_its_block_succeeds(store):
    url = storage.place(store) / "b1" / "report.html"
    with pytest.raises(RuntimeError), outputs.atomic_path(url) as scratch:
        scratch.write_text("half")
        raise RuntimeError("stopped")
    assert not storage.is_file(url)
    with outputs.atomic_path(url) as scratch:
        scratch.write_text("whole")
    assert storage.read_bytes(url) == b"whole"
    assert not scratch.exists()


def test_publishing_copies_an_object_within_the_store(store):
    attempt = outputs.attempt_image_path(store, "b1", "sku", 1)
    outputs.save_png(picture("blue"), attempt)
    target = outputs.published_image_path(store, "b1", "sku", "front")
    outputs.publish_file(attempt, target)
    assert storage.read_bytes(target) == storage.read_bytes(attempt)


def test_a_published_record_names_its_object_url(store):
    attempt = outputs.attempt_image_path(store, "b1", "sku", 1)
    outputs.save_png(picture(), attempt)
    row = {
        "batch_id": "b1", "file_stem": "sku", "view": "front", "attempt_path": str(attempt),
        "key": "sku", "source_text": "t", "generation_prompt": "g", "clip_prompt": "c",
        "clip_score": 0.3, "translation": "t", "attributes": {}, "seed": 1, "best_attempt": 1,
        "source_file": "f", "source_sheet": "s", "source_row": 2, "model_id": "m", "lora": None,
    }  # fmt: skip
    published = write_published(row, store, profile=None)
    record = json.loads(storage.read_bytes(published.with_suffix(".json")))
    assert record["image_path"] == f"{store}/b1/sku.png"
    assert storage.is_file(published)


def test_the_score_stage_takes_a_just_written_picture_without_reading_the_store(store, monkeypatch):
    url = outputs.attempt_image_path(store, "b1", "sku", 1)
    image = picture()
    outputs.save_png(image, url)
    recent = RecentImages()
    recent.keep(url, image)

    def no_round_trip(*args, **kwargs):
        raise AssertionError("the store was asked")

    monkeypatch.setattr(storage, "_call", no_round_trip)
    assert recent.holds(str(url))
    assert recent.load(str(url)) is image
    assert recent.hits == 1


def test_a_picture_not_held_in_memory_is_read_from_the_store(store):
    url = outputs.attempt_image_path(store, "b1", "sku", 1)
    outputs.save_png(picture("green"), url)
    loaded = RecentImages().load(url)
    assert loaded.getpixel((0, 0)) == (0, 128, 0)


def test_a_local_folder_keeps_writing_through_a_rename_as_before(tmp_path):
    path = outputs.published_image_path(tmp_path, "b1", "sku", "front")
    outputs.save_png(picture(), path)
    assert isinstance(path, Path) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["sku.png"]  # no scratch file left
    recent = RecentImages()
    recent.keep(path, picture())
    assert recent.holds(path)
    path.unlink()
    outputs.save_png(picture("blue"), path)  # a new file: the memory no longer counts
    assert not recent.holds(path)


def test_a_writable_store_passes_the_start_check_and_leaves_no_probe(store):
    assert outputs.writable_folder(store) == ObjectURL(store)
    fs = fsspec.filesystem("memory")
    assert fs.find(store.removeprefix("memory://")) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [("nosuch://bucket/prefix", "no storage for nosuch:// URLs")],
)
def test_an_unknown_scheme_is_one_message_naming_the_setting(url, reason):
    with pytest.raises(StorageUnavailable) as raised:
        guards.output_store(Settings(output_dir=url))
    message = str(raised.value)
    assert message.startswith(f"FARM_OUTPUT_DIR={url}: ") and reason in message
    assert guards.exit_code_of(raised.value) == guards.EXIT_OUTPUT


def test_a_local_folder_is_not_touched_by_the_store_check(tmp_path):
    guards.output_store(Settings(output_dir=str(tmp_path / "not-made")))
    assert not (tmp_path / "not-made").exists()


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (FileNotFoundError("The specified bucket does not exist"), "not found"),
        (PermissionError("InvalidAccessKeyId"), "check AWS_ACCESS_KEY_ID"),
        (ConnectionError("Could not connect to the endpoint URL"), "check AWS_ENDPOINT_URL"),
    ],
)
def test_a_stores_error_is_named_in_a_few_words(error, says):
    assert says in storage.describe_error(error)
