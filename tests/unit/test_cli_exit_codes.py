"""The CLI's rough edges: one exit code per kind of error, and hints where a user goes wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from db.engine import make_engine, migrate
from producer.cli import main


@pytest.fixture
def database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    migrate(make_engine(url))
    monkeypatch.setenv("FARM_DATABASE_URL", url)
    monkeypatch.setenv("FARM_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("FARM_BROKER_URL", "redis://127.0.0.1:1/0")


@pytest.mark.parametrize(
    "command", [["status", "nope"], ["export", "nope"], ["report", "nope"],
                ["requeue", "--batch", "nope", "--dry-run"]]
)  # fmt: skip
def test_an_unknown_batch_exits_2_for_every_command_as_the_readme_says(database, command):
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2, result.output
    assert "no batch 'nope'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", [["--device", "cpu"], ["--device=cpu"], ["--profile", "tiny"]])
def test_a_global_option_after_the_command_says_it_goes_before_the_command(option):
    result = CliRunner().invoke(main, ["worker", "gpu", *option])
    assert result.exit_code == 2
    name = option[0].partition("=")[0]
    assert f"{name} is an option of farm itself and goes before the command" in result.output
    assert f"`farm {name} VALUE worker ...`" in result.output


# --- where `export --out` and `report --out` write ----------------------------------------


@pytest.fixture
def batch(database, tmp_path, monkeypatch):
    """Batch b1 with one article whose picture a worker stored under a relative folder."""
    import os

    from db.engine import session_factory
    from db.models import Article, Batch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARM_OUTPUT_DIR", "output")
    sessions = session_factory(make_engine(os.environ["FARM_DATABASE_URL"]))
    with sessions() as session:
        session.add(Batch(id="b1", profile="tiny"))
        session.add(
            Article(batch_id="b1", key="SKU-1", file_stem="SKU-1", source_file="k.csv",
                    source_sheet="csv", source_row=2, source_text="Bluse", status="done",
                    image_path="output/b1/SKU-1.png", source_columns={"name": "Sommerbluse"})
        )  # fmt: skip
        session.commit()
    return tmp_path


def _special(path, kind):
    import os

    if kind == "symlink":
        (path.parent / "target").write_text("")
        path.symlink_to(path.parent / "target")
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
@pytest.mark.parametrize(
    ("command", "what"),
    [(["export", "b1", "--format", "csv"], "export"), (["report", "b1"], "report")],
)
def test_an_out_path_that_is_not_a_regular_file_exits_6_and_is_left_alone(
    batch, command, what, kind
):
    path = batch / "out.file"
    _special(path, kind)
    result = CliRunner().invoke(main, [*command, "--out", str(path)])
    assert result.exit_code == 6, result.output
    assert f"cannot write the {what} to {path}: it is a " in result.output
    assert "not a regular file" in result.output and "Traceback" not in result.output
    assert path.is_symlink() if kind == "symlink" else path.exists() and not path.is_file()
    if kind == "symlink":
        assert (batch / "target").read_text() == ""


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [["export", "b1"], ["report", "b1"]])
def test_an_out_file_in_proc_exits_6_without_a_traceback(batch, command):
    result = CliRunner().invoke(main, [*command, "--out", "/proc/nope.file"])
    assert result.exit_code == 6, result.output
    assert "/proc" in result.output and "no file can be made there" in result.output
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit


def test_export_to_standard_output_writes_the_whole_workbook_and_no_file(batch):
    result = CliRunner().invoke(main, ["export", "b1", "--out", "-"])
    assert result.exit_code == 0, result.output
    sheet = load_workbook(io.BytesIO(result.stdout_bytes)).active
    header, row = sheet.iter_rows(values_only=True)
    assert dict(zip(header, row, strict=True))["key"] == "SKU-1"
    assert "1 rows written" in result.stderr
    assert not (batch / "output" / "b1" / "b1.xlsx").exists()


def test_export_csv_to_standard_output_is_text(batch):
    result = CliRunner().invoke(main, ["export", "b1", "--format", "csv", "--out", "-"])
    assert result.exit_code == 0, result.output
    text = result.stdout_bytes.decode("utf-8-sig")
    assert text.startswith("batch,key,view,") and ",SKU-1," in text


def test_a_binary_export_is_not_written_to_a_terminal(batch, monkeypatch):
    class Terminal(io.BytesIO):
        def isatty(self):
            return True

    monkeypatch.setattr("producer.outputs_cli._standard_output", Terminal)
    result = CliRunner().invoke(main, ["export", "b1", "--out", "-"])
    assert result.exit_code == 2
    assert "xlsx is binary: redirect standard output" in result.output


def test_the_report_to_standard_output_is_the_html_alone(batch):
    result = CliRunner().invoke(main, ["report", "b1", "--out", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!doctype html>")
    assert result.stdout.endswith("</body></html>\n")
    assert '<p class="name">Sommerbluse</p>' in result.stdout
    assert not (batch / "output" / "b1" / "report.html").exists()


def test_exported_image_paths_are_absolute_under_a_relative_output_folder(batch):
    result = CliRunner().invoke(main, ["export", "b1", "--format", "jsonl", "--out", "-"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["image_path"] == str(batch / "output" / "b1" / "SKU-1.png")
