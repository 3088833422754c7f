"""Comparing one output file with its expected file (--expect), and the difference image.

Images (PNG, JPEG, WebP, GIF; the first frame of an animation) are decoded with Pillow when it
is installed (`pip install 'comfy-run-cli[images]'`) and compared pixel by pixel: same size,
then two figures, each within the tolerance:

- the mean absolute difference over every channel of every pixel, in levels of 0..255;
- the share of pixels "off": some channel differs by more than OFF_LEVEL levels.

The default tolerance (mean 2.0, 1% of pixels off) passes what another GPU or encoder changes
(a level or two here and there, a few stray pixels) and fails a changed picture: a different
seed or prompt moves the mean by tens of levels, and a changed patch of 1% of the picture
trips the share even when the mean barely moves. Identical bytes always match, without
decoding. Other files, and images when Pillow is missing, are compared byte for byte.

Pure functions of the files' contents; the only writing is `write_diff`, which is atomic.
"""

import filecmp
import operator
import os
from typing import NamedTuple, Optional

OFF_LEVEL = 32  # a channel this many levels (of 255) away or less is noise, not a changed pixel
_LEVELS = tuple(range(256)) * 4  # the level of each count in a histogram of up to 4 bands
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".apng"})


class Tolerance(NamedTuple):
    mean: float = 2.0  # the largest mean absolute difference, in levels of 0..255
    share: float = 0.01  # the largest share of pixels off (0..1)

    def __str__(self):
        return f"{_num(self.mean)},{_percent(self.share)}"


DEFAULT = Tolerance()


def parse_tolerance(text):
    """`MEAN` or `MEAN,SHARE%` (`2`, `0.5,2%`, `0`): a Tolerance; ValueError says what is wrong."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) > 2 or not parts[0]:
        raise ValueError(f"{text!r}: expected MEAN or MEAN,SHARE% (e.g. 2 or 2,1%)")
    try:
        mean = float(parts[0])
    except ValueError:
        raise ValueError(f"{text!r}: the mean difference {parts[0]!r} is not a number (levels of 0..255)") from None
    share = DEFAULT.share
    if len(parts) == 2:
        raw = parts[1]
        if not raw.endswith("%"):
            raise ValueError(f"{text!r}: the share of pixels off must end with % (e.g. {raw}%)")
        try:
            share = float(raw[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{text!r}: {raw!r} is not a percentage") from None
    if not (0.0 <= mean <= 255.0):
        raise ValueError(f"{text!r}: the mean difference must be between 0 and 255 levels")
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"{text!r}: the share of pixels off must be between 0% and 100%")
    return Tolerance(mean, share)


class Result(NamedTuple):
    same: bool
    how: str  # "bytes" or "pixels"
    problem: Optional[str] = None  # why not the same, in words with the figures
    mean: Optional[float] = None
    share: Optional[float] = None
    size: Optional[tuple] = None  # (width, height) of the output, when decoded
    diff: object = None  # for write_diff: the per-pixel largest channel difference (a Pillow "L" image)


_PIL = []


def pillow():
    """Pillow's Image and ImageChops modules, or None when it is not installed (asked once)."""
    if not _PIL:
        try:
            from PIL import Image, ImageChops

            _PIL.append((Image, ImageChops))
        except ImportError:
            _PIL.append(None)
    return _PIL[0]


