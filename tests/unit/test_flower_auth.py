"""``farm flower`` and the docs say the same about its basic auth: the variable, its form and
what makes its password acceptable."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from producer.cli import FLOWER_PASSWORD_RULES, main
from producer.strength import basic_auth_problem
from tests.unit.test_documented_commands import COMMANDS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
DEPLOY_README = (ROOT / "deploy/README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def no_flower_auth(tmp_path, monkeypatch):
    monkeypatch.delenv("FARM_FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.setenv("FARM_DATABASE_URL", f"sqlite:///{tmp_path / 'farm.db'}")


def test_flower_without_auth_names_the_variable_its_form_the_rules_and_the_way_out(
    no_flower_auth,
):
    result = CliRunner().invoke(main, ["flower"])
    assert result.exit_code == 2, result.output
    message = _flat(result.output)
    assert "FARM_FLOWER_BASIC_AUTH to user:password" in message
    assert _flat(FLOWER_PASSWORD_RULES) in message
    assert "--localhost-only" in message and "Traceback" not in message


def test_the_readme_settings_table_states_the_rules_the_message_states():
    (row,) = [line for line in README.splitlines() if line.startswith("| `FARM_FLOWER_BASIC_AUTH`")]
    assert "`user:password`" in row
    assert _flat(FLOWER_PASSWORD_RULES) in _flat(row)
    assert "`--localhost-only`" in row and "exit 2" in row


def test_the_docs_say_what_lets_flower_run_without_auth():
    # Only --localhost-only does: an address of 127.0.0.1 alone is refused like any other.
    for text in (README, DEPLOY_README):
        for sentence in re.split(r"(?<=[.;])\s", _flat(text)):
            if "Flower" in sentence and "refuses to start" in sentence and "unless" in sentence:
                assert "--localhost-only" in sentence, sentence


def test_flower_on_127_0_0_1_without_the_flag_still_wants_auth(no_flower_auth):
    result = CliRunner().invoke(main, ["flower", "--address", "127.0.0.1"])
    assert result.exit_code == 2 and "FARM_FLOWER_BASIC_AUTH" in result.output


FLOWER_LINES = [line for _, line in COMMANDS if "FARM_FLOWER_BASIC_AUTH=" in line]


def test_the_readme_shows_a_flower_command_with_auth():
    assert any("farm flower" in line for line in FLOWER_LINES)


@pytest.mark.parametrize("line", FLOWER_LINES)
def test_every_documented_flower_password_is_one_flower_accepts(line):
    (value,) = [
        word.partition("=")[2] for word in shlex.split(line, comments=True)
        if word.startswith("FARM_FLOWER_BASIC_AUTH=")
    ]  # fmt: skip
    user, _, password = value.partition(":")
    made = re.fullmatch(r"\$\(python -c '([^']*)'\)", password)
    if made:  # made where it is run, as the README shows: one made here is checked
        run = subprocess.run([sys.executable, "-c", made.group(1)], capture_output=True, text=True)
        password = run.stdout.strip()
    assert basic_auth_problem(f"{user}:{password}") is None, line
