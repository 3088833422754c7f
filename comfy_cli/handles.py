"""Handles: what `submit` prints and `wait`/`cancel` take, and the local record of them.

A handle is `comfy-cli:v1:` followed by base64url (no padding) of a small JSON object:
{"url": server, "prompt_id": id, "client_id": id, "name": label}. It is one shell word (no
quoting needed), survives pipes and files, and carries everything a later `wait` needs to get
the prompt's live progress: ComfyUI sends step messages only to the socket of the client id
that submitted the prompt. It never carries a secret: the URL is stored without any
`user:password@`, and tokens and headers stay in `$COMFY_TOKEN`/`--token`/`--header`.

A bare prompt id (as ComfyUI shows it: a UUID) is accepted too; it has no client id, so it is
followed by /queue and /history only. Anything else (a file name, a URL, a typo) is refused at
once, before any server is asked.

The record: `submit` appends its handles to `$XDG_STATE_HOME/comfy-cli/handles`
(`~/.local/state/comfy-cli/handles`), so `queue` can mark the prompts submitted from this
machine. It keeps the newest `KEEP` handles, is rewritten atomically (a temporary file then
`os.replace`, under an advisory lock so parallel `submit`s lose nothing), mode 0600, and is
only ever a convenience: if it cannot be written, `submit` says so and still succeeds.
`COMFY_CLI_NO_RECORD=1` turns it off.
"""

import base64
import binascii
import json
import os
import re
from typing import NamedTuple, Optional

from comfy_cli.errors import UsageError

PREFIX = "comfy-cli:v1:"
KEEP = 1000  # handles kept in the local record
MAX_HANDLE = 4096
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# What ComfyUI (and comfy-cli) make prompt ids of: a UUID, with or without its dashes.
_UUID = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$")


class Handle(NamedTuple):
    url: Optional[str]  # None for a bare prompt id: the caller's --url applies
    prompt_id: str
    client_id: Optional[str]
    name: str

    def text(self):
        doc = {"url": self.url, "prompt_id": self.prompt_id, "client_id": self.client_id, "name": self.name}
        raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def make(url, prompt_id, client_id, name):
    """A handle for a prompt just submitted; `url` loses any credentials."""
    from comfy_cli.client import split_url

    base, _auth = split_url(url)
    return Handle(base, prompt_id, client_id, name)


def valid_id(text):
    return isinstance(text, str) and bool(_ID.match(text))


def parse(arg):
    """A handle or a bare prompt id from the command line; UsageError naming it if malformed."""
    shown = arg if len(arg) <= 80 else arg[:77] + "..."
    if arg.startswith(PREFIX):
        return _decode(arg, shown)
    if arg.startswith("comfy-cli:"):
        raise UsageError(f"{shown!r}: not a handle this version of comfy-cli can read")
    if not _UUID.match(arg):
        raise UsageError(f"{shown!r}: neither a handle (comfy-cli:v1:..., as `submit` prints it) nor a prompt id "
                         "(a UUID, as `queue` shows it)")
    return Handle(None, arg, None, arg)


def _decode(arg, shown):
    body = arg[len(PREFIX):].rstrip("=")  # (padding is left out, but tolerated)
    bad = UsageError(f"{shown!r}: malformed handle")
    if len(arg) > MAX_HANDLE or not re.fullmatch(r"[A-Za-z0-9_-]+", body):
        raise bad
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise bad from None
    if not isinstance(doc, dict):
        raise bad
    url, pid, cid, name = doc.get("url"), doc.get("prompt_id"), doc.get("client_id"), doc.get("name")
    if not valid_id(pid) or not (cid is None or valid_id(cid)) or not isinstance(url, str):
        raise bad
    from comfy_cli.client import split_url

    try:
        base, auth = split_url(url)
    except UsageError:
        raise bad from None
    if auth is not None:
        raise bad  # a handle never carries credentials; one that does was not made by us
    if not isinstance(name, str) or not name or len(name) > 200 or any(ord(c) < 0x20 for c in name):
        name = pid
    return Handle(base, pid, cid, name)


# ---- the local record -----------------------------------------------------------------
def record_path():
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "comfy-cli", "handles")


def remember(handles):
    """Add handles to the local record; return None, or a one-line problem (never raises)."""
    if not handles:
        return None
    return _append(record_path(), [h.text() for h in handles], _read_lines, "the handles")


def remember_cancelled(done):
    """Note the prompts `cancel` removed or interrupted ({prompt id: what was done}), so a later
    `wait` or `cancel` that finds one gone says it was cancelled, not lost. Never raises."""
    if not done:
        return None
    return _append(record_path() + "-cancelled", [f"{pid} {how}" for pid, how in done.items()], _read_words,
                   "the cancelled prompts")


def cancelled():
    """{prompt id: what `cancel` did to it} from the local record."""
    return dict(line.split(" ", 1) for line in _read_words(record_path() + "-cancelled"))


def _append(path, new, read, what):
    """Add lines to a record file, keeping the newest KEEP: atomically, under a lock."""
    if os.environ.get("COMFY_CLI_NO_RECORD"):
        return None
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path + ".lock", "a") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass  # no locking here: at worst a parallel submit's lines are lost
            lines = read(path) + new
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write("".join(line + "\n" for line in lines[-KEEP:]))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
    except OSError as exc:
        return f"cannot record {what} in {path}: {exc.strerror or exc}"
    return None


def remembered():
    """The handles in the local record (malformed lines skipped), oldest first."""
    out = []
    for line in _read_lines(record_path()):
        try:
            out.append(_decode(line, "record"))
        except UsageError:
            continue
    return out


def _read_words(path):
    """Lines of "PROMPT_ID TEXT" (others skipped)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.strip() for line in fh if " " in line.strip() and _UUID.match(line.split(" ", 1)[0])]
    except OSError:
        return []


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.strip() for line in fh if line.startswith(PREFIX)]
    except OSError:
        return []
