"""Batches made from data (issue 18): planning cost and the submit path's cost per prompt.

1. Planning: `comfy-cli run examples/txt2img.json --params ROWS.csv --dry-run` for a CSV of
   `--rows` rows (prompt text, seed, cfg, name), against the simulator in-process: every row is
   read, every value checked against /object_info, every prompt built, checked and listed.
   Wall time and peak RSS of the child (os.wait4). Target at 10,000 rows: <= 2 s and 100 MB.
2. A sweep of `--prompts` values (`--sweep TestSteps.seed=1..N`) against a `--count N` batch of
   the same one-step workflow, alternated `--runs` times on fresh simulators: the client's
   user+sys CPU per prompt. Target: the sweep within 10% of --count (the plan builds each graph
   when it is sent; --count used to build them all up front).

Usage: python tests/bench/bench_plan.py [--rows 10000] [--prompts 10000] [--runs 3]
(check it runs: --rows 50 --prompts 20 --runs 1)
"""

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COMFY_CLI, REPO, header  # noqa: E402
from bench_batch import fail, graph, run_child  # noqa: E402

from comfy_cli.sim import SimServer  # noqa: E402

TARGET_PLAN_S = 2.0
TARGET_PLAN_MB = 100.0
TARGET_SWEEP_RATIO = 1.10
WORDS = ["fox", "owl", "harbour", "lighthouse", "tower", "forest", "snow", "dawn", "fog", "river"]


def write_rows(path, n):
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["name", "Positive prompt.text", "KSampler.seed", "KSampler.cfg"])
        for i in range(n):
            text = f"a {WORDS[i % 10]} near a {WORDS[i // 10 % 10]}, {WORDS[i // 100 % 10]} light, study {i}"
            out.writerow([f"p{i:06d}", text, i, 4 + i % 9 * 0.5])


def measure_plan(rows, tmp):
    data = os.path.join(tmp, "rows.csv")
    write_rows(data, rows)
    with SimServer() as sim:
        argv = [COMFY_CLI, "run", str(REPO / "examples" / "txt2img.json"), "--params", data, "--dry-run",
                "--url", sim.url]
        wall, cpu, rss_kb, code, stdout, stderr = run_child(argv, tmp)
    if code != 0:
        fail("comfy-cli --dry-run", argv, code, stdout, stderr)
    if len(stdout.splitlines()) != rows:
        sys.exit(f"--dry-run listed {len(stdout.splitlines())} prompts, expected {rows}\n{stderr[-2000:]}")
    return {"wall": wall, "cpu": cpu, "rss_mb": rss_kb / 1024}


def measure_batch(n, tmp, how):
    workflow = os.path.join(tmp, f"{how}.json")
    with open(workflow, "w") as fh:
        json.dump(graph(1), fh)
    extra = ["--sweep", f"TestSteps.seed=1..{n}"] if how == "sweep" else ["--count", str(n)]
    with SimServer() as sim:
        argv = [COMFY_CLI, "run", workflow, *extra, "--progress", "none", "--json", "--url", sim.url]
        _wall, cpu, _rss, code, stdout, stderr = run_child(argv, tmp)
    if code != 0:
        fail(f"comfy-cli ({how})", argv, code, stdout, stderr)
    prompts = json.loads(stdout)["prompts"]
    if len(prompts) != n or any(p["status"] != "success" for p in prompts):
        sys.exit(f"{how}: {len(prompts)} prompts, statuses {sorted({p['status'] for p in prompts})}")
    return cpu * 1e3 / n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the planned CSV (default 10000)")
    parser.add_argument("--prompts", type=int, default=10_000, help="prompts of the sweep and the --count batch")
    parser.add_argument("--runs", type=int, default=3, help="alternated runs of each (default 3; medians)")
    args = parser.parse_args()
    if min(args.rows, args.prompts, args.runs) < 1:
        parser.error("--rows, --prompts and --runs must be at least 1")
    header(f"bench_plan: --dry-run of a {args.rows}-row CSV; a {args.prompts}-value sweep vs --count "
           f"{args.prompts}", args.runs)
    plans, sweep, count = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            plans.append(measure_plan(args.rows, tmp))
            count.append(measure_batch(args.prompts, tmp, "count"))
            sweep.append(measure_batch(args.prompts, tmp, "sweep"))
    wall = statistics.median(p["wall"] for p in plans)
    rss = statistics.median(p["rss_mb"] for p in plans)
    print(f"planning {args.rows} rows (--dry-run): wall {wall:.2f} s, peak RSS {rss:.1f} MB "
          f"(targets at 10000 rows: <= {TARGET_PLAN_S:g} s: {'within' if wall <= TARGET_PLAN_S else 'OVER'}, "
          f"<= {TARGET_PLAN_MB:g} MB: {'within' if rss <= TARGET_PLAN_MB else 'OVER'})")
    walls = " ".join(f"{p['wall']:.2f}" for p in plans)
    print(f"runs (s): {walls}")
    mine, base = statistics.median(sweep), statistics.median(count)
    print(f"client CPU per prompt, {args.prompts} prompts: sweep {mine:.2f} ms, --count {base:.2f} ms, ratio "
          f"{mine / base:.2f}x (target <= {TARGET_SWEEP_RATIO:.2f}x: "
          f"{'within' if mine / base <= TARGET_SWEEP_RATIO else 'OVER'})")
    print(f"runs (ms/prompt): sweep {' '.join(f'{v:.2f}' for v in sweep)}; "
          f"--count {' '.join(f'{v:.2f}' for v in count)}")


if __name__ == "__main__":
    main()
