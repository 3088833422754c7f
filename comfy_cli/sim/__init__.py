"""A ComfyUI 0.3.64 simulator for tests (see server.py for how it works).

The server needs aiohttp (the `[sim]` extra). It is imported on first use of `SimServer` or
`serve`, so `python -m comfy_cli.sim` can say what is missing in one line instead of a traceback;
`from comfy_cli.sim import SimServer` still raises ImportError without aiohttp.
"""

from .faults import Faults

__all__ = ["SimServer", "Faults", "serve"]


def __getattr__(name):
    if name in ("SimServer", "serve"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
