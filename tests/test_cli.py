"""The command's entry point: --version before typer is imported, shell completion."""

import subprocess
import sys

from comfy_cli import __version__
from test_run_e2e import cli


def test_version_is_answered_without_importing_typer():
    code = ("import sys; sys.argv = ['comfy-cli', '--version']\n"
            "from comfy_cli.entry import main; main()\n"
            "print('typer' in sys.modules, 'click' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"comfy-cli {__version__}\nFalse False\n"


def test_version_through_typer_too():
    # Anything but a lone --version goes through typer, which knows the option as well.
    proc = cli("--version", "run")
    assert proc.returncode == 0 and proc.stdout == f"comfy-cli {__version__}\n"


def test_completion_options_and_completions():
    assert "--install-completion" in cli("--help").stdout
    # Name the shell: detecting it from the parent process fails when pytest runs in the background.
    script = cli("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0 and "complete -o default -F _comfy_cli_completion comfy-cli" in script.stdout
    env = {"_COMFY_CLI_COMPLETE": "complete_bash", "COMP_WORDS": "comfy-cli r", "COMP_CWORD": "1"}
    assert cli(env=env).stdout.split() == ["run"]
    env.update(COMP_WORDS="comfy-cli run --progress ", COMP_CWORD="3")
    assert cli(env=env).stdout.split() == ["auto", "bars", "lines", "none"]
