"""--expect: the time to check N output images against their expected files (default 1000 of
512x512), as `run --expect` does it (expect.check_prompt, one prompt per 4 images).

Each expected picture is smooth (a gradient with detail, what a real picture is like for
a PNG encoder), saved as PNG; its output is the same picture with a little noise (decoded and
compared pixel by pixel: within tolerance), and every tenth output is a changed picture (a
mismatch, which also writes its difference image). The files are made before the clock
starts. Run: .venv/bin/python tests/bench/bench_compare.py [--count N] [--size PX]
Target: 1000 images of 512x512 in at most 10 s.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageChops  # noqa: E402

from comfy_cli import expect  # noqa: E402

PER_PROMPT = 4


def picture(i, size):
    """A smooth picture with some detail, different for each i."""
    base = Image.radial_gradient("L").resize((size, size)).rotate(i % 360)
    detail = Image.effect_mandelbrot((size, size), (-2 + i % 7 * 0.01, -1.5, 1, 1.5), 50)
    return Image.merge("RGB", (base, detail, ImageChops.multiply(base, detail)))


def noisy(img, sigma):
    grain = Image.effect_noise(img.size, sigma)  # centred on 128
    return ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def make(folder, count, size):
    exp, out = os.path.join(folder, "expected"), os.path.join(folder, "out")
    os.makedirs(out)
    prompts = []
    for p in range(0, count, PER_PROMPT):
        name = f"wf{p // PER_PROMPT}"
        os.makedirs(os.path.join(exp, name))
        found = []
        for k in range(min(PER_PROMPT, count - p)):
            i = p + k
            img = picture(i, size)
            img.save(os.path.join(exp, name, f"9_{k}.png"), compress_level=1)
            got = picture(i + 1000, size) if i % 10 == 9 else noisy(img, 1.0)
            path = os.path.join(out, f"{name}_{k}.png")
            got.save(path, compress_level=1)
            found.append(expect.Entry("9", "image", k, f"9_{k}", ".png", path=path))
        prompts.append((name, found))
    return exp, prompts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="images to check (default 1000)")
    parser.add_argument("--size", type=int, default=512, help="their width and height (default 512)")
    args = parser.parse_args()
    print("bench_compare: check output images against expected files (--expect)")
    print(f"platform: {platform.platform()}  cpus: {os.cpu_count()}  python: {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        made = time.perf_counter()
        exp, prompts = make(folder, args.count, args.size)
        print(f"made {args.count} pairs of {args.size}x{args.size} PNGs in {time.perf_counter() - made:.1f} s")
        check = expect.Check(exp)
        start, cpu = time.perf_counter(), time.process_time()
        outcomes = [o for name, found in prompts for o in expect.check_prompt(check, name, found)]
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    statuses = [o.status for o in outcomes]
    want = ["mismatch" if i % 10 == 9 else "match" for i in range(args.count)]
    if statuses != want:
        print(f"WRONG: {sum(a != b for a, b in zip(statuses, want))} outcomes not as made", file=sys.stderr)
        return 1
    print(f"checked {args.count} images ({statuses.count('mismatch')} mismatches, with difference images) "
          f"in {wall:.2f} s wall, {cpu:.2f} s CPU: {wall / args.count * 1000:.2f} ms per image")
    if args.size == 512 and args.count == 1000:
        print(f"target: at most 10 s: {'met' if wall <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
