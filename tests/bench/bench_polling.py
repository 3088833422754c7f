"""Polling load: HTTP requests per second comfy-cli sends while its websocket is down.

The simulator refuses every websocket, so comfy-cli tracks by polling. One long prompt runs
and the rest wait in the queue; we count the requests that reach the server during a
steady window, for 1, 10 and 100 open prompts. Target: no more than about 3 req/s in
every case (the rate must not grow with the number of prompts).

Usage: python tests/bench/bench_polling.py [--runs N] [--window S]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COMFY_CLI, REPO, header  # noqa: E402

from comfy_cli.sim import Faults, SimServer  # noqa: E402


class CountingNoSocket(Faults):
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.counting = False

    def on_ws_connect(self, request):
        return False

    def on_http(self, request):
        if self.counting:
            with self.lock:
                self.counts[f"{request.method} {request.path.split('/')[1]}"] += 1
        return None


def measure(n, window):
    faults = CountingNoSocket()
    with SimServer(faults=faults) as sim, tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(n):
            graph = {"1": {"class_type": "TestSteps", "inputs": {"steps": 1000, "seconds_per_step": 0.1, "seed": i}},
                     "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}}}
            path = os.path.join(tmp, f"p{i}.json")
            with open(path, "w") as fh:
                json.dump(graph, fh)
            files.append(path)
        proc = subprocess.Popen([COMFY_CLI, "run", "--progress", "none", "--url", sim.url, *files],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        try:
            if not sim.wait_for(lambda s: len(s.submissions) == n, 60):
                sys.exit("not every prompt was submitted")
            time.sleep(1.0)  # let the start settle: the first round and the connect attempts
            faults.counting = True
            time.sleep(window)
            faults.counting = False
        finally:
            proc.terminate()
            proc.wait(10)
        total = sum(faults.counts.values())
        return total / window, dict(faults.counts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0, help="seconds counted per run")
    args = parser.parse_args()
    header("bench_polling: requests/s sent to the server while polling (websocket refused)", args.runs)
    print(f"{'open prompts':>12}  {'median req/s':>12}  {'min':>6}  {'max':>6}  target   requests seen (last run)")
    for n in (1, 10, 100):
        rates, counts = [], {}
        for _ in range(args.runs):
            rate, counts = measure(n, args.window)
            rates.append(rate)
        print(f"{n:>12}  {statistics.median(rates):12.2f}  {min(rates):6.2f}  {max(rates):6.2f}  <= ~3    "
              f"{counts}")


if __name__ == "__main__":
    main()
