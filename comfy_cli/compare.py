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

import contextlib
import filecmp
import io
import operator
import os
from typing import NamedTuple, Optional

from comfy_cli import pngdata

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
    diff: object = None  # for write_diff: the per-channel difference (a Pillow RGB or RGBA image)
    picture: object = None  # for write_diff: the output as decoded, when that is the file's own mode


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


def compare_files(expected, got, tolerance=DEFAULT, decode=True, cpus=None):
    """Compare the file `got` with the file `expected`. `decode`: images are decoded (needs
    Pillow); otherwise bytes decide. `cpus`: the CPUs the run may use; with two or more, the
    expected picture is decoded on a helper thread while this one decodes the output. OSError
    if a file cannot be read."""
    pil = pillow() if decode else None
    if pil is None or not (is_image(expected) and is_image(got)):
        if filecmp.cmp(expected, got, shallow=False):
            return Result(True, "bytes")
        return Result(False, "bytes", "the bytes differ")
    a, b = _read(expected), _read(got)
    if a == b:
        return Result(True, "bytes")
    size = pngdata.same_pixels(a, b)
    if size:  # the picture's chunks are the same bytes (e.g. only the embedded workflow differs)
        return Result(True, "pixels", None, 0.0, 0.0, size)
    try:
        with _opened(pil[0], a, expected) as one, _opened(pil[0], b, got) as two:
            if one.size != two.size:
                return _sizes_differ(one.size, two.size)
            first, second = _both_loaded(one, expected, two, got, cpus)
    except _Undecodable as exc:
        return Result(False, "bytes", f"the bytes differ, and {exc}")
    result = compare_images(first, second, tolerance, pil)
    return result if result.same or second is not two else result._replace(picture=second)


def compare_images(expected, got, tolerance=DEFAULT, pil=None):
    """Two decoded Pillow images: same size, then the mean difference and the share of
    pixels off, each within `tolerance`."""
    ImageChops = (pil or pillow())[1]
    if expected.size != got.size:
        return _sizes_differ(expected.size, got.size)
    if expected.mode != got.mode:  # one has alpha, the other not: compare both with it
        expected, got = expected.convert("RGBA"), got.convert("RGBA")
    diff = ImageChops.difference(expected, got)
    hist = diff.histogram()  # in C: 256 counts per band, so no loop over pixels here
    bands = len(hist) // 256
    count = expected.size[0] * expected.size[1]
    mean = sum(map(operator.mul, _LEVELS, hist)) / (count * bands) if count else 0.0
    share = 0.0
    if any(any(hist[b * 256 + OFF_LEVEL + 1:(b + 1) * 256]) for b in range(bands)):  # some channel is off
        share = sum(_largest(ImageChops, diff).histogram()[OFF_LEVEL + 1:]) / count
    same = mean <= tolerance.mean and share <= tolerance.share
    problem = None
    if not same:
        problem = f"mean difference {_level(mean)} {'>' if mean > tolerance.mean else '<='} {_num(tolerance.mean)}, " \
                  f"{_percent(share)} of pixels off " \
                  f"({'>' if share > tolerance.share else '<='} {_percent(tolerance.share)})"
    return Result(same, "pixels", problem, mean, share, got.size, diff)


def _sizes_differ(expected, got):
    return Result(False, "pixels", f"size {_size(got)}, expected {_size(expected)}", size=got)


def _largest(ImageChops, diff):
    """Each pixel's largest channel difference (an "L" image)."""
    bands = diff.split()
    largest = bands[0]
    for band in bands[1:]:
        largest = ImageChops.lighter(largest, band)
    return largest


class _Undecodable(Exception):
    pass


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


