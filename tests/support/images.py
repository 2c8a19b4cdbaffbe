"""Small images made on the fly."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png(
    color: tuple[int, int, int] | int = (200, 30, 30), size: tuple[int, int] = (64, 48)
) -> bytes:
    """A solid-colour PNG; an int picks a colour of its own, so ``png(n)`` differs per ``n``."""
    if isinstance(color, int):
        color = (color * 37 % 256, 90, 160)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height``: a bomb for free."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
