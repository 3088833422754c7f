"""A loopback TCP proxy for fault tests: take the server down and up, cut sockets mid-frame."""

import socket
import struct
import threading


class Proxy:
    """Forwards 127.0.0.1:port to a target port. `down()` kills open connections and resets
    new ones at once, counting them in `refused` (the server looks gone, and a test can wait
    until the client has noticed); `up()` forwards again. With `cut_ws`, the
    first that many websocket connections are cut after `cut_after` bytes from the server,
    in the middle of whatever frame those bytes belong to."""

    def __init__(self, target_port, cut_ws=0, cut_after=4000, late_post=None, hold_post=False):
        """late_post: seconds. The first POST /prompt is answered 504 at once (a gateway that
        gave up) and only forwarded to the server that much later. hold_post: the first POST
        /prompt is answered 504 at once and forwarded just before the next POST /prompt (the
        client's resend), so the server gets the same prompt twice, the first copy first."""
        self.late_post = late_post
        self.hold_post = hold_post
        self.held = None  # the request held back (hold_post)
        self.target = target_port
        self.cut_ws = cut_ws
        self.cut_after = cut_after
        self.cuts = 0
        self.port = 0
        self.is_down = False
        self.refused = 0
        self._listener = None
        self._conns = set()
        self._lock = threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def up(self):
        self.is_down = False
        if self._listener is not None:
            return self
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self.port = srv.getsockname()[1]
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()
        return self

    def down(self):
        self.is_down = True
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            _kill(s)

    def _accept(self, srv):
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            if self.late_post is not None:
                first = _read_request(client)
                if first.startswith(b"POST") and b" /prompt " in first.split(b"\r\n", 1)[0]:
                    delay, self.late_post = self.late_post, None
                    client.sendall(b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    _kill(client)
                    threading.Thread(target=self._forward_late, args=(first, delay), daemon=True).start()
                    continue
                client = _Replay(client, first)
            if self.is_down:
                self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _kill(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            state = {"ws": False, "limit": None}
            threading.Thread(target=self._pump, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, state, False), daemon=True).start()

    def _forward_late(self, request, delay):
        threading.Event().wait(delay)  # the gateway's own delay, on its own thread
        with socket.create_connection(("127.0.0.1", self.target), timeout=5) as upstream:
            upstream.sendall(request)
            upstream.recv(65536)

    def _pump(self, src, dst, state, from_client):
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and (self.hold_post or self.held) and _is_post_prompt(data):
                    data = _whole_request(data, src)
                    if self.hold_post:  # the first: lost on the way (a gateway's 504), kept for later
                        self.hold_post, self.held = False, data
                        src.sendall(b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        break
                    held, self.held = self.held, None
                    self._forward_late(held, 0)  # the late copy reaches the server first
                if from_client and not state["ws"] and b"upgrade: websocket" in data.lower():
                    state["ws"] = True
                    with self._lock:
                        if self.cuts < self.cut_ws:
                            self.cuts += 1
                            state["limit"] = self.cut_after
                limit = state["limit"]
                if not from_client and limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: max(1, limit - sent)])  # part of a frame, then nothing
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        _kill(src)
        _kill(dst)


def _kill(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def close(proxy):
    """Stop listening for good."""
    srv, proxy._listener = proxy._listener, None
    proxy.down()
    if srv is not None:
        _kill(srv)  # shutdown first: a plain close would not wake the blocked accept()


def _is_post_prompt(data):
    line = data.split(b"\r\n", 1)[0]
    return line.startswith(b"POST ") and (b" /prompt " in line or b" /api/prompt " in line)


def _whole_request(data, conn):
    """`data` (the start of a request) completed to its Content-Length from `conn`."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_request(conn):
    """One whole HTTP request (headers and Content-Length body) from a fresh connection."""
    return _whole_request(b"", conn)


class _Replay:
    """A socket whose first recv gives back bytes already read from it."""

    def __init__(self, sock, first):
        self._sock, self._first = sock, first

    def recv(self, size):
        if self._first:
            data, self._first = self._first, b""
            return data
        return self._sock.recv(size)

    def __getattr__(self, name):
        return getattr(self._sock, name)