@contextlib.contextmanager
def _undecodable(path):
    """Pillow's complaints about a file as _Undecodable (a missing file stays an OSError)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _Undecodable(f"{os.path.basename(path)} cannot be decoded: {exc}") from None
    except (ValueError, SyntaxError) as exc:  # Pillow raises these for some broken files
        raise _Undecodable(f"{os.path.basename(path)} cannot be decoded: {exc}") from None


def _opened(Image, data, path):
    """The image in `data`, opened at its first frame: its size is known, nothing decoded yet."""
    with _undecodable(path):
        img = Image.open(io.BytesIO(data))
        img.seek(0)
        return img


def _loaded(img, path):
    """The first frame decoded, as RGB (RGBA when it has transparency): `img` itself when it is so."""
    with _undecodable(path):
        alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
        mode = "RGBA" if alpha else "RGB"
        if img.mode == mode:
            img.load()
            return img
        return img.convert(mode)


def _both_loaded(one, expected, two, got, cpus):
    """Both decoded, at once when there are CPUs for it (Pillow decodes without the GIL). A
    problem with the expected file is told first, as when they are decoded in turn."""
    if not cpus or len(cpus) < 2:
        return _loaded(one, expected), _loaded(two, got)
    first = _helper(cpus).submit(_loaded, one, expected)
    try:
        second = _loaded(two, got)
    finally:
        decoded = first.result()  # (always waited for: `one` is closed after this)
    return decoded, second


_HELPER = []


def _helper(cpus):
    """The decoding thread, made once. The run keeps its threads on one CPU, since they hand
    work to each other all the time; this one does long stretches of C work on its own, so it
    may use every CPU the run was allowed (`cpus`)."""
    if not _HELPER:
        from concurrent.futures import ThreadPoolExecutor

        _HELPER.append(ThreadPoolExecutor(1, "comfy-cli-decode", initializer=_allow, initargs=(frozenset(cpus),)))
    return _HELPER[0]


def _allow(cpus):
    try:
        os.sched_setaffinity(0, cpus)  # this thread only
    except (AttributeError, OSError, ValueError):
        pass


def cpus_allowed():
    """The CPUs this thread may run on (None where that cannot be asked): for compare_files's
    `cpus`, asked before the run keeps its threads on one."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def diff_path(output_path):
    """Where the difference image of a saved output goes: beside it, `NAME.diff.png`."""
    return os.path.splitext(output_path)[0] + ".diff.png"


# The difference image is drawn as levels of grey with two colours, so it is kept as a palette
# image (a third of the bytes to encode): entries 0 and 1 are the colours, the rest grey
# levels. Fading towards white leaves no level under 153, so the two never meet.
_RED, _YELLOW = 0, 1
_PALETTE = bytes((230, 0, 0, 255, 200, 0)) + bytes(v for i in range(2, 256) for v in (i, i, i))
_SMALL = [0] + [255] * OFF_LEVEL + [0] * (255 - OFF_LEVEL)
_OFF = [0] * (OFF_LEVEL + 1) + [255] * (255 - OFF_LEVEL)
_FADE = []


def write_diff(result, got, path, overwrite=False):
    """Write the difference image of a pixel comparison to `path` (atomic; an existing file
    gets a numbered name unless `overwrite`): the output faded to grey, the pixels off in red,
    smaller differences in yellow. Returns the path written, or None when there is nothing to
    draw (the sizes differ, or bytes were compared)."""
    if result.diff is None:
        return None
    from comfy_cli.outputs import write_new

    Image, ImageChops = pillow()
    if not _FADE:  # the output's grey levels 60% of the way to white, as Image.blend makes them
        ramp = Image.frombytes("L", (256, 1), bytes(range(256)))
        _FADE.extend(Image.blend(ramp, Image.new("L", (256, 1), 255), 0.6).tobytes())
    if result.picture is not None:
        grey = result.picture.convert("L")
    else:
        with Image.open(got) as img:
            img.seek(0)
            grey = img.convert("L")
    largest = _largest(ImageChops, result.diff)
    picture = grey.point(_FADE)
    picture.paste(_YELLOW, mask=largest.point(_SMALL))
    picture.paste(_RED, mask=largest.point(_OFF))
    picture.putpalette(_PALETTE)
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
