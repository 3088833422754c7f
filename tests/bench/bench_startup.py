"""Start-up cost of comfy-cli vs a bare interpreter, in a normal (non-editable) install.

An editable install (`pip install -e .`, as the dev venv has) puts a path hook in site-packages that
every interpreter of that venv runs at start, `python -c pass` included, and it is not what users get.
So this script makes a temporary venv, installs the project into it the normal way (`pip install
REPO`), and alternately times, all with that venv's interpreter:

    comfy-cli --version, comfy-cli --help, comfy-cli run --help, python -m comfy_cli --version,
    python -c pass (the reference)

plus, for comparison only, `python -c pass` of the interpreter running this script (the dev venv,
with its editable hook). It then lists the slowest imports of `comfy-cli --help` (python -X
importtime; `--version` is answered before typer is imported).

    .venv/bin/python tests/bench/bench_startup.py [--runs N] [--venv DIR]

--venv DIR reuses (or creates) that venv instead of a temporary one; it is reinstalled each time.
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, alternate, header, table, timed

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def install(venv, cwd):
    """A venv at `venv` with the project installed non-editable; return its bin folder. (Everything
    runs in `cwd`, outside the source tree: `python -c`/`-m` would import comfy_cli from the tree.)"""
    venv = Path(venv)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # --force-reinstall --no-deps: the project as it is now, its dependencies as they were installed.
    subprocess.run(pip + [str(REPO)], check=True)
    subprocess.run(pip + ["--force-reinstall", "--no-deps", str(REPO)], check=True)
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import comfy_cli; print(comfy_cli.__file__)"],
                           capture_output=True, text=True, cwd=cwd)
    if str(REPO) in check.stdout:
        sys.exit(f"{venv}: comfy_cli is imported from the source tree, not from an install: {check.stdout}")
    return venv / "bin"


def import_times(python, argv, cwd):
    code = f"import sys; sys.argv={argv!r}; from comfy_cli.entry import main; main()"
    seconds, proc = timed([python, "-X", "importtime", "-c", code], cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"importtime run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    rows = []
    for line in proc.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            self_us, cumulative_us, indent, name = match.groups()
            rows.append((int(cumulative_us), int(self_us), (len(indent) - 1) // 2, name))
    return rows


def show_imports(python, argv, cwd):
    rows = import_times(python, argv, cwd)
    top = sorted(rows, reverse=True)[:10]
    total = sum(row[0] for row in rows if row[2] == 0)
    print(f"\nimports of `{' '.join(argv)}`: {len(rows)} modules, "
          f"{total / 1e3:.1f} ms cumulative at top level (one run, -X importtime)")
    print("top 10 by cumulative time (nested modules count inside their parents):")
    print(f"{'cumul ms':>8}  {'self ms':>7}  depth  module")
    for cumulative, self_us, depth, name in top:
        print(f"{cumulative / 1e3:8.1f}  {self_us / 1e3:7.1f}  {depth:5d}  {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command (default 20)")
    parser.add_argument("--venv", default=None, help="use this venv instead of a temporary one")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        bin_dir = install(args.venv or Path(tmp) / "venv", tmp)
        python, cli = str(bin_dir / "python"), str(bin_dir / "comfy-cli")
        header("bench_startup: process wall time, non-editable install in " + str(bin_dir.parent), args.runs)
        commands = {
            "comfy-cli --version": [cli, "--version"],
            "comfy-cli --help": [cli, "--help"],
            "comfy-cli run --help": [cli, "run", "--help"],
            "python -m comfy_cli --version": [python, "-m", "comfy_cli", "--version"],
            "python -c pass": [python, "-c", "pass"],
            "dev venv python -c pass": [sys.executable, "-c", "pass"],
        }
        times = alternate(commands, args.runs, cwd=tmp)
        table(times, "python -c pass", {"comfy-cli --version": "<= 3x",
                                        "dev venv python -c pass": "(editable hook; comparison only)"})
        show_imports(python, ["comfy-cli", "--version"], tmp)
        show_imports(python, ["comfy-cli", "--help"], tmp)


if __name__ == "__main__":
    main()
