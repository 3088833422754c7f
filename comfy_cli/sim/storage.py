"""The simulator's folders (output, temp, input) and the file rules of the
real server: /view path checks, upload de-duplication and renaming, and the
``PREFIX_NNNNN_.png`` counter of SaveImage."""

import os
import random
import re
from pathlib import Path
from typing import Optional, Tuple

from .images import Image, png_bytes

TYPES = ("output", "input", "temp")


class Storage:
    def __init__(self, output_dir: Path, temp_dir: Path, input_dir: Path):
        self.dirs = {"output": str(output_dir), "temp": str(temp_dir), "input": str(input_dir)}
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)
        # PreviewImage names files ComfyUI_temp_xxxxx_NNNNN_.png, xxxxx fixed per server.
        self.temp_prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz")
                                                     for _ in range(5))

    def dir_for(self, kind) -> Optional[str]:
        return self.dirs.get(kind)

    def input_files(self):
        """The input folder's files, "sub/name" for subfolders, sorted (LoadImage's choices)."""
        root = self.dirs["input"]
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = os.path.relpath(folder, root)
            files += [n if rel == "." else f"{rel.replace(os.sep, '/')}/{n}" for n in names if not n.startswith(".")]
        return sorted(files)

    # --- SaveImage / PreviewImage -------------------------------------------------
    def save_png(self, image: Image, prefix: str, kind: str, text=()) -> Tuple[str, str]:
        """Write the next ``PREFIX_NNNNN_.png``; returns (filename, subfolder)."""
        return self.save_bytes(png_bytes(image, text), prefix, kind, ".png")

    def save_bytes(self, data: bytes, prefix: str, kind: str, ext: str) -> Tuple[str, str]:
        """Write the next ``PREFIX_NNNNN_EXT``; returns (filename, subfolder)."""
        base = self.dirs[kind]
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = os.path.abspath(os.path.join(base, subfolder))
        if os.path.commonpath((base, folder)) != base:
            # Same refusal (and so an execution_error) as the real SaveImage.
            raise Exception("Saving image outside the output folder is not allowed."
                            f"\n full_output_folder: {folder}\n         output_dir: {base}")
        os.makedirs(folder, exist_ok=True)
        pattern = re.compile(re.escape(name) + r"_(\d+)_")
        used = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
        filename = f"{name}_{max(used, default=0) + 1:05}_{ext}"
        with open(os.path.join(folder, filename), "wb") as fh:
            fh.write(data)
        return filename, subfolder

    # --- GET /view ----------------------------------------------------------------
    def view_path(self, filename: str, kind: Optional[str], subfolder: Optional[str]):
        """Resolve a /view request to (status, path): 200 with a file path, or
        400 / 403 / 404 with None, following the real server's checks."""
        for tag in TYPES:  # "name.png [temp]" picks the folder itself
            if filename.endswith(f" [{tag}]"):
                filename, kind = filename[: -len(tag) - 3], tag
                break
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, None
        base = self.dirs.get(kind or "output")
        if base is None:
            return 400, None
        if subfolder is not None:
            full = os.path.join(base, subfolder)
            if os.path.commonpath((os.path.abspath(full), base)) != base:
                return 403, None
            base = full
        path = os.path.join(base, os.path.basename(filename))
        return (200, path) if os.path.isfile(path) else (404, None)

    # --- POST /upload/image ------------------------------------------------------------
    def save_upload(self, data: bytes, filename: str, kind: Optional[str], subfolder: str,
                    overwrite: Optional[str]):
        """Store an upload; returns (status, reply dict or None)."""
        kind = kind or "input"
        base = self.dirs.get(kind)
        if base is None:
            raise ValueError(f"unknown upload type {kind!r}")  # the real server 500s too
        folder = os.path.join(base, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((base, path)) != base:
            return 400, None
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(path):
                if _same_content(path, data):  # identical file: reuse its name
                    return 200, {"name": filename, "subfolder": subfolder, "type": kind}
                filename = f"{stem} ({i}){ext}"
                path = os.path.join(folder, filename)
                i += 1
        with open(path, "wb") as fh:
            fh.write(data)
        return 200, {"name": filename, "subfolder": subfolder, "type": kind}


def _same_content(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False
