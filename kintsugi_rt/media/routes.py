"""``/api/media``: upload a file, read it back, read its metadata."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from kintsugi_rt.auth import AuthService
from kintsugi_rt.logs import get_logger
from kintsugi_rt.media.blobs import ObjectNotFound
from kintsugi_rt.media.messages import MediaInfo
from kintsugi_rt.media.service import MediaService, not_found
from kintsugi_rt.web import json_response

log = get_logger(__name__)

_INLINE_PREFIXES = ("image/", "audio/", "video/")


class MediaRoutes:
    def __init__(self, media: MediaService, auth: AuthService) -> None:
        self.media = media
        self.auth = auth

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/media", self.upload, methods=["POST"]),
            Route("/api/media/{media_id}", self.download, methods=["GET"]),
            Route("/api/media/{media_id}/meta", self.meta, methods=["GET"]),
        ]

    async def upload(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        try:
            info = await self.media.upload(
                principal.user.id,
                request.stream(),
                request.headers.get("content-type"),
                request.headers.get("content-length"),
            )
        except ClientDisconnect:
            log.info("media.upload_aborted", user_id=str(principal.user.id))
            return Response(status_code=400)  # nobody is listening any more
        return json_response(info, status=201, headers={"Location": f"/api/media/{info.id}"})

    async def meta(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        media = await self.media.find(principal.user.id, request.path_params["media_id"])
        return json_response(media.info, headers={"Cache-Control": "private, no-cache"})

    async def download(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        media = await self.media.find(principal.user.id, request.path_params["media_id"])
        try:
            body = await self.media.open(media)
        except ObjectNotFound:
            log.error("media.object_missing", media_id=str(media.info.id), storage_key=media.storage_key)
            raise not_found() from None
        info = media.info
        return StreamingResponse(
            body,
            media_type=_served_type(info.content_type),
            headers={
                "Content-Length": str(info.size),
                "Cache-Control": "private, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
                "Content-Disposition": content_disposition(info),
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "ETag": f'"{info.sha256}"',
            },
        )


def _served_type(content_type: str) -> str:
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type


def content_disposition(info: MediaInfo) -> str:
    """``inline`` for images, audio and video; ``attachment`` otherwise; with the file name if known."""
    disposition = "inline" if info.content_type.startswith(_INLINE_PREFIXES) else "attachment"
    if not info.filename:
        return disposition
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in info.filename)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(info.filename, safe='')}"


def routes(media: MediaService, auth: AuthService) -> list[BaseRoute]:
    return MediaRoutes(media, auth).routes()
