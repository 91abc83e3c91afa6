"""LiveKit for group calls: one room per call (its name is ``str(call_id)``), access tokens,
RoomService and webhooks, through LiveKit's official SDK (``livekit-api``).

``LIVEKIT_URL`` may be written either way LiveKit's docs show it: ``wss://`` (what clients connect to)
or ``https://`` (the server API). Clients get the ws(s) form and RoomService the http(s) form of the
same address (``http`` ↔ ``ws``, ``https`` ↔ ``wss``), keeping any path, so one setting serves both.

A RoomService call is one attempt bounded by ``timeout`` (4 s by default): a call's start waits for
it, so an unreachable LiveKit must fail fast. Staying under the SDK's 5 s threshold also keeps its
LiveKit Cloud region failover (up to three attempts) from multiplying that wait.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import aiohttp
import jwt
import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api.room_service import RoomService

from kintsugi_rt.calls.frames import LiveKitJoin
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings

log = get_logger(__name__)

DEFAULT_TIMEOUT = timedelta(seconds=4)
NOT_FOUND = "not_found"  # the Twirp code of an unknown room or participant

_Result = TypeVar("_Result")


class LiveKitError(Exception):
    """A RoomService call failed: LiveKit answered with a Twirp error, or did not answer in time.

    ``code`` is the Twirp code (``not_found``, ``permission_denied``, ``internal``...), or
    ``unavailable`` / ``deadline_exceeded`` when no answer came; ``status`` is the HTTP status, if any.
    """

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (no answer, or a 5xx); a 4xx will not change."""
        return self.status is None or self.status >= 500


