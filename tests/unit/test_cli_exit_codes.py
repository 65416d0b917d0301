"""The CLI's rough edges: one exit code per kind of error, and hints where a user goes wrong."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

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
