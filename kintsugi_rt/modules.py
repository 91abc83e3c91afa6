"""The one place feature modules plug in.

A module brings its REST routes, its socket frames and handlers, and its start/stop hooks; the app,
the gateway and the hub know nothing else about it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from kintsugi_rt.socket.registry import SocketFeatures

if TYPE_CHECKING:
    from kintsugi_rt.context import AppContext

Hook = Callable[["AppContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    routes: Sequence[BaseRoute] = ()
    socket: SocketFeatures = field(default_factory=SocketFeatures)
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()


def enabled_modules() -> list[Module]:
    """Every feature module, in start order."""
    from kintsugi_rt import auth, billing, chat, media, messenger, presence

    return [auth.module, presence.module, billing.module, chat.module, messenger.module, media.module]
