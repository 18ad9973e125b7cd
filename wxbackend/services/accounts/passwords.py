"""Admin passwords: argon2 hashing off the event loop, the rules a new password
must meet, and the one-time passwords a higher admin hands out::

    check_new(password, username="east")      # InvalidInput with a reason code
    hashed = await hash_password(ctx, password)
    ok = await verify(ctx, hashed, password)   # None hashed: as slow as a real check, False
    one_time = generate()                      # e.g. "k7qm-x3dr-9tpw-c2hz"

Reason codes of :func:`check_new`: ``weak_password`` (shorter than
``MIN_PASSWORD``), ``password_too_long``, ``password_too_simple`` (fewer than
two kinds of character), ``password_contains_username``.
"""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput

MIN_PASSWORD = 10
# Bounds the argon2 work one form post can ask for.
MAX_PASSWORD = 128
# One-time passwords: no look-alike characters (0/o, 1/l/i), read out over the phone.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@functools.cache
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> tuple[PasswordHasher, str]:
    """The hasher for the configured cost, with a hash of a random password that
    an unknown username is verified against, so that it takes as long as a wrong
    password. Existing hashes carry their own parameters and keep verifying."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    return hasher, hasher.hash(secrets.token_hex(16))


def _hasher_for(ctx: AppContext) -> tuple[PasswordHasher, str]:
    security = ctx.settings.security
    return _hasher(security.password_time_cost, security.password_memory_kib,
                   security.password_parallelism)


async def hash_password(ctx: AppContext, password: str) -> str:
    hasher, _ = _hasher_for(ctx)
    return await asyncio.get_running_loop().run_in_executor(None, hasher.hash, password)


async def verify(ctx: AppContext, hashed: str | None, password: str) -> bool:
    """Whether ``password`` matches ``hashed``; ``None`` costs the same and is False."""
    hasher, dummy = _hasher_for(ctx)

    def check() -> bool:
        try:
            return hasher.verify(hashed or dummy, password) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False
    return await asyncio.get_running_loop().run_in_executor(None, check)


def check_new(password: str, username: str) -> None:
    """Refuse a new password that is short, one kind of character, or holds the username."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput("weak_password", f"密码至少{MIN_PASSWORD}位")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput("password_too_long", f"密码不能超过{MAX_PASSWORD}位")
    kinds = (any(c.isalpha() for c in password), any(c.isdigit() for c in password),
             any(not c.isalnum() for c in password))
    if sum(kinds) < 2:
        raise InvalidInput("password_too_simple", "密码须包含字母、数字、符号中的至少两类")
    if username and username.lower() in password.lower():
        raise InvalidInput("password_contains_username", "密码不能包含用户名")


def generate() -> str:
    """A one-time password of about 79 random bits that meets :func:`check_new`."""
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))
    return "-".join(groups)
