"""Example frames of the push module, for docs/protocol.md."""

from __future__ import annotations

from typing import Any

from kintsugi_rt.push.frames import PushConfigGet, PushKeys, PushSubscribe, PushUnsubscribe

_KEY = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
_ENDPOINT = "https://fcm.googleapis.com/fcm/send/dJ5qGoZ4tSs:APA91bF0example"

CONFIG = PushConfigGet(id="p1")
CONFIG_RESULT: dict[str, Any] = {"enabled": True, "vapid_public_key": _KEY}
SUBSCRIBE = PushSubscribe(
    id="p2",
    endpoint=_ENDPOINT,
    keys=PushKeys(
        p256dh="BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        auth="BTBZMqHH6r4Tts7J_aSIgg",
    ),
)
UNSUBSCRIBE = PushUnsubscribe(id="p3", endpoint=_ENDPOINT)
