"""Studio users and the `farm review` commands: argon2 hashes, roles, the password read from
standard input, and a studio that will not open to the network without users."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import User
from producer.cli import main
from producer.review.users import UserRefused, add_user, authenticate, count_users
from producer.review_cli import is_loopback


@pytest.fixture
def database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    migrate(make_engine(url))
    monkeypatch.setenv("FARM_DATABASE_URL", url)
    monkeypatch.delenv("FARM_REVIEW_AUTH_HEADER", raising=False)
    return session_factory(make_engine(url))


def test_a_password_is_stored_only_as_an_argon2id_hash_and_checks_out(database):
    with database() as session:
        add_user(session, "rita", "lange-passwort", "reviewer")
        stored = session.scalar(select(User).where(User.name == "rita"))
        assert stored.password_hash.startswith("$argon2id$")
        assert "lange-passwort" not in stored.password_hash
        assert authenticate(session, "rita", "lange-passwort").role == "reviewer"
        assert authenticate(session, "rita", "lange-passwort!") is None
        assert authenticate(session, "nobody", "lange-passwort") is None


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [
        ("rita", "kurz", "reviewer", "fewer than 10"),
        ("ri ta", "lange-passwort", "reviewer", "not usable"),
        ("rita", "lange-passwort", "owner", "not one of"),
    ],
)
def test_a_bad_name_password_or_role_is_refused(database, name, password, role, message):
    with database() as session, pytest.raises(UserRefused, match=message):
        add_user(session, name, password, role)
    with database() as session:
        assert count_users(session) == 0


def test_add_user_reads_the_password_from_standard_input(database):
    result = CliRunner().invoke(main, ["review", "add-user", "ada", "--role", "admin"],
                                input="geheim-genug\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    with database() as session:
        assert authenticate(session, "ada", "geheim-genug").role == "admin"


def test_adding_a_user_twice_is_refused_unless_replaced(database):
    runner = CliRunner()
    assert runner.invoke(main, ["review", "add-user", "ada"], input="geheim-genug\n").exit_code == 0
    again = runner.invoke(main, ["review", "add-user", "ada"], input="anderes-pw1\n")
    assert again.exit_code == 2
    assert "exists already" in again.output and "Traceback" not in again.output
    replace = ["review", "add-user", "ada", "--replace"]
    replaced = runner.invoke(main, replace, input="anderes-pw1\n")
    assert replaced.exit_code == 0
    with database() as session:
        assert authenticate(session, "ada", "anderes-pw1") is not None


def test_a_short_password_exits_2_with_one_line(database):
    result = CliRunner().invoke(main, ["review", "add-user", "ada"], input="kurz\n")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("the password is too weak: it has fewer than 10")


def test_the_studio_refuses_an_open_address_while_no_user_exists(database):
    result = CliRunner().invoke(main, ["review", "serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0" in result.output
    assert "farm review add-user" in result.output


def test_the_studio_refuses_an_open_address_without_users_even_behind_a_proxy(
    database, monkeypatch
):
    monkeypatch.setenv("FARM_REVIEW_AUTH_HEADER", "X-Forwarded-User")
    result = CliRunner().invoke(main, ["review", "serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0" in result.output


@pytest.mark.parametrize(
    "secret", ["s3cr3t", "change-me-to-a-long-random-string-of-letters", "a" * 32, "ab" * 20]
)
def test_the_studio_refuses_a_cookie_key_anyone_could_guess(database, monkeypatch, secret):
    monkeypatch.setenv("FARM_REVIEW_SECRET", secret)
    result = CliRunner().invoke(main, ["review", "serve", "--port", "1"])
    assert result.exit_code == 2
    assert "FARM_REVIEW_SECRET is too weak" in result.output
    assert "secrets.token_urlsafe(32)" in result.output
    assert secret not in result.output


def test_the_studio_names_a_port_it_cannot_listen_on(database):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["review", "serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_the_studio_needs_an_existing_database(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "farm.db"
    monkeypatch.setenv("FARM_DATABASE_URL", f"sqlite:///{missing}")
    result = CliRunner().invoke(main, ["review", "serve"])
    assert result.exit_code == 5
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("studio.example.com", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_machine(host, loopback):
    assert is_loopback(host) is loopback


def test_users_are_listed_with_their_roles_and_can_be_removed(database):
    runner = CliRunner()
    runner.invoke(main, ["review", "add-user", "ada", "--role", "admin"], input="geheim-genug\n")
    runner.invoke(main, ["review", "add-user", "rolf"], input="geheim-genug\n")
    listed = runner.invoke(main, ["review", "users"])
    assert listed.exit_code == 0
    assert listed.stdout.splitlines() == ["ada\tadmin", "rolf\treviewer"]
    assert runner.invoke(main, ["review", "remove-user", "rolf"]).exit_code == 0
    with database() as session:
        assert authenticate(session, "rolf", "geheim-genug") is None
        assert count_users(session) == 1
    again = runner.invoke(main, ["review", "remove-user", "rolf"])
    assert again.exit_code == 2 and "no studio user 'rolf'" in again.output
