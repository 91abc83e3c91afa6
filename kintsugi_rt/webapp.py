"""The built web app (``web/dist``) at ``/``: its files, and ``index.html`` for every other page path.

It is the router's fallback, not a route: it sees only requests that no route matched, not even by
path (so ``POST /api/auth/me`` is still 405 and ``/api/nope`` is still the JSON 404), and it is not in
``/openapi.json``, which describes the API alone. What it does with them:

- not ``GET``/``HEAD``, or a path under ``/api``, ``/ws``, ``/metrics``, ``/healthz``, ``/readyz``,
  ``/openapi.json``: the usual 404 (JSON error shape);
- a file of the build: that file. Vite's hashed files under ``/assets/`` are cached for a year
  (``immutable``); everything else (``index.html``, ``sw.js``, the manifest, icons) is ``no-cache``,
  so a deploy is picked up at once (ETag revalidation keeps that cheap);
- any other path (``/messenger/<id>``): ``index.html``, for the app's own routing; except under
  ``/assets/``, where a missing file is a 404 (an old tab asking for a replaced chunk must not get HTML);
- no build (``WEB_DIST_DIR``, else ``web/dist`` of the checkout): a short page saying how to build it.

Every answer carries the security headers: a Content-Security-Policy without inline scripts (the Vite
build needs none; inline ``<style>`` elements of ``index.html``, such as a boot splash, are allowed by
their SHA-256, read from the build), ``X-Content-Type-Options``, ``Referrer-Policy``,
``Permissions-Policy`` (camera, microphone and screen sharing for this origin only), ``X-Frame-Options``
and COOP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from kintsugi_rt.settings import Settings

# Paths that belong to the server: never the app's index.html, whatever follows them.
SERVER_PATHS = ("/api", "/ws", "/metrics", "/healthz", "/readyz", "/openapi.json")
ASSETS = "assets/"  # Vite's build.assetsDir: content-hashed file names

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

PERMISSIONS_POLICY = (
    "camera=(self), microphone=(self), display-capture=(self), fullscreen=(self), autoplay=(self), "
    "geolocation=(), payment=(), usb=()"
)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.DOTALL | re.IGNORECASE)
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kintsugi RT</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Kintsugi RT is running; its web app is not built</h1>
<p>Build it once (Node.js 20 or newer): <code>make run</code> does it for you, or run
<code>npm ci --prefix web &amp;&amp; npm run build --prefix web</code>, then reload this page.
The server serves <code>{dist}</code> (<code>WEB_DIST_DIR</code> sets another place).</p>
<p>The API works without it: <a href="/openapi.json">/openapi.json</a> (REST), <code>/ws</code> (the socket),
<a href="/healthz">/healthz</a>.</p></body></html>
"""


def default_dist_dir() -> Path:
    """``web/dist`` next to the package: the checkout's build when installed from it (``pip -e``)."""
    return Path(__file__).resolve().parent.parent / "web" / "dist"


def is_server_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in SERVER_PATHS)


def style_hashes(html: str) -> tuple[str, ...]:
    """CSP sources for the inline ``<style>`` elements of a page: ``'sha256-<base64>'`` of each."""
    return tuple(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in _STYLE.findall(html)
    )


def content_security_policy(settings: Settings, host: str | None, styles: tuple[str, ...] = ()) -> str:
    """The policy of every answer: our own origin only, no inline or eval'd script; inline styles only
    those of ``styles`` (hashes); images and media may also be ``blob:``/``data:`` (previews,
    recordings); the socket on this host (``ws:``/``wss:``, spelled out for browsers whose ``'self'``
    does not cover them); LiveKit's server when configured."""
    connect = ["'self'"]
    if host is not None and _HOST.fullmatch(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    if settings.livekit_url:
        parts = urlsplit(settings.livekit_url)
        secure = parts.scheme in ("https", "wss")
        connect += [
            f"{'https' if secure else 'http'}://{parts.netloc}",
            f"{'wss' if secure else 'ws'}://{parts.netloc}",
        ]
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": " ".join(("'self'", *styles)),
        "img-src": "'self' blob: data:",
        "media-src": "'self' blob: data:",
        "font-src": "'self' data:",
        "connect-src": " ".join(dict.fromkeys(connect)),
        "worker-src": "'self'",
        "manifest-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class WebApp:
    """The router's fallback (``app.router.default``): the web app's files, else ``fallback``."""

    def __init__(self, settings: Settings, fallback: ASGIApp) -> None:
        self.settings = settings
        self.dist = settings.web_dist_dir or default_dist_dir()
        self._fallback = fallback
        self._files = StaticFiles(directory=self.dist, check_dir=False)
        self._styles: tuple[tuple[int, int], tuple[str, ...]] | None = None  # (index.html's mtime, size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or is_server_path(scope["path"]):
            await self._fallback(scope, receive, send)
            return
        response = await self._response(scope)
        self._secure(response, scope)
        await response(scope, receive, send)

    async def _response(self, scope: Scope) -> Response:
        index = self.dist / "index.html"
        if not index.is_file():
            status = 200 if scope["path"] in ("/", "/index.html") else 404
            response: Response = HTMLResponse(NOT_BUILT.format(dist=self.dist), status_code=status)
            response.headers["Cache-Control"] = REVALIDATE
            return response
        path = self._files.get_path(scope)
        try:
            response = await self._files.get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            if path.startswith(ASSETS):
                response = Response("Not found.", status_code=404, media_type="text/plain")
            else:
                response = self._files.file_response(index, os.stat(index), scope)
            response.headers["Cache-Control"] = REVALIDATE
            return response
        hashed = path.startswith(ASSETS) and response.status_code in (200, 304)
        response.headers["Cache-Control"] = IMMUTABLE if hashed else REVALIDATE
        return response

    def _inline_styles(self) -> tuple[str, ...]:
        """The hashes of index.html's inline styles, read again when the build changes."""
        try:
            stat = os.stat(self.dist / "index.html")
        except OSError:
            return ()
        version = (stat.st_mtime_ns, stat.st_size)
        if self._styles is None or self._styles[0] != version:
            try:
                html = (self.dist / "index.html").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return ()
            self._styles = (version, style_hashes(html))
        return self._styles[1]

    def _secure(self, response: Response, scope: Scope) -> None:
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        headers = response.headers
        headers["Content-Security-Policy"] = content_security_policy(
            self.settings, host, self._inline_styles()
        )
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
