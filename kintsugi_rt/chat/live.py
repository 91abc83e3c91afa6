"""The text of answers still streaming, readable from any node, so a socket that connects
mid-answer gets the text so far (``chat.snapshot``) before the next deltas.

In-process with one node; in Redis (a string appended per delta, its index beside it, both in one
transaction) when there are several. Entries expire on their own if their node dies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

_TTL_SECONDS = 3600


@dataclass(slots=True)
class LiveAnswer:
    chat_id: uuid.UUID
    message_id: uuid.UUID
    index: int  # the last delta index included in ``text``; -1 before the first
    text: str


class LiveAnswers(Protocol):
    async def begin(self, user_id: uuid.UUID, chat_id: uuid.UUID, message_id: uuid.UUID) -> None: ...

    async def append(self, message_id: uuid.UUID, index: int, text: str) -> None: ...

    async def end(self, user_id: uuid.UUID, message_id: uuid.UUID) -> None: ...

    async def of_user(self, user_id: uuid.UUID) -> list[LiveAnswer]: ...


class MemoryLiveAnswers:
    def __init__(self) -> None:
        self._answers: dict[uuid.UUID, LiveAnswer] = {}
        self._by_user: dict[uuid.UUID, set[uuid.UUID]] = {}

    async def begin(self, user_id: uuid.UUID, chat_id: uuid.UUID, message_id: uuid.UUID) -> None:
        self._answers[message_id] = LiveAnswer(chat_id, message_id, -1, "")
        self._by_user.setdefault(user_id, set()).add(message_id)

    async def append(self, message_id: uuid.UUID, index: int, text: str) -> None:
        answer = self._answers.get(message_id)
        if answer is not None:
            answer.text += text
            answer.index = index

    async def end(self, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
        self._answers.pop(message_id, None)
        mine = self._by_user.get(user_id)
        if mine is not None:
            mine.discard(message_id)
            if not mine:
                del self._by_user[user_id]

    async def of_user(self, user_id: uuid.UUID) -> list[LiveAnswer]:
        return [
            LiveAnswer(a.chat_id, a.message_id, a.index, a.text)
            for m in self._by_user.get(user_id, ())
            if (a := self._answers.get(m)) is not None
        ]


class RedisLiveAnswers:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}chat:live:"

    def _keys(self, message_id: uuid.UUID) -> tuple[str, str]:
        return f"{self._prefix}text:{message_id}", f"{self._prefix}meta:{message_id}"

    async def begin(self, user_id: uuid.UUID, chat_id: uuid.UUID, message_id: uuid.UUID) -> None:
        text_key, meta_key = self._keys(message_id)
        user_key = f"{self._prefix}user:{user_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(text_key, b"", ex=_TTL_SECONDS)
            pipe.hset(meta_key, mapping={"chat": str(chat_id), "index": -1})
            pipe.expire(meta_key, _TTL_SECONDS)
            pipe.sadd(user_key, str(message_id))
            pipe.expire(user_key, _TTL_SECONDS)
            await pipe.execute()

    async def append(self, message_id: uuid.UUID, index: int, text: str) -> None:
        text_key, meta_key = self._keys(message_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.append(text_key, text.encode())
            pipe.hset(meta_key, "index", index)
            await pipe.execute()

    async def end(self, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(message_id))
            pipe.srem(f"{self._prefix}user:{user_id}", str(message_id))
            await pipe.execute()

    async def of_user(self, user_id: uuid.UUID) -> list[LiveAnswer]:
        members = await self._redis.smembers(f"{self._prefix}user:{user_id}")
        found: list[LiveAnswer] = []
        for member in members:
            message_id = uuid.UUID(member.decode() if isinstance(member, bytes) else str(member))
            text_key, meta_key = self._keys(message_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(text_key)
                pipe.hgetall(meta_key)
                text, meta = await pipe.execute()
            if text is None or not meta:
                continue
            found.append(
                LiveAnswer(uuid.UUID(meta[b"chat"].decode()), message_id, int(meta[b"index"]), text.decode())
            )
        return found
