"""Untrusted image bytes: checked before any pixel is decoded, then decoded safely.

One copy for every side: the ingestion API checks inline images up to their header
at submission (:func:`probe_image`, so a bad image is refused with its code before a
job exists), the worker decodes fully (:func:`decode_image`), and the review desk
serves re-encoded thumbnails (:func:`thumbnail_jpeg`). Pillow only; no torch.

Everything :func:`decode_image` returns has passed, in order: size in bytes, a format
allow-list (JPEG, PNG, WEBP, GIF: other Pillow plugins never see the bytes), width and
height checked from the header *before* any pixel is decoded, a full decode of the
first frame (truncation is an error, never padded with grey), EXIF orientation, and
conversion of every mode (CMYK, 16-bit, palette, alpha, 1-bit, grey) to RGB on white.

Error codes: ``image_empty``, ``image_too_large``, ``image_format_unsupported``,
``image_unreadable``, ``image_truncated``, ``image_dimensions`` (all
:class:`~schemas.errors.ImageError`), ``invalid_request`` for bad base64.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from io import BytesIO
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from schemas.errors import ErrorCode, ImageError

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF")
DEFAULT_MAX_ASPECT_RATIO: Final = 100.0

# Formats that Pillow (or a browser) could read but we refuse, by signature, so
# that the error says "unsupported" rather than "unreadable".
_FOREIGN_SIGNATURES: Final = (
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"SIMPLE  =", "FITS"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
)
_SVG = re.compile(rb"^\s*(<\?xml|<!doctype svg|<svg)", re.IGNORECASE)
_ISO_BMFF = re.compile(rb"^....ftyp(heic|heix|mif1|msf1|avif|avis)", re.DOTALL)
_ASCII_WHITESPACE: Final = str.maketrans("", "", " \t\r\n\f\v")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),", re.IGNORECASE)


def probe_image(
    data: bytes,
    *,
    max_pixels: int,
    max_bytes: int,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """Open ``data`` lazily (header only) after the byte, format and dimension checks."""
    if not data:
        raise ImageError("the image is empty", code=ErrorCode.image_empty)
    if len(data) > max_bytes:
        raise ImageError(
            f"image is {len(data)} bytes, over {max_bytes}", code=ErrorCode.image_too_large
        )
    image = open_image(data)
    check_dimensions(image.size, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
    return image


def decode_base64_image(s: str, *, max_bytes: int) -> bytes:
    """Bytes from standard base64, optionally as a ``data:image/...;base64,`` URL.

    The size is bounded from the text length before anything is decoded.
    ASCII whitespace (line breaks of wrapped base64) is ignored; any other
    character outside the standard alphabet, or wrong padding, is refused.
    """
    if len(s) > 2 * max_bytes + 4096:  # cheap bound before any copy of ``s``
        raise ImageError(f"base64 image over {max_bytes} bytes", code=ErrorCode.image_too_large)
    text = _strip_data_url(s)
    compact = text.translate(_ASCII_WHITESPACE)
    if not compact:
        raise ImageError("the image is empty", code=ErrorCode.image_empty)
    padding = len(compact) - len(compact.rstrip("="))
    if len(compact) // 4 * 3 - padding > max_bytes:
        raise ImageError(f"base64 image over {max_bytes} bytes", code=ErrorCode.image_too_large)
    if not compact.isascii():
        raise ImageError("base64 holds non-ASCII characters", code=ErrorCode.invalid_request)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"invalid base64: {exc}", code=ErrorCode.invalid_request) from exc


def _strip_data_url(s: str) -> str:
    if s[:5].lower() != "data:":
        return s
    match = _DATA_URL.match(s[:256])
    if match is None:
        raise ImageError("malformed data: URL", code=ErrorCode.invalid_request)
    media_type = match["type"].strip().lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if not media_type.startswith("image/") or "base64" not in params:
        raise ImageError("a data: URL must be image/* and base64", code=ErrorCode.invalid_request)
    return s[match.end() :]


def open_image(data: bytes) -> Image.Image:
    try:
        return Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image dimensions are a decompression bomb: {exc}", code=ErrorCode.image_too_large
        ) from exc
    except UnidentifiedImageError as exc:
        foreign = _foreign_format(data)
        if foreign is not None:
            raise ImageError(
                f"{foreign} images are not supported; send JPEG, PNG, WEBP or GIF",
                code=ErrorCode.image_format_unsupported,
            ) from exc
        if _png_size_is_zero(data):
            raise ImageError("image has no pixels", code=ErrorCode.image_dimensions) from exc
        raise unreadable(exc, data) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise unreadable(exc, data) from exc


def _foreign_format(data: bytes) -> str | None:
    for signature, name in _FOREIGN_SIGNATURES:
        if data.startswith(signature):
            return name
    if _SVG.match(data[:512]):
        return "SVG/XML"
    if _ISO_BMFF.match(data[:16]):
        return "HEIF/AVIF"
    return None


def check_dimensions(size: tuple[int, int], *, max_pixels: int, max_aspect_ratio: float) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})", code=ErrorCode.image_dimensions)
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height}, over {max_pixels} pixels",
            code=ErrorCode.image_too_large,
        )
    if max(width, height) / min(width, height) > max_aspect_ratio:
        raise ImageError(
            f"image is {width}x{height}, more elongated than 1:{max_aspect_ratio:g}",
            code=ErrorCode.image_dimensions,
        )


def unreadable(exc: BaseException, data: bytes) -> ImageError:
    if "truncated" in str(exc).lower() or _riff_is_short(data):
        return ImageError("the image file is truncated", code=ErrorCode.image_truncated)
    return ImageError(
        f"not a readable image: {_without_reprs(exc)}", code=ErrorCode.image_unreadable
    )


def _without_reprs(exc: BaseException) -> str:
    """Pillow's message without the object reprs it names (``<_io.BytesIO object at
    0x7f...>``): an address means nothing to a client and differs on every call."""
    text = _OBJECT_REPR.sub("the data", str(exc)).strip()
    return text or type(exc).__name__


def _png_size_is_zero(data: bytes) -> bool:
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return bool(width == 0 or height == 0)


def _riff_is_short(data: bytes) -> bool:
    """A WEBP whose RIFF header promises more bytes than it has."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    (riff_size,) = struct.unpack("<I", data[4:8])
    return len(data) < int(riff_size) + 8


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
