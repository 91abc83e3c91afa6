"""A small local fake of LiveKit's server API for tests: RoomService over Twirp, and signed webhooks.

Twirp, as ``livekit-api`` calls it: ``POST /twirp/livekit.RoomService/<Method>``, the request a
protobuf message (``Content-Type: application/protobuf``, what the SDK sends) or its JSON form
(``application/json``), answered in the same encoding. Errors are always JSON,
``{"code": "not_found", "msg": "..."}``, with the HTTP status Twirp gives the code.

Auth is checked as LiveKit's server does: ``Authorization: Bearer <JWT>``, HS256 with the API secret,
issued by the API key, with an expiry; then the grants: ``roomCreate`` for CreateRoom and DeleteRoom,
``roomList`` for ListRooms, ``roomAdmin`` for the room named in the request for ListParticipants and
RemoveParticipant. State lives in memory; every request is recorded in ``requests``.

Webhooks: ``webhook(...)`` builds a delivery as LiveKit sends one: the event as protobuf JSON, and an
``Authorization`` header holding a JWT signed with the API secret whose ``sha256`` claim is the base64
SHA-256 of that body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import uvicorn
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit import api
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import _InLoopServer

TEST_API_KEY = "APIfakekey"
TEST_API_SECRET = "fake-livekit-secret-" + "s" * 24
SERVICE_PATH = "/twirp/livekit.RoomService/"
WEBHOOK_VALIDITY = timedelta(minutes=5)  # what LiveKit's server gives a webhook's token
DEFAULT_EMPTY_TIMEOUT = 300  # seconds; LiveKit's defaults for a room created without them
DEFAULT_DEPARTURE_TIMEOUT = 20
PROTOBUF = "application/protobuf"
JSON_TYPE = "application/json"

# https://twitchtv.github.io/twirp/docs/spec_v7.html#error-codes
TWIRP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}


class TwirpError(Exception):
    """An error answer: a Twirp code (its HTTP status follows) and a message."""

    def __init__(self, code: str, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = TWIRP_STATUS[code] if status is None else status

    def response(self) -> Response:
        body = json.dumps({"code": self.code, "msg": self.msg})
        return Response(body, self.status, media_type=JSON_TYPE)


@dataclass
class Recorded:
    """One request as the fake saw it: ``body`` is the request message with proto field names."""

    method: str
    content_type: str
    body: dict[str, Any]
    grants: dict[str, Any]
    status: int = 200


@dataclass
class WebhookRequest:
    """A webhook delivery: POST ``body`` with ``headers``."""

    body: bytes
    authorization: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Method:
    request: type[Message]
    grant: Callable[[dict[str, Any], Message], bool]
    handle: Callable[[Message], Message]


def _room_create(video: dict[str, Any], request: Message) -> bool:
    return video.get("roomCreate") is True


def _room_list(video: dict[str, Any], request: Message) -> bool:
    return video.get("roomList") is True


def _room_admin(video: dict[str, Any], request: Message) -> bool:
    room: str = getattr(request, "room", "")
    return video.get("roomAdmin") is True and video.get("room") == room


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


def sign_webhook(
    body: bytes,
    *,
    api_key: str = TEST_API_KEY,
    api_secret: str = TEST_API_SECRET,
    issued_at: float | None = None,
    valid_for: timedelta = WEBHOOK_VALIDITY,
) -> str:
    """The ``Authorization`` value LiveKit sends with ``body``: a bare JWT (no ``Bearer``)."""
    now = int(time.time() if issued_at is None else issued_at)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": api_key, "nbf": now, "exp": now + int(valid_for.total_seconds()), "sha256": digest}
    return jwt.encode(claims, api_secret, algorithm="HS256")


class FakeLiveKit:
    """LiveKit's RoomService on a local port, its rooms and participants in plain dicts."""

    def __init__(self, api_key: str = TEST_API_KEY, api_secret: str = TEST_API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.url = ""  # the base URL, once started
        self.rooms: dict[str, api.Room] = {}
        self.participants: dict[str, dict[str, api.ParticipantInfo]] = {}  # room -> identity -> info
        self.requests: list[Recorded] = []
        self.failure: TwirpError | None = None  # while set, every request gets this answer
        self.stalled = False  # while set, requests get no answer (until stop)
        self._release = asyncio.Event()
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._methods = {
            "CreateRoom": _Method(api.CreateRoomRequest, _room_create, self._create_room),
            "DeleteRoom": _Method(api.DeleteRoomRequest, _room_create, self._delete_room),
            "ListRooms": _Method(api.ListRoomsRequest, _room_list, self._list_rooms),
            "ListParticipants": _Method(api.ListParticipantsRequest, _room_admin, self._list_participants),
            "RemoveParticipant": _Method(api.RoomParticipantIdentity, _room_admin, self._remove_participant),
        }
        route = Route("/{path:path}", self._endpoint, methods=["GET", "POST", "PUT", "DELETE"])
        self.app = Starlette(routes=[route])

    # -- serving ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running event loop; return the base URL (``http://host:port``)."""
        if self._server is not None:
            raise RuntimeError("FakeLiveKit is already running")
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        server = _InLoopServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("FakeLiveKit stopped during start-up")
            await asyncio.sleep(0.01)
        self._server, self._task = server, task
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self._release.set()  # stalled requests end, so uvicorn can finish them
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    # -- Twirp -----------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        method_name = request.url.path.removeprefix(SERVICE_PATH)
        body = await request.body()
        record = Recorded(method_name, content_type, {}, {})
        self.requests.append(record)
        if self.stalled:
            await self._release.wait()
        try:
            answer = self._answer(request, method_name, content_type, body, record)
        except TwirpError as exc:
            record.status = exc.status
            return exc.response()
        if content_type == JSON_TYPE:
            text = json_format.MessageToJson(
                answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            return Response(text, media_type=JSON_TYPE)
        return Response(answer.SerializeToString(), media_type=PROTOBUF)

    def _answer(
        self, request: Request, method_name: str, content_type: str, body: bytes, record: Recorded
    ) -> Message:
        if self.failure is not None:
            raise self.failure
        method = self._methods.get(method_name)
        if request.method != "POST" or not request.url.path.startswith(SERVICE_PATH) or method is None:
            raise TwirpError("bad_route", f"no handler for {request.method} {request.url.path}")
        if content_type not in (PROTOBUF, JSON_TYPE):
            raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")
        message = self._decode(method.request, content_type, body)
        record.body = json_format.MessageToDict(message, preserving_proto_field_name=True)
        record.grants = self._video_grants(request.headers.get("authorization", ""))
        if not method.grant(record.grants, message):
            raise TwirpError("permission_denied", "permissions denied")
        return method.handle(message)

    @staticmethod
    def _decode(kind: type[Message], content_type: str, body: bytes) -> Message:
        message = kind()
        try:
            if content_type == JSON_TYPE:
                json_format.Parse(body.decode(), message)
            else:
                message.ParseFromString(body)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
            raise TwirpError("malformed", f"the request is not a {kind.__name__}: {exc}") from None
        return message

    def _video_grants(self, authorization: str) -> dict[str, Any]:
        """The token's ``video`` grants, once its signature, issuer and expiry check out."""
        if not authorization.startswith("Bearer "):
            raise TwirpError("unauthenticated", "authorization header is missing or not a bearer token")
        try:
            claims = jwt.decode(
                authorization.removeprefix("Bearer "),
                self.api_secret,
                algorithms=["HS256"],
                issuer=self.api_key,
                options={"require": ["exp", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise TwirpError("unauthenticated", f"invalid token: {exc}") from None
        video: dict[str, Any] = claims.get("video", {})
        return video

    # -- RoomService methods ---------------------------------------------------------------------

    def _create_room(self, message: Message) -> Message:
        assert isinstance(message, api.CreateRoomRequest)
        if not message.name:
            raise TwirpError("invalid_argument", "room name is required")
        existing = self.rooms.get(message.name)
        if existing is not None:  # CreateRoom is "create or get"
            return existing
        now = time.time()
        room = api.Room(
            sid=new_sid("RM_"),
            name=message.name,
            empty_timeout=message.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=message.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=message.max_participants,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            metadata=message.metadata,
        )
        self.rooms[room.name] = room
        self.participants[room.name] = {}
        return room

    def _delete_room(self, message: Message) -> Message:
        assert isinstance(message, api.DeleteRoomRequest)
        self._room(message.room)
        del self.rooms[message.room]
        del self.participants[message.room]
        return api.DeleteRoomResponse()

    def _list_rooms(self, message: Message) -> Message:
        assert isinstance(message, api.ListRoomsRequest)
        names = set(message.names)
        rooms = [room for name, room in self.rooms.items() if not names or name in names]
        return api.ListRoomsResponse(rooms=rooms)

    def _list_participants(self, message: Message) -> Message:
        assert isinstance(message, api.ListParticipantsRequest)
        self._room(message.room)
        return api.ListParticipantsResponse(participants=list(self.participants[message.room].values()))

    def _remove_participant(self, message: Message) -> Message:
        assert isinstance(message, api.RoomParticipantIdentity)
        self._room(message.room)
        if self.participants[message.room].pop(message.identity, None) is None:
            raise TwirpError("not_found", "participant not found")
        return api.RemoveParticipantResponse()

    def _room(self, name: str) -> api.Room:
        room = self.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", "requested room does not exist")
        return room

    # -- what happens on LiveKit's side ----------------------------------------------------------

    def connect(self, token: str) -> api.ParticipantInfo:
        """A client joins with ``token`` (as the SDKs do with ``LiveKitJoin``): checked like the API's
        tokens, it must grant ``roomJoin`` for a room; the room is created if missing (LiveKit's
        auto-create) and its ``max_participants`` is enforced. Raises ``TwirpError`` if refused."""
        video = self._video_grants(f"Bearer {token}")
        claims = jwt.decode(token, options={"verify_signature": False})
        name = video.get("room", "")
        if video.get("roomJoin") is not True or not name or not claims.get("sub"):
            raise TwirpError("permission_denied", "the token does not grant joining a room")
        if name not in self.rooms:
            self._create_room(api.CreateRoomRequest(name=name))
        room = self.rooms[name]
        members = self.participants[name]
        if room.max_participants and len(members) >= room.max_participants:
            raise TwirpError("resource_exhausted", "room is full")
        info = api.ParticipantInfo(
            sid=new_sid("PA_"),
            identity=claims["sub"],
            name=claims.get("name", ""),
            state=api.ParticipantInfo.ACTIVE,
            joined_at=int(time.time()),
        )
        members[info.identity] = info
        return info

    def webhook(
        self,
        event: str,
        *,
        room: str | None = None,
        identity: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        issued_at: float | None = None,
    ) -> WebhookRequest:
        """A signed delivery of ``event`` about ``room`` (and participant ``identity``), as LiveKit
        posts it; ``api_key`` / ``api_secret`` / ``issued_at`` forge or age the signature."""
        message = api.WebhookEvent(event=event, id=new_sid("EV_"), created_at=int(time.time()))
        if room is not None:
            message.room.CopyFrom(self.rooms.get(room, api.Room(sid=new_sid("RM_"), name=room)))
        if identity is not None:
            stranger = api.ParticipantInfo(sid=new_sid("PA_"), identity=identity)
            message.participant.CopyFrom(self.participants.get(room or "", {}).get(identity, stranger))
        body = json_format.MessageToJson(message, indent=None).encode()
        authorization = sign_webhook(
            body,
            api_key=api_key or self.api_key,
            api_secret=api_secret or self.api_secret,
            issued_at=issued_at,
        )
        headers = {"Authorization": authorization, "Content-Type": "application/webhook+json"}
        return WebhookRequest(body, authorization, headers)
