"""PRESENCE: who is online, across nodes, told only to those who may see it."""

from __future__ import annotations

from kintsugi_rt.presence import examples as ex
from kintsugi_rt.presence import frames as f
from kintsugi_rt.presence.service import PresenceService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["PresenceService", "socket_features"]


def socket_features(presence: PresenceService) -> SocketFeatures:
    """Presence's frames and socket hooks, bound to ``presence``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.PresenceWatch, presence.watch, ex.WATCH, ex.WATCH_RESULT),
            SocketHandler(f.PresenceUnwatch, presence.unwatch, ex.UNWATCH),
        ),
        events=ex.EVENTS,
        on_connect=(presence.on_connect,),
        on_disconnect=(presence.on_disconnect,),
    )
