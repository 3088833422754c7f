"""The HTTP side: one requests.Session that owns every REST call and its errors."""

import base64
import json
import os
import re
import ssl
import time
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import socket

import requests
from urllib3 import exceptions as u3
from urllib3.exceptions import NewConnectionError
from urllib3.util import Timeout

from comfy_cli import backoff
from comfy_cli import errors
from comfy_cli.errors import ServerError, Unreachable, UsageError


COMFY_PORT = 8188  # ComfyUI's default port: `--url HOST` means http://HOST:8188
CONNECT_HINT = "is ComfyUI running there? set --url or COMFY_URL"
RETRY_STATUS = frozenset({502, 503, 504})  # a proxy or a restarting server: worth another try
_JSON = {"Content-Type": "application/json"}


class TlsError(ServerError):
    """The TLS handshake failed: nothing was sent, and trying again will not help."""


class Broken(ServerError):
    """The connection broke, or went silent, part way through: another try may work."""


def worth_retrying(exc):
    """A failed GET that may work a moment later: no connection, a connection that broke or went
    silent, a busy or restarting server (not a refusal, a missing file or a limit of ours)."""
    if isinstance(exc, TlsError):
        return False
    return isinstance(exc, (Unreachable, Broken)) or exc.status in RETRY_STATUS or exc.status in (429, 500)


def get_wait(exc, attempt, policy=None):
    """The wait before GET retry number `attempt` after `exc`, or None: give up and raise it.
    Pure (the one-shot commands' GETs obey it): connection errors and 502/503/504 only."""
    policy = policy or backoff.GET  # (looked up now: the policy is one value, patched in tests)
    if isinstance(exc, Unreachable) and not exc.sent:
        return None  # refused or unknown host: say so at once, a retry will not change it
    if not (isinstance(exc, Unreachable) or exc.status in RETRY_STATUS):
        return None
    return policy.delay(attempt) if policy.allows(attempt) else None


class Unsendable(UsageError):
    """The request could not even be built (e.g. NaN in the workflow): nothing was sent."""


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


def split_url(url):
    """Check --url; return (base URL without credentials or trailing slash, (user, password) or None).
    A path prefix is kept (servers behind a reverse proxy)."""
    if not url or not isinstance(url, str):
        raise UsageError("--url: empty")
    bare = "://" not in url
    if bare:
        url = "http://" + url
    parts = urlsplit(url)
    if bare and parts.hostname:
        try:
            port = parts.port
        except ValueError:
            port = 0  # (reported below)
        if port is None:  # HOST alone is ComfyUI's own default: http://HOST:8188
            host = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=parts.netloc[:len(parts.netloc) - len(host)] + host + f":{COMFY_PORT}")
            url = urlunsplit(parts)
    shown = _without_credentials(parts)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"--url {shown}: the scheme must be http or https")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--url {shown}: bad port") from None
    if not parts.hostname:
        raise UsageError(f"--url {shown}: no host name")
    if parts.query or parts.fragment:
        raise UsageError(f"--url {shown}: must not have a query or fragment")
    if any(c in url for c in "\r\n\t\x00 "):
        raise UsageError(f"--url {shown}: must not contain spaces or control characters")
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return urlunsplit((parts.scheme, _netloc(parts), parts.path.rstrip("/"), "", "")), auth


def _netloc(parts):
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{host}:{parts.port}" if parts.port else host


def _without_credentials(parts):
    try:
        netloc = _netloc(parts) if parts.hostname else parts.netloc.rpartition("@")[2]
    except ValueError:
        netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_header(spec):
    """'Name: value' -> (name, value); raise UsageError without echoing the value (it may be a secret)."""
    name, colon, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _TOKEN_CHARS.match(name):
        raise UsageError("--header: expected 'Name: value' with a plain header name (the value is not shown)")
    if not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"--header {name}: the value is empty or has control characters")
    return name, value