def is_image(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTS


def compare_files(expected, got, tolerance=DEFAULT, decode=True):
    """Compare the file `got` with the file `expected`. `decode`: images are decoded (needs
    Pillow); otherwise bytes decide. OSError if a file cannot be read."""
    if _same_bytes(expected, got):
        return Result(True, "bytes")
    pil = pillow() if decode else None
    if pil is None or not (is_image(expected) and is_image(got)):
        return Result(False, "bytes", "the bytes differ")
    try:
        a, b = _decoded(pil[0], expected), _decoded(pil[0], got)
    except _Undecodable as exc:
        return Result(False, "bytes", f"the bytes differ, and {exc}")
    return compare_images(a, b, tolerance, pil)


def compare_images(expected, got, tolerance=DEFAULT, pil=None):
    """Two decoded Pillow images: same size, then the mean difference and the share of
    pixels off, each within `tolerance`."""
    Image, ImageChops = pil or pillow()
    if expected.size != got.size:
        return Result(False, "pixels", f"size {_size(got.size)}, expected {_size(expected.size)}", size=got.size)
    if expected.mode != got.mode:  # one has alpha, the other not: compare both with it
        expected, got = expected.convert("RGBA"), got.convert("RGBA")
    diff = ImageChops.difference(expected, got)
    bands = diff.split()
    hist = diff.histogram()
    count = expected.size[0] * expected.size[1]
    mean = sum(map(operator.mul, _LEVELS, hist)) / (count * len(bands)) if count else 0.0
    largest = bands[0]
    for band in bands[1:]:
        largest = ImageChops.lighter(largest, band)
    off = sum(largest.histogram()[OFF_LEVEL + 1:])
    share = off / count if count else 0.0
    same = mean <= tolerance.mean and share <= tolerance.share
    problem = None
    if not same:
        problem = f"mean difference {_level(mean)} {'>' if mean > tolerance.mean else '<='} {_num(tolerance.mean)}, " \
                  f"{_percent(share)} of pixels off " \
                  f"({'>' if share > tolerance.share else '<='} {_percent(tolerance.share)})"
    return Result(same, "pixels", problem, mean, share, got.size, largest)


class _Undecodable(Exception):
    pass


def _decoded(Image, path):
    """The first frame, as RGB (RGBA when it has transparency)."""
    try:
        with Image.open(path) as img:
            img.seek(0)
            alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
            mode = "RGBA" if alpha else "RGB"
            if img.mode == mode:
                img.load()
                return img
            return img.convert(mode)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _Undecodable(f"{os.path.basename(path)} cannot be decoded: {exc}") from None
    except (ValueError, SyntaxError) as exc:  # Pillow raises these for some broken files
        raise _Undecodable(f"{os.path.basename(path)} cannot be decoded: {exc}") from None


def _same_bytes(a, b):
    return filecmp.cmp(a, b, shallow=False)


def diff_path(output_path):
    """Where the difference image of a saved output goes: beside it, `NAME.diff.png`."""
    return os.path.splitext(output_path)[0] + ".diff.png"


def write_diff(result, got, path, overwrite=False):
    """Write the difference image of a pixel comparison to `path` (atomic; an existing file
    gets a numbered name unless `overwrite`): the output faded to grey, the pixels off in red,
    smaller differences in yellow. Returns the path written, or None when there is nothing to
    draw (the sizes differ, or bytes were compared)."""
    if result.diff is None:
        return None
    from comfy_cli.outputs import write_new

    Image = pillow()[0]
    with Image.open(got) as img:
        img.seek(0)
        grey = img.convert("L").convert("RGB")
    faded = Image.blend(grey, Image.new("RGB", grey.size, (255, 255, 255)), 0.6)
    small = result.diff.point([0] + [255] * OFF_LEVEL + [0] * (255 - OFF_LEVEL))
    off = result.diff.point([0] * (OFF_LEVEL + 1) + [255] * (255 - OFF_LEVEL))
    picture = Image.composite(Image.new("RGB", grey.size, (255, 200, 0)), faded, small)
    picture = Image.composite(Image.new("RGB", grey.size, (230, 0, 0)), picture, off)
    return write_new(path, lambda fh: picture.save(fh, "PNG", compress_level=1), overwrite, numbered=True)


def _size(wh):
    return f"{wh[0]}x{wh[1]}"


def _level(value):
    return f"{value:.1f}" if value >= 0.1 or value == 0 else f"{value:.2f}"


def _num(value):
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def _percent(share):
    pct = share * 100.0
    if pct == 0 or pct >= 10:
        return f"{pct:.0f}%"
    return f"{pct:.1f}%" if pct >= 0.1 else f"{pct:.2f}%"
