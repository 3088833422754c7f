"""Batch growth: comfy-cli's client CPU and memory as `--count N` grows.

For each N the simulator runs in-process and one one-step workflow file is run with
`comfy-cli run WORKFLOW --count N --progress none --json` as a subprocess. The child's
user+sys CPU time and peak RSS come from os.wait4. The reference is tests/bench/ref_client.py,
one prompt per process, run N times in a row (sums shown); it is only run for N <= 100.
Targets at N=1000: under 1.5 ms client CPU per prompt and 80 MB peak RSS.

With `--against DIR` (a checkout of another commit, e.g. from `git worktree add /tmp/old OLD`),
that tree's comfy_cli is measured too, alternated with this one's (it is put first on the child's
PYTHONPATH), and the ratio of their CPU per prompt is printed: the machine's speed drifts, so only
such side-by-side ratios compare across days.

Usage: python tests/bench/bench_batch.py [--runs N] [--sizes 10,100,1000] [--against DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COMFY_CLI, REPO, header  # noqa: E402

from comfy_cli.sim import SimServer  # noqa: E402

REF_CLIENT = str(Path(__file__).resolve().parent / "ref_client.py")
REF_MAX_N = 100  # one process per prompt: too slow beyond this
TARGET_CPU_MS = 1.5  # issue H: under 1.5 ms (was "about 2")
TARGET_RSS_MB = 80.0


def graph(seed):
    return {"1": {"class_type": "TestSteps", "inputs": {"steps": 1, "seconds_per_step": 0.0, "seed": seed}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}}}


def run_child(argv, tmp, env=None):
    """Run argv to completion; return (wall s, user+sys CPU s, peak RSS KB, exit code, stdout, stderr)."""
    out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    with open(out_path, encoding="utf-8", errors="replace") as fh:
        stdout = fh.read()
    with open(err_path, encoding="utf-8", errors="replace") as fh:
        stderr = fh.read()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code, stdout, stderr


def fail(what, argv, code, stdout, stderr):
    sys.exit(f"{what} exited {code}\n$ {' '.join(argv)}\n{stdout[-2000:]}{stderr[-2000:]}")


def measure_cli(sim, n, tmp, tree=None, seed=1):
    workflow = os.path.join(tmp, "batch.json")
    with open(workflow, "w") as fh:
        json.dump(graph(seed), fh)
    argv = [COMFY_CLI, "run", workflow, "--count", str(n), "--progress", "none", "--json", "--url", sim.url]
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    wall, cpu, rss_kb, code, stdout, stderr = run_child(argv, tmp, env)
    if code != 0:
        fail("comfy-cli", argv, code, stdout, stderr)
    prompts = json.loads(stdout)["prompts"]
    statuses = [p["status"] for p in prompts]
    if len(prompts) != n or any(s != "success" for s in statuses):
        sys.exit(f"comfy-cli --count {n}: {len(prompts)} prompts, statuses "
                 f"{sorted(set(statuses))}\n{stderr[-2000:]}")
    return {"wall": wall, "cpu_ms": cpu * 1e3 / n, "rss_mb": rss_kb / 1024}


def measure_ref(sim, n, tmp):
    workflow = os.path.join(tmp, "ref.json")
    wall = cpu = 0.0
    for i in range(n):
        with open(workflow, "w") as fh:  # seeds apart from comfy-cli's so nothing is served from cache
            json.dump(graph(1_000_000 + i), fh)
        argv = [sys.executable, REF_CLIENT, sim.url, workflow]
        w, c, _, code, stdout, stderr = run_child(argv, tmp)
        if code != 0:
            fail("ref_client.py", argv, code, stdout, stderr)
        wall += w
        cpu += c
    return {"wall": wall, "cpu_ms": cpu * 1e3 / n}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per size (default 1; medians if more)")
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated --count values (default 10,100,1000)")
    parser.add_argument("--against", metavar="DIR", help="also measure the comfy_cli in DIR (another checkout)")
    args = parser.parse_args()
    if args.against and not os.path.isfile(os.path.join(args.against, "comfy_cli", "__init__.py")):
        parser.error(f"--against {args.against}: no comfy_cli package there")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if args.runs < 1 or not sizes or min(sizes) < 1:
        parser.error("--runs and every size must be at least 1")

    header("bench_batch: comfy-cli run --count N (one workflow, one-step prompts) vs ref_client.py x N", args.runs)
    cli = {n: [] for n in sizes}
    ref = {n: [] for n in sizes}
    other = {n: [] for n in sizes}
    for run in range(args.runs):
        for n in sizes:
            with SimServer() as sim, tempfile.TemporaryDirectory() as tmp:
                cli[n].append(measure_cli(sim, n, tmp))
                if args.against:  # (another seed: nothing served from the simulator's cache)
                    other[n].append(measure_cli(sim, n, tmp, os.path.abspath(args.against), seed=2))
                if n <= REF_MAX_N:
                    ref[n].append(measure_ref(sim, n, tmp))

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print(f"{'':>6}  {'---------- comfy-cli ----------':^33}  {'--- ref_client x N ---':^22}")
    print(f"{'N':>6}  {'wall s':>8}  {'CPU ms/prompt':>13}  {'peak RSS MB':>11}  {'wall s':>8}  {'CPU ms/prompt':>13}")
    for n in sizes:
        line = (f"{n:>6}  {med(cli[n], 'wall'):8.2f}  {med(cli[n], 'cpu_ms'):13.2f}"
                f"  {med(cli[n], 'rss_mb'):11.1f}")
        if ref[n]:
            line += f"  {med(ref[n], 'wall'):8.2f}  {med(ref[n], 'cpu_ms'):13.2f}"
        else:
            line += f"  {'n/a':>8}  {'n/a':>13}"
        print(line)
    if args.against:
        print()
        print(f"side by side with {args.against} (alternated, medians of CPU ms/prompt):")
        for n in sizes:
            mine, theirs = med(cli[n], "cpu_ms"), med(other[n], "cpu_ms")
            runs = " ".join(f"{r['cpu_ms']:.2f}" for r in cli[n])
            theirs_runs = " ".join(f"{r['cpu_ms']:.2f}" for r in other[n])
            print(f"{n:>6}  this tree {mine:.2f}  {args.against} {theirs:.2f}  ratio {mine / theirs:.2f}x"
                  f"  (runs: {runs} vs {theirs_runs})")
    print()
    print(f"targets at N=1000: comfy-cli client CPU <= ~{TARGET_CPU_MS:g} ms/prompt, peak RSS <= ~{TARGET_RSS_MB:g} MB")
    if 1000 in cli:
        cpu, rss = med(cli[1000], "cpu_ms"), med(cli[1000], "rss_mb")
        print(f"measured at N=1000:  {cpu:.2f} ms/prompt ({'within' if cpu <= TARGET_CPU_MS else 'OVER'}),"
              f" {rss:.1f} MB ({'within' if rss <= TARGET_RSS_MB else 'OVER'})")


if __name__ == "__main__":
    main()
