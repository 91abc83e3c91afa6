"""AUTH: accounts, passwords, access and refresh tokens."""

from __future__ import annotations

from kintsugi_rt.auth.routes import routes
from kintsugi_rt.auth.service import AuthService
from kintsugi_rt.context import AppContext
from kintsugi_rt.modules import Module


async def _start(ctx: AppContext) -> None:
    ctx.services["auth"] = AuthService(ctx)


module = Module(name="auth", routes=routes, on_startup=(_start,))
