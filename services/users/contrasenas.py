"""Passwords: the rules a new one must meet, and argon2id hashing.

Parameters (argon2-cffi, RFC 9106 argon2id): the default profile is OWASP's recommended minimum, m = 19 MiB,
t = 2, p = 1: 22 ms per hash on this 2-core machine when it has a core, ~70 ms when both are contended
(docs/users.md has the measurements); it runs in a worker thread, so the event loop keeps serving while it
hashes. A deliberately weak `test` profile (m = 8 MiB, t = 1, ~3.5 ms) exists for test suites that register
hundreds of users; the settings refuse it unless asked for by name. A hash is verified with the parameters stored
in it, so raising the profile later rehashes each password at its owner's next sign-in.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256  # argon2 takes any length; an upper bound keeps a request from costing more than a sign-in
PROFILES = {  # time_cost (passes), memory_cost (KiB), parallelism (lanes)
    "owasp": (2, 19_456, 1),
    "rfc9106-low-memory": (3, 65_536, 4),
    "test": (1, 8_192, 1),
}
_COMMON = frozenset(
    line.strip().casefold()
    for line in (Path(__file__).with_name("common-passwords.txt").read_text().splitlines())
    if line.strip() and not line.startswith("#")
)


@dataclass(frozen=True)
class Problema:
    code: str
    message: str


def problemas(password: str, *personal: str) -> list[Problema]:
    """Every rule the password breaks (empty: acceptable). `personal` are the user's own words (email, name)."""
    found: list[Problema] = []
    if len(password) < MIN_LENGTH:
        found.append(Problema("password_too_short", f"must have at least {MIN_LENGTH} characters"))
    if len(password) > MAX_LENGTH:
        found.append(Problema("password_too_long", f"must have at most {MAX_LENGTH} characters"))
    folded = password.casefold()
    if folded in _COMMON or _is_run(folded):
        found.append(Problema("password_too_common", "is one of the most common passwords"))
    words = {w.casefold() for text in personal for w in text.replace("@", " ").replace(".", " ").split()}
    if any(len(w) >= 4 and w in folded for w in words):
        found.append(Problema("password_personal", "must not contain your name or email"))
    return found


def _is_run(folded: str) -> bool:
    """One repeated character, or a run of consecutive characters (abcdefghij, 0987654321)."""
    if len(set(folded)) == 1:
        return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(folded)}
    return steps in ({1}, {-1})


class Hasher:
    def __init__(self, profile: str = "owasp") -> None:
        self.profile = profile
        time_cost, memory_cost, parallelism = PROFILES[profile]
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self._dummy = self._hasher.hash("not a password anyone has")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not the account exists: an unknown account verifies against a dummy hash."""
        try:
            return await asyncio.to_thread(self._hasher.verify, stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
