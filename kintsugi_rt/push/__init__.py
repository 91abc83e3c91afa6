"""PUSH: Web Push notifications (new messages, incoming calls) to browsers with no socket open."""

from __future__ import annotations

from kintsugi_rt.push import examples as ex
from kintsugi_rt.push import frames as f
from kintsugi_rt.push.service import ERROR_CODES, CallAlert, MessageAlert, PushService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["CallAlert", "MessageAlert", "PushService", "socket_features"]


def socket_features(push: PushService) -> SocketFeatures:
    """Push's frames, bound to ``push``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.PushConfigGet, push.config, ex.CONFIG, ex.CONFIG_RESULT),
            SocketHandler(f.PushSubscribe, push.subscribe, ex.SUBSCRIBE),
            SocketHandler(f.PushUnsubscribe, push.unsubscribe, ex.UNSUBSCRIBE),
        ),
        error_codes=ERROR_CODES,
    )
