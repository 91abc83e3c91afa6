"""Text pieces of a run batched for the socket, in order with the run's other events.

Both ways of running an agent (a run of one's own, an answer in a conversation) send the model's
text as ephemeral deltas: the first piece at once, then at most one delta per interval, like chat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from kintsugi_rt.agents.runner import StepEvent


async def batched(queue: asyncio.Queue[StepEvent | None], interval: float) -> AsyncIterator[str | StepEvent]:
    """Yield the joined text of pending deltas (a ``str``) and every other event, in order, until ``None``.

    Pending text is always yielded before the event that follows it, so a tool step never overtakes
    the words before it.
    """
    pending: list[str] = []
    last_flush: float | None = None
    while True:
        timed_out = False
        item: StepEvent | None = None
        if pending and last_flush is not None:
            wait = max(0.0, last_flush + interval - time.monotonic())
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                timed_out = True
        else:
            item = await queue.get()
        if not timed_out and item is not None and item.kind == "delta":
            pending.append(item.text or "")
            if last_flush is not None:
                continue  # the first piece goes out at once; later ones wait for the interval
        if pending:
            text = "".join(pending)
            pending.clear()
            last_flush = time.monotonic()
            yield text
        if timed_out or (item is not None and item.kind == "delta"):
            continue
        if item is None:
            return
        yield item
