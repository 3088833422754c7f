"""The README says what a new user meets: an install line that works as written, and a "What you
will see" that is what the views draw for ComfyUI's real default workflow (tests/data/real_sd15)."""

import configparser
import io
import json
import re
from pathlib import Path

from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli import view
from comfy_cli.workflow import Workflow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REAL = ROOT / "tests" / "data" / "real_sd15"


def section(title):
    start = README.index(f"## {title}\n")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def blocks(text):
    return re.findall(r"```(?:sh)?\n(.*?)```", text, re.S)


def test_install_lines_name_this_package_and_its_extras():
    assert "YOUR-ORG" not in README
    meta = configparser.ConfigParser()
    meta.read(ROOT / "setup.cfg")
    name = meta["metadata"]["name"]
    extras = {line.split("=")[0].strip() for line in meta["options.extras_require"] if line}
    head = README[:README.index("## What you will see")]
    commands = [line.split("#")[0].strip() for block in blocks(head) for line in block.splitlines()]
    assert "pipx install '.[sim]'" in commands  # from a clone
    assert "python3 -m venv .venv && .venv/bin/pip install '.[sim]'" in commands
    assert f"`pipx install '{name}[sim]'`" in head  # once published, by the distribution's name
    assert "sim" in extras


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def replay(name, *views, at=None):
    """The recording's messages through a Prompt and `views`; at=(node, step, seconds): stop there,
    with the views' clock that many seconds after the node started."""
    lines = [json.loads(t) for t in (REAL / f"{name}.ndjson").read_text().splitlines() if t.strip()]
    pid = next(x["response"]["prompt_id"] for x in lines if x.get("event") == "post_prompt")
    graph = json.loads((REAL / "default_api.json").read_text())
    prompt = tr.Prompt(pid, Workflow("txt2img.json", "txt2img", graph), submitted_at=0.0)
    for v in views:
        v.added(prompt)
    for x in lines:
        if x.get("kind") != "text":
            continue
        event = ev.parse(json.dumps(x["msg"]).encode(), x["t"])
        if event is not None and prompt.handle(event):
            for v in views:
                v.update(prompt)
            if at and (prompt.progress.node, prompt.progress.step) == at[:2]:
                return prompt, prompt.progress.node_at + at[2]
    return prompt, None


def without_clock(line):
    """A bar line's words, without the bar itself and the elapsed clock (tqdm's own timer)."""
    left, _, rest = line.partition("|")
    right = rest.partition("|")[2]
    return left.rstrip() + " | " + re.sub(r", \[\d\d:\d\d\]$", "", right.strip())


def drawn(name, node, step, seconds):
    clock = Clock()
    bars = view.BarsView(io.StringIO(), io.StringIO(), name_width=7, columns=100, clock=clock)  # tmux's
    prompt, clock.now = replay(name, bars, at=(node, step, seconds))
    bars._draw(prompt.prompt_id)
    return without_clock(str(bars.bars[prompt.prompt_id]))


def test_what_you_will_see_is_what_the_bars_draw():
    shown = [line for block in blocks(section("What you will see")) for line in block.splitlines()
             if re.match(r"txt2img +\d+%\|", line)]
    assert [without_clock(line) for line in shown[:2]] == [
        drawn("default_cold", "4", None, 5.0),  # the checkpoint loads
        drawn("default_cold", "3", (1, 3), 0.0),  # the first step
    ]
    assert without_clock(shown[3]).startswith("txt2img 100% | 7/7 nodes, done (in ")


def test_what_you_will_see_in_lines_is_what_lines_mode_says():
    err = io.StringIO()
    replay("default_cold", view.LinesView(err, io.StringIO()))
    said = [line for line in err.getvalue().splitlines() if "done (in" not in line]
    block = next(b for b in blocks(section("What you will see")) if b.startswith("txt2img: started"))
    assert [line for line in block.splitlines() if line.startswith("txt2img: ") and "done (in" not in line] == said


def test_examples_install_this_package_without_a_placeholder():
    """The CI and cluster examples are copied as they are: none may install from a made-up place."""
    installs = []
    for path in sorted((ROOT / "examples").rglob("*")):
        if path.suffix in (".yml", ".yaml", ".sh"):
            text = path.read_text()
            assert "YOUR-ORG" not in text, path
            installs += re.findall(r"pip install[^\n]*", text)
    assert installs  # the examples do install comfy-cli
    assert all("comfy-run-cli" in line or "$INSTALL" in line or "${{ env.INSTALL }}" in line
               for line in installs), installs
