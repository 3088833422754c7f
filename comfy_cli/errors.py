"""One exception tree for everything comfy-cli reports to the user.

Each error carries the exit code it maps to, so the CLI layer never has to guess.
The messages are written for a person: one line, naming the file, option or URL.
"""

# Exit codes, in the order of how serious they are (see `worst`).
OK = 0
FAILED = 1  # a prompt failed or was interrupted on the server
INVALID = 2  # usage, unreadable or malformed workflow, rejected by validation
TIMEOUT = 3  # --timeout or --deadline passed
UNREACHABLE = 4  # server could not be reached or used, or a prompt was lost
SIGINT = 130
SIGTERM = 143

_RANK = {OK: 0, FAILED: 1, INVALID: 2, TIMEOUT: 3, UNREACHABLE: 4, SIGTERM: 5, SIGINT: 5}


def worst(codes):
    """The most serious of several exit codes: 130/143 > 4 > 3 > 2 > 1 > 0."""
    result = OK
    for code in codes:
        if _RANK.get(code, 4) > _RANK.get(result, 4):
            result = code
    return result


class ComfyError(Exception):
    """Base of every error comfy-cli expects and reports without a traceback."""

    exit_code = UNREACHABLE


class UsageError(ComfyError):
    """Bad input from the user: a file, an option, a value."""

    exit_code = INVALID


class ServerError(ComfyError):
    """The server could not be reached, or answered something we cannot use."""

    exit_code = UNREACHABLE

    def __init__(self, message, status=None, sent=True):
        super().__init__(message)
        self.status = status  # the HTTP status, when there was an answer
        self.sent = sent  # False when the request surely never reached the server


class Unreachable(ServerError):
    """No connection could be made at all."""


MIN_SECRET = 4  # shorter "secrets" would blank out digits everywhere, and protect nothing


class Redactor:
    """The secrets a run knows (tokens, passwords, auth headers), and their removal from text.
    The command's stdout and stderr are wrapped in a `RedactingWriter` over one of these, so
    whatever comfy-cli prints, by whatever path, is redacted once, at the edge."""

    def __init__(self):
        self.secrets = set()
        self._order = []

    def add(self, value):
        if not value or len(value) < MIN_SECRET:
            return
        import json

        escaped = json.dumps(value)[1:-1]  # as it appears inside a JSON string
        for form in {value, escaped}:
            self.secrets.add(form)
        self._order = sorted(self.secrets, key=len, reverse=True)  # "Bearer X" before "X"

    def text(self, text):
        for secret in self._order:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def obj(self, obj):
        """`text` over every string in a JSON-like structure (for files written directly)."""
        if not self._order:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.obj(k): self.obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.obj(v) for v in obj]
        return obj


class RedactingWriter:
    """A text stream that redacts everything written through it; all else is the stream's."""

    def __init__(self, stream, redactor):
        self._stream = stream
        self._redactor = redactor

    def write(self, text):
        return self._stream.write(self._redactor.text(text) if self._redactor._order else text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding...
        return getattr(self._stream, name)


def ascii_only(stream):
    """Must JSON written to `stream` escape non-ASCII text? (Yes unless it encodes UTF-8: an
    ASCII terminal would otherwise turn "é" into an escape JSON does not know.)"""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return not encoding.startswith("utf")


# The process's redactor: the CLI wraps stdout and stderr with it, and every Client adds the
# secrets it is given to the redactor it is handed (this one, unless a caller passes another).
REDACTOR = Redactor()
redact = REDACTOR.text
redact_obj = REDACTOR.obj
add_secret = REDACTOR.add
