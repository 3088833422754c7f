"""The mistakes a new user makes first, as the real `comfy-cli` process answers them: one line
that says what to do, the documented exit code, each result once."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfy_cli.client import split_url

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.timeout(60)


def cli(*args, env=None, stdin=None):
    full = dict(os.environ)
    full.pop("COMFY_URL", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "comfy_cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=50, env=full)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_cannot_connect_says_what_to_check():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "--url", url], ["run", str(EXAMPLES / "steps.json"), "--url", url]):
        proc = cli(*args)
        assert proc.returncode == 4
        lines = proc.stderr.strip().splitlines()
        assert lines[-1] == (f"comfy-cli: error: cannot connect to {url}: is ComfyUI running there? set --url or "
                             "COMFY_URL"), proc.stderr


def test_status_prints_its_error_once_on_stderr():
    url = f"http://127.0.0.1:{free_port()}"
    proc = cli("status", "--url", url)
    assert proc.returncode == 4 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.count("cannot connect") == 1
    proc = cli("status", "--url", url, "--json")
    assert proc.returncode == 4 and json.loads(proc.stdout)["reachable"] is False
    assert len(proc.stderr.strip().splitlines()) == 1


def test_https_to_a_plain_http_server_suggests_http(sim):
    host = sim.url.split("://", 1)[1]
    proc = cli("status", "--url", f"https://{host}")
    assert proc.returncode == 4
    assert proc.stderr.strip() == (f"comfy-cli: error: https://{host}: TLS error: the server speaks plain HTTP, not "
                                   f"https; use --url http://{host}")
    assert "--ca-bundle" not in proc.stderr


@pytest.mark.parametrize("given, base", [
    ("gpu-box", "http://gpu-box:8188"),  # a HOST alone: ComfyUI's port
    ("gpu-box:9000", "http://gpu-box:9000"),
    ("[::1]", "http://[::1]:8188"),
    ("gpu-box/comfy", "http://gpu-box:8188/comfy"),
    ("http://gpu-box", "http://gpu-box"),  # a scheme without a port keeps the scheme's
    ("https://gpu-box", "https://gpu-box"),
])
def test_url_without_scheme_or_port(given, base):
    assert split_url(given)[0] == base
    assert split_url("me:pw@gpu-box") == ("http://gpu-box:8188", ("me", "pw"))


def test_url_help_says_what_a_bare_host_means():
    for command in ("run", "status", "queue"):
        text = " ".join(cli(command, "--help", env={"COLUMNS": "200"}).stdout.split())
        assert "A HOST alone means http://HOST:8188" in text, command


@pytest.mark.parametrize("command", ["wait", "cancel"])
@pytest.mark.parametrize("word", ["steps.json", "http://127.0.0.1:8188", "my-prompt"])
def test_wait_and_cancel_refuse_what_is_neither_a_handle_nor_a_prompt_id_at_once(command, word):
    started = time.monotonic()
    proc = cli(command, word, "--url", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"comfy-cli: error: {word!r}: neither a handle (comfy-cli:v1:..., as `submit` prints it) nor a prompt id "
        "(a UUID, as `queue` shows it)"]
    assert time.monotonic() - started < 20  # no server was tried (that would say "cannot connect")


def test_output_dir_naming_a_file(tmp_path):
    afile = tmp_path / "out"
    afile.write_text("")
    proc = cli("run", "--simulate", str(EXAMPLES / "steps.json"), "--output-dir", str(afile))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"comfy-cli: error: --output-dir {afile}: is a file, not a folder; "
                                                    "name a folder (it is created if missing)")
    proc = cli("run", "--simulate", str(EXAMPLES / "steps.json"), "--output-dir", str(afile / "sub"))
    assert proc.returncode == 2 and "a part of the path is a file, not a folder" in proc.stderr


def slow(tmp_path, steps=400):
    graph = json.loads((EXAMPLES / "steps.json").read_text())
    for node in graph.values():
        if "seconds_per_step" in node["inputs"]:
            node["inputs"].update(steps=steps, seconds_per_step=0.01)
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(graph))
    return str(path)


def test_a_prompt_cancelled_earlier_is_reported_cancelled_once(sim, tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "COMFY_CLI_NO_RECORD": ""}
    sent = cli("submit", slow(tmp_path), "--count", "2", "--url", sim.url, env=env)
    assert sent.returncode == 0, sent.stderr
    first, second = sent.stdout.split()
    told = cli("cancel", second, env=env)
    assert told.returncode == 0 and "removed from the queue" in told.stdout
    again = cli("cancel", second, env=env)  # gone from the server: cancelled, not unknown
    assert again.returncode == 0 and "already cancelled (removed from the queue by an earlier cancel)" in again.stdout
    waited = cli("wait", first, second, "--progress", "lines", env=env)
    assert waited.returncode == 1, waited.stderr  # as if interrupted on the server: not lost (4), not Ctrl-C (130)
    about = [line for line in waited.stderr.splitlines() if "#2" in line]
    assert len(about) == 1 and "cancelled earlier with comfy-cli cancel (removed from the queue)" in about[0]
    assert "lost" not in waited.stderr
    assert "2 prompts: 1 succeeded, 1 cancelled" in waited.stderr


def test_each_result_is_printed_once_in_lines_mode(sim, tmp_path):
    proc = cli("run", str(EXAMPLES / "fail.json"), "--url", sim.url, "--progress", "lines")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    ends = [line for line in lines if line.startswith("fail: ") and "started" not in line and "%)" not in line]
    assert ends == ["fail: failed at node 1 (TestFail): RuntimeError: TestFail: deliberate failure (at step 3 of 10)"]


def test_the_simulator_note_only_when_urls_were_printed():
    note = "its /view URLs above no longer answer"
    printed = cli("run", "--simulate", str(EXAMPLES / "steps.json"), "--progress", "none")
    assert printed.returncode == 0 and "/view?" in printed.stdout and note in printed.stderr
    failed = cli("run", "--simulate", str(EXAMPLES / "fail.json"), "--progress", "none")
    assert failed.returncode == 1 and failed.stdout == "" and note not in failed.stderr
