"""The TCP connection under a socket, for the one thing ASGI cannot ask for: dropping it now.

ASGI can only close a WebSocket gracefully, and a close frame is written behind everything already
queued for the peer. A peer that stopped reading never gets there: the server keeps the connection,
and the megabytes queued for it, for minutes. Uvicorn's WebSocket protocol objects (all three of its
implementations) are the ``send`` callable's ``__self__`` and hold their asyncio transport; aborting it
drops the connection at once (the peer sees 1006) and uvicorn tells the app of the disconnect as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# Where the app's edge leaves the transport in the socket's ASGI scope.
TRANSPORT_KEY = "kintsugi.transport"


class Abortable(Protocol):
    def abort(self) -> None: ...


def find_transport(send: Callable[..., Any]) -> Abortable | None:
    """The transport behind an ASGI ``send`` callable, if the server exposes one."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None
