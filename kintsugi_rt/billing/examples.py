"""Example frames and replies of the billing module, for docs/protocol.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kintsugi_rt.billing import frames as m
from kintsugi_rt.socket.registry import ServerEvent

_RESET = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)

USAGE_GET = m.UsageGet(id="u1")
USAGE_GET_RESULT: dict[str, Any] = {
    "tier": "basic",
    "used": 41250,
    "limit": 100000,
    "reset_at": _RESET.isoformat(),
}
USAGE_HISTORY = m.UsageHistory(id="u2", from_=_RESET - timedelta(days=7), to=_RESET, group_by="day")
USAGE_HISTORY_RESULT: dict[str, Any] = {
    "group_by": "day",
    "rows": [
        {
            "key": "2026-11-25",
            "prompt_tokens": 9100,
            "completion_tokens": 4200,
            "total_tokens": 13300,
            "requests": 21,
        }
    ],
}

EVENTS = (
    ServerEvent(m.UsageUpdated, m.UsageUpdated(tier="basic", used=41250, limit=100000, reset_at=_RESET)),
    ServerEvent(
        m.UsageWarning,
        m.UsageWarning(threshold=80, tier="basic", used=80400, limit=100000, reset_at=_RESET),
    ),
    ServerEvent(
        m.SubscriptionUpdated,
        m.SubscriptionUpdated(
            tier="premium_pro", status="active", current_period_end=_RESET + timedelta(days=30)
        ),
        durable=True,
    ),
)
