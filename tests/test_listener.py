"""The listener on both read paths (websocket-client's internals hooked, or its public API
only), against the simulator: events are handed over while a prompt runs, not only when the
socket ends, and an oversized frame drops the socket."""

import json
import queue
import time
import uuid

import pytest
import requests

from comfy_cli import events as ev
from comfy_cli.listener import Listener

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def follow(sim, name, fast, max_frame=256 << 20, steps=None):
    """Run one example through a Listener; return (batches with the time each was taken, listener)."""
    client_id = str(uuid.uuid4())
    out = queue.SimpleQueue()
    listener = Listener(f"ws://127.0.0.1:{sim.port}/ws?clientId={client_id}", client_id, out,
                        fast_reads=fast, max_frame=max_frame)
    listener.start()
    try:
        first = out.get(timeout=10)
        assert isinstance(first, ev.Connected), first
        graph = json.loads((ROOT / "examples" / f"{name}.json").read_text())
        if steps:
            graph["1"]["inputs"]["steps"] = steps
        pid = str(uuid.uuid4())
        requests.post(f"{sim.url}/prompt", json={"prompt": graph, "client_id": client_id, "prompt_id": pid},
                      timeout=10).raise_for_status()
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            item = out.get(timeout=max(0.01, deadline - time.monotonic()))
            got.append((time.monotonic(), item))
            if isinstance(item, ev.Disconnected):
                break
            if isinstance(item, list) and any(isinstance(e, ev.Succeeded) for e in item):
                break
        return got, listener
    finally:
        listener.stop()


@pytest.mark.parametrize("fast", [True, False], ids=["buffered reads", "public API"])
def test_events_are_handed_over_while_the_prompt_runs(sim, fast):
    got, listener = follow(sim, "steps", fast, steps=20)
    assert listener.fast is fast
    batches = [item for _, item in got if isinstance(item, list)]
    events = [e for batch in batches for e in batch]
    assert any(isinstance(e, ev.Succeeded) for e in events)
    # Progress came in many hand-overs (steps are 50 ms apart), not in one pile at the end.
    progress_batches = [b for b in batches if any(isinstance(e, ev.Progress) for e in b)]
    assert len(progress_batches) >= 10
    values = [e.value for e in events if isinstance(e, ev.Progress)]
    assert values == sorted(values) and values[-1] == 20


@pytest.mark.parametrize("fast", [True, False], ids=["buffered reads", "public API"])
def test_a_frame_over_the_limit_drops_the_socket(sim, fast):
    # The preview example sends binary preview frames of a few hundred bytes.
    got, _ = follow(sim, "preview", fast, max_frame=64)
    drops = [item for _, item in got if isinstance(item, ev.Disconnected)]
    assert drops and "more than 64 bytes" in drops[0].reason


def test_the_real_limit_is_256_mib():
    from comfy_cli import listener

    assert listener.MAX_FRAME == 256 << 20
    assert Listener("ws://x/ws", "c", queue.SimpleQueue()).max_frame == 256 << 20
