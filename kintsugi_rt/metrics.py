"""Prometheus metrics with stable names, served at ``/metrics``.

Metrics are process-wide (prometheus_client's default registry), as a scrape sees one process.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt.web import ApiRoute, Body, Reply

SOCKETS_OPEN = Gauge("kintsugi_ws_connections_open", "WebSocket connections open on this node.")
FRAMES_IN = Counter("kintsugi_ws_frames_in_total", "Client frames received, by message type.", ["type"])
FRAMES_OUT = Counter("kintsugi_ws_frames_out_total", "Frames sent to clients, by kind.", ["kind"])
QUEUE_DROPS = Counter(
    "kintsugi_ws_queue_drops_total",
    "Ephemeral frames dropped because a client's outbound queue was half full.",
)
CLOSES = Counter(
    "kintsugi_ws_closes_total",
    "Connections closed, by close code (ours, or the client's; codes outside a known set count as 'other').",
    ["code"],
)
ABORTS = Counter(
    "kintsugi_ws_aborts_total",
    "TCP connections dropped without a close handshake, by reason: close_timeout (the close frame could "
    "not be written: a client that stopped reading), close_handshake (no answer to our close), peer_gone.",
    ["reason"],
)
HUB_LATENCY = Histogram(
    "kintsugi_hub_delivery_seconds",
    "Time from hub publish to hand-off to a local connection's queue.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
HUB_PUBLISHED = Counter("kintsugi_hub_published_total", "Envelopes published to the hub, by kind.", ["kind"])
HUB_PUBLISH_FAILURES = Counter(
    "kintsugi_hub_publish_failures_total", "Publish attempts the hub refused (Redis down or timing out)."
)
HUB_DEFERRED = Counter(
    "kintsugi_hub_deferred_total",
    "Durable events, closes and signals kept for republishing because the hub was down.",
)
HUB_DROPPED = Counter(
    "kintsugi_hub_dropped_total",
    "Envelopes given up while the hub was down (ephemeral ones, or the oldest deferred beyond the cap), "
    "by kind.",
    ["kind"],
)
HUB_RESYNCS = Counter(
    "kintsugi_hub_resyncs_total",
    "Times this node re-subscribed to the hub after losing it and checked its sockets' streams for gaps.",
)
STREAM_GAP_FILLS = Counter(
    "kintsugi_stream_gap_fills_total", "Durable events read back from PostgreSQL to fill a connection's gap."
)


def exposition(request: Request, token: str | None) -> Response:
    """The Prometheus exposition; with METRICS_TOKEN set, only for ``Authorization: Bearer <token>``."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return Response(
                "metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def routes(token: str | None) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        return exposition(request, token)

    return [
        ApiRoute(
            "/metrics",
            metrics,
            method="GET",
            name="metrics",
            tag="ops",
            summary="Prometheus metrics of this node",
            description="The Prometheus text exposition. With METRICS_TOKEN set, only for "
            "`Authorization: Bearer <METRICS_TOKEN>`.",
            auth="metrics",
            auth_optional=True,
            replies={
                200: Reply("The metrics.", Body(CONTENT_TYPE_LATEST, {"type": "string"})),
                401: Reply(
                    "METRICS_TOKEN is set and was not sent.",
                    Body("text/plain", {"type": "string"}),
                    {"WWW-Authenticate": '`Bearer realm="metrics"`.'},
                ),
            },
            may_be_unavailable=False,
        )
    ]


CALLS_STARTED = Counter("kintsugi_calls_started_total", "Calls started, by media path.", ["mode"])
CALLS_ENDED = Counter("kintsugi_calls_ended_total", "Calls ended, by reason.", ["reason"])
CALL_SETUP_SECONDS = Histogram(
    "kintsugi_call_setup_seconds",
    "Time from a device's answer to its media connection (reported by clients in call.stats).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0),
)
CALL_CONNECTIONS = Counter(
    "kintsugi_call_connections_total",
    "Media connections established, by path: host/srflx/prflx (peer to peer), relay (TURN), sfu.",
    ["path"],
)
CALL_P2P_FAILURES = Counter(
    "kintsugi_call_p2p_failures_total",
    "Peer-to-peer media connections that failed (call.stats ice_state=failed).",
)
CALL_SIGNALS = Counter("kintsugi_call_signals_total", "call.signal frames relayed, by kind.", ["kind"])

# --- the built-in SFU (kintsugi_rt/calls/sfu.py) ---
SFU_PARTICIPANTS = Gauge(
    "kintsugi_sfu_participants",
    "Devices connected to this node's SFU, over all calls (SFU_MAX_PARTICIPANTS).",
)
SFU_CALLS = Gauge("kintsugi_sfu_calls", "Calls with at least one device on this node's SFU.")
SFU_TRACKS = Gauge("kintsugi_sfu_published_tracks", "Tracks published to this node's SFU, by kind.", ["kind"])
SFU_FULL = Counter("kintsugi_sfu_full_total", "Devices refused because the SFU was at SFU_MAX_PARTICIPANTS.")
SFU_RECEIVED_FRAMES = Counter(
    "kintsugi_sfu_received_frames_total",
    "Complete frames the SFU received from publishers, by kind.",
    ["kind"],
)
SFU_FORWARDED_FRAMES = Counter(
    "kintsugi_sfu_forwarded_frames_total",
    "Frames the SFU handed to subscribers' senders (one per frame per subscriber), by kind.",
    ["kind"],
)
SFU_DROPPED_FRAMES = Counter(
    "kintsugi_sfu_dropped_frames_total",
    "Frames not forwarded to a subscriber, by reason: queue_full (its sender fell behind), "
    "awaiting_keyframe (video before the subscriber's first keyframe).",
    ["reason"],
)
SFU_KEYFRAME_REQUESTS = Counter(
    "kintsugi_sfu_keyframe_requests_total", "Keyframe requests (RTCP PLI) the SFU sent to publishers."
)
SFU_OFFERS = Counter(
    "kintsugi_sfu_offers_total",
    "Offers the SFU sent on subscriber connections (first ones and renegotiations).",
)
SFU_CONNECTIONS_LOST = Counter(
    "kintsugi_sfu_connections_lost_total",
    "SFU peer connections that failed, closed from the client side, or never connected, by role (pub, sub).",
    ["role"],
)

# --- Web Push (kintsugi_rt/push/) ---
PUSH_SENT = Counter(
    "kintsugi_push_sent_total",
    "Web Push notifications, by kind (message, call, missed_call) and result: sent (accepted by the push "
    "service), gone (404/410: the subscription was deleted), rejected (another 4xx), failed (429, 5xx or "
    "network errors after every retry), rate_limited (PUSH_RATE_LIMIT, per user), dropped (the queue was "
    "full).",
    ["kind", "result"],
)
PUSH_RETRIES = Counter(
    "kintsugi_push_retries_total", "Requests to push services retried after a 429, a 5xx or a network error."
)
PUSH_QUEUE = Gauge("kintsugi_push_queue", "Notifications waiting for a push worker on this node.")
