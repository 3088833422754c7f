"""Shared bits for the benchmark scripts (not a test module)."""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMFY_CLI = str(Path(sys.executable).parent / "comfy-cli")

# With PYTHONDONTWRITEBYTECODE set (some shells and sandboxes set it), every child would compile
# comfy_cli's sources from scratch on every run: tens of ms that no installed user pays.
BYTECODE_WAS_OFF = os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None
REPO = Path(__file__).resolve().parents[2]


def parse_args(description, default_runs, against=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=default_runs,
                        help=f"timed runs per command (default {default_runs})")
    if against:
        parser.add_argument("--against", metavar="DIR", help="also time the comfy_cli in DIR (another checkout)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if getattr(args, "against", None):
        if not os.path.isfile(os.path.join(args.against, "comfy_cli", "__init__.py")):
            parser.error(f"--against {args.against}: no comfy_cli package there")
        args.against = os.path.abspath(args.against)
    return args


def tree_env(tree):
    """The environment that makes a child import the comfy_cli in `tree` (ahead of this one)."""
    return dict(os.environ, PYTHONPATH=tree)


def header(title, runs):
    print(title)
    print(f"date:     {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"platform: {platform.platform()}")
    print(f"cpus:     {os.cpu_count()}")
    print(f"python:   {platform.python_version()} ({sys.executable})")
    print(f"runs:     {runs} per command, alternated; medians shown")
    if BYTECODE_WAS_OFF:
        print("note:     PYTHONDONTWRITEBYTECODE was set; unset for the children, so they use cached bytecode")
    print()


def timed(cmd, cwd=REPO, **kw):
    """Run cmd to completion; return (seconds, CompletedProcess)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, **kw)
    return time.perf_counter() - start, proc


def alternate(commands, runs, cwd=REPO, envs=None):
    """commands: {label: argv}; envs: {label: environment} for those that need their own.
    Run them round-robin `runs` times in `cwd`; every run must exit 0.
    Returns {label: [seconds, ...]}."""
    envs = envs or {}
    times = {label: [] for label in commands}
    for _ in range(runs):
        for label, cmd in commands.items():
            seconds, proc = timed(cmd, cwd=cwd, env=envs.get(label))
            if proc.returncode != 0:
                sys.exit(f"{label!r} exited {proc.returncode}\n$ {' '.join(cmd)}\n"
                         f"{proc.stdout}{proc.stderr}")
            times[label].append(seconds)
    return times


def table(times, reference, targets=None):
    """Print median / min / max per label and the ratio of medians to `reference`."""
    targets = targets or {}
    ref = statistics.median(times[reference])
    width = max(len(label) for label in times)
    print(f"{'command':<{width}}  {'median ms':>9}  {'min ms':>8}  {'max ms':>8}  {'ratio':>6}  target")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"{label:<{width}}  {med * 1e3:9.1f}  {min(values) * 1e3:8.1f}  {max(values) * 1e3:8.1f}"
              f"  {med / ref:5.2f}x  {targets.get(label, '(reference)' if label == reference else '')}")
