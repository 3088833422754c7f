"""comfy-cli: run ComfyUI API workflows from shell scripts and CI."""

__version__ = "0.1.0"
