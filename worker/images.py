"""Decode untrusted image bytes into a bounded RGB picture.

Everything a caller gets from :func:`decode_image` has passed, in order
(the first three in ``schemas/imagebytes.py``, shared with the API):
size in bytes, a format allow-list (JPEG, PNG, WEBP, GIF: other Pillow
plugins never see the bytes), width and height checked from the header
*before* any pixel is decoded, a full decode of the first frame (truncation
is an error, never padded with grey), EXIF orientation, and conversion of
every mode (CMYK, 16-bit, palette, alpha, 1-bit, grey) to RGB on white.

Error codes: ``image_empty``, ``image_too_large``, ``image_format_unsupported``,
``image_unreadable``, ``image_truncated``, ``image_dimensions``, all
:class:`~schemas.errors.ImageError` (permanent); ``invalid_request`` for bad
base64.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Final

from PIL import Image, ImageOps

from schemas.errors import ErrorCode, ImageError
from schemas.imagebytes import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_ASPECT_RATIO,
    decode_base64_image,
    probe_image,
    unreadable,
)

__all__ = ["ALLOWED_FORMATS", "decode_base64_image", "decode_image", "thumbnail_jpeg"]

_WHITE: Final = (255, 255, 255)
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GREY_MODES: Final = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_bytes: int,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """Decode ``data`` (JPEG, PNG, WEBP or GIF's first frame) into an RGB image."""
    image = probe_image(
        data, max_pixels=max_pixels, max_bytes=max_bytes, max_aspect_ratio=max_aspect_ratio
    )
    _load(image, data)
    return _to_rgb(_apply_orientation(image))


def thumbnail_jpeg(image: Image.Image, *, max_side: int, quality: int = 85) -> bytes:
    """Re-encode ``image`` as a JPEG whose longer side is at most ``max_side``.

    Always a fresh encode of decoded pixels: no metadata and none of the
    original bytes survive.
    """
    if max_side < 1:
        raise ValueError("max_side must be at least 1")
    small = _to_rgb(image) if image.mode != "RGB" else image.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = BytesIO()
    small.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _load(image: Image.Image, data: bytes) -> None:
    """Decode the first frame fully; a short file is an error, never padded."""
    try:
        image.seek(0)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb: {exc}", code=ErrorCode.image_too_large) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise unreadable(exc, data) from exc


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        rotated = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        # A malformed EXIF block costs the orientation, not the job.
        return image
    return rotated if rotated is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_GREY_MODES:
        # 16-bit grey: scale to 8 bits (a plain convert would clip to white).
        return image.convert("I").point(lambda v: v * (1 / 257)).convert("L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(
            f"image mode {mode} cannot be converted to RGB", code=ErrorCode.image_unreadable
        ) from exc
