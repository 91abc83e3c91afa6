"""MEDIA: file, image and voice uploads, stored locally or in S3, read back by whoever may see them.

Other modules grant access by appending to ``access_checks(ctx)`` in their start hook (in any order).
"""

from __future__ import annotations

from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.media.routes import routes
from kintsugi_rt.media.service import AccessCheck, MediaInfo, MediaService, access_checks
from kintsugi_rt.media.storage import open_storage
from kintsugi_rt.modules import Module

__all__ = ["AccessCheck", "MediaInfo", "MediaService", "access_checks", "module"]

log = get_logger(__name__)


def media_service(ctx: AppContext) -> MediaService:
    found = ctx.services["media"]
    assert isinstance(found, MediaService)
    return found


async def _start(ctx: AppContext) -> None:
    storage = open_storage(ctx.settings)
    await storage.start()
    ctx.services["media"] = MediaService(ctx, storage)
    log.info("media.storage", storage=storage.name)


async def _stop(ctx: AppContext) -> None:
    service = ctx.services.get("media")
    if isinstance(service, MediaService):
        await service.storage.close()


module = Module(name="media", routes=routes, on_startup=(_start,), on_shutdown=(_stop,))
