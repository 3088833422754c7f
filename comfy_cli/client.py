"""The HTTP side: one requests.Session that owns every REST call and its errors."""

import os
import time
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import requests

from comfy_cli.errors import ServerError, Unreachable, UsageError


RETRY_STATUS = frozenset({502, 503, 504})  # a proxy or a restarting server: worth another try
GET_BACKOFF = (0.25, 0.5, 1.0, 2.0)  # waits between tries of an idempotent GET


class Rejected(ServerError):
    """POST /prompt answered 400: the server's validation refused the workflow."""

    def __init__(self, body):
        self.body = body if isinstance(body, dict) else {}
        error = self.body.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("type") or "rejected"
        else:
            message = str(error or "rejected by the server")
        super().__init__(message, 400)


def normalize_url(url):
    """Check --url and return it without a trailing slash; a path prefix is kept."""
    if not url or not isinstance(url, str):
        raise UsageError("--url: empty")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"--url: {url!r}: the scheme must be http or https")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--url: {url!r}: bad port") from None
    if not parts.hostname:
        raise UsageError(f"--url: {url!r}: no host name")
    if parts.query or parts.fragment:
        raise UsageError(f"--url: {url!r}: must not have a query or fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class Client:
    def __init__(self, base_url, timeout=30.0):
        self.base = normalize_url(base_url)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "comfy-cli"

    # ---- addresses ------------------------------------------------------------------
    def url(self, path):
        return self.base + path

    def ws_url(self, client_id):
        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", urlencode({"clientId": client_id}), ""))

    def view_url(self, item):
        query = urlencode({"filename": item.get("filename", ""), "subfolder": item.get("subfolder", ""),
                           "type": item.get("type", "output")}, quote_via=quote)
        return self.url("/view?" + query)

    # ---- calls ------------------------------------------------------------------------
    def submit(self, graph, client_id, prompt_id):
        """Queue one workflow; return the reply ({prompt_id, number, node_errors})."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        resp = self._request("POST", "/prompt", json=body)
        if resp.status_code == 400:
            raise Rejected(self._json(resp, "/prompt", allow_error=True))
        data = self._json(resp, "/prompt")
        if not isinstance(data, dict):
            raise ServerError(f"{self.url('/prompt')}: unexpected answer {str(data)[:80]!r}")
        return data

    def history(self, prompt_id, retry=True):
        """The history entry for one prompt, or None while it is unknown or unfinished."""
        data = self._json(self._get("/history/" + quote(prompt_id, safe=""), retry), "/history")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    def queue(self, retry=True):
        """(running prompt ids, pending prompt ids) from GET /queue."""
        data = self._json(self._get("/queue", retry), "/queue")
        if not isinstance(data, dict):
            raise ServerError(f"{self.url('/queue')}: unexpected answer")
        return _queue_ids(data.get("queue_running")), _queue_ids(data.get("queue_pending"))

    def interrupt(self, prompt_id=None):
        body = {"prompt_id": prompt_id} if prompt_id else {}
        self._request("POST", "/interrupt", json=body)

    def delete_pending(self, prompt_ids):
        if prompt_ids:
            self._request("POST", "/queue", json={"delete": list(prompt_ids)})

    def system_stats(self):
        data = self._json(self._get("/system_stats", True), "/system_stats")
        if not isinstance(data, dict):
            raise ServerError(f"{self.url('/system_stats')}: unexpected answer")
        return data

    def upload(self, path):
        """POST /upload/image a local file; return the name to use in the graph."""
        name = os.path.basename(path)
        try:
            with open(path, "rb") as fh:
                resp = self._request("POST", "/upload/image", files={"image": (name, fh)},
                                     data={"type": "input"})
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if resp.status_code == 400:
            raise ServerError(f"{self.url('/upload/image')}: HTTP 400{_reason(resp)}", 400)
        data = self._json(resp, "/upload/image")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ServerError(f"{self.url('/upload/image')}: unexpected answer")
        sub = data.get("subfolder") if isinstance(data.get("subfolder"), str) else ""
        return f"{sub}/{data['name']}" if sub else data["name"]

    def download(self, item, fh, limit=None):
        """Stream one output file (an `executed` item) from /view into an open binary file."""
        url = self.view_url(item)
        resp = self._request("GET", url[len(self.base):], stream=True)
        with resp:
            if resp.status_code != 200:
                raise ServerError(f"{url}: HTTP {resp.status_code}", resp.status_code)
            size = 0
            for chunk in resp.iter_content(1 << 16):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ServerError(f"{url}: larger than {limit} bytes")
                fh.write(chunk)
        return size

    def close(self):
        self.session.close()

    # ---- plumbing -------------------------------------------------------------------
    def _get(self, path, retry):
        """GET is idempotent: retry on connection errors and 502/503/504, with backoff.
        The poller passes retry=False: it has its own tick and must not stall on one call."""
        waits = GET_BACKOFF if retry else ()
        for wait in waits:
            try:
                return self._request("GET", path)
            except ServerError as exc:
                if not (isinstance(exc, Unreachable) or exc.status in RETRY_STATUS):
                    raise
            time.sleep(wait)
        return self._request("GET", path)

    def _request(self, method, path, **kwargs):
        url = self.url(path)
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ServerError(f"{self.base}: TLS error: {_short(exc)}") from None
        except requests.exceptions.ConnectionError:
            raise Unreachable(f"cannot connect to {self.base}") from None
        except requests.exceptions.Timeout:
            raise ServerError(f"{url}: no answer within {self.timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise ServerError(f"{url}: {_short(exc)}") from None
        if resp.status_code in (401, 403):
            raise ServerError(f"{url}: HTTP {resp.status_code}: access denied; check the server's access rules",
                              resp.status_code)
        if resp.status_code >= 400 and resp.status_code != 400:
            raise ServerError(f"{url}: HTTP {resp.status_code}{_reason(resp)}", resp.status_code)
        return resp

    def _json(self, resp, path, allow_error=False):
        if resp.status_code == 400 and not allow_error:
            raise ServerError(f"{self.url(path)}: HTTP 400{_reason(resp)}")
        try:
            return resp.json()
        except ValueError:
            kind = resp.headers.get("Content-Type", "unknown type").split(";")[0]
            raise ServerError(f"{self.url(path)}: HTTP {resp.status_code} answer is not JSON ({kind})") from None


def _queue_ids(items):
    ids = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str):
                ids.append(item[1])
    return ids


def _reason(resp):
    try:
        body = resp.json()
    except ValueError:
        return f" {resp.reason}" if resp.reason else ""
    if isinstance(body, dict) and isinstance(body.get("error"), (str, dict)):
        err = body["error"]
        return ": " + (err.get("message", "") if isinstance(err, dict) else err)[:200]
    return ""


def _short(exc):
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
