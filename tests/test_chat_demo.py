"""The offline-demo model streams at CHAT_DEMO_TOKENS_PER_SECOND, slow enough to stop by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kintsugi_rt.chat.provider import OFFLINE_REPLY
from kintsugi_rt.settings import Settings, load_settings
from tests.support import serve_node
from tests.test_chat import collect_answer, open_chat


def test_the_demo_pace_defaults_to_a_human_one() -> None:
    assert load_settings({"ENVIRONMENT": "test", "JWT_SECRET": "s" * 40}).chat_demo_tokens_per_second == 20


async def test_a_slow_demo_answer_is_still_streaming_after_a_second_and_stops(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for(CHAT_DEMO_TOKENS_PER_SECOND="5")) as node:
        sock, chat_id = await open_chat(node)
        assert (await sock.request("chat.models"))["provider"] == "offline-demo"
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hello")
        assert sent["type"] == "ok", sent
        await sock.expect("chat.delta", timeout=5, message_id=sent["message_id"])
        await asyncio.sleep(1.5)
        # At 5 words a second the 35-word reply takes 7 s (at the old 30 a second, 1.2 s): after
        # 1.5 s it is still streaming, a third of the way at most.
        arrived = [*sock.backlog]
        sock.backlog.clear()
        while True:
            try:
                arrived.append(await sock.read(0.05))
            except TimeoutError:
                break
        sock.backlog.extend(arrived)
        assert not any(f["type"] in ("chat.done", "chat.error") for f in arrived), arrived
        stopped = await sock.request("chat.stop", message_id=sent["message_id"])
        assert stopped["type"] == "ok", stopped
        _, done = await collect_answer(sock, sent["message_id"], timeout=5)
        assert done["type"] == "chat.done" and done["finish_reason"] == "stopped", done
        words = len(done["content"].split())
        assert 1 <= words <= 15 < len(OFFLINE_REPLY.split()), done["content"]
        await sock.close()
