"""MEDIA: file, image and voice uploads, stored locally or in S3, read back by whoever may see them.

Other modules let their users read files they did not upload with ``MediaService.grant_access``
(wiring.py does it for the messenger's conversation members).
"""

from __future__ import annotations

from kintsugi_rt.media.blobs import open_blob_store
from kintsugi_rt.media.messages import MediaInfo
from kintsugi_rt.media.routes import routes
from kintsugi_rt.media.service import AccessCheck, MediaService

__all__ = ["AccessCheck", "MediaInfo", "MediaService", "open_blob_store", "routes"]
