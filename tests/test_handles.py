"""Handles: their format, parsing, and the local record (no server)."""

import os
import stat

import pytest

from comfy_cli import handles
from comfy_cli.errors import UsageError


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("COMFY_CLI_NO_RECORD", raising=False)


def test_a_handle_round_trips_as_one_shell_word_without_credentials():
    h = handles.make("https://user:pw@gpu-box:8443/comfy/", "p-1", "c-1", "a name: ünïcode #1")
    assert h.url == "https://gpu-box:8443/comfy"
    text = h.text()
    assert text.startswith("comfy-cli:v1:") and all(c.isalnum() or c in ":_-" for c in text)
    assert "pw" not in text and handles.parse(text) == h


def test_a_bare_prompt_id_is_a_handle_without_server_or_client():
    assert handles.parse("2b1f0c1e-4a57-4c3e-9d7a-6f6a1c2d9e11") == handles.Handle(
        None, "2b1f0c1e-4a57-4c3e-9d7a-6f6a1c2d9e11", None, "2b1f0c1e-4a57-4c3e-9d7a-6f6a1c2d9e11")


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 200, "comfy-cli:v1:", "comfy-cli:v1:e30", "comfy-cli:v2:e30",
                                 "comfy-cli:v1:bm90IGpzb24", handles.Handle("ftp://x", "p", "c", "n").text(),
                                 handles.Handle("http://x", "p/../q", "c", "n").text()])
def test_malformed_handles_are_usage_errors(bad):
    with pytest.raises(UsageError):
        handles.parse(bad)


def test_the_record_keeps_the_newest_handles_privately(monkeypatch):
    monkeypatch.setattr(handles, "KEEP", 3)
    made = [handles.make("http://h:1", f"p{i}", "c", f"w{i}") for i in range(5)]
    assert handles.remember(made[:2]) is None
    assert handles.remember(made[2:]) is None
    assert handles.remembered() == made[2:]
    assert stat.S_IMODE(os.stat(handles.record_path()).st_mode) == 0o600
    assert not [n for n in os.listdir(os.path.dirname(handles.record_path())) if n.endswith(".tmp")]


def test_the_record_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("COMFY_CLI_NO_RECORD", "1")
    assert handles.remember([handles.make("http://h:1", "p", "c", "w")]) is None
    assert not os.path.exists(handles.record_path())


def test_a_record_that_cannot_be_written_is_a_note_not_an_error(tmp_path, monkeypatch):
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "blocked"))
    problem = handles.remember([handles.make("http://h:1", "p", "c", "w")])
    assert problem and "cannot record the handles" in problem
