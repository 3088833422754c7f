"""--expect: the time to check N output images against their expected files (default 1000 of
512x512), as `run --expect` does it: expect.check_prompt (one prompt per 4 images) with the
Check that expect.ForRun makes, on a main thread kept on one CPU as the run keeps its own.

The pairs are the mix a CI job sees, one kind per prompt, spread through the batch:
- identical (30%): a deterministic GPU made the very same file;
- same picture, other text (10%): the embedded workflow changed (a node moved), the pixels not;
- noisy (40%): another GPU or encoder, a level or two off: a match, decoded and compared;
- changed (10%): another picture: a mismatch, with its difference image;
- changed patch (5%): 1.4% of the picture changed: a mismatch by the share of pixels off;
- wrong size (5%): a mismatch seen from the headers.
Each picture has smooth parts, detail and a fine grain (about 420 KB as PNG, like a real
generated 512x512 picture), saved as ComfyUI saves it (compress_level 4, the prompt and the
workflow as text). The files are made before the clock starts (25 pictures and their variants,
encoded once and written as often as needed). It prints the time of the whole
check, then each kind's, and the time of the pairs that are not identical.
Run: .venv/bin/python tests/bench/bench_compare.py [--count N] [--size PX]
Target: 1000 images of 512x512 in at most 10 s.
"""

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageChops  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from comfy_cli import expect  # noqa: E402

PER_PROMPT = 4
# One kind per prompt, in this order over every 20 prompts (30/10/40/10/5/5%).
ORDER = ("noisy identical changed noisy text identical noisy patch identical noisy "
         "text identical noisy changed identical noisy size identical noisy noisy").split()
MISMATCH = {"changed", "patch", "size"}
NAMES = {"identical": "identical files", "text": "same picture, other text", "noisy": "noisy, within tolerance",
         "changed": "changed picture", "patch": "changed patch (1.4%)", "size": "wrong size"}


def picture(i, size):
    """A picture with smooth parts, detail and grain, different for each i."""
    base = Image.radial_gradient("L").resize((size, size)).rotate(i % 360)
    detail = Image.effect_mandelbrot((size, size), (-2 + i % 7 * 0.01, -1.5, 1, 1.5), 50)
    img = Image.merge("RGB", (base, detail, ImageChops.multiply(base, detail)))
    grain = Image.effect_noise(img.size, 3)
    return ImageChops.add(img, Image.merge("RGB", (grain, grain.rotate(90), grain.rotate(180))), 1.0, -128)


def noisy(img, sigma):
    grain = Image.effect_noise(img.size, sigma)  # centred on 128
    return ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def patched(img):
    """A patch of 1.44% of the pixels changed (inverted): off by the share; the mean moves by ~2 levels."""
    side = round(img.size[0] * 0.12)
    box = (2 * side, 3 * side, 3 * side, 4 * side)
    img = img.copy()
    img.paste(ImageChops.invert(img.crop(box)), box)
    return img


def encoded(img, workflow):
    """The PNG's bytes, as ComfyUI's SaveImage writes them (the prompt and workflow as text)."""
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}}))
    info.add_text("workflow", json.dumps({"nodes": [{"id": 3, "pos": [workflow, 40]}], "links": []}))
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=4, pnginfo=info)
    return out.getvalue()


