"""``farm review``: serve the review studio, and add the users who may log in to it."""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

from db.models import UserRole
from producer import guards
from producer.review.users import add_user, count_users, list_users, remove_user
from producer.strength import MAKE_ONE, weakness
from tasks.app import configure
from tasks.exceptions import UserError
from tasks.settings import Settings

DEFAULT_PORT = 8600
MIN_SECRET_CHARS = 32


class StudioRefused(UserError):
    """The studio cannot be served as asked (an open host without users, a busy port)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group()
def review() -> None:
    """The review studio: merchandisers judge a batch's pictures and fix them."""


@review.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the studio over the farm's database (regenerating needs the broker and workers).

    Without any user it listens on this machine only, read-only: add one with
    `farm review add-user NAME`.
    """
    _check_secret(settings)
    guards.output_store(settings)
    sessions = guards.database(settings)
    with sessions() as session:
        users = count_users(session)
    if not users and not is_loopback(host):
        raise StudioRefused(
            f"refusing to serve on {host}: no studio user exists, so anyone reaching it could "
            "see the catalog. Add one with `farm review add-user NAME` or serve on 127.0.0.1"
        )
    _check_port(host, port)
    # Imported here: the web stack is only needed by this command, not by every `farm` call.
    import uvicorn

    from producer.review.app import create_app

    loopback = is_loopback(host)
    studio = create_app(settings, sessions, configure(settings), bound_to_loopback=loopback)
    where = f"http://{host}:{port}/"
    mode = "" if users else " (read-only: no user yet)"
    click.echo(f"review studio on {where}{mode}", err=True)
    uvicorn.run(studio, host=host, port=port, log_level="warning", proxy_headers=False)


@review.command("add-user")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in UserRole]),
    default=UserRole.reviewer.value,
    show_default=True,
    help="reviewer: approve and regenerate; admin: also act on a whole batch.",
)
@click.option("--replace", is_flag=True, help="Set a new password and role for an existing user.")
@click.pass_obj
def add_user_command(settings: Settings, name: str, role: str, replace: bool) -> None:
    """Add a studio user; the password is read from standard input (asked on a terminal)."""
    password = _read_password()
    sessions = guards.database(settings)
    with sessions() as session:
        add_user(session, name, password, role, replace=replace)
    click.echo(f"user {name} ({role}) {'updated' if replace else 'added'}", err=True)


@review.command("users")
@click.pass_obj
def users_command(settings: Settings) -> None:
    """List the studio's users and their roles."""
    with guards.database(settings)() as session:
        for user in list_users(session):
            click.echo(f"{user.name}\t{user.role}")


@review.command("remove-user")
@click.argument("name")
@click.pass_obj
def remove_user_command(settings: Settings, name: str) -> None:
    """Remove a studio user; their open sessions end, their past actions stay in the history."""
    with guards.database(settings)() as session:
        remove_user(session, name)
    click.echo(f"user {name} removed", err=True)


def _check_secret(settings: Settings) -> None:
    """Refuse a cookie key anyone could guess: whoever knows it can sign an admin's session."""
    if settings.review_secret is None:
        return
    reason = weakness(settings.review_secret.get_secret_value(), MIN_SECRET_CHARS)
    if reason:
        raise StudioRefused(
            f"FARM_REVIEW_SECRET is too weak: {reason}. Use at least {MIN_SECRET_CHARS} "
            f"random characters ({MAKE_ONE}), or unset it for a random key per start"
        )


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\r\n")


def _check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be listened on, before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StudioRefused(
                f"cannot listen on {host}:{port}: {error.strerror or error} (choose --port)"
            ) from error
