"""--report: the time and size of the HTML report of N prompts (default 1000), written as the run
writes it at its end (htmlreport.render, then outputs.write_new: a temporary file put in place).

The prompts are made as a run makes them: tracker Prompts fed a run's events (8 nodes, one of
them cached, a saved image each; every 20th one failed), turned into manifest lines by
manifest.record. They vary three inputs (cfg x steps x sampler: a grid per sampler) and carry a
prompt text of 200 characters. The lines are made before the clock starts.
Run: .venv/bin/python tests/bench/bench_report.py [--count N] [--runs R]
Target: 1000 prompts written in at most 1 s, the file at most 5 MB.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from comfy_cli import events as ev  # noqa: E402
from comfy_cli import htmlreport, manifest  # noqa: E402
from comfy_cli import tracker as tr  # noqa: E402
from comfy_cli.dispatch import Attempt  # noqa: E402
from comfy_cli.outputs import write_new  # noqa: E402
from comfy_cli.workflow import Workflow  # noqa: E402

TARGET_S = 1.0
TARGET_BYTES = 5 * 1024 * 1024
SAMPLERS = ("euler", "dpmpp_2m", "ddim", "uni_pc")
NODES = ["1", "2", "3", "4", "5", "6", "7", "8"]


def graph():
    kinds = ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
             "VAEDecode", "ImageScale", "SaveImage"]
    return {n: {"class_type": k, "inputs": {}, "_meta": {"title": f"{k} {n}"}} for n, k in zip(NODES, kinds)}


def line(i, out):
    cfg, steps, sampler = 3 + i % 10, 10 + (i // 10) % 25 * 2, SAMPLERS[i // 250 % len(SAMPLERS)]
    values = {"KSampler.cfg": cfg, "KSampler.steps": steps, "KSampler.sampler_name": sampler,
              "CLIPTextEncode.text": ("a red fox in the snow, golden hour, " * 6)[:200], "KSampler.seed": 1000 + i}
    name = f"txt2img[cfg={cfg},steps={steps},sampler={sampler}]"
    p = tr.Prompt(f"prompt-{i:06d}", Workflow("flows/txt2img.json", name, graph(), values=values))
    t = float(i)
    p.sending(t)
    p.accepted(i)
    events = [ev.Started(t + 0.1, p.prompt_id, None), ev.Cached(t + 0.1, p.prompt_id, ("1",))]
    events += [ev.Executing(t + 0.2 + k * 0.3, p.prompt_id, n, None) for k, n in enumerate(NODES[1:])]
    file = {"filename": f"txt2img_{i:05d}_.png", "subfolder": "", "type": "output"}
    events.append(ev.Executed(t + 2.5, p.prompt_id, "8", None, {"images": [file]}))
    if i % 20 == 7:
        events.append(ev.Failed(t + 2.6, p.prompt_id, "5", "KSampler", "CUDA out of memory", "RuntimeError", (), None))
    else:
        events.append(ev.Succeeded(t + 2.6, p.prompt_id, None))
    for e in events:
        p.handle(e)
    saved = {("8", file["filename"], "", "output"): os.path.join(out, file["filename"])}
    return manifest.record(p, i, "bench", saved, out, lambda prompt, item: "http://gpu1:8188/view?x",
                           attempt=Attempt(i, 1, "http://gpu1:8188"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="prompts in the report (default 1000)")
    parser.add_argument("--runs", type=int, default=5, help="timed writes (default 5; the median counts)")
    args = parser.parse_args()
    if args.count < 1 or args.runs < 1:
        parser.error("--count and --runs must be at least 1")
    print(f"bench_report: the --report page of {args.count} prompts")
    print(f"platform: {platform.platform()}; python {platform.python_version()}; cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        records = [line(i, out) for i in range(args.count)]
        meta = {"title": "bench", "finished": True, "exit_code": 1, "wall_s": 1234.5, "servers": ["http://gpu1:8188"],
                "total": args.count, "files": "out/", "started": "now", "updated": "now"}
        page = os.path.join(tmp, "report.html")
        times = []
        for _ in range(args.runs):
            began = time.perf_counter()
            text = htmlreport.render(records, meta).encode("utf-8")
            write_new(page, lambda fh: fh.write(text), overwrite=True)
            times.append(time.perf_counter() - began)
        size = os.path.getsize(page)
    took = statistics.median(times)
    print(f"written in: median {took:.3f} s (min {min(times):.3f}, max {max(times):.3f}) over {args.runs} runs")
    print(f"size:       {size / 1024 / 1024:.2f} MB ({size / args.count:.0f} bytes per prompt)")
    if args.count == 1000:
        ok = took <= TARGET_S and size <= TARGET_BYTES
        print(f"target:     <= {TARGET_S:g} s and <= 5 MB: {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    print("target:     set for --count 1000 only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
