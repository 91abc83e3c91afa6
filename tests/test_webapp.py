"""The built web app at ``/`` (kintsugi_rt/webapp.py): its files with the right caching, index.html for
its pages, the security headers, server paths untouched, and a page saying how to build it."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kintsugi_rt.app import create_app
from kintsugi_rt.settings import Settings
from kintsugi_rt.webapp import IMMUTABLE, WebApp, default_dist_dir, style_hashes
from tests.support import serve_node

SettingsFor = Callable[..., Settings]
Client = Callable[[str], httpx.AsyncClient]
ROOT = Path(__file__).resolve().parent.parent

BOOT_STYLE = "body{background:#0a0a0a}.boot{display:grid}"
INDEX = (
    f"<!doctype html><html><head><style>{BOOT_STYLE}</style>"
    '<script type="module" crossorigin src="/assets/index-Ab12Cd34.js"></script>'
    '<link rel="manifest" href="/manifest.webmanifest"></head><body><div id="app"></div></body></html>'
)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A build as Vite lays it out."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-Ab12Cd34.js").write_text("console.log('app')")
    (root / "assets" / "index-Ef56Gh78.css").write_text("body{margin:0}")
    (root / "sw.js").write_text("self.addEventListener('push', () => {})")
    (root / "manifest.webmanifest").write_text('{"name": "Kintsugi"}')
    (tmp_path / "secret.txt").write_text("outside the build")
    return root


async def test_the_build_is_served_with_its_caching_and_security_headers(
    settings_for: SettingsFor, dist: Path, http: Client
) -> None:
    async with serve_node(settings_for(WEB_DIST_DIR=str(dist))) as node:
        client = http(node.url)
        client.headers["Host"] = "chat.example.com"
        home = await client.get("/")
        assert home.status_code == 200 and home.text == INDEX
        assert home.headers["content-type"].startswith("text/html")
        assert home.headers["cache-control"] == "no-cache"
        csp = home.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"  # no inline scripts, no eval
        # The build's inline <style> (a boot splash) by its hash, and no other inline style.
        digest = base64.b64encode(hashlib.sha256(BOOT_STYLE.encode()).digest()).decode()
        assert directives["style-src"] == f"'self' 'sha256-{digest}'"
        assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
        assert directives["connect-src"] == "'self' ws://chat.example.com wss://chat.example.com"
        assert directives["img-src"] == "'self' blob: data:" == directives["media-src"]
        assert directives["frame-ancestors"] == "'none'"
        assert home.headers["x-content-type-options"] == "nosniff"
        assert home.headers["referrer-policy"] == "same-origin"
        permissions = home.headers["permissions-policy"]
        assert "camera=(self)" in permissions and "microphone=(self)" in permissions

        script = await client.get("/assets/index-Ab12Cd34.js")
        assert script.status_code == 200 and script.text == "console.log('app')"
        assert script.headers["cache-control"] == IMMUTABLE
        assert "javascript" in script.headers["content-type"]
        assert (await client.get("/assets/index-Ef56Gh78.css")).headers["cache-control"] == IMMUTABLE
        for path in ("/sw.js", "/manifest.webmanifest", "/index.html"):
            response = await client.get(path)
            assert response.status_code == 200 and response.headers["cache-control"] == "no-cache", path
            assert response.headers["x-content-type-options"] == "nosniff"

        # Pages of the app: index.html, for its router.
        for page in ("/messenger/0d9c4c1e-4b7a-4b5e-9a55-6f0b1c2d3e4f", "/calls", "/login?next=/chat"):
            response = await client.get(page)
            assert response.status_code == 200 and response.text == INDEX, page
            assert response.headers["cache-control"] == "no-cache"
        # A chunk that is not there (an old tab after a deploy) is a 404, never HTML.
        missing = await client.get("/assets/index-Old00000.js")
        assert missing.status_code == 404 and "html" not in missing.headers["content-type"]

        # Revalidation is cheap: the ETag answers 304.
        again = await client.get("/", headers={"If-None-Match": home.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
        assert (await client.head("/")).status_code == 200

        # A new build (another inline style): the policy follows it.
        (dist / "index.html").write_text(INDEX.replace(BOOT_STYLE, "body{margin:0}"))
        csp = (await client.get("/calls")).headers["content-security-policy"]
        assert digest not in csp and csp.count("'sha256-") == 1

        # Nothing outside the build, however the path is spelled.
        for sneaky in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"):
            response = await client.get(sneaky)
            assert "outside the build" not in response.text, sneaky


async def test_server_paths_keep_their_answers(settings_for: SettingsFor, dist: Path, http: Client) -> None:
    async with serve_node(settings_for(WEB_DIST_DIR=str(dist))) as node:
        client = http(node.url)
        for path in ("/api/nope", "/api", "/ws", "/metrics/x", "/healthz/deep", "/openapi.json/x"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found", path
        assert (await client.post("/api/auth/me")).status_code == 405  # a route, the wrong method
        assert (await client.post("/messenger")).status_code == 404  # the app answers GET only
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
        assert (await client.get("/metrics")).status_code == 200


async def test_without_a_build_the_root_says_how_to_make_one(
    settings_for: SettingsFor, tmp_path: Path, http: Client
) -> None:
    async with serve_node(settings_for(WEB_DIST_DIR=str(tmp_path / "nothing"))) as node:
        client = http(node.url)
        home = await client.get("/")
        assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
        assert "npm run build --prefix web" in home.text and "make run" in home.text
        assert "<script" not in home.text and home.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/messenger/x")).status_code == 404
        assert (await client.get("/api/nope")).json()["error"]["code"] == "not_found"


def test_the_web_app_is_the_routers_fallback_not_an_api_route(settings_for: SettingsFor) -> None:
    """It stays out of /openapi.json (which lists every route: tests/test_openapi.py) because it is not
    a route: the router hands it only what no route matched."""
    app = create_app(settings_for())
    assert isinstance(app.router.default, WebApp)
    assert not any(isinstance(route, WebApp) for route in app.routes)
    assert default_dist_dir() == ROOT / "web" / "dist"


def test_the_real_build_has_no_inline_scripts() -> None:
    """The CSP allows no inline script: the Vite build must not need one (checked when it is built)."""
    index = default_dist_dir() / "index.html"
    if not index.exists():
        pytest.skip("web/dist is not built (npm run build --prefix web)")
    scripts = re.findall(
        r"<script\b([^>]*)>(.*?)</script>", index.read_text(), flags=re.DOTALL | re.IGNORECASE
    )
    assert scripts, "index.html loads no script"
    for attributes, body in scripts:
        assert "src=" in attributes and not body.strip(), f"an inline script: <script{attributes}>{body[:80]}"
    assert not re.search(r"\son[a-z]+\s*=", index.read_text(), flags=re.IGNORECASE), "an inline event handler"
    # Its inline styles (a boot splash) are allowed by hash, which the server computes from the file.
    assert len(style_hashes(index.read_text())) == len(re.findall(r"<style\b", index.read_text()))
