"""decode_image, thumbnail_jpeg and decode_base64_image on hostile and exotic input."""

from __future__ import annotations

import base64
from io import BytesIO

import pytest
from PIL import Image

from schemas.checks.images import decode_base64_image, decode_image, thumbnail_jpeg
from schemas.errors import ErrorCode, ImageError
from tests.support.images import png_with_header

pytestmark = pytest.mark.unit

LIMITS = {"max_pixels": 4_000_000, "max_bytes": 5_000_000}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def decode_error(data: bytes, **limits: int) -> ErrorCode:
    with pytest.raises(ImageError) as caught:
        decode_image(data, **{**LIMITS, **limits})
    return caught.value.code


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    out = BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return out.getvalue()


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    return encode(image, "PNG", transparency=0)


EXOTIC = {
    # name: (bytes, pixel at (0, 0) after decoding)
    "cmyk-jpeg": (
        encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        (255, 0, 0),
    ),
    "png-16-bit-grey": (encode(Image.new("I;16", (8, 8), 40_000), "PNG"), (155, 155, 155)),
    "palette-transparent-png": (_palette_with_transparency(), (255, 255, 255)),
    "la-png": (encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), (255, 255, 255)),
    "rgba-webp": (
        encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "WEBP", lossless=True),
        (255, 255, 255),
    ),
    "one-bit-png": (encode(Image.new("1", (8, 8), 0), "PNG"), (0, 0, 0)),
    "grey-jpeg": (encode(Image.new("L", (8, 8), 128), "JPEG", quality=95), (128, 128, 128)),
    "animated-gif": (_animated_gif(), (255, 0, 0)),
}


@pytest.mark.parametrize(("data", "pixel"), EXOTIC.values(), ids=EXOTIC.keys())
def test_exotic_modes_decode_to_rgb(data: bytes, pixel: tuple[int, int, int]) -> None:
    image = decode_image(data, **LIMITS)
    assert image.mode == "RGB"
    decoded = image.getpixel((0, 0))
    assert isinstance(decoded, tuple)
    assert all(abs(a - b) <= 3 for a, b in zip(decoded, pixel, strict=True))


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(Image.new("RGB", (40, 20), (9, 9, 9)), "JPEG", exif=exif.tobytes())
    assert decode_image(data, **LIMITS).size == (20, 40)


FOREIGN = {
    "bmp": encode(Image.new("RGB", (4, 4)), "BMP"),
    "tiff": encode(Image.new("RGB", (4, 4)), "TIFF"),
    "ico": encode(Image.new("RGB", (16, 16)), "ICO"),
    "eps": encode(Image.new("RGB", (4, 4)), "EPS"),
    "pdf": b"%PDF-1.7\n1 0 obj <<>> endobj\n",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
    "svg-bare": b"  <svg onload='alert(1)'></svg>",
    "fits": b"SIMPLE  =                    T" + b" " * 50,
    "psd": b"8BPS\x00\x01" + b"\0" * 40,
    "avif": b"\x00\x00\x00\x1cftypavif" + b"\0" * 40,
}


@pytest.mark.parametrize("data", FOREIGN.values(), ids=FOREIGN.keys())
def test_other_formats_renamed_jpg_are_unsupported(data: bytes) -> None:
    assert decode_error(data) is ErrorCode.image_format_unsupported


def _cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


_PHOTO = Image.effect_noise((64, 64), 60).convert("RGB")
TRUNCATED = {
    "jpeg": _cut(encode(_PHOTO, "JPEG"), 0.6),
    "png": _cut(encode(_PHOTO, "PNG"), 0.6),
    "gif": _cut(encode(_PHOTO, "GIF"), 0.6),
    "webp": _cut(encode(_PHOTO, "WEBP"), 0.6),
}


@pytest.mark.parametrize("data", TRUNCATED.values(), ids=TRUNCATED.keys())
def test_truncated_images_are_refused(data: bytes) -> None:
    assert decode_error(data) is ErrorCode.image_truncated