class Client:
    def __init__(self, base_url, timeout=30.0, token=None, headers=(), ca_bundle=None, insecure=False,
                 redactor=None):
        """`redactor`: where the secrets given here are registered, so no output shows them
        (the process's output redactor unless another is given)."""
        add_secret = (redactor or errors.REDACTOR).add
        self.base, basic = split_url(base_url)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "comfy-cli"
        self.auth_header = None  # also sent on the websocket handshake
        if token is not None:
            if not token or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in token):
                raise UsageError("--token: empty, or has spaces or control characters")
            if basic:
                raise UsageError("--token and a user:password in --url cannot be used together")
            self.auth_header = "Bearer " + token
            add_secret(token)
        elif basic:
            self.auth_header = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            add_secret(basic[1])
            add_secret(quote(basic[1], safe=""))  # as it may appear in a URL
        if self.auth_header:
            add_secret(self.auth_header)
        self.extra_headers = [parse_header(h) for h in headers]
        for name, value in self.extra_headers:
            self.session.headers[name] = value
            if name.lower() in ("authorization", "cookie", "x-api-key", "proxy-authorization"):
                add_secret(value)
        if self.auth_header:
            self.session.headers["Authorization"] = self.auth_header
        if ca_bundle is not None and not os.path.isfile(ca_bundle):
            raise UsageError(f"--ca-bundle {ca_bundle}: no such file")
        self.ca_bundle = ca_bundle
        self.insecure = insecure
        self._routes = {}  # url -> (pool, target, headers, retries): a POST prepared once (see _post_json)
        self._timeout = Timeout(connect=timeout, read=timeout)
        # Proxy and CA settings come from the environment once, not on every request (requests
        # re-reads them per call: a measurable share of a 1000-prompt batch's CPU).
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base)
        env_ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.verify = ca_bundle if ca_bundle else (False if insecure else (env_ca or True))

    def ws_options(self):
        """Handshake headers and TLS options for the websocket, matching the HTTP session."""
        header = [f"{name}: {value}" for name, value in self.extra_headers if name.lower() != "authorization"]
        if self.auth_header:
            header.append("Authorization: " + self.auth_header)
        sslopt = None
        if self.insecure:
            sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        elif self.ca_bundle:
            sslopt = {"ca_certs": self.ca_bundle}
        return header, sslopt

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
        """Queue one workflow; return the reply ({prompt_id, number, node_errors}).
        Raises Unsendable, before anything leaves, if the graph cannot be sent as JSON."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        try:
            data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
        except (ValueError, TypeError, RecursionError) as exc:
            raise Unsendable(f"the workflow cannot be sent as JSON: {exc}") from None
        try:
            resp = self._request("POST", "/prompt", body=data)
        except ServerError as exc:
            if exc.status != 409:
                raise
            # Newer servers answer 409 to a prompt_id they already hold. Ours are fresh, one per
            # prompt: the server has this very prompt (an earlier copy of this POST, whose answer
            # was lost, got there). So it is accepted, never refused; were it not there after
            # all, the run's rounds would find it missing and call it lost.
            return {"prompt_id": prompt_id, "number": None, "node_errors": {}}
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

    def queue_items(self, retry=True):
        """GET /queue in detail: {"running": [...], "pending": [...]}, each item a dict with
        prompt_id, number, graph (the prompt) and client_id; pending in run order (lowest number)."""
        data = self._json(self._get("/queue", retry), "/queue")
        if not isinstance(data, dict):
            raise ServerError(f"{self.url('/queue')}: unexpected answer")
        return {"running": _queue_items(data.get("queue_running")),
                "pending": sorted(_queue_items(data.get("queue_pending")), key=_run_order)}

    def interrupt(self, prompt_id=None):
        body = {"prompt_id": prompt_id} if prompt_id else {}
        self._request("POST", "/interrupt", json=body)

    def cancel(self, prompt_ids, deleted, interrupted):
        """One pass: read /queue, delete those of `prompt_ids` that wait there and interrupt those
        that run, by prompt id, so another client's prompt is never touched. `deleted` and
        `interrupted` (sets) collect what was done, also when a ServerError ends it part way.
        A pending one may start between the read and the delete: whether and when another pass
        follows for those deleted is the caller's rule (`backoff.CANCEL`)."""
        mine = set(prompt_ids)
        running, pending = self.queue(retry=False)
        waiting = [pid for pid in pending if pid in mine]
        self.delete_pending(waiting)
        deleted.update(waiting)
        for pid in running:
            if pid in mine:
                self.interrupt(pid)
                interrupted.add(pid)

    def delete_pending(self, prompt_ids):
        if prompt_ids:
            self._request("POST", "/queue", json={"delete": list(prompt_ids)})

    def system_stats(self, retry=True):
        data = self._json(self._get("/system_stats", retry), "/system_stats")
        if not isinstance(data, dict):
            raise ServerError(f"{self.url('/system_stats')}: unexpected answer")
        return data

    def object_info(self):
        """GET /object_info: every node type's inputs and outputs (needed to convert UI-format files)."""
        data = self._json(self._get("/object_info", True), "/object_info")
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ServerError(f"{self.url('/object_info')}: unexpected answer (not an object of node types)")
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
        data = self._json(resp, "/upload/image")  # a 400 becomes a ServerError there
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ServerError(f"{self.url('/upload/image')}: unexpected answer")
        sub = data.get("subfolder") if isinstance(data.get("subfolder"), str) else ""
        return f"{sub}/{data['name']}" if sub else data["name"]

    def download(self, item, fh, limit=None, until=None, stop=None):
        """Stream one output file (an `executed` item) from /view into an open binary file,
        at most `limit` bytes and, if `until` (a monotonic time) is given, no later than that;
        `stop()` returning True ends it early (the run is over)."""
        url = self.view_url(item)
        resp = self._request("GET", url[len(self.base):], stream=True)
        with resp:
            if resp.status_code != 200:
                raise ServerError(f"{url}: HTTP {resp.status_code}", resp.status_code)
            size = 0
            chunks = resp.iter_content(1 << 16)
            while True:
                try:
                    chunk = next(chunks, None)
                except requests.exceptions.RequestException as exc:  # reset or silent mid-way
                    raise Broken(f"{url}: the download broke off after {size} bytes ({_short(exc)})") from None
                if chunk is None:
                    break
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ServerError(f"{url}: larger than {limit} bytes")
                if until is not None and time.monotonic() > until:
                    raise ServerError(f"{url}: download still running at the deadline")
                if stop is not None and stop():
                    raise ServerError(f"{url}: download stopped: the run is over")
                fh.write(chunk)
            promised = resp.headers.get("Content-Length")
            if promised and promised.isdigit() and int(promised) != size and \
                    resp.headers.get("Content-Encoding", "identity").lower() == "identity":
                # urllib3 1.x (requests 2.28's) ends a body cut short without an error
                raise Broken(f"{url}: the download broke off after {size} of {promised} bytes")
        return size

    def server_info(self):
        """For `comfy-cli status`: {version, devices, running, pending} from /system_stats and /queue."""
        stats = self.system_stats()
        running, pending = self.queue()
        system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
        devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
        version = system.get("comfyui_version")
        return {"version": version if isinstance(version, str) else None,
                "devices": [str(d.get("name")) for d in devices if isinstance(d, dict) and d.get("name")],
                "running": len(running), "pending": len(pending)}

    def close(self):
        self.session.close()

    # ---- plumbing -------------------------------------------------------------------
    def _get(self, path, retry):
        """GET is idempotent: outside a run it is tried again as `get_wait` says. The run
        passes retry=False: its supervisor decides when to try again."""
        attempt = 0
        while True:
            try:
                return self._request("GET", path)
            except ServerError as exc:
                attempt += 1
                wait = get_wait(exc, attempt) if retry else None
                if wait is None:
                    raise
            time.sleep(wait)

    def _post_json(self, url, body):
        """POST a JSON body through the session's own connection pool (its TLS and proxy
        settings), with the headers prepared once and the answer read by urllib3 directly.
        requests' per-call work (preparing, looking up the pool, wrapping the answer, cookies)
        was most of a big batch's client CPU; the HTTP underneath is the same."""
        route = self._routes.get(url)
        if route is None or route[0].pool is None:  # (a closed pool has no connections left)
            prep = self.session.prepare_request(requests.Request("POST", url, data=b"{}", headers=_JSON))
            prep.headers.pop("Content-Length", None)
            adapter = self.session.get_adapter(url)
            proxies = self.session.proxies
            if hasattr(adapter, "get_connection_with_tls_context"):
                pool = adapter.get_connection_with_tls_context(prep, self.verify, proxies=proxies)
            else:  # requests < 2.32.2 (setup.cfg allows 2.28): what its own send() calls
                pool = adapter.get_connection(url, proxies)
            adapter.cert_verify(pool, url, self.verify, None)
            route = self._routes[url] = (pool, adapter.request_url(prep, proxies), dict(prep.headers),
                                         adapter.max_retries)
        pool, target, headers, retries = route
        headers = dict(headers)
        headers["Content-Length"] = str(len(body))
        try:
            answer = pool.urlopen("POST", target, body=body, headers=headers, redirect=False,
                                  assert_same_host=False, preload_content=True, decode_content=True,
                                  retries=retries, timeout=self._timeout)
        except Exception as exc:
            raise _as_requests_error(exc) from exc
        return _Answer(answer)

    def _request(self, method, path, body=None, **kwargs):
        url = self.url(path)
        try:
            if body is not None:
                resp = self._post_json(url, body)
            else:
                resp = self.session.request(method, url, timeout=self.timeout, verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise TlsError(_tls_message(self.base, exc)) from None
        except requests.exceptions.ConnectTimeout:
            raise Unreachable(f"cannot connect to {self.base} (timed out): {CONNECT_HINT}", sent=False) from None
        except requests.exceptions.ConnectionError as exc:
            # Refused or unresolvable: the request never left. Reset mid-way: it may have.
            sent = not isinstance(_root(exc), (ConnectionRefusedError, socket.gaierror, NewConnectionError))
            hint = "" if sent else f": {CONNECT_HINT}"
            raise Unreachable(f"cannot connect to {self.base}{hint}", sent=sent) from None
        except requests.exceptions.Timeout:
            raise Broken(f"{url}: no answer within {self.timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise ServerError(f"{url}: {_short(exc)}") from None
        if resp.status_code in (401, 403):
            raise ServerError(f"{url}: HTTP {resp.status_code}: access denied; check --token (or $COMFY_TOKEN), "
                              "--header and the user:password in --url", resp.status_code)
        if resp.status_code >= 400 and resp.status_code != 400:
            raise ServerError(f"{url}: HTTP {resp.status_code}{_reason(resp)}", resp.status_code)
        return resp

    def _json(self, resp, path, allow_error=False):
        if resp.status_code == 400 and not allow_error:
            raise ServerError(f"{self.url(path)}: HTTP 400{_reason(resp)}", 400)
        try:
            return resp.json()
        except ValueError:
            kind = resp.headers.get("Content-Type", "unknown type").split(";")[0]
            raise ServerError(f"{self.url(path)}: HTTP {resp.status_code} answer is not JSON ({kind})") from None


class _Answer:
    """What _post_json answers: the parts of a requests.Response this module reads."""

    __slots__ = ("status_code", "reason", "headers", "content")

    def __init__(self, answer):
        self.status_code = answer.status
        self.reason = answer.reason
        self.headers = answer.headers  # case-insensitive, like requests'
        self.content = answer.data

    def json(self):
        return json.loads(self.content)  # bytes: UTF-8/16/32 detected as requests does


def _as_requests_error(exc):
    """A urllib3 error from _post_json as the requests error its adapter would have raised, so
    that _request sorts every call's failures in one place."""
    if isinstance(exc, u3.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return requests.exceptions.ConnectTimeout(exc)
        if isinstance(reason, u3.SSLError):
            return requests.exceptions.SSLError(exc)
        if isinstance(reason, u3.ProxyError):
            return requests.exceptions.ProxyError(exc)
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, u3.ProxyError):
        return requests.exceptions.ProxyError(exc)
    if isinstance(exc, u3.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, u3.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc)
    if isinstance(exc, (u3.ProtocolError, u3.ClosedPoolError, OSError)):
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, u3.HTTPError):
        return requests.exceptions.RequestException(exc)
    return exc  # not an HTTP failure (a bug): as it is


def _queue_ids(items):
    ids = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str):
                ids.append(item[1])
    return ids


