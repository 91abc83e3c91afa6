"""``/api/media``: upload a file, read it back (with the access token, or by a signed URL), read its
metadata and its signed URLs."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from kintsugi_rt import errors
from kintsugi_rt.auth import AuthService
from kintsugi_rt.logs import get_logger
from kintsugi_rt.media.blobs import ObjectNotFound
from kintsugi_rt.media.links import URL_EXPIRED, URL_INVALID, VARIANTS, Variant
from kintsugi_rt.media.messages import MediaInfo, MediaLinks
from kintsugi_rt.media.ranges import RANGE_NOT_SATISFIABLE, etag_matches, requested_range
from kintsugi_rt.media.service import MediaService, not_found
from kintsugi_rt.media.sniff import IMAGE_TYPES
from kintsugi_rt.media.storage import StoredMedia
from kintsugi_rt.web import ApiRoute, Body, Param, Reply, json_response

log = get_logger(__name__)

_TAG = "media"
# Stored files never change: with the access token, clients may keep them for good (privately).
_FOREVER = "private, max-age=31536000, immutable"
# Nothing a browser could run is ever shown inline, and whatever is shown runs nothing.
_SANDBOX = "default-src 'none'; sandbox"

_DOWNLOAD_HEADERS = {
    "Accept-Ranges": "`bytes`: a single `Range` is served as 206.",
    "ETag": "The file's SHA-256 in quotes (`If-None-Match` with it: 304).",
    "Cache-Control": "How long the answer may be kept, privately.",
    "Content-Disposition": "`inline` for images, audio and video; `attachment` for everything else.",
    "X-Content-Type-Options": "`nosniff`.",
    "Content-Security-Policy": "`default-src 'none'; sandbox`.",
}
_RANGE_HEADERS = {**_DOWNLOAD_HEADERS, "Content-Range": "`bytes a-b/size`."}
_FILE_BODY = Body("application/octet-stream", {"type": "string", "format": "binary"}, "The file's bytes.")
_DOWNLOAD_PARAMS = (
    Param("Range", "header", "One byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n` (several: 200)."),
    Param("If-None-Match", "header", "An ETag held: 304 if it is this file's."),
    Param("If-Range", "header", "Serve the range only if the file still has this ETag."),
)
_UPLOAD_BODY = Body(
    "multipart/form-data",
    {
        "type": "object",
        "required": ["file"],
        "properties": {
            "kind": {"type": "string", "enum": ["file", "image", "voice"]},
            "duration_ms": {"type": "integer", "minimum": 1, "maximum": 3600000},
            "file": {"type": "string", "format": "binary"},
        },
    },
    "The file, and optionally its kind and (voice) duration, sent before it.",
)
_DOWNLOAD_REPLIES = {
    200: Reply("The whole file.", _FILE_BODY, _DOWNLOAD_HEADERS),
    206: Reply("The requested range.", _FILE_BODY, _RANGE_HEADERS),
    304: Reply("Not modified: the ETag sent is this file's.", None, {"ETag": "The file's ETag."}),
}


class MediaRoutes:
    def __init__(self, media: MediaService, auth: AuthService) -> None:
        self.media = media
        self.auth = auth

    def routes(self) -> list[BaseRoute]:
        return [
            ApiRoute(
                "/api/media",
                self.upload,
                method="POST",
                name="media_upload",
                tag=_TAG,
                summary="Upload a file, image or voice message",
                description="`multipart/form-data`: the fields `kind` and `duration_ms` first, then the part "
                "`file`. The type is sniffed from the bytes; an image gets its thumbnail. docs/media.md.",
                auth="bearer",
                request=_UPLOAD_BODY,
                replies={
                    201: Reply(
                        "The stored file.", MediaInfo, {"Location": "`/api/media/{id}`: where to read it."}
                    )
                },
                errors={
                    400: (errors.BAD_REQUEST,),
                    413: (errors.PAYLOAD_TOO_LARGE,),
                    415: (errors.UNSUPPORTED_MEDIA_TYPE,),
                    422: (errors.VALIDATION_FAILED,),
                },
            ),
            ApiRoute(
                "/api/media/{media_id}",
                self.download,
                method="GET",
                name="media_download",
                tag=_TAG,
                summary="Download a file with the access token",
                description="For the uploader and whoever may read it (a conversation it was sent to); "
                "anyone else gets the same 404 as for an unknown id. `?variant=thumbnail` for an image's "
                "thumbnail. One byte range (206) and `If-None-Match` (304) are honoured. docs/media.md.",
                auth="bearer",
                params=(
                    Param("variant", "query", "`original` (the default) or `thumbnail`."),
                    *_DOWNLOAD_PARAMS,
                ),
                replies=_DOWNLOAD_REPLIES,
                errors={404: (errors.NOT_FOUND,), 416: (RANGE_NOT_SATISFIABLE,)},
            ),
            ApiRoute(
                "/api/media/{media_id}/meta",
                self.meta,
                method="GET",
                name="media_meta",
                tag=_TAG,
                summary="A file's metadata",
                description="The upload's answer again, under the same access rules as the download.",
                auth="bearer",
                replies={200: Reply("The file's metadata.", MediaInfo)},
                errors={404: (errors.NOT_FOUND,)},
            ),
            ApiRoute(
                "/api/media/{media_id}/links",
                self.links,
                method="GET",
                name="media_links",
                tag=_TAG,
                summary="Signed URLs of a file",
                description="URLs that load the file (and an image's thumbnail) without a token, for "
                "`<img>`, `<audio>` and `<video>`, until `expires_at` (MEDIA_URL_TTL, 1 h). The socket's "
                "`media.links` gives the same for up to 100 files at once. docs/media.md.",
                auth="bearer",
                replies={200: Reply("The file's signed URLs.", MediaLinks)},
                errors={404: (errors.NOT_FOUND,)},
            ),
            ApiRoute(
                "/api/media/{media_id}/content",
                self.content,
                method="GET",
                name="media_content",
                tag=_TAG,
                summary="Download a file by its signed URL (no token)",
                description="The URL comes from `media.links`, `GET /api/media/{id}/links` or an "
                "attachment's `url` / `thumbnail_url`; use it as it is. The signature covers the file, the "
                "variant and the expiry: change any and it is `url_invalid`. Ranges and `If-None-Match` as "
                "on `GET /api/media/{id}`. docs/media.md.",
                params=(
                    Param("variant", "query", "`original` (the default) or `thumbnail`."),
                    Param("exp", "query", "The expiry, in Unix seconds.", required=True),
                    Param("sig", "query", "The signature (base64url HMAC-SHA256).", required=True),
                    *_DOWNLOAD_PARAMS,
                ),
                replies=_DOWNLOAD_REPLIES,
                errors={
                    403: (URL_INVALID,),
                    404: (errors.NOT_FOUND,),
                    410: (URL_EXPIRED,),
                    416: (RANGE_NOT_SATISFIABLE,),
                },
            ),
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

    async def links(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        media = await self.media.find(principal.user.id, request.path_params["media_id"])
        links = self.media.sign(media.info.id, media.thumbnail is not None)
        return json_response(links, headers={"Cache-Control": "private, no-store"})

    async def download(self, request: Request) -> Response:
        """With the access token; ``?variant=thumbnail`` for an image's thumbnail."""
        principal = await self.auth.require_principal(request)
        media = await self.media.find(principal.user.id, request.path_params["media_id"])
        variant = VARIANTS.get(request.query_params.get("variant") or "original")
        if variant is None:
            raise not_found()
        return await self.serve(request, media, variant, _FOREVER)

    async def content(self, request: Request) -> Response:
        """By a signed URL, without a token: the signature checked before the database is asked."""
        query = request.query_params
        now = self.media.ctx.clock.now()
        media_id, variant = self.media.signer.verify(
            request.path_params["media_id"], query.get("variant"), query.get("exp"), query.get("sig"), now
        )
        media = await self.media.stored(media_id)
        left = max(0, int(query["exp"]) - int(now.timestamp()))
        return await self.serve(request, media, variant, f"private, max-age={left}, immutable")

    async def serve(self, request: Request, media: StoredMedia, variant: Variant, cache: str) -> Response:
        """One variant of the file: whole, one range of it, or 304."""
        info = media.info
        if variant == "thumbnail":
            if media.thumbnail is None:
                raise not_found()
            key, content_type, size = (
                media.thumbnail.storage_key,
                media.thumbnail.content_type,
                media.thumbnail.size,
            )
            etag, disposition = f'"{media.thumbnail.sha256}"', "inline"
        else:
            key, content_type, size = media.storage_key, info.content_type, info.size
            etag, disposition = f'"{info.sha256}"', content_disposition(info)
        headers = {
            "ETag": etag,
            "Cache-Control": cache,
            "Accept-Ranges": "bytes",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": disposition,
            "Content-Security-Policy": _SANDBOX,
        }
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        wanted = requested_range(
            request.headers.get("range"), size, if_range=request.headers.get("if-range"), etag=etag
        )
        status, offset, length = 200, 0, size
        if wanted is not None:
            status, offset, length = 206, wanted.start, wanted.length
            headers["Content-Range"] = wanted.content_range(size)
        headers["Content-Length"] = str(length)
        media_type = _served_type(content_type)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media_type)
        try:
            body = await self.media.storage.get(key, offset, None if wanted is None else length)
        except ObjectNotFound:
            log.error("media.object_missing", media_id=str(info.id), storage_key=key)
            raise not_found() from None
        return StreamingResponse(body, status_code=status, media_type=media_type, headers=headers)


def _served_type(content_type: str) -> str:
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type


def shown_inline(content_type: str) -> bool:
    """Raster images, audio and video: what a browser displays and never runs. Anything else (and so
    anything it could run: HTML, SVG, XML, JavaScript...) is an attachment, under a sandbox policy."""
    return content_type in IMAGE_TYPES or content_type.startswith(("audio/", "video/"))


def content_disposition(info: MediaInfo) -> str:
    """``inline`` for images, audio and video; ``attachment`` otherwise; with the file name if known."""
    disposition = "inline" if shown_inline(info.content_type) else "attachment"
    if not info.filename:
        return disposition
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in info.filename)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(info.filename, safe='')}"


def routes(media: MediaService, auth: AuthService) -> list[BaseRoute]:
    return MediaRoutes(media, auth).routes()
