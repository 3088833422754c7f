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


# Every secret the run knows (tokens, passwords, auth headers). Whatever comfy-cli prints passes
# through `redact` first, so a secret echoed by a server or an error message never shows.
secrets = set()
MIN_SECRET = 4  # shorter "secrets" would blank out digits everywhere, and protect nothing


def add_secret(value):
    if value and len(value) >= MIN_SECRET:
        secrets.add(value)


def redact(text):
    for secret in sorted(secrets, key=len, reverse=True):  # "Bearer X" before "X": same result every time
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact_obj(obj):
    """`redact` over every string in a JSON-like structure, before it is serialised (escaping
    could otherwise hide a secret from a plain text match)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
