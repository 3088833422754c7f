"""Writing downloaded outputs into --output-dir: safely named, atomic, never clobbering.

The names come from the server, so they are not trusted: a `..` part or an absolute path is
refused, odd characters become `_`, and the final path is checked to stay inside the folder
(symlinks included). Each file is streamed to a hidden temporary file beside its target and
then linked into place, which fails instead of replacing a file that appeared meanwhile; an
existing name gets a numbered suffix unless --overwrite.

A run killed mid-download leaves its temporary file behind. Its name carries a tag of the
machine (host name and process-id namespace, hashed: containers sharing a host name get their
own) and the process id, so the next run writing into that folder removes those of processes
that are gone, and only where it can tell: files from another machine or container are left.
"""

import os
import re
import socket
import tempfile

from comfy_cli.errors import ComfyError, UsageError

_ODD = re.compile(r"[^A-Za-z0-9._\-+@=,() ]")
MAX_PART = 200


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what a plain open() would give; mkstemp makes 0600
def _machine_tag():
    """Who can judge whether a process id is alive: this host name in this pid namespace."""
    import hashlib

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:12]


_HOST = _machine_tag()
_TEMP = re.compile(r"^\.comfy-cli-(?P<host>[0-9a-f]{12})-(?P<pid>\d{1,10})-.*\.part$")


def _temp_prefix():
    return f".comfy-cli-{_HOST}-{os.getpid()}-"


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):
        return False  # alive (someone else's), or not a pid this system can have
    return False


def sweep(folder):
    """Remove what killed runs on this host left behind in `folder`: their temporary files."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _TEMP.match(name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and _gone(int(m["pid"])):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


class UnsafeName(ComfyError):
    """The server named an output in a way that could write outside the folder."""


class OutputDir:
    def __init__(self, path, overwrite=False):
        self.path = path
        self.overwrite = overwrite
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"--output-dir {path}: is a file, not a folder; name a folder (it is created if "
                             "missing)")
        try:
            os.makedirs(path, exist_ok=True)
        except NotADirectoryError:
            raise UsageError(f"--output-dir {path}: a part of the path is a file, not a folder") from None
        except OSError as exc:
            raise UsageError(f"--output-dir {path}: cannot create: {exc.strerror or exc}") from None
        if not os.access(path, os.W_OK):
            raise UsageError(f"--output-dir {path}: not writable")
        self.root = os.path.realpath(path)
        self._swept = set()  # folders cleared of dead runs' temporary files

    def target(self, item):
        """Where an output item goes, as a path inside the folder; raises UnsafeName."""
        name = item.get("filename")
        sub = item.get("subfolder") or ""
        if not isinstance(name, str) or not isinstance(sub, str):
            raise UnsafeName(f"output name {name!r} is not text")
        parts = [p for p in sub.replace("\\", "/").split("/") if p not in ("", ".")]
        if sub.startswith(("/", "\\")) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name + sub):
            raise UnsafeName(f"output name {sub + '/' + name if sub else name!r} is an absolute path")
        if "/" in name or "\\" in name:
            if ".." in name.replace("\\", "/").split("/"):
                raise UnsafeName(f"output name {name!r} tries to leave the folder")
            raise UnsafeName(f"output name {name!r} contains a path separator")
        parts.append(name)
        clean = []
        for part in parts:
            if part == ".." or "\x00" in part:
                raise UnsafeName(f"output name {name!r} (subfolder {sub!r}) tries to leave the folder")
            part = _ODD.sub("_", part)[:MAX_PART].strip()
            if part in ("", ".", "..") or part.startswith("."):
                part = "_" + part
            clean.append(part)
        parent = os.path.realpath(os.path.join(self.root, *clean[:-1]))
        if parent != self.root and not parent.startswith(self.root + os.sep):
            raise UnsafeName(f"output name {name!r} resolves outside {self.path}")
        return os.path.join(self.path, *clean)  # as the user wrote the folder, for stdout

    def save(self, item, write, reuse_same=False):
        """Create the file for `item`; `write(fh)` streams the bytes. Returns the final path.
        `reuse_same`: an identical file already there is the result (a resumed batch may have
        saved it just before it was killed)."""
        path = self.target(item)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        if folder not in self._swept:
            self._swept.add(folder)
            try:
                sweep(folder)
            except Exception:  # tidying up must never cost a download
                pass
        return write_new(path, write, self.overwrite, numbered=True, reuse_same=reuse_same)


def _same(a, b):
    import filecmp

    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def write_new(path, write, overwrite=False, numbered=False, reuse_same=False):
    """Write a file all at once: `write(fh)` fills a hidden temporary file beside `path`, which
    is then put in place. An existing file is replaced only with `overwrite`; otherwise, with
    `numbered`, the name gets a `_1`, `_2`... suffix, and without it FileExistsError is raised.
    With `reuse_same`, a file there with the very same bytes is the result instead.
    Returns the path written."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=_temp_prefix(), suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        if overwrite:
            os.replace(tmp, path)
            return path
        stem, ext = os.path.splitext(path)
        candidate, n = path, 0
        while True:
            try:
                os.link(tmp, candidate)  # atomic, and fails if the name is taken
                return candidate
            except FileExistsError:
                if reuse_same and _same(tmp, candidate):
                    return candidate  # this very file is there already (a resumed batch): keep one
            except OSError:
                # A filesystem without hard links: check, then rename (not atomic against races).
                if not os.path.exists(candidate):
                    os.replace(tmp, candidate)
                    return candidate
            if not numbered:
                raise FileExistsError(f"{path}: the file exists")
            n += 1
            candidate = f"{stem}_{n}{ext}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
