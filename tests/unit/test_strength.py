"""Guessable secrets and passwords are refused where the farm reads them."""

from __future__ import annotations

import os
import secrets

import pytest
from click.testing import CliRunner

from producer.cli import main
from producer.review.users import UserRefused, add_user
from producer.strength import basic_auth_problem, weakness
from tests.unit.test_review_users import database  # noqa: F401 (a fixture)


@pytest.mark.parametrize(
    "value",
    ["a" * 32, "ab" * 16, "12345678901234567890123456789012", "change-me-please-0123456789abcdefX",
     "abcdefghijklmnopqrstuvwxyzABCDEF", "Password"],
)  # fmt: skip
def test_runs_repeats_and_example_values_are_weak_however_long(value):
    assert weakness(value, 8) is not None


@pytest.mark.parametrize(
    "value", ["correct horse battery", "rita-passwort-1", "geheim-genug", "Xk3-pl9Qz"]
)
def test_passphrases_and_mixed_passwords_pass(value):
    assert weakness(value, 8) is None


def test_a_secret_made_as_the_message_says_always_passes():
    assert all(weakness(secrets.token_urlsafe(32), 32) is None for _ in range(500))


@pytest.mark.parametrize("password", ["12345678", "1234567890", "aaaaaaaaaaaa", "passwort"])
def test_a_guessable_studio_password_is_refused(database, password):  # noqa: F811
    with database() as session, pytest.raises(UserRefused, match="too weak"):
        add_user(session, "ada", password, "admin")


def test_add_user_with_a_guessable_password_exits_2_saying_how_to_make_one(database):  # noqa: F811
    result = CliRunner().invoke(main, ["review", "add-user", "ada"], input="12345678\n")
    assert result.exit_code == 2
    assert "too weak" in result.output and "secrets.token_urlsafe(32)" in result.output
    assert "12345678" not in result.output


@pytest.mark.parametrize("auth", ["operator:change-me", "ops:secret", "ops:aaaaaaaaaaaaaaaa", "x"])
def test_flower_refuses_guessable_basic_auth_before_starting(monkeypatch, auth):
    monkeypatch.setenv("FARM_FLOWER_BASIC_AUTH", auth)

    def started(*args):
        raise AssertionError("Flower was started")

    monkeypatch.setattr(os, "execve", started)
    result = CliRunner().invoke(main, ["flower"])
    assert result.exit_code == 2
    assert "FARM_FLOWER_BASIC_AUTH" in result.output
    assert basic_auth_problem(auth) is not None
    assert basic_auth_problem("operator:" + secrets.token_urlsafe(32)) is None
