"""Prometheus metrics with stable names, served at ``/metrics``.

Metrics are process-wide (prometheus_client's default registry), as a scrape sees one process.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOCKETS_OPEN = Gauge("kintsugi_ws_connections_open", "WebSocket connections open on this node.")
FRAMES_IN = Counter("kintsugi_ws_frames_in_total", "Client frames received, by message type.", ["type"])
FRAMES_OUT = Counter("kintsugi_ws_frames_out_total", "Frames sent to clients, by kind.", ["kind"])
QUEUE_DROPS = Counter(
    "kintsugi_ws_queue_drops_total",
    "Ephemeral frames dropped because a client's outbound queue was half full.",
)
CLOSES = Counter("kintsugi_ws_closes_total", "Connections closed, by close code.", ["code"])
HUB_LATENCY = Histogram(
    "kintsugi_hub_delivery_seconds",
    "Time from hub publish to hand-off to a local connection's queue.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
HUB_PUBLISHED = Counter("kintsugi_hub_published_total", "Envelopes published to the hub, by kind.", ["kind"])
STREAM_GAP_FILLS = Counter(
    "kintsugi_stream_gap_fills_total", "Durable events read back from PostgreSQL to fill a connection's gap."
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
