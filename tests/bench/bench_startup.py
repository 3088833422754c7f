"""Start-up cost of comfy-cli vs a bare interpreter.

Alternately times `comfy-cli --version`, `comfy-cli --help`,
`python -m comfy_cli --version` and `python -c pass` (same interpreter), then
lists the slowest imports of `comfy-cli --version` (python -X importtime).

    .venv/bin/python tests/bench/bench_startup.py [--runs N]
"""
import re
import sys

from _common import COMFY_CLI, alternate, header, parse_args, table, timed

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def import_times():
    code = ("import sys; sys.argv=['comfy-cli','--version']; "
            "from comfy_cli.cli import main; main()")
    seconds, proc = timed([sys.executable, "-X", "importtime", "-c", code])
    if proc.returncode != 0:
        sys.exit(f"importtime run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    rows = []
    for line in proc.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            self_us, cumulative_us, indent, name = match.groups()
            rows.append((int(cumulative_us), int(self_us), (len(indent) - 1) // 2, name))
    return rows


def main():
    args = parse_args(__doc__.splitlines()[0], default_runs=20)
    header("bench_startup: process wall time", args.runs)
    commands = {
        "comfy-cli --version": [COMFY_CLI, "--version"],
        "comfy-cli --help": [COMFY_CLI, "--help"],
        "python -m comfy_cli --version": [sys.executable, "-m", "comfy_cli", "--version"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    times = alternate(commands, args.runs)
    table(times, "python -c pass", {"comfy-cli --version": "<= 5x"})

    rows = import_times()
    top = sorted(rows, reverse=True)[:10]
    total = sum(row[0] for row in rows if row[2] == 0)
    print(f"\nimports of `comfy-cli --version`: {len(rows)} modules, "
          f"{total / 1e3:.1f} ms cumulative at top level (one run, -X importtime)")
    print("top 10 by cumulative time (nested modules count inside their parents):")
    print(f"{'cumul ms':>8}  {'self ms':>7}  depth  module")
    for cumulative, self_us, depth, name in top:
        print(f"{cumulative / 1e3:8.1f}  {self_us / 1e3:7.1f}  {depth:5d}  {name}")


if __name__ == "__main__":
    main()
