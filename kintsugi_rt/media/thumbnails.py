"""Thumbnails of uploaded images, made with Pillow: at most 320 px on the longer side, turned upright
(EXIF orientation applied), every piece of metadata (EXIF, GPS, ICC, comments) left behind; WebP, or
JPEG if this Pillow has no WebP encoder. Blocking: run it in a thread.

Pillow decodes only images of the types we accept (JPEG, PNG, GIF, WebP; an animation's first frame),
and only up to ``max_pixels`` (width x height, from the header, checked before anything is decoded): a
small file that claims a huge canvas (a decompression bomb) gets no thumbnail.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps, features

THUMBNAIL_SIDE = 320
# The formats Pillow may parse: exactly the image types sniff.py accepts.
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
_WEBP = features.check("webp")
THUMBNAIL_TYPE = "image/webp" if _WEBP else "image/jpeg"


class ThumbnailRefused(Exception):
    """The image is not one to decode (too many pixels)."""


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int


def make_thumbnail(file: IO[bytes], max_pixels: int) -> Thumbnail:
    """The thumbnail of the image in ``file``. Raises ``ThumbnailRefused`` for an image over
    ``max_pixels``, and whatever Pillow raises for one it cannot read (the caller logs it)."""
    file.seek(0)
    with Image.open(file, formats=_FORMATS) as opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise ThumbnailRefused(f"{width}x{height} is over {max_pixels} pixels")
        # JPEG: decode at 1/2, 1/4 or 1/8 scale straight away, still twice the final size for quality.
        opened.draft("RGB", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))
        upright = ImageOps.exif_transpose(opened)
    upright.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    keep_alpha = _WEBP and (upright.mode in ("RGBA", "LA", "PA") or upright.has_transparency_data)
    if keep_alpha:
        final = upright.convert("RGBA")
    elif upright.has_transparency_data or upright.mode in ("RGBA", "LA", "PA"):
        # JPEG has no alpha: put the image on white, as a viewer would show it on a page.
        rgba = upright.convert("RGBA")
        final = Image.new("RGB", rgba.size, (255, 255, 255))
        final.paste(rgba, mask=rgba.getchannel("A"))
    else:
        final = upright.convert("RGB")
    final.info.clear()  # nothing of the original's metadata travels with the pixels
    out = io.BytesIO()
    if _WEBP:
        final.save(out, "WEBP", quality=80, method=4)
    else:
        final.save(out, "JPEG", quality=82, optimize=True)
    return Thumbnail(out.getvalue(), THUMBNAIL_TYPE, final.width, final.height)
