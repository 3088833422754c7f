"""Ctrl-C typed twice into a real terminal (a pseudo-terminal the process has as its controlling
terminal), while the server does not answer the cancel: the screen is left clean (each bar once,
no "^C" left over, the cursor on a fresh line) with one line saying what may still run, exit 130."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from comfy_cli.sim import Faults, SimServer
from screen import Terminal

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(90)


class NoCancel(Faults):
    """The server never answers POST /interrupt: the first Ctrl-C's cancel cannot finish."""

    async def on_http(self, request):
        if request.method == "POST" and request.path.endswith("/interrupt"):
            await asyncio.sleep(60)
        return None


def slow(tmp_path):
    graph = json.loads((ROOT / "examples" / "steps.json").read_text())
    for node in graph.values():
        if "seconds_per_step" in node["inputs"]:
            node["inputs"].update(steps=5000, seconds_per_step=0.01)
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(graph))
    return str(path)


def test_second_ctrl_c_leaves_a_clean_screen_and_one_line(tmp_path):
    with SimServer(faults=NoCancel()) as sim:
        env = dict(os.environ, TERM="xterm")
        env.pop("COMFY_URL", None)
        term = Terminal([sys.executable, "-m", "comfy_cli", "run", slow(tmp_path), "--count", "2", "--url", sim.url],
                        env)
        try:
            assert term.wait_for(rb"Sampler \d+/5000", 40), term.raw[-500:]
            term.type(b"\x03")  # Ctrl-C, through the terminal: a real SIGINT, and the terminal echoes ^C
            assert term.wait_for(rb"cancelled", 20), term.raw[-500:]
            term.type(b"\x03")  # again, while the cancel waits for the server
            code = term.wait(20)
        finally:
            term.close()
        ids = sim.submissions
    assert code == 130, term.raw[-800:]
    screen = term.screen()
    rows = screen.text()
    assert [r.split()[0] for r in rows[:2]] == ["slow#1", "slow#2"], rows  # each bar once, in order
    assert sum(r.startswith("slow#") for r in rows) == 2, rows
    assert not any("^C" in r for r in rows), rows
    said = " ".join(rows[2:])  # (a long line wraps)
    assert said.replace(" ", "") == ("comfy-cli: stopped at once: prompts may still run on the server: "
                                     + " ".join(ids)).replace(" ", "")
    assert len(ids) == 2
    assert (screen.row, screen.col) == (len(rows), 0)  # the shell's prompt starts on a line of its own
