"""CALLS: ringing, WebRTC signaling on the socket, TURN, LiveKit for groups, the aiortc SFU, history."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt import errors
from kintsugi_rt.calls import examples as ex
from kintsugi_rt.calls import frames as f
from kintsugi_rt.calls.frames import CallInfo
from kintsugi_rt.calls.livekit import InvalidWebhook, LiveKit
from kintsugi_rt.calls.service import ERROR_CODES, CallService
from kintsugi_rt.calls.sfu import Sfu, SfuSignal
from kintsugi_rt.errors import ApiError
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler
from kintsugi_rt.web import ApiRoute, Body, Param, Reply, json_response, read_body

__all__ = ["CallInfo", "CallService", "LiveKit", "Sfu", "SfuSignal", "routes", "socket_features"]

# LiveKit's webhook events are small JSON documents.
MAX_WEBHOOK_BYTES = 64 * 1024


class LiveKitReceipt(msgspec.Struct):
    received: bool


def socket_features(calls: CallService) -> SocketFeatures:
    """The calls' frames, bound to ``calls``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.CallStart, calls.start_call, ex.START, ex.START_RESULT),
            SocketHandler(f.CallAccept, calls.accept, ex.ACCEPT),
            SocketHandler(f.CallDecline, calls.decline, ex.DECLINE),
            SocketHandler(f.CallCancel, calls.cancel, ex.CANCEL),
            SocketHandler(f.CallHangup, calls.hangup, ex.HANGUP),
            SocketHandler(f.CallJoin, calls.join, ex.JOIN),
            SocketHandler(f.CallLeave, calls.leave, ex.LEAVE),
            SocketHandler(f.CallSignal, calls.signal, ex.SIGNAL),
            SocketHandler(f.CallFallback, calls.fallback, ex.FALLBACK),
            SocketHandler(f.CallStats, calls.stats, ex.STATS),
            SocketHandler(f.CallHistory, calls.history, ex.HISTORY),
        ),
        events=ex.EVENTS,
        on_disconnect=(calls.on_disconnect,),
        error_codes=ERROR_CODES,
    )


def routes(calls: CallService) -> list[BaseRoute]:
    async def livekit_webhook(request: Request) -> Response:
        """LiveKit tells us who joined or left a call's room (signed with our API secret)."""
        if not calls.livekit.enabled:
            raise ApiError(404, errors.NOT_FOUND, "LiveKit is not configured on this server.")
        body = await read_body(request, MAX_WEBHOOK_BYTES)
        try:
            event = calls.livekit.verify_webhook(body, request.headers.get("authorization"))
        except InvalidWebhook as exc:
            raise ApiError(401, "invalid_signature", f"The webhook is not LiveKit's: {exc}") from None
        await calls.on_livekit_event(event)
        return json_response(LiveKitReceipt(received=True))

    return [
        ApiRoute(
            "/api/calls/livekit/webhook",
            livekit_webhook,
            method="POST",
            name="calls_livekit_webhook",
            tag="calls",
            summary="LiveKit's webhook events (for LiveKit, not for clients)",
            description="Who joined or left a group call's room. Signed with LIVEKIT_API_SECRET; 404 "
            "when LiveKit is not configured (docs/calls.md).",
            request=Body("application/webhook+json", {"type": "object"}, "A LiveKit WebhookEvent."),
            params=(
                Param("Authorization", "header", "LiveKit's signed token over the body.", required=True),
            ),
            replies={200: Reply("Received.", LiveKitReceipt)},
            errors={
                401: ("invalid_signature",),
                404: (errors.NOT_FOUND,),
                413: (errors.PAYLOAD_TOO_LARGE,),
            },
        )
    ]
