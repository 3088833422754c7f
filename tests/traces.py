"""Where the real server's recordings are, and how tests read them."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COMFY_SHARED", ROOT.parent / "shared" / "comfyui"))
TRACES = SHARED / "traces"


def need_shared():
    """The recordings live beside the repo (../shared/comfyui); CI has them too."""
    if not TRACES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference traces missing at {TRACES}")
        pytest.skip(f"reference traces not found at {TRACES} (set COMFY_SHARED)")


def load_trace(name):
    need_shared()
    with open(TRACES / f"{name}.ndjson") as fh:
        return [json.loads(line) for line in fh if line.strip()]
