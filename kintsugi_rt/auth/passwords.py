"""argon2id password hashing, off the event loop and bounded in how many run at once.

Each hash or verification holds ``argon2_memory_kib`` (64 MiB by default) for its whole run. Left to
the default thread pool, a login flood runs as many at once as the pool has threads (up to 32), so
memory grows with the flood instead of staying flat; a semaphore sized by
``PASSWORD_HASH_CONCURRENCY`` caps it, and callers beyond the cap wait their turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from kintsugi_rt.settings import Settings

T = TypeVar("T")


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so both failures cost the same time. Made on
        # first use, in the hashing thread: building the service does no work (wiring.py).
        self._decoy: str | None = None
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Hashes and verifications running in a thread right now."""
        return self._in_flight

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await self._run(self._verify_blocking, stored_hash or "", password)

    def _verify_blocking(self, stored_hash: str, password: str) -> bool:
        if not stored_hash:
            if self._decoy is None:
                self._decoy = self._hasher.hash("decoy password, never matches")
            stored_hash = self._decoy
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        """Run ``work`` in a thread once a slot is free; the slot is held until the thread ends.

        A thread cannot be stopped, so if the caller is cancelled (the client went away) the slot is
        released only when the hash really finishes: the cap bounds memory, not just awaiting callers.
        """
        await self._slots.acquire()
        self._in_flight += 1
        try:
            running = asyncio.ensure_future(asyncio.to_thread(work, *args))
        except BaseException:
            self._release()
            raise
        running.add_done_callback(self._release)
        return await asyncio.shield(running)

    def _release(self, _: object = None) -> None:
        self._in_flight -= 1
        self._slots.release()