def _queue_items(items):
    out = []
    for item in items if isinstance(items, list) else ():
        if not (isinstance(item, list) and len(item) > 1 and isinstance(item[1], str)):
            continue
        number = item[0] if isinstance(item[0], (int, float)) and not isinstance(item[0], bool) else None
        graph = item[2] if len(item) > 2 and isinstance(item[2], dict) else {}
        extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        client_id = extra.get("client_id") if isinstance(extra.get("client_id"), str) else None
        out.append({"prompt_id": item[1], "number": number, "graph": graph, "client_id": client_id})
    return out


def _run_order(item):
    number = item["number"]
    return (number is None, number if number is not None and number == number else 0)


def _reason(resp):
    try:
        body = resp.json()
    except ValueError:
        return f" {resp.reason}" if resp.reason else ""
    if isinstance(body, dict) and isinstance(body.get("error"), (str, dict)):
        err = body["error"]
        return ": " + (err.get("message", "") if isinstance(err, dict) else err)[:200]
    return ""


def _root(exc):
    """The innermost cause of a requests/urllib3 error."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None) or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                                 else None) or exc.__cause__ or exc.__context__
        if not isinstance(inner, BaseException):
            return exc
        if isinstance(inner, NewConnectionError):
            return inner
        exc = inner
    return exc


PLAIN_HTTP = ("wrong version number", "record layer failure", "packet length too long", "http request")
UNTRUSTED = ("certificate verify failed", "self-signed certificate", "unable to get local issuer certificate")


def _tls_message(base, exc):
    """One line for a failed TLS handshake, with what to do about it."""
    reason = _tls_reason(exc)
    if any(sign in str(exc).lower() for sign in PLAIN_HTTP):
        # The server answered the handshake with plain HTTP: ComfyUI itself serves no TLS.
        plain = "http://" + base.split("://", 1)[1]
        return f"{base}: TLS error: the server speaks plain HTTP, not https; use --url {plain}"
    if any(sign in reason for sign in UNTRUSTED):
        return f"{base}: TLS error: {reason}; use --ca-bundle FILE for a private certificate authority"
    return f"{base}: TLS error: {reason}"


def _tls_reason(exc):
    text = str(exc)
    for known in ("certificate verify failed", "hostname mismatch", "wrong version number",
                  "self-signed certificate", "unable to get local issuer certificate"):
        if known in text:
            return known
    return _short(exc)


def _short(exc):
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
