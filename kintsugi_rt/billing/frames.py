"""Usage and subscription frames."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage


class UsageGet(ClientMessage, tag="usage.get"):
    """Tokens used in the current window, the tier's limit, and when the window resets."""


class UsageHistory(ClientMessage, tag="usage.history"):
    """Ledger totals between ``from`` and ``to`` (at most 366 days), per day or per model."""

    from_: datetime = msgspec.field(name="from")
    to: datetime
    group_by: Literal["day", "model"] = "day"


class UsageRow(msgspec.Struct):
    key: str  # the day (YYYY-MM-DD, UTC) or the model
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    requests: int


class UsageHistoryResult(msgspec.Struct):
    group_by: str
    rows: list[UsageRow]


class UsageUpdated(ServerMessage, tag="usage.updated"):
    """After every answer: the window's usage (not durable; ask ``usage.get`` after a reconnect)."""

    tier: str
    used: int
    limit: int
    reset_at: datetime


class UsageWarning(ServerMessage, tag="usage.warning"):
    """Usage crossed ``threshold`` percent (80 or 100) of the limit in this window."""

    threshold: int
    tier: str
    used: int
    limit: int
    reset_at: datetime


class SubscriptionUpdated(ServerMessage, tag="subscription.updated"):
    """The subscription or tier changed; limits follow at once. ``attention`` flags a payment problem."""

    tier: str
    status: str
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    attention: str | None = None