class Files:
    """The files' bytes, each made once: BASES pictures, and for each the outputs of each kind
    (NOISES noisy ones). Pairs that share a base share bytes, not work: each file is read and
    decoded on its own, as in a run."""

    BASES, NOISES = 25, 4

    def __init__(self, size):
        self.size, self.made, self.pictures = size, {}, {}

    def get(self, what, i):
        base = i % self.BASES
        key = (what, base, i % self.NOISES if what == "noisy" else 0)
        if key not in self.made:
            self.made[key] = self._make(what, base)
        return self.made[key]

    def _make(self, what, base):
        if base not in self.pictures:  # (made once: its grain is random)
            self.pictures[base] = picture(base, self.size)
        img = self.pictures[base]
        if what == "noisy":
            img = noisy(img, 1.0)
        elif what == "changed":
            img = picture(base + 1000, self.size)
        elif what == "patch":
            img = patched(img)
        elif what == "size":
            img = img.resize((self.size, self.size - self.size // 8))
        return encoded(img, 20 if what == "text" else 10)


def make(folder, count, size):
    """The expected folder and [(kind, name, entries)], one prompt of one kind each."""
    exp, out = os.path.join(folder, "expected"), os.path.join(folder, "out")
    os.makedirs(out)
    files, prompts = Files(size), []
    for p in range(0, count, PER_PROMPT):
        kind, name = ORDER[p // PER_PROMPT % len(ORDER)], f"wf{p // PER_PROMPT}"
        os.makedirs(os.path.join(exp, name))
        found = []
        for k in range(min(PER_PROMPT, count - p)):
            Path(exp, name, f"9_{k}.png").write_bytes(files.get("expected", p + k))
            path = os.path.join(out, f"{name}_{k}.png")
            Path(path).write_bytes(files.get("expected" if kind == "identical" else kind, p + k))
            found.append(expect.Entry("9", "image", k, f"9_{k}", ".png", path=path))
        prompts.append((kind, name, found))
    return exp, out, prompts


def one_cpu():
    """Keep this thread on one CPU, as the run keeps its own (COMFY_CLI_ANY_CPU=1: not)."""
    if os.environ.get("COMFY_CLI_ANY_CPU") or not hasattr(os, "sched_setaffinity"):
        return "any CPU"
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return "one CPU"


def check_all(check, prompts):
    """Every prompt checked; per kind: [images, wall s, CPU s], and the outcomes in order."""
    kinds, outcomes = {}, []
    for kind, name, found in prompts:
        wall, cpu = time.perf_counter(), time.process_time()
        outcomes.extend(expect.check_prompt(check, name, found))
        row = kinds.setdefault(kind, [0, 0.0, 0.0])
        row[0] += len(found)
        row[1] += time.perf_counter() - wall
        row[2] += time.process_time() - cpu
    return kinds, outcomes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="images to check (default 1000)")
    parser.add_argument("--size", type=int, default=512, help="their width and height (default 512)")
    args = parser.parse_args()
    print("bench_compare: check output images against expected files (--expect)")
    print(f"platform: {platform.platform()}  cpus: {os.cpu_count()}  python: {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        made = time.perf_counter()
        exp, out, prompts = make(folder, args.count, args.size)
        mean_kb = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)) / len(os.listdir(out)) / 1024
        print(f"made {args.count} pairs of {args.size}x{args.size} PNGs (outputs {mean_kb:.0f} KB on average) "
              f"in {time.perf_counter() - made:.1f} s")
        check = expect.ForRun(exp, output_dir=out).check  # what run --expect DIR --output-dir OUT checks with
        where = one_cpu()
        start, cpu = time.perf_counter(), time.process_time()
        kinds, outcomes = check_all(check, prompts)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    want = [o for kind, _, found in prompts for o in ["mismatch" if kind in MISMATCH else "match"] * len(found)]
    statuses = [o.status for o in outcomes]
    if statuses != want:
        print(f"WRONG: {sum(a != b for a, b in zip(statuses, want))} outcomes not as made", file=sys.stderr)
        return 1
    diffs = sum(1 for o in outcomes if o.diff)
    print(f"main thread on {where}; decoding helper allowed on {len(check.cpus or ())} CPUs")
    print(f"checked {args.count} images ({statuses.count('mismatch')} mismatches, {diffs} difference images) "
          f"in {wall:.2f} s wall, {cpu:.2f} s CPU: {wall / args.count * 1000:.2f} ms per image")
    for kind in NAMES:
        if kind in kinds:
            n, w, c = kinds[kind]
            print(f"  {NAMES[kind]:26} {n:5} ({n / args.count:4.0%})  {w:6.2f} s wall  {c:6.2f} s CPU  "
                  f"{w / n * 1000:6.2f} ms per image")
    rest = [v for k, v in kinds.items() if k != "identical"]
    n, w, c = (sum(v[i] for v in rest) for i in range(3))
    if n:
        print(f"  {'all but identical':26} {n:5} ({n / args.count:4.0%})  {w:6.2f} s wall  {c:6.2f} s CPU  "
              f"{w / n * 1000:6.2f} ms per image")
    if args.size == 512 and args.count == 1000:
        print(f"target: at most 10 s: {'met' if wall <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
