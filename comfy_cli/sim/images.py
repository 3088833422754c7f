"""Image data for the simulated nodes: seeded RGB pixels, PNG and JPEG bytes.

Every picture depends only on its inputs (a seed, a size), so equal inputs give equal
pixels and equal files on every run: tests can keep expected files (--expect).

Only the stdlib is used (no Pillow): PNGs are written by hand with zlib and
struct, and the preview JPEG is a fixed tiny picture, since a preview only has
to be a valid JPEG, not a faithful thumbnail.
"""

import base64
import random
import struct
import zlib
from typing import Iterable, Tuple

WIDTH = HEIGHT = 64

# A 32x32 baseline JPEG (a colour gradient), made once offline.
PREVIEW_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4p"
    "LSwzOko+MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09P"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//wAARCAAgACADASIA"
    "AhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAABAb/xAAXEAADAQAAAAAAAAAAAAAAAAAAAwRh/8QA"
    "GAEAAgMAAAAAAAAAAAAAAAAABAYCBQf/xAAXEQADAQAAAAAAAAAAAAAAAAAAAwQC/9oADAMBAAIR"
    "AxEAPwCIVNgxU2DFTYLVNhZ7eQlpCKmwYqbBapsGKmwDY8ZJaQapsGKmwWqbBipsA2PM8lpBqmwY"
    "qbBapsGKmwD28ZZaT//Z"
)


class Image:
    """An 8-bit RGB picture, the value that flows along IMAGE links."""

    __slots__ = ("width", "height", "rgb")

    def __init__(self, width: int, height: int, rgb: bytes):
        self.width, self.height, self.rgb = width, height, rgb

    def mean(self) -> float:
        """Mean pixel value scaled to 0..1, like a float image tensor's mean."""
        return sum(self.rgb) / (len(self.rgb) * 255.0) if self.rgb else 0.0

    def __repr__(self) -> str:
        return f"<IMAGE {self.width}x{self.height}>"


def seeded_image(seed: int) -> Image:
    """Noise that depends only on the seed, so equal seeds give equal files."""
    rgb = random.Random(seed).randbytes(WIDTH * HEIGHT * 3)
    return Image(WIDTH, HEIGHT, rgb)


def sized_image(seed: int, width: int, height: int, noise: int = 0, noise_seed: int = 0) -> Image:
    """Seeded noise of any size; `noise` > 0 moves each channel by up to that many levels
    (seeded by `noise_seed`): the same picture as another GPU or encoder might give it."""
    rgb = random.Random(seed).randbytes(width * height * 3)
    if noise > 0:
        rng = random.Random(noise_seed)
        shifts = rng.choices(range(-noise, noise + 1), k=len(rgb))
        rgb = bytes(_CLAMP[v + d + 255] for v, d in zip(rgb, shifts))
    return Image(width, height, rgb)


_CLAMP = bytes(min(255, max(0, i - 255)) for i in range(255 * 3 + 1))  # index v + 255 -> v clamped to 0..255


def blend(a: Image, b: Image) -> Image:
    """Average two images (used when a TestSteps gets an upstream image)."""
    if (a.width, a.height) != (b.width, b.height):
        return a
    return Image(a.width, a.height, bytes((x + y) >> 1 for x, y in zip(a.rgb, b.rgb)))


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _text_chunk(key: str, value: str) -> bytes:
    # tEXt must be Latin-1; anything else goes in an uncompressed iTXt chunk.
    try:
        return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        body = key.encode("latin-1", "replace") + b"\0\0\0\0\0" + value.encode("utf-8")
        return _chunk(b"iTXt", body)


def png_bytes(image: Image, text: Iterable[Tuple[str, str]] = ()) -> bytes:
    """Encode as an 8-bit truecolour PNG with optional text chunks."""
    row = image.width * 3
    raw = b"".join(b"\0" + image.rgb[y * row:(y + 1) * row] for y in range(image.height))
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + b"".join(_text_chunk(k, v) for k, v in text)
            + _chunk(b"IDAT", zlib.compress(raw, 4)) + _chunk(b"IEND", b""))
