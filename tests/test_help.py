"""Help that reads as one tool: the same metavars everywhere, texts true for the command they are
on, an exit-code epilog on every command, "Did you mean" once, and `run --help` in panels."""

import json
import os
import subprocess
import sys

import click
import pytest
import typer.main

from comfy_cli import cli

pytestmark = pytest.mark.timeout(60)

COMMAND = typer.main.get_command(cli.app)
NAMES = sorted(COMMAND.commands)
# What a value of each kind is called, on every command.
KINDS = {"--url": "URL", "--output-dir": "DIR", "--expect": "DIR", "--junit": "FILE", "--report": "FILE",
         "--journal": "FILE", "--object-info": "FILE", "--ca-bundle": "FILE", "--tls-cert": "FILE",
         "--tls-key": "FILE", "--params": "FILE", "-o": "FILE", "--timeout": "S", "--deadline": "S",
         "--poll-interval": "S", "--silence-check": "S", "--failover-after": "S", "--token": "TOKEN"}


def helptext(*args):
    env = dict(os.environ, COLUMNS="200")
    env.pop("COMFY_URL", None)
    proc = subprocess.run([sys.executable, "-m", "comfy_cli", *args], capture_output=True, text=True, timeout=30,
                          env=env)
    return proc


def metavars(name):
    command = COMMAND.commands[name]
    ctx = click.Context(command)
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and not param.hidden:
            yield param, param.make_metavar(ctx) if _new_click() else param.make_metavar()


def _new_click():
    import inspect

    return "ctx" in inspect.signature(click.Option.make_metavar).parameters


@pytest.mark.parametrize("name", NAMES)
def test_every_value_is_named_the_same_way_on_every_command(name):
    for param, metavar in metavars(name):
        assert metavar.split(" ")[0] not in ("TEXT", "INTEGER", "FLOAT"), (name, param.opts)
        for opt in param.opts:
            if opt in KINDS:
                assert metavar.split(" ")[0] == KINDS[opt], (name, opt, metavar)


@pytest.mark.parametrize("name", NAMES)
def test_every_command_has_an_exit_code_epilog(name):
    assert (COMMAND.commands[name].epilog or "").startswith(("Exit codes", "Each prompt's line")), name
    assert "Exit codes" in COMMAND.commands[name].epilog


def test_texts_are_true_for_the_command_they_are_on():
    no_socket = ["convert", "status", "queue", "cancel", "submit"]
    for name in no_socket:
        text = helptext(name, "--help").stdout
        assert "websocket" not in text, name  # none opens there
    assert "batch" not in helptext("status", "--help").stdout
    for name in ("wait", "cancel"):  # '-' reads stdin, said where it applies
        text = " ".join(helptext(name, "--help").stdout.split())
        assert "'-' reads" in text and "stdin" in text, name


# Options whose meaning differs between commands, and in how many ways (each way declared once).
MEANINGS = {"--url": 4,  # one server; run's several; status's several; the server of bare ids (wait, cancel)
            "--json": 5, "--token": 3, "--header": 2,  # the websocket too (run, wait); sim requires it
            "--output-dir": 3, "--overwrite": 3, "--junit": 2, "--report": 2,  # merge's, sim's, convert's
            "--timeout": 2, "--poll-interval": 2}  # cancel's wait for a confirmation; wait has no socket


def test_an_option_on_several_commands_says_the_same_wherever_it_means_the_same():
    versions = {}
    for name in NAMES:
        for param in COMMAND.commands[name].params:
            if isinstance(param, click.Option):
                said = (param.help, param.metavar, param.rich_help_panel, repr(param.default), param.envvar)
                versions.setdefault(param.opts[-1], set()).add(said)
    assert {flag: len(said) for flag, said in versions.items() if len(said) > 1} == MEANINGS


def test_did_you_mean_is_said_once():
    proc = helptext("rnu")
    assert proc.returncode == 2 and proc.stderr.count("Did you mean") == 1, proc.stderr
    proc = helptext("run", "--jsn", "x.json")
    assert proc.returncode == 2 and proc.stderr.count("Did you mean") == 1, proc.stderr


def test_run_help_is_grouped_into_panels():
    text = helptext("run", "--help").stdout
    panels = ["What to run", "Output", "Batch", "Servers", "Limits", "Connection"]
    where = [text.find(f"─ {panel} ─") for panel in panels]
    assert all(i >= 0 for i in where) and where == sorted(where), where
    options = text[text.find("─ Options ─"):where[0]]
    assert options.count("--") == 1 and "--help" in options  # every option of its own is in one of them
    run_block = text[where[0]:where[1]]
    assert "--set" in run_block and "--sweep" in run_block
    assert "--deadline" in text[where[4]:where[5]] and "--token" in text[where[5]:]


def test_status_json_has_a_schema():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    doc = json.loads(helptext("status", "--url", dead, "--json").stdout)
    assert doc["schema"] == "comfy-cli.status/1" and doc["reachable"] is False
    doc = json.loads(helptext("status", "--url", dead, "--url", dead.replace("127.0.0.1", "localhost"),
                              "--json").stdout)
    assert doc["schema"] == "comfy-cli.status/1" and len(doc["servers"]) == 2
