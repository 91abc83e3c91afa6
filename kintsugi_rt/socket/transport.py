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

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from kintsugi_rt.socket.protocol import CLOSE_SERVICE_RESTART, close_reason

# Where the app's edge leaves the transport in the socket's ASGI scope.
TRANSPORT_KEY = "kintsugi.transport"


class Abortable(Protocol):
    def abort(self) -> None: ...


def find_transport(send: Callable[..., Any]) -> Abortable | None:
    """The transport behind an ASGI ``send`` callable, if the server exposes one."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's WebSocket protocol (``websockets`` sans-I/O, what ``ws="auto"`` picks), except that the
    close it sends to every open socket when the server shuts down carries our reason text beside
    1012, like every other close (``protocol.CLOSE_REASONS``). ``kintsugi-rt serve`` runs with it;
    a test checks the reason arrives, so a uvicorn upgrade that changes these internals is noticed."""

    def shutdown(self) -> None:
        if not self.handshake_complete or self.close_sent:
            super().shutdown()
            return
        self.stop_keepalive()
        reason = close_reason(CLOSE_SERVICE_RESTART)
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": CLOSE_SERVICE_RESTART, "reason": reason}
        )
        self.conn.send_close(CLOSE_SERVICE_RESTART, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
