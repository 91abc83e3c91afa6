"""MEDIA: file, image and voice uploads, stored locally or in S3, read back by whoever may see them.

Other modules let their users read files they did not upload with ``MediaService.grant_access``
(wiring.py does it for the messenger's conversation members).
"""

from __future__ import annotations

from kintsugi_rt.media import examples as ex
from kintsugi_rt.media import frames as f
from kintsugi_rt.media.blobs import open_blob_store
from kintsugi_rt.media.messages import MediaInfo, MediaLinks
from kintsugi_rt.media.routes import routes
from kintsugi_rt.media.service import AccessCheck, MediaNotFound, MediaService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = [
    "AccessCheck",
    "MediaInfo",
    "MediaLinks",
    "MediaNotFound",
    "MediaService",
    "open_blob_store",
    "routes",
    "socket_features",
]


def socket_features(media: MediaService) -> SocketFeatures:
    """Media's frames, bound to ``media``."""
    return SocketFeatures(
        handlers=(SocketHandler(f.MediaLinksGet, media.renew_links, ex.LINKS, ex.LINKS_RESULT),),
    )
