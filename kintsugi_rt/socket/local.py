"""This node's connections, indexed by user, connection id, session and topic.

Hub envelopes land here; each addressee costs one dictionary lookup.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from kintsugi_rt import metrics
from kintsugi_rt.db.database import Database
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.codec import Format, json_to_msgpack
from kintsugi_rt.socket.connection import Connection
from kintsugi_rt.socket.hub import CLOSE, SIGNAL, Envelope
from kintsugi_rt.socket.protocol import Error


class _Bodies:
    """An envelope's body per format, transcoded at most once per node."""

    __slots__ = ("_json", "_msgpack")

    def __init__(self, body: bytes) -> None:
        self._json = body
        self._msgpack: bytes | None = None

    def get(self, fmt: Format) -> bytes:
        if fmt is Format.JSON:
            return self._json
        if self._msgpack is None:
            self._msgpack = json_to_msgpack(self._json)
        return self._msgpack


class LocalConnections:
    def __init__(self, on_signal: Callable[[Envelope], None]) -> None:
        self._on_signal = on_signal
        self.by_id: dict[str, Connection] = {}
        self.by_user: defaultdict[str, set[Connection]] = defaultdict(set)
        self.by_topic: defaultdict[str, set[Connection]] = defaultdict(set)

    def add(self, conn: Connection) -> None:
        self.by_id[conn.conn_id] = conn
        self.by_user[conn.user_key].add(conn)
        metrics.SOCKETS_OPEN.inc()

    def remove(self, conn: Connection) -> None:
        if self.by_id.pop(conn.conn_id, None) is None:
            return
        self._discard(self.by_user, conn.user_key, conn)
        for topic in conn.topics:
            self._discard(self.by_topic, topic, conn)
        metrics.SOCKETS_OPEN.dec()

    def topic_changed(self, conn: Connection, topic: str, subscribed: bool) -> None:
        if subscribed:
            self.by_topic[topic].add(conn)
        else:
            self._discard(self.by_topic, topic, conn)

    @staticmethod
    def _discard(index: defaultdict[str, set[Connection]], key: str, conn: Connection) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del index[key]

    def deliver(self, envelope: Envelope) -> None:
        metrics.HUB_LATENCY.observe(max(0.0, time.time() - envelope.published_at))
        if envelope.kind == CLOSE:
            self._close(envelope)
            return
        if envelope.kind == SIGNAL:
            self._on_signal(envelope)
            return
        bodies = _Bodies(envelope.body)
        if envelope.conn is not None:
            conn = self.by_id.get(envelope.conn)
            if conn is not None:
                self._send(conn, bodies.get(conn.fmt), envelope.ephemeral)
            return
        if envelope.topic is not None:
            for conn in self.by_topic.get(envelope.topic, ()):
                conn.send_ephemeral(bodies.get(conn.fmt))
            return
        if envelope.positions:
            for user, pos in zip(envelope.users, envelope.positions, strict=True):
                for conn in self.by_user.get(user, ()):
                    conn.send_durable(pos, bodies.get(conn.fmt))
            return
        for user in envelope.users:
            for conn in self.by_user.get(user, ()):
                self._send(conn, bodies.get(conn.fmt), envelope.ephemeral)

    @staticmethod
    def _send(conn: Connection, body: bytes, ephemeral: bool) -> None:
        if ephemeral:
            conn.send_ephemeral(body)
        else:
            conn.send_control(body)

    def _close(self, envelope: Envelope) -> None:
        targets: list[Connection] = []
        for user in envelope.users:
            targets.extend(self.by_user.get(user, ()))
        if envelope.session is not None:
            targets = [c for c in targets if str(c.session_id) == envelope.session]
        error = Error(code=envelope.error_code, message="This login has ended; log in again.")
        for conn in targets:
            conn.close(envelope.close_code, error)

    async def catch_up(self, db: Database) -> None:
        """After the hub was lost: every socket gets what its stream holds beyond what it was sent."""
        metrics.HUB_RESYNCS.inc()
        users = {conn.user_id for conn in self.by_id.values()}
        if not users:
            return
        positions = await streams.heads(db.pool, list(users))
        for conn in list(self.by_id.values()):
            head = positions.get(conn.user_id)
            if head is not None:
                conn.catch_up(head)
