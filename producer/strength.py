"""Secrets and passwords anyone could guess: too short, too few kinds or too few different
characters, a run (``aaaa``, ``12345678``), a common password or the example's value.

The farm reads three: the studio's cookie key (``FARM_REVIEW_SECRET``), studio passwords
(``farm review add-user``) and Flower's ``FARM_FLOWER_BASIC_AUTH``. Each is refused where it
is read, with :func:`weakness`'s reason and :data:`MAKE_ONE`.
"""

from __future__ import annotations

MAKE_ONE = """make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`"""
# The values of deploy/farm.env.example and the passwords every guesser tries first.
EXAMPLES = ("change-me", "changeme", "change_me")
COMMON = frozenset(
    {"password", "passwort", "12345678", "123456789", "1234567890", "qwertzuiop", "qwertyuiop",
     "letmein", "admin", "administrator", "secret", "geheim", "operator", "iloveyou"}
)  # fmt: skip
# A value of one kind of character (all lower case, all digits) is accepted from this length:
# a long passphrase of plain words is as good as a short mixed one.
PASSPHRASE_CHARS = 20


def weakness(value: str, min_chars: int) -> str | None:
    """Why ``value`` is guessable, or None when it is not.

    Args:
        value: the secret or password.
        min_chars: the fewest characters it may have.

    Returns:
        The reason, for a message (it never repeats the value).
    """
    lowered = value.lower()
    if any(example in lowered for example in EXAMPLES) or lowered.strip() in COMMON:
        return "it is the example's value or a common password"
    if len(value) < min_chars:
        return f"it has fewer than {min_chars} characters"
    if len(set(value)) < min(8, max(4, len(value) // 3)):
        return "it repeats too few different characters"
    if _run_share(value) > 0.5:
        return "it is mostly a run of equal or consecutive characters"
    if len(value) < PASSPHRASE_CHARS and _kinds(value) < 2:
        return (
            "it uses one kind of character only (mix letters with digits or signs, "
            f"or use {PASSPHRASE_CHARS} characters or more)"
        )
    return None


def _run_share(value: str) -> float:
    """The share of neighbouring characters equal or consecutive (``aa``, ``ab``, ``21``)."""
    steps = [abs(ord(b) - ord(a)) <= 1 for a, b in zip(value, value[1:], strict=False)]
    return sum(steps) / len(steps) if steps else 1.0


def _kinds(value: str) -> int:
    """How many of lower case, upper case, digits and other characters ``value`` uses."""
    kinds = (str.islower, str.isupper, str.isdigit)
    found = {index for c in value for index, kind in enumerate(kinds) if kind(c)}
    others = any(not (c.islower() or c.isupper() or c.isdigit()) for c in value)
    return len(found) + others


MIN_FLOWER_PASSWORD_CHARS = 10


def basic_auth_problem(value: str) -> str | None:
    """What is wrong with a ``FARM_FLOWER_BASIC_AUTH`` value (``user:password``), or None.

    Returns:
        The whole message, naming the setting and how to make a good password.
    """
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        return "FARM_FLOWER_BASIC_AUTH is not of the form user:password"
    reason = weakness(password, MIN_FLOWER_PASSWORD_CHARS)
    if reason is None:
        return None
    return (
        f"FARM_FLOWER_BASIC_AUTH's password is too weak: {reason}. Use at least "
        f"{MIN_FLOWER_PASSWORD_CHARS} random characters: {MAKE_ONE}"
    )
