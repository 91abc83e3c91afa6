"""The messenger through real sockets, with users on two nodes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from kintsugi_rt.clock import ManualClock
from kintsugi_rt.messenger import storage as messenger_storage
from kintsugi_rt.settings import Settings
from tests.support import Node, RedisServer, serve_node
from tests.test_delivery import hub_settings
from tests.test_media import ogg_opus, png
from tests.wsclient import Socket, User, new_user


@asynccontextmanager
async def two_nodes(settings: Settings) -> AsyncIterator[tuple[Node, Node]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(serve_node(settings))
        b = await stack.enter_async_context(serve_node(settings))
        yield a, b


async def connect(node: Node, user: User) -> Socket:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    await sock.request("ping")  # past the resume grace: durable events flow at once
    return sock


async def expect_message(sock: Socket, type_: str, **fields: Any) -> dict[str, Any]:
    """The next ``type_`` frame whose ``message`` has these fields (others stay in the backlog)."""
    skipped = []
    try:
        while True:
            frame = await sock.expect(type_)
            if all(frame["message"].get(k) == v for k, v in fields.items()):
                return frame
            skipped.append(frame)
    finally:
        sock.backlog[:0] = skipped


def cid() -> str:
    return secrets.token_hex(6)


async def test_two_users_on_two_nodes_chat_and_resume_exactly_once(
    settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    settings = settings_for(**hub_settings("redis", redis_server))
    async with two_nodes(settings) as (a, b):
        ann, bo, cy = (
            (await new_user(a.url, n) for n in ("Ann", "Bo", "Cy"))
            if False
            else (
                await new_user(a.url, "Ann"),
                await new_user(b.url, "Bo"),
                await new_user(b.url, "Cy"),
            )
        )
        ann_s, bo_s, cy_s = await connect(a, ann), await connect(b, bo), await connect(b, cy)

        direct = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        again = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        assert again["id"] == direct["id"]
        assert (await bo_s.expect("conversation.updated"))["conversation"]["id"] == direct["id"]

        first = (
            await ann_s.request(
                "message.send", conversation_id=direct["id"], client_msg_id="a1", text="hi Bo"
            )
        )["message"]
        assert first["seq"] == 1
        got = await bo_s.expect("message.new")
        assert got["message"]["text"] == "hi Bo" and got["pos"] > 0
        retry = await ann_s.request(
            "message.send", conversation_id=direct["id"], client_msg_id="a1", text="hi Bo"
        )
        assert retry["message"]["id"] == first["id"], "a retried send never duplicates"

        reply = (
            await bo_s.request(
                "message.send",
                conversation_id=direct["id"],
                client_msg_id="b1",
                text="hey!",
                reply_to=first["id"],
            )
        )["message"]
        assert (await expect_message(ann_s, "message.new", sender_id=bo.id))["message"]["reply_to"] == first[
            "id"
        ]

        reacted = await ann_s.request("message.react", message_id=reply["id"], emoji="👍")
        assert reacted["message"]["reactions"] == [{"emoji": "👍", "user_ids": [ann.id]}]
        assert (await bo_s.expect("message.updated", change="reaction"))["message"]["reactions"][0][
            "emoji"
        ] == "👍"
        toggled = await ann_s.request("message.react", message_id=reply["id"], emoji="👍")
        assert toggled["message"].get("reactions", []) == []  # omitted when empty

        edited = await bo_s.request("message.edit", message_id=reply["id"], text="hey Ann!")
        assert edited["message"]["text"] == "hey Ann!" and edited["message"]["edited_at"]
        assert (await ann_s.expect("message.updated", change="edited"))["message"]["text"] == "hey Ann!"
        foreign_edit = await ann_s.request("message.edit", message_id=reply["id"], text="mine now")
        assert foreign_edit["code"] == "forbidden"

        await ann_s.request("message.send", conversation_id=direct["id"], client_msg_id="a2", text="there?")
        await bo_s.request("message.read", conversation_id=direct["id"], seq=2)  # his own reply: no move
        await bo_s.request("message.read", conversation_id=direct["id"], seq=3)
        receipt = await ann_s.expect("message.read")
        assert receipt == {
            "pos": receipt["pos"],
            "type": "message.read",
            "conversation_id": direct["id"],
            "user_id": bo.id,
            "seq": 3,
        }

        await ann_s.send({"type": "typing", "conversation_id": direct["id"]})
        typing = await bo_s.expect("typing")
        assert typing["user_id"] == ann.id and typing["expires_in_ms"] == 6000
        await ann_s.send({"type": "typing", "conversation_id": direct["id"]})  # throttled
        await bo_s.request("ping")
        await asyncio.sleep(0.2)
        assert not [f for f in bo_s.backlog if f.get("type") == "typing"]

        group = (
            await ann_s.request("conversation.create", kind="group", user_ids=[bo.id, cy.id], title="Trip")
        )["conversation"]
        assert {m["user_id"]: m["role"] for m in group["members"]} == {
            ann.id: "owner",
            bo.id: "member",
            cy.id: "member",
        }
        await cy_s.expect("conversation.updated")
        bo_msg = (
            await bo_s.request("message.send", conversation_id=group["id"], client_msg_id="b2", text="I'm in")
        )["message"]
        assert (await cy_s.request("message.delete", message_id=bo_msg["id"], scope="everyone"))[
            "code"
        ] == "forbidden"
        await ann_s.request("message.delete", message_id=bo_msg["id"], scope="everyone")  # the owner may
        tombstone = await cy_s.expect("message.updated", change="deleted")
        assert tombstone["message"]["deleted"] is True and "text" not in tombstone["message"]

        # Bo drops off; Ann keeps talking; Bo comes back on the other node and resumes.
        hello_pos = max(f.get("pos", 0) for f in [*bo_s.backlog, tombstone] if "pos" in f)
        last_seen = max([hello_pos, *(f["pos"] for f in bo_s.backlog if "pos" in f)])
        await bo_s.close()
        missed = []
        for i in range(3):
            missed.append(
                (
                    await ann_s.request(
                        "message.send", conversation_id=group["id"], client_msg_id=cid(), text=f"g{i}"
                    )
                )["message"]["id"]
            )
        missed.append(
            (
                await ann_s.request(
                    "message.send", conversation_id=direct["id"], client_msg_id=cid(), text="d"
                )
            )["message"]["id"]
        )
        back = await Socket.open(a.ws_url, bo.token)
        hello = await back.expect("hello")
        await back.send({"type": "resume", "epoch": hello["epoch"], "pos": last_seen})
        frames = []
        while True:
            frame = await back.recv(timeout=10)
            if frame["type"] == "resumed":
                break
            frames.append(frame)
        new_ids = [f["message"]["id"] for f in frames if f["type"] == "message.new"]
        assert [i for i in new_ids if i in missed] == missed
        assert len(new_ids) == len(set(new_ids)), "exactly once"
        await back.request("ping")
        assert not [f for f in back.backlog if f.get("type") == "message.new"]

        listed = (await back.request("conversation.list"))["conversations"]
        by_id = {c["id"]: c for c in listed}
        assert by_id[group["id"]]["unread"] == 3 and by_id[direct["id"]]["unread"] == 1
        assert by_id[group["id"]]["last_message"]["text"] == "g2"
        for sock in (ann_s, cy_s, back):
            await sock.close()


async def test_read_receipts_can_be_kept_private(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        bo_phone = await connect(node, bo)
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        await ann_s.request("message.send", conversation_id=conv["id"], client_msg_id="x", text="hello")
        sent = (await ann_s.request("conversation.get", conversation_id=conv["id"]))["conversation"]
        assert (sent["read_seq"], sent["unread"]) == (1, 0), "sending marks it read for the sender"
        assert (await bo_s.request("receipts.set", enabled=False))["type"] == "ok"
        await bo_s.request("message.read", conversation_id=conv["id"], seq=1)
        assert (await bo_phone.expect("message.read"))["seq"] == 1  # Bo's own devices still learn it
        await ann_s.request("ping")
        await asyncio.sleep(0.2)
        assert not [f for f in ann_s.backlog if f.get("type") == "message.read"]
        view = (await ann_s.request("conversation.get", conversation_id=conv["id"]))["conversation"]
        bo_member = next(m for m in view["members"] if m["user_id"] == bo.id)
        assert "read_seq" not in bo_member or bo_member["read_seq"] is None
        # The mark never moves back.
        await bo_s.request("message.read", conversation_id=conv["id"], seq=0)
        mine = (await bo_s.request("conversation.get", conversation_id=conv["id"]))["conversation"]
        assert mine["read_seq"] == 1 and mine["unread"] == 0
        for sock in (ann_s, bo_s, bo_phone):
            await sock.close()


async def test_edit_and_delete_windows(settings_for: Callable[..., Settings]) -> None:
    clock = ManualClock()
    async with serve_node(
        settings_for(MESSENGER_EDIT_WINDOW="1h", MESSENGER_DELETE_WINDOW="2h"), clock=clock
    ) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        sent = (
            await ann_s.request("message.send", conversation_id=conv["id"], client_msg_id="1", text="v1")
        )["message"]
        assert (await ann_s.request("message.edit", message_id=sent["id"], text="v2"))["message"][
            "text"
        ] == "v2"
        clock.advance(timedelta(minutes=61))
        late = await ann_s.request("message.edit", message_id=sent["id"], text="v3")
        assert late["code"] == "edit_window_passed"
        clock.advance(timedelta(minutes=60))
        too_late = await ann_s.request("message.delete", message_id=sent["id"], scope="everyone")
        assert too_late["code"] == "delete_window_passed"
        assert (await bo_s.request("message.delete", message_id=sent["id"], scope="me"))["type"] == "ok"
        mine = (await bo_s.request("message.history", conversation_id=conv["id"]))["messages"]
        theirs = (await ann_s.request("message.history", conversation_id=conv["id"]))["messages"]
        assert mine == [] and theirs[0]["text"] == "v2"
        for sock in (ann_s, bo_s):
            await sock.close()
    conn = await asyncpg.connect(node.ctx.db.dsn) if False else None
    del conn


async def test_history_paging_search_sync_and_pins(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, eve = (
            await new_user(node.url, "Ann"),
            await new_user(node.url, "Bo"),
            await new_user(node.url, "Eve"),
        )
        ann_s, bo_s, eve_s = await connect(node, ann), await connect(node, bo), await connect(node, eve)
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        ids = []
        for i in range(5):
            reply = await ann_s.request(
                "message.send",
                conversation_id=conv["id"],
                client_msg_id=f"h{i}",
                text=f"message number {i} kava",
            )
            ids.append(reply["message"]["id"])
        page = await bo_s.request("message.history", conversation_id=conv["id"], limit=2)
        assert [m["seq"] for m in page["messages"]] == [4, 5] and page["has_more"] is True
        older = await bo_s.request("message.history", conversation_id=conv["id"], limit=2, before_seq=4)
        assert [m["seq"] for m in older["messages"]] == [2, 3]
        newer = await bo_s.request("message.history", conversation_id=conv["id"], after_seq=3)
        assert [m["seq"] for m in newer["messages"]] == [4, 5] and newer["has_more"] is False

        found = await bo_s.request("message.search", query="number 3")
        assert [m["id"] for m in found["messages"]] == [ids[3]]
        assert (await eve_s.request("message.search", query="kava"))["messages"] == []

        synced = await bo_s.request("conversation.sync", since={conv["id"]: 3})
        assert [m["seq"] for m in synced["messages"]] == [4, 5]
        assert synced["conversations"][0]["unread"] == 5

        pinned = await bo_s.request("message.pin", message_id=ids[0])
        assert pinned["message"]["pinned"] is True
        assert (await ann_s.expect("message.updated", change="pinned"))["message"]["id"] == ids[0]

        group = (await ann_s.request("conversation.create", kind="group", user_ids=[bo.id], title="G"))[
            "conversation"
        ]
        fwd = await bo_s.request(
            "message.forward", message_id=ids[1], conversation_id=group["id"], client_msg_id="f"
        )
        assert (
            fwd["message"]["forwarded_from"] == ids[1] and fwd["message"]["text"] == "message number 1 kava"
        )
        assert (await bo_s.request("message.pin", message_id=fwd["message"]["id"]))["code"] == "forbidden"
        for sock in (ann_s, bo_s, eve_s):
            await sock.close()


async def test_group_membership(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(MESSENGER_MAX_MEMBERS="4")) as node:
        users = [await new_user(node.url, f"U{i}") for i in range(5)]
        owner, admin, member, extra, late = users
        socks = [await connect(node, u) for u in users]
        group = (
            await socks[0].request(
                "conversation.create", kind="group", user_ids=[admin.id, member.id], title="G"
            )
        )["conversation"]
        gid = group["id"]
        assert (await socks[2].request("conversation.add_members", conversation_id=gid, user_ids=[extra.id]))[
            "code"
        ] == "forbidden"
        promoted = await socks[0].request(
            "conversation.promote", conversation_id=gid, user_id=admin.id, role="admin"
        )
        assert {m["user_id"]: m["role"] for m in promoted["conversation"]["members"]}[admin.id] == "admin"
        added = await socks[1].request("conversation.add_members", conversation_id=gid, user_ids=[extra.id])
        assert len(added["conversation"]["members"]) == 4
        assert (await socks[3].expect("conversation.updated"))["conversation"]["id"] == gid
        full = await socks[1].request("conversation.add_members", conversation_id=gid, user_ids=[late.id])
        assert full["code"] == "too_many_members"
        assert (await socks[1].request("conversation.remove_member", conversation_id=gid, user_id=owner.id))[
            "code"
        ] == "forbidden"
        await socks[1].request("conversation.remove_member", conversation_id=gid, user_id=extra.id)
        assert (await socks[3].expect("conversation.removed"))["conversation_id"] == gid
        assert (await socks[3].request("conversation.get", conversation_id=gid))["code"] == "not_found"
        await socks[0].request("conversation.leave", conversation_id=gid)
        view = (await socks[1].request("conversation.get", conversation_id=gid))["conversation"]
        assert {m["user_id"]: m["role"] for m in view["members"]} == {admin.id: "owner", member.id: "member"}
        for sock in socks:
            await sock.close()


async def test_a_non_member_gets_not_found_for_every_message_type(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, eve = (
            await new_user(node.url, "Ann"),
            await new_user(node.url, "Bo"),
            await new_user(node.url, "Eve"),
        )
        ann_s, eve_s = await connect(node, ann), await connect(node, eve)
        conv = (await ann_s.request("conversation.create", kind="group", user_ids=[bo.id], title="secret"))[
            "conversation"
        ]
        msg = (
            await ann_s.request(
                "message.send", conversation_id=conv["id"], client_msg_id="s", text="secret plan"
            )
        )["message"]
        c, m = conv["id"], msg["id"]
        matrix: list[tuple[str, dict[str, Any]]] = [
            ("conversation.get", {"conversation_id": c}),
            ("conversation.add_members", {"conversation_id": c, "user_ids": [eve.id]}),
            ("conversation.remove_member", {"conversation_id": c, "user_id": bo.id}),
            ("conversation.leave", {"conversation_id": c}),
            ("conversation.promote", {"conversation_id": c, "user_id": bo.id, "role": "admin"}),
            ("message.send", {"conversation_id": c, "client_msg_id": "e", "text": "hi"}),
            ("message.edit", {"message_id": m, "text": "x"}),
            ("message.delete", {"message_id": m, "scope": "everyone"}),
            ("message.delete", {"message_id": m, "scope": "me"}),
            ("message.react", {"message_id": m, "emoji": "👍"}),
            ("message.pin", {"message_id": m}),
            ("message.forward", {"message_id": m, "conversation_id": c, "client_msg_id": "f"}),
            ("message.history", {"conversation_id": c}),
            ("message.search", {"query": "secret", "conversation_id": c}),
            ("message.read", {"conversation_id": c, "seq": 1}),
            ("typing", {"conversation_id": c}),
        ]
        for type_, fields in matrix:
            reply = await eve_s.request(type_, **fields)
            assert reply["type"] == "error" and reply["code"] == "not_found", (type_, reply)
            assert "secret" not in json.dumps(reply)
        assert (await eve_s.request("message.search", query="secret"))["messages"] == []
        assert (await eve_s.request("conversation.sync", since={c: 0}))["messages"] == []
        assert (await eve_s.request("conversation.list"))["conversations"] == []
        for sock in (ann_s, eve_s):
            await sock.close()


async def test_text_rules(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(MESSENGER_MAX_TEXT="10")) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        sock = await connect(node, ann)
        conv = (await sock.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        for text in ("", "   ", "x" * 11):
            reply = await sock.request(
                "message.send", conversation_id=conv["id"], client_msg_id=cid(), text=text
            )
            assert reply["code"] == "text_too_long"
        unknown = await sock.request("conversation.create", kind="direct", user_ids=[str(uuid.uuid4())])
        assert unknown["code"] == "not_found"
        await sock.close()


@pytest.mark.parametrize("query", ["history", "unread"])
async def test_history_and_unread_use_indexes_on_100k_messages(
    query: str, settings_for: Callable[..., Settings], database_url: str
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        sock = await connect(node, ann)
        conv = (await sock.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        await sock.close()
    conn = await asyncpg.connect(database_url)
    try:
        cid_ = uuid.UUID(conv["id"])
        await conn.execute(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, text) "
            "SELECT $1::uuid, g, $2, 'bulk-' || $1::text || '-' || g, 'message ' || g "
            "FROM generate_series(1, 100000) g",
            cid_,
            uuid.UUID(ann.id),
        )
        await conn.execute("UPDATE conversations SET last_seq = 100000 WHERE id = $1", cid_)
        await conn.execute("ANALYZE messages")
        await conn.execute("ANALYZE conversation_members")
        if query == "history":
            sql = (
                "SELECT m.id FROM messages m WHERE m.conversation_id = $1 AND m.seq < $2 "
                "AND NOT EXISTS (SELECT 1 FROM message_hidden h "
                "WHERE h.user_id = $3 AND h.message_id = m.id) "
                "ORDER BY m.seq DESC LIMIT 51"
            )
            args: tuple[Any, ...] = (cid_, 50_000, uuid.UUID(bo.id))
        else:
            sql = messenger_storage.UNREAD_SQL  # the query the server runs
            args = ([uuid.UUID(bo.id)], [cid_])
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    finally:
        await conn.close()
    text = json.dumps(plan)
    assert "messages_conversation_id_seq_key" in text, text  # the (conversation_id, seq) index
    scans = [node for node in text.split("{") if '"Seq Scan"' in node]
    assert not any('"Relation Name": "messages"' in node for node in scans), text


async def test_photo_and_voice_attachments_reach_members_only(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, eve = (
            await new_user(node.url, "Ann"),
            await new_user(node.url, "Bo"),
            await new_user(node.url, "Eve"),
        )
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        async with httpx.AsyncClient(base_url=node.url) as http:
            photo = await http.post(
                "/api/media",
                files={"file": ("cat.png", png(3, 2), "image/png")},
                headers={"Authorization": f"Bearer {ann.token}"},
            )
            voice = await http.post(
                "/api/media",
                files={"file": ("note.ogg", ogg_opus(1500), "audio/ogg")},
                data={"kind": "voice"},
                headers={"Authorization": f"Bearer {ann.token}"},
            )
            assert photo.status_code == voice.status_code == 201, (photo.text, voice.text)
            photo_id, voice_id = photo.json()["id"], voice.json()["id"]

            sent = await ann_s.request(
                "message.send",
                conversation_id=conv["id"],
                client_msg_id="p",
                attachments=[photo_id, voice_id],
            )
            attachments = sent["message"]["attachments"]
            assert [a["id"] for a in attachments] == [photo_id, voice_id]
            assert (attachments[0]["width"], attachments[0]["height"]) == (3, 2)
            assert attachments[1]["kind"] == "voice" and attachments[1]["duration_ms"] > 0
            got = await expect_message(bo_s, "message.new", sender_id=ann.id)
            assert [a["id"] for a in got["message"]["attachments"]] == [photo_id, voice_id]

            as_bo = await http.get(f"/api/media/{photo_id}", headers={"Authorization": f"Bearer {bo.token}"})
            assert as_bo.status_code == 200 and as_bo.content == png(3, 2)
            as_eve = await http.get(
                f"/api/media/{photo_id}", headers={"Authorization": f"Bearer {eve.token}"}
            )
            assert as_eve.status_code == 404

            stolen = await bo_s.request(
                "message.send", conversation_id=conv["id"], client_msg_id="s", attachments=[photo_id]
            )
            assert stolen["code"] == "not_found"
            empty = await bo_s.request("message.send", conversation_id=conv["id"], client_msg_id="e")
            assert empty["code"] == "bad_request"

            await ann_s.request("message.delete", message_id=sent["message"]["id"], scope="everyone")
            gone = await http.get(f"/api/media/{photo_id}", headers={"Authorization": f"Bearer {bo.token}"})
            assert gone.status_code == 404, "a deleted message no longer shares its media"
        for sock in (ann_s, bo_s):
            await sock.close()


async def test_concurrent_group_changes_with_overlapping_members_do_not_deadlock(
    settings_for: Callable[..., Settings],
) -> None:
    """Groups created and changed at once, over the same users listed in different orders: each
    member gets their own view, and every stream lock is taken in one global order."""
    async with serve_node(settings_for()) as node:
        users = [await new_user(node.url, f"U{i}") for i in range(6)]
        socks = [await connect(node, users[k % 6]) for k in range(12)]  # one per concurrent request
        ids = [u.id for u in users]

        async def create(k: int) -> dict[str, Any]:
            others = [ids[(k + j) % 6] for j in range(1, 6)]
            if k % 2:
                others.reverse()
            return await socks[k].request("conversation.create", kind="group", title=f"g{k}", user_ids=others)

        replies = await asyncio.gather(*(create(k) for k in range(12)))
        assert [r["type"] for r in replies] == ["ok"] * 12, [r.get("code") for r in replies]
        groups = [r["conversation"]["id"] for r in replies]

        async def churn(k: int) -> list[dict[str, Any]]:
            owner, group = socks[k], groups[k]
            victim = ids[(k + 1 + k // 6) % 6]
            removed = await owner.request("conversation.remove_member", conversation_id=group, user_id=victim)
            added = await owner.request("conversation.add_members", conversation_id=group, user_ids=[victim])
            sent = await owner.request("message.send", conversation_id=group, client_msg_id=cid(), text="hi")
            return [removed, added, sent]

        results = [r for rs in await asyncio.gather(*(churn(k) for k in range(12))) for r in rs]
        assert [r["type"] for r in results] == ["ok"] * 36, [r.get("code") for r in results]
        # Each member's view is their own: unread counts differ between the sender and the others.
        listed = (await socks[1].request("conversation.list"))["conversations"]
        assert len(listed) == 12
        for view in listed:
            assert len(view["members"]) == 6
            mine = view["last_message"]["sender_id"] == ids[1]
            assert view["unread"] == (0 if mine else 1)
        for sock in socks:
            await sock.close()
