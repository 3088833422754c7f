import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COMFY_SHARED", ROOT.parent / "shared" / "comfyui"))
TRACES = SHARED / "traces"
WORKFLOWS = SHARED / "workflows"


def need_shared():
    """The real server's recordings live beside the repo (../shared); CI has them too."""
    if not TRACES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference traces missing at {TRACES}")
        pytest.skip(f"reference traces not found at {TRACES} (set COMFY_SHARED)")


def load_trace(name):
    need_shared()
    with open(TRACES / f"{name}.ndjson") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture
def sim():
    from comfy_cli.sim import SimServer

    with SimServer() as server:
        yield server
