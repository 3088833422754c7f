"""Whether two PNG files hold the same picture without decoding either (--expect).

ComfyUI writes the prompt and the workflow into each PNG as text chunks, so the same picture
made from an edited workflow (a node moved, a title renamed) has other bytes but the very same
picture chunks. A PNG is a signature and a list of chunks (length, type, data, CRC); when the
two lists are the same once text and time chunks are left out, the decoder gets the same input
and gives the same pixels. Pure: bytes in, an answer out.
"""

import struct

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOT_PICTURE = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME"})  # read into .info, never into pixels
_HEAD = struct.Struct(">I4s")


def same_pixels(a, b):
    """(width, height) when the PNGs `a` and `b` (bytes) have the same picture chunks, else None
    (not PNGs, broken, or a picture chunk differs: decode them to know more)."""
    one, two = _picture_chunks(a), _picture_chunks(b)
    if one is None or one != two:
        return None
    width, height = struct.unpack(">II", one[0][8:16])
    return width, height


def _picture_chunks(data):
    """Every chunk but text and time, whole, in order; None unless `data` is a PNG made of whole
    chunks from IHDR to IEND."""
    if not data.startswith(SIGNATURE):
        return None
    pos, chunks = len(SIGNATURE), []
    while pos + 12 <= len(data):
        length, kind = _HEAD.unpack_from(data, pos)
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind not in _NOT_PICTURE:
            chunks.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    else:
        return None  # cut short: no IEND
    if not chunks or chunks[0][4:8] != b"IHDR" or len(chunks[0]) != 25:
        return None
    return chunks
