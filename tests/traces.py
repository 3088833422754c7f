"""The real server's recordings the tests replay, kept in the repository (tests/data/).

`traces/*.ndjson`: every frame a real ComfyUI 0.3.64 sent while a scenario ran (one JSON object
a line); `workflows/*.json`: the API-format workflows those scenarios submitted. They are copies of
the project's reference recordings, so a plain clone runs every test: nothing is read from outside
the repository, and missing data is an error, never a skip.
"""

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
TRACES = DATA / "traces"
WORKFLOWS = DATA / "workflows"


def trace_names():
    """Every recorded scenario, sorted; an empty or missing folder is an error."""
    names = sorted(p.stem for p in TRACES.glob("*.ndjson"))
    if not names:
        raise FileNotFoundError(f"no reference traces in {TRACES}: the test data is part of the repository")
    return names


def load_trace(name):
    with open(TRACES / f"{name}.ndjson") as fh:
        return [json.loads(line) for line in fh if line.strip()]