@pytest.mark.parametrize(
    ("data", "limits", "code"),
    [
        pytest.param(b"", {}, ErrorCode.image_empty, id="empty"),
        pytest.param(b"hello, not an image", {}, ErrorCode.image_unreadable, id="text"),
        pytest.param(
            b"\xff\xd8\xff" + b"\0" * 50, {}, ErrorCode.image_unreadable, id="jpeg-magic-only"
        ),
        pytest.param(
            encode(_PHOTO, "PNG"), {"max_bytes": 100}, ErrorCode.image_too_large, id="bytes"
        ),
        pytest.param(
            png_with_header(100_000, 100_000), {}, ErrorCode.image_too_large, id="bomb-100k"
        ),
        pytest.param(
            png_with_header(3000, 3000), {}, ErrorCode.image_too_large, id="over-max-pixels"
        ),
        pytest.param(png_with_header(0, 10), {}, ErrorCode.image_dimensions, id="zero-width"),
        pytest.param(png_with_header(1000, 5), {}, ErrorCode.image_dimensions, id="aspect-200"),
        pytest.param(png_with_header(4, 2000), {}, ErrorCode.image_dimensions, id="aspect-500"),
    ],
)
def test_bad_images_get_their_code(data: bytes, limits: dict[str, int], code: ErrorCode) -> None:
    assert decode_error(data, **limits) is code


def test_thumbnail_is_a_fresh_jpeg_without_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    original = encode(Image.new("RGB", (300, 200), (1, 2, 3)), "JPEG", exif=exif.tobytes())
    thumb = thumbnail_jpeg(decode_image(original, **LIMITS), max_side=64)
    assert thumb != original
    assert b"SecretCam" not in thumb
    reread = Image.open(BytesIO(thumb))
    assert (reread.format, reread.size) == ("JPEG", (64, 43))


def test_thumbnail_of_a_small_image_is_still_re_encoded() -> None:
    original = encode(Image.new("RGB", (10, 10), (200, 0, 0)), "JPEG")
    assert thumbnail_jpeg(decode_image(original, **LIMITS), max_side=512) != original


PAYLOAD = b"\x89PNG\r\n\x1a\n-not-really-a-png-"
B64 = base64.b64encode(PAYLOAD).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(B64, id="plain"),
        pytest.param(f"data:image/png;base64,{B64}", id="data-url"),
        pytest.param(f"DATA:Image/PNG;BASE64,{B64}", id="data-url-upper"),
        pytest.param("\n".join(B64[i : i + 8] for i in range(0, len(B64), 8)) + "\n", id="wrapped"),
    ],
)
def test_base64_accepted_forms(text: str) -> None:
    assert decode_base64_image(text, max_bytes=1000) == PAYLOAD


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param(B64.rstrip("="), ErrorCode.invalid_request, id="missing-padding"),
        pytest.param(B64 + "=", ErrorCode.invalid_request, id="extra-padding"),
        pytest.param(B64[:8] + "=" + B64[8:], ErrorCode.invalid_request, id="padding-inside"),
        pytest.param(
            B64.replace("+", "-").replace("/", "_") + "-_", ErrorCode.invalid_request, id="urlsafe"
        ),
        pytest.param(B64[:4] + "*" + B64[4:], ErrorCode.invalid_request, id="non-alphabet"),
        pytest.param(B64[:4] + "\u00e9" + B64[4:], ErrorCode.invalid_request, id="non-ascii"),
        pytest.param(
            "data:text/html;base64," + B64, ErrorCode.invalid_request, id="data-not-image"
        ),
        pytest.param("data:image/png," + B64, ErrorCode.invalid_request, id="data-not-base64"),
        pytest.param("data:image/png;base64", ErrorCode.invalid_request, id="data-no-comma"),
        pytest.param("", ErrorCode.image_empty, id="empty"),
        pytest.param("data:image/png;base64,", ErrorCode.image_empty, id="data-empty"),
        pytest.param("A" * 1400, ErrorCode.image_too_large, id="just-over-cap"),
        pytest.param("A" * 50_000_000, ErrorCode.image_too_large, id="huge"),
    ],
)
def test_base64_oddities(text: str, code: ErrorCode) -> None:
    with pytest.raises(ImageError) as caught:
        decode_base64_image(text, max_bytes=1000)
    assert caught.value.code is code
