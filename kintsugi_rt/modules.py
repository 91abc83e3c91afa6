"""The one place feature modules plug in.

A module brings its REST routes and its start/stop hooks; the app knows nothing else about it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from kintsugi_rt.context import AppContext

Hook = Callable[[AppContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    routes: Sequence[BaseRoute] = ()
    on_startup: Sequence[Hook] = field(default_factory=tuple)
    on_shutdown: Sequence[Hook] = field(default_factory=tuple)


def enabled_modules() -> list[Module]:
    """Every feature module, in start order."""
    from kintsugi_rt import auth

    return [auth.module]
