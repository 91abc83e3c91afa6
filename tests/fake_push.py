"""A local fake of a Web Push service (RFC 8030) and of the browsers subscribed to it, for tests.

A browser (``Browser``) holds what a real one keeps to itself: a P-256 key pair and a 16-byte auth
secret (RFC 8291); ``browser.subscription(fake)`` is its ``PushSubscription.toJSON()`` on this
service. The service takes ``POST /push/<token>`` as a push service does, and checks what a real one
checks before it answers 201:

- VAPID (RFC 8292): ``Authorization: vapid t=<JWT>, k=<public key>``; the JWT is ES256, signed by ``k``,
  its ``aud`` is this service's origin, ``exp`` is in the future and at most 24 hours away, ``sub`` is a
  ``mailto:`` or ``https:`` contact. A bad one: 401 (403 if ``k`` is not the key the test expects).
- ``TTL`` (required, a number), ``Urgency`` (one of RFC 8030's four), ``Topic`` (at most 32 base64url
  characters), ``Content-Encoding: aes128gcm``: otherwise 400.
- The body is decrypted as the browser would, by hand here with ``cryptography`` (RFC 8188 records,
  RFC 8291 keys), not by the library that encrypted it; one that does not decrypt: 400.

Answers can be scripted per token (``script(token, 429, 201)``: the next requests get these, then 201);
``gone(token)`` makes a subscription answer 410 from then on, as a push service does after the browser
unsubscribed. Every request is recorded in ``attempts``; the ones answered 201, decrypted, in
``delivered``; ``await wait_for(token)`` returns the next delivery for a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import _InLoopServer

URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_AUTH = re.compile(r"vapid\s+t=([^,\s]+)\s*,\s*k=([A-Za-z0-9_-]+)\s*", re.IGNORECASE)
MAX_VAPID_LIFETIME = 24 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class DecryptError(ValueError):
    pass


class Browser:
    """The user agent's side of one subscription: its keys, and decryption of what it receives."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = secrets.token_bytes(16)
        self.token = secrets.token_urlsafe(12)

    @property
    def p256dh(self) -> str:
        return b64url(_point(self.private_key.public_key()))

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def endpoint(self, fake: FakePushService) -> str:
        return f"{fake.url}/push/{self.token}"

    def subscription(self, fake: FakePushService) -> dict[str, Any]:
        """As ``PushSubscription.toJSON()``: the fields of ``push.subscribe``."""
        return {"endpoint": self.endpoint(fake), "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 over RFC 8188 (``aes128gcm``): header, then records of ``rs`` bytes."""
        if len(body) < 21:
            raise DecryptError("shorter than the aes128gcm header")
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        keyid = body[21 : 21 + idlen]
        if idlen != 65 or rs < 18:
            raise DecryptError(f"keyid of {idlen} bytes (the sender's P-256 key has 65), rs {rs}")
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
        shared = self.private_key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + _point(self.private_key.public_key()) + keyid
        ikm = HKDF(hashes.SHA256(), 32, salt=self.auth_secret, info=key_info).derive(shared)
        cek = HKDF(hashes.SHA256(), 16, salt=salt, info=b"Content-Encoding: aes128gcm\x00").derive(ikm)
        nonce = HKDF(hashes.SHA256(), 12, salt=salt, info=b"Content-Encoding: nonce\x00").derive(ikm)
        records = body[21 + idlen :]
        plain = b""
        for seq, start in enumerate(range(0, len(records), rs)):
            iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
            try:
                record = AESGCM(cek).decrypt(iv, records[start : start + rs], None)
            except Exception as exc:
                raise DecryptError(f"record {seq} does not decrypt ({exc!r})") from None
            data = record.rstrip(b"\x00")
            last = start + rs >= len(records)
            if not data or data[-1] != (2 if last else 1):
                raise DecryptError(f"record {seq} has no {'last ' if last else ''}padding delimiter")
            plain += data[:-1]
        return plain


@dataclass
class Attempt:
    """One request the service got, and what it answered."""

    token: str
    status: int
    headers: dict[str, str]
    reason: str = ""


@dataclass
class Delivery:
    """A push the service accepted: the decrypted payload, its headers, the VAPID claims and key."""

    token: str
    payload: dict[str, Any]
    ttl: int
    urgency: str
    topic: str | None
    claims: dict[str, Any]
    vapid_key: str
    at: float = field(default_factory=time.time)


class FakePushService:
    def __init__(self) -> None:
        self.url = ""
        self.browsers: dict[str, Browser] = {}
        self.attempts: list[Attempt] = []
        self.delivered: list[Delivery] = []
        self.expected_key: str | None = None  # the server's VAPID key, once the test knows it
        self._scripts: defaultdict[str, deque[int]] = defaultdict(deque)
        self._gone: set[str] = set()
        self._arrived = asyncio.Condition()
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(routes=[Route("/push/{token}", self._push, methods=["POST"])])

    # --- the test's side ------------------------------------------------------------------------

    def browser(self) -> Browser:
        """A new browser that may subscribe here."""
        browser = Browser()
        self.browsers[browser.token] = browser
        return browser

    def script(self, token: str, *statuses: int) -> None:
        """The next requests for ``token`` get these statuses (then 201 again)."""
        self._scripts[token].extend(statuses)

    def gone(self, token: str) -> None:
        """The browser unsubscribed: 410 from now on."""
        self._gone.add(token)

    def for_token(self, token: str) -> list[Delivery]:
        return [d for d in self.delivered if d.token == token]

    async def wait_for(self, token: str, count: int = 1, timeout: float = 10) -> list[Delivery]:
        """The first ``count`` deliveries for ``token`` (waiting for them)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.for_token(token)) >= count), timeout
            )
        return self.for_token(token)[:count]

    # --- the push service's side ------------------------------------------------------------------

    async def _push(self, request: Request) -> Response:
        token = request.path_params["token"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.body()
        status, reason, delivery = self._check(token, headers, body)
        self.attempts.append(Attempt(token, status, headers, reason))
        if status == 201 and delivery is not None:
            async with self._arrived:
                self.delivered.append(delivery)
                self._arrived.notify_all()
            return Response(
                status_code=201, headers={"Location": f"{self.url}/message/{secrets.token_hex(8)}"}
            )
        extra = {"Retry-After": "0"} if status == 429 else {}
        return Response(reason, status_code=status, headers=extra, media_type="text/plain")

    def _check(self, token: str, headers: dict[str, str], body: bytes) -> tuple[int, str, Delivery | None]:
        browser = self.browsers.get(token)
        if browser is None or token in self._gone:
            return 410 if browser is not None else 404, "no such subscription", None
        found = _AUTH.fullmatch(headers.get("authorization", ""))
        if found is None:
            return 401, "Authorization is not 'vapid t=<JWT>, k=<key>'", None
        token_text, key = found.group(1), found.group(2)
        if self.expected_key is not None and key != self.expected_key:
            return 403, "not the VAPID key the subscription was made with", None
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
            header = jwt.get_unverified_header(token_text)
            claims = jwt.decode(
                token_text,
                public,
                algorithms=["ES256"],
                audience=self.url,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            return 401, f"bad VAPID token: {exc}", None
        if header.get("typ", "JWT").upper() != "JWT" or header.get("alg") != "ES256":
            return 401, "the VAPID token's header is not an ES256 JWT", None
        if int(claims["exp"]) > time.time() + MAX_VAPID_LIFETIME:
            return 401, "the VAPID token lives longer than 24 hours", None
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return 401, "the VAPID sub is not a mailto: or https: contact", None
        ttl = headers.get("ttl", "")
        if not ttl.isdigit():
            return 400, "TTL is required (seconds)", None
        urgency = headers.get("urgency", "normal")
        if urgency not in URGENCIES:
            return 400, f"Urgency {urgency!r} is not one of RFC 8030's", None
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            return 400, "Topic is at most 32 base64url characters", None
        if headers.get("content-encoding") != "aes128gcm":
            return 400, "Content-Encoding must be aes128gcm", None
        if len(body) > 4096:
            return 413, "payload larger than 4096 bytes", None
        try:
            payload = json.loads(browser.decrypt(body))
        except (DecryptError, ValueError) as exc:
            return 400, f"the body does not decrypt: {exc}", None
        scripted = self._scripts[token]
        if scripted:
            status = scripted.popleft()
            if status != 201:
                return status, "scripted", None
        return 201, "", Delivery(token, payload, int(ttl), urgency, topic, claims, key)

    # --- running -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1") -> str:
        config = uvicorn.Config(
            self.app, host=host, port=0, log_config=None, access_log=False, lifespan="off"
        )
        server = _InLoopServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("FakePushService stopped during start-up")
            await asyncio.sleep(0.01)
        self._server, self._task = server, task
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None
