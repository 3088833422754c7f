"""Several servers: one batch spread over 1, 2 and 4 simulated servers, side by side.

Each simulator has a fixed cost per prompt (`prompt_cost`, like a model step on a GPU) and
runs in this process; comfy-cli runs as a child with `--url` once per server. Printed: wall
time and its speed-up over one server, the client's CPU per prompt (user+sys from os.wait4),
and peak RSS. A second part runs a large batch of near-free prompts on 4 servers for memory.
Targets (issue J): 200 prompts at least 1.9x faster on 2 servers and 3.6x on 4 than on 1;
client CPU per prompt not growing with servers; under 100 MB peak RSS at 10,000 prompts.

Usage: python tests/bench/bench_servers.py [--prompts 200] [--cost 0.05] [--big 10000]
"""

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COMFY_CLI, header  # noqa: E402
from bench_batch import graph, run_child  # noqa: E402

from comfy_cli.sim import SimServer  # noqa: E402


def run(n_servers, prompts, cost, tmp):
    with ExitStack() as stack:
        sims = [stack.enter_context(SimServer(prompt_cost=cost)) for _ in range(n_servers)]
        path = os.path.join(tmp, "batch.json")
        with open(path, "w") as fh:
            json.dump(graph(1), fh)
        argv = [COMFY_CLI, "run", path, "--count", str(prompts), "--progress", "none", "--json"]
        for sim in sims:
            argv += ["--url", sim.url]
        wall, cpu, rss_kb, code, stdout, stderr = run_child(argv, tmp)
        if code != 0:
            sys.exit(f"exited {code}\n$ {' '.join(argv)}\n{stderr[-2000:]}")
        doc = json.loads(stdout)
        ok = sum(p["status"] == "success" for p in doc["prompts"])
        if ok != prompts:
            sys.exit(f"{ok} of {prompts} succeeded\n{stderr[-2000:]}")
        per = [sum(p["server"] == s.url for p in doc["prompts"]) for s in sims]
        return {"wall": wall, "cpu_ms": cpu * 1e3 / prompts, "rss_mb": rss_kb / 1024, "per": per}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--cost", type=float, default=0.05, help="seconds per prompt on each server")
    parser.add_argument("--big", type=int, default=10000, help="prompts for the memory run (0: skip)")
    args = parser.parse_args()
    header(f"bench_servers: {args.prompts} prompts of {args.cost:g} s on 1, 2 and 4 servers", 1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2, 4):
            rows[n] = run(n, args.prompts, args.cost, tmp)
        print(f"{'servers':>7}  {'wall s':>7}  {'speed-up':>8}  {'CPU ms/prompt':>13}  {'peak RSS MB':>11}  per server")
        for n, r in rows.items():
            print(f"{n:>7}  {r['wall']:7.2f}  {rows[1]['wall'] / r['wall']:7.2f}x  {r['cpu_ms']:13.2f}"
                  f"  {r['rss_mb']:11.1f}  {r['per']}")
        s2, s4 = rows[1]["wall"] / rows[2]["wall"], rows[1]["wall"] / rows[4]["wall"]
        print(f"targets: 2 servers >= 1.9x ({'met' if s2 >= 1.9 else 'MISSED'}: {s2:.2f}x), "
              f"4 servers >= 3.6x ({'met' if s4 >= 3.6 else 'MISSED'}: {s4:.2f}x)")
        if args.big:
            big = run(4, args.big, 0.0, tmp)
            print(f"\n{args.big} near-free prompts on 4 servers: {big['wall']:.1f} s, {big['cpu_ms']:.2f} ms CPU/prompt, "
                  f"peak RSS {big['rss_mb']:.1f} MB (target < 100: {'met' if big['rss_mb'] < 100 else 'MISSED'})")


if __name__ == "__main__":
    main()
