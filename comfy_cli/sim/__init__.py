"""A ComfyUI 0.3.64 simulator for tests (see server.py for how it works)."""

from .faults import Faults
from .server import SimServer, serve

__all__ = ["SimServer", "Faults", "serve"]