class InvalidWebhook(Exception):
    """A webhook request that is not LiveKit's: ``reason`` says why (also the exception's text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LiveKitEvent(msgspec.Struct, frozen=True):
    """The parts of a LiveKit webhook event the calls module reads.

    ``event`` is LiveKit's event name (``room_started``, ``room_finished``, ``participant_joined``,
    ``participant_left``, ``track_published``...); ``room`` the room's name (our call id for our
    rooms), ``identity`` the participant's (our user id). ``id`` is unique per event: LiveKit retries a
    delivery that failed, so the same event may come twice. ``created_at`` is in Unix seconds.
    """

    event: str
    room: str | None
    identity: str | None
    id: str | None = None
    created_at: int | None = None

    @property
    def call_id(self) -> uuid.UUID | None:
        """The call of the room, or None for a room that is not one of ours."""
        try:
            return uuid.UUID(self.room) if self.room else None
        except ValueError:
            return None


def client_url(url: str) -> str:
    """The address clients connect to: ``url`` with an http(s) scheme turned into ws(s)."""
    return "ws" + url.removeprefix("http") if url.startswith("http") else url


def api_url(url: str) -> str:
    """The address of the server API: ``url`` with a ws(s) scheme turned into http(s)."""
    return "http" + url.removeprefix("ws") if url.startswith("ws") else url


class LiveKit:
    """LiveKit for group calls: one room per call (room name = ``str(call_id)``), tokens, RoomService,
    webhooks. Construction does no I/O; the HTTP session opens on the first RoomService call."""

    def __init__(self, settings: Settings, *, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        self._url = settings.livekit_url
        self._api_url = api_url(self._url) if self._url else None
        self._key = settings.livekit_api_key
        self._secret = settings.livekit_api_secret
        self._timeout = timeout.total_seconds()
        self._api: api.LiveKitAPI | None = None
        self._receiver: api.WebhookReceiver | None = None
        if self.enabled:
            self._receiver = api.WebhookReceiver(api.TokenVerifier(self._key, self._secret))

    @property
    def enabled(self) -> bool:
        """Whether LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are all set."""
        return bool(self._url and self._key and self._secret)

    def _config(self) -> tuple[str, str, str]:
        if not (self._url and self._key and self._secret):
            raise LiveKitError(
                "LiveKit is not configured (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)",
                code="failed_precondition",
            )
        return self._url, self._key, self._secret

    # --- tokens ----------------------------------------------------------------------------------

    def join(self, call_id: uuid.UUID, user_id: uuid.UUID, name: str, ttl: timedelta) -> LiveKitJoin:
        """Where and how ``user_id`` joins the call's room: a token good for that room only, for ``ttl``.

        The token may publish and subscribe to media and nothing else: no data messages, no
        admin/create/list rights (a client holding it cannot touch other calls or kick anyone).
        """
        url, key, secret = self._config()
        room = str(call_id)
        grants = api.VideoGrants(
            room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=False
        )
        token = (
            api.AccessToken(key, secret)
            .with_identity(str(user_id))
            .with_name(name)
            .with_grants(grants)
            .with_ttl(ttl)
            .to_jwt()
        )
        return LiveKitJoin(url=client_url(url), room=room, token=token)

    # --- RoomService -----------------------------------------------------------------------------

    async def create_room(self, call_id: uuid.UUID, max_participants: int, empty_timeout: timedelta) -> None:
        """Create the call's room (LiveKit answers with the existing room if it is already there).

        ``empty_timeout``: how long LiveKit keeps the room open if nobody joins it (after the last
        participant leaves, the room's departure timeout applies: LiveKit's default, 20 s).
        """
        request = api.CreateRoomRequest(
            name=str(call_id),
            max_participants=max_participants,
            empty_timeout=max(1, round(empty_timeout.total_seconds())),
        )
        await self._call("CreateRoom", lambda room: room.create_room(request))
        log.info("livekit.room_ready", call_id=str(call_id), max_participants=max_participants)

    async def delete_room(self, call_id: uuid.UUID) -> None:
        """Close the call's room, disconnecting everyone in it; a room already gone is fine."""
        request = api.DeleteRoomRequest(room=str(call_id))
        if await self._call_unless_missing("DeleteRoom", lambda room: room.delete_room(request)):
            log.info("livekit.room_deleted", call_id=str(call_id))

    async def remove_participant(self, call_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Disconnect a user from the call's room; a user (or room) not there is fine.

        Their token stays valid until it expires, so the calls module must also refuse them a new one.
        """
        request = api.RoomParticipantIdentity(room=str(call_id), identity=str(user_id))
        if await self._call_unless_missing(
            "RemoveParticipant", lambda room: room.remove_participant(request)
        ):
            log.info("livekit.participant_removed", call_id=str(call_id), user_id=str(user_id))

    async def _call_unless_missing(
        self, method: str, send: Callable[[RoomService], Awaitable[object]]
    ) -> bool:
        """Run ``send``; False when LiveKit says the room or participant does not exist."""
        try:
            await self._call(method, send)
        except LiveKitError as exc:
            if exc.code != NOT_FOUND:
                raise
            return False
        return True

    async def _call(self, method: str, send: Callable[[RoomService], Awaitable[_Result]]) -> _Result:
        """One RoomService request within the timeout, its failures as ``LiveKitError``."""
        room = self._room_service()
        try:
            async with asyncio.timeout(self._timeout):
                return await send(room)
        except api.ServerError as exc:
            raise LiveKitError(
                f"LiveKit {method} failed: {exc.code} (HTTP {exc.status}): {exc.message or 'no message'}",
                code=exc.code,
                status=exc.status,
            ) from exc
        except TimeoutError as exc:
            raise LiveKitError(
                f"LiveKit {method}: no answer from {self._api_url} within {self._timeout:g} s",
                code="deadline_exceeded",
            ) from exc
        except aiohttp.ClientError as exc:
            raise LiveKitError(
                f"LiveKit {method}: cannot reach {self._api_url}: {exc}", code="unavailable"
            ) from exc
        except DecodeError as exc:  # a 200 that is not RoomService's answer (a proxy's page, say)
            raise LiveKitError(
                f"LiveKit {method}: the answer is not a RoomService response ({exc})", code="malformed"
            ) from exc

    def _room_service(self) -> RoomService:
        if self._api is None:
            url, key, secret = self._config()
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._api = api.LiveKitAPI(api_url(url), key, secret, timeout=timeout)
        return self._api.room

    async def close(self) -> None:
        """Close the HTTP session, if one was opened (a later call opens a new one)."""
        lk, self._api = self._api, None
        if lk is not None:
            await lk.aclose()

    # --- webhooks --------------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, authorization: str | None) -> LiveKitEvent:
        """Check that LiveKit sent ``body`` and decode it.

        LiveKit signs each delivery with a JWT in ``Authorization`` (bare, or after ``Bearer``):
        HS256 with our API secret, issued by our API key, short-lived, its ``sha256`` claim the base64
        SHA-256 of the body. Anything else raises ``InvalidWebhook``.
        """
        if self._receiver is None:
            raise InvalidWebhook("LiveKit is not configured on this server")
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token:
            raise InvalidWebhook("missing Authorization header")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise InvalidWebhook("the body is not UTF-8") from None
        try:
            event = self._receiver.receive(text, token)
        except jwt.ExpiredSignatureError:
            raise InvalidWebhook("the signature has expired") from None
        except jwt.InvalidIssuerError:
            raise InvalidWebhook("the signature was issued for another API key") from None
        except jwt.InvalidSignatureError:
            raise InvalidWebhook("the signature does not match our API secret") from None
        except jwt.PyJWTError as exc:
            raise InvalidWebhook(f"the signature is not a valid token ({exc})") from None
        except json_format.ParseError as exc:
            raise InvalidWebhook(f"the body is not a LiveKit event ({exc})") from None
        except Exception as exc:  # the SDK raises a bare Exception for a missing or different body hash
            raise InvalidWebhook(f"the body does not match the signature ({exc})") from None
        return _event(event)


def _event(event: api.WebhookEvent) -> LiveKitEvent:
    return LiveKitEvent(
        event=event.event,
        room=event.room.name if event.HasField("room") else None,
        identity=event.participant.identity if event.HasField("participant") else None,
        id=event.id or None,
        created_at=event.created_at or None,
    )
