"""Media's socket frames: renewing the signed URLs of files."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from kintsugi_rt.media.messages import MediaLinks
from kintsugi_rt.socket.protocol import ClientMessage

MAX_LINKS = 100


class MediaLinksGet(ClientMessage, tag="media.links"):
    """Fresh signed URLs of these files (1 to 100 ids), e.g. when an attachment's ``expires_at`` has
    passed. Only files you may read (your own uploads, files sent to a conversation you are in) get
    links; every other id is listed in ``not_found``, whether it exists or not."""

    media_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_LINKS)]


class MediaLinksResult(msgspec.Struct):
    """The reply to ``media.links``: the links of the readable files, in the order asked, and the ids
    that are not (unknown, or not yours to read)."""

    links: list[MediaLinks]
    not_found: list[uuid.UUID]
