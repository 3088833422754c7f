"""The `comfy-cli` command's entry point: kept free of heavy imports.

`comfy-cli --version` is answered here, before typer (and its click and rich) is imported, so
scripts that probe the version pay for a bare interpreter only. Everything else goes to cli.main.
"""

import sys

from comfy_cli import __version__


def main():
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(f"comfy-cli {__version__}\n")
        sys.stdout.flush()
        return
    from comfy_cli.cli import main as cli_main

    cli_main()
