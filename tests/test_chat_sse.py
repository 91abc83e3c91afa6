"""The provider's server-sent-events reader, fed the body in every possible split."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from kintsugi_rt.chat.provider import sse_data

BODY = (
    b": keep-alive comment\n\n"
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\r\n\r\n'
    b"event: message\nid: 7\nretry: 1000\n"
    b"data:first line\ndata: second line\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    b'{"choices":[{"delta":{"content":"Hel"}}]}',
    b'{"choices":[{"delta":{"content":"lo"}}]}',
    b"first line\nsecond line",
    b"[DONE]",
]


async def _blocks(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(cuts):
        yield body[start:cut]
        start = cut
    yield body[start:]


def _read(body: bytes, cuts: list[int]) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [event async for event in sse_data(_blocks(body, cuts))]

    return asyncio.run(collect())


def test_events_in_one_block() -> None:
    assert _read(BODY, []) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_events_whatever_the_block_boundaries(cuts: list[int]) -> None:
    assert _read(BODY, cuts) == EVENTS


def test_a_last_event_without_its_blank_line_is_kept() -> None:
    assert _read(b'data: {"a":1}\n\ndata: {"b":2}', [5]) == [b'{"a":1}', b'{"b":2}']
