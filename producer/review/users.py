"""Review studio users: names, roles and argon2 password hashes in the farm's database."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import User, UserRole
from producer.strength import MAKE_ONE, weakness
from tasks.exceptions import UserError

MIN_PASSWORD_CHARS = 10
MAX_NAME_CHARS = 80
# One hasher with argon2-cffi's defaults (argon2id, RFC 9106 low-memory profile).
_HASHER = PasswordHasher()


class UserRefused(UserError):
    """A user cannot be added as asked (a bad name, a weak password, a name taken)."""


def add_user(
    session: Session, name: str, password: str, role: str = UserRole.reviewer.value,
    replace: bool = False,
) -> User:  # fmt: skip
    """Store a user with the argon2 hash of ``password``.

    Args:
        session: a session; it is committed.
        name: the login name (letters, digits, ``.-_@``; at most 80 characters).
        password: the password, at least :data:`MIN_PASSWORD_CHARS` characters and not
            guessable (:func:`producer.strength.weakness`).
        role: ``reviewer`` or ``admin``.
        replace: set a new password and role for an existing user instead of refusing.

    Returns:
        The stored user.

    Raises:
        UserRefused: the name, password or role is not acceptable, or the name is taken.
    """
    _check(name, password, role)
    user = session.scalar(select(User).where(User.name == name))
    if user is not None and not replace:
        raise UserRefused(f"user {name!r} exists already; add --replace to set a new password")
    if user is None:
        # A random start: cookies of an earlier user of the same name, removed since, name
        # another epoch and stay refused.
        user = User(name=name, session_epoch=secrets.randbits(31))
        session.add(user)
    else:
        # A new password (often after a leak) ends the sessions opened with the old one.
        user.session_epoch += 1
    user.password_hash = _HASHER.hash(password)
    user.role = role
    session.commit()
    return user


def end_sessions(session: Session, name: str) -> None:
    """End every open session of user ``name`` (their cookies stop being accepted).

    Args:
        session: a session; it is committed.
        name: the user.
    """
    session.execute(
        update(User).where(User.name == name).values(session_epoch=User.session_epoch + 1)
    )
    session.commit()


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user with this name and password, or None (unknown name or wrong password).

    A hash made with older parameters is made again with the current ones.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        # Hash anyway, so a wrong name takes as long as a wrong password.
        _HASHER.hash(password or "-")
        return None
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
        session.commit()
    return user


def list_users(session: Session) -> list[User]:
    """Every studio user, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def remove_user(session: Session, name: str) -> None:
    """Remove user ``name``: their sessions end at once; their past actions keep their name.

    Args:
        session: a session; it is committed.
        name: the user.

    Raises:
        UserRefused: there is no such user.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserRefused(f"no studio user {name!r}; `farm review users` lists them")
    session.delete(user)
    session.commit()


def count_users(session: Session) -> int:
    """How many users may log in to the studio."""
    return session.scalar(select(func.count()).select_from(User)) or 0


def _check(name: str, password: str, role: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or not all(c.isalnum() or c in ".-_@" for c in name):
        raise UserRefused(
            f"user name {name!r} is not usable: use 1 to {MAX_NAME_CHARS} letters, digits "
            "or . - _ @"
        )
    reason = weakness(password, MIN_PASSWORD_CHARS)
    if reason:
        raise UserRefused(
            f"the password is too weak: {reason}. Use {MIN_PASSWORD_CHARS} characters or more "
            f"mixing letters, digits and signs, or several words; or {MAKE_ONE}"
        )
    if role not in {r.value for r in UserRole}:
        raise UserRefused(f"role {role!r} is not one of reviewer, admin")
