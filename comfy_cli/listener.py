"""The websocket side: one thread that owns the socket and its reconnect loop.

It turns every text frame into a typed event and puts lists of them on a queue; binary frames
(previews, progress text, SaveImageWebsocket images) are read and dropped at once. It never
touches the terminal: the main thread decides what to show.

The reconnect loop lives in `run` and nowhere else. After any close or error it makes
sure the old socket is fully closed before opening a new one with the same clientId
(otherwise the old handler's cleanup on the server can unregister the new socket, ComfyUI
#16010), then waits with exponential backoff and jitter. It reports transport changes as
events (`Connected`, `Disconnected`) once per change, not once per retry.
"""

import random
import select
import socket
import ssl
import threading
import time

import websocket

from comfy_cli import backoff
from comfy_cli import events as ev

MAX_FRAME = 256 << 20  # a full-size PNG from SaveImageWebsocket is a few MB; this is far beyond
OP_TEXT = websocket.ABNF.OPCODE_TEXT
OP_CLOSE = websocket.ABNF.OPCODE_CLOSE


class SocketDead(Exception):
    pass


class Listener(threading.Thread):
    def __init__(self, url, client_id, out, *, connect_timeout=5.0, ping_interval=10.0, pong_timeout=10.0,
                 retry=backoff.RECONNECT, header=None, sslopt=None, max_frame=MAX_FRAME, fast_reads=True):
        super().__init__(name="comfy-cli-listener", daemon=True)
        self.url = url
        self.client_id = client_id
        self.out = out
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.retry = retry
        self.header = header or []
        self.sslopt = sslopt
        self.max_frame = max_frame
        self.fast_reads = fast_reads  # False: public websocket-client API only (tests both paths)
        self.fast = None  # whether the buffered reader is in use, once a socket opened
        self._stopping = threading.Event()
        self._ws = None
        self._lock = threading.Lock()

    # ---- called from the main thread ---------------------------------------------------
    def stop(self, timeout=1.0):
        self._stopping.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            _close(ws)
        self.join(timeout)

    def reconnect(self):
        """Drop the current socket (it went deaf); the loop opens a fresh one."""
        with self._lock:
            ws = self._ws
        if ws is not None:
            _close(ws)

    # ---- the thread -----------------------------------------------------------------------
    def run(self):
        error = None
        attempt = 1
        ever_connected = False
        down_reported = False
        try:
            while not self._stopping.is_set():
                try:
                    ws = websocket.create_connection(
                        self.url, timeout=self.connect_timeout, header=self.header, sslopt=self.sslopt,
                        enable_multithread=True, skip_utf8_validation=True,
                    )
                except Exception as exc:  # every kind of failure to connect is retried
                    if not down_reported:
                        self.out.put(ev.Disconnected(time.monotonic(), _describe(exc)))
                        down_reported = True
                else:
                    with self._lock:
                        self._ws = ws
                    if self._stopping.is_set():
                        _close(ws)
                        break
                    self.out.put(ev.Connected(time.monotonic(), ever_connected))
                    ever_connected = True
                    down_reported = False
                    attempt = 1
                    reason = self._pump(ws)
                    with self._lock:
                        self._ws = None
                    _close(ws)  # fully closed before any reconnect with the same clientId
                    if self._stopping.is_set():
                        break
                    self.out.put(ev.Disconnected(time.monotonic(), reason))
                    down_reported = True
                # Jitter keeps many clients from reconnecting in lockstep after a restart.
                self._stopping.wait(self.retry.delay(attempt, random.random()))
                attempt += 1
        except BaseException as exc:  # pragma: no cover - a bug; tell the main thread, do not die silently
            error = repr(exc)
        finally:
            self.out.put(ev.ListenerStopped(time.monotonic(), error))

    def _pump(self, ws):
        """Read frames until the socket ends; return why it ended.

        Events go out in lists: every frame already received is parsed before the main
        thread is woken once, so a flood of progress messages costs one hand-over per read,
        not one per message."""
        put = self.out.put
        parse = ev.parse
        clock = time.monotonic
        batch = []

        def flush():  # called before any read that may block: hand over what we have
            if batch:
                put(batch[:])
                batch.clear()

        # The fast path hooks websocket-client's internals; if a release moved them, fall back
        # to its public API and hand events over whenever nothing more is waiting.
        reader = _FrameReader.install(ws, flush, self.max_frame) if self.fast_reads else None
        self.fast = reader is not None
        waiting = None if self.fast else _waiting
        ws.settimeout(self.ping_interval)
        last_rx = clock()
        pinged = False
        while not self._stopping.is_set():
            if waiting is not None and batch and not waiting(ws):
                flush()
            try:
                if reader is not None:
                    opcode, data = reader.next()
                else:
                    opcode, frame = ws.recv_data_frame(True)
                    data = frame.data
            except websocket.WebSocketTimeoutException:
                dead = self._ping(ws, pinged, clock() - last_rx)
                if dead is not None:
                    return dead
                pinged = True
                continue
            except Exception as exc:
                flush()
                return _describe(exc)
            now = clock()
            last_rx = now
            pinged = False
            if waiting is not None and len(data) > self.max_frame:
                flush()  # (the public API can only tell once the frame is in)
                return f"a frame of {len(data)} bytes (more than {_size(self.max_frame)})"
            if opcode == OP_TEXT:
                event = parse(data, now)
                if event is not None:
                    batch.append(event)
            elif opcode == OP_CLOSE:
                flush()
                return "closed by the server"
            # Binary frames and control frames are dropped here, never kept.
        return "stopped"

    def _ping(self, ws, pinged, quiet):
        """Nothing came for a while: ping, or say why the socket is dead (None once pinged).
        Silence is normal during slow nodes; a ping tells a quiet socket from a dead one."""
        if pinged and quiet > self.ping_interval + self.pong_timeout:
            return "no answer to ping"
        try:
            ws.ping()
        except Exception as exc:
            return _describe(exc)
        return None


class FrameTooLarge(websocket.WebSocketException):
    pass


class _FrameReader:
    """Reads websocket frames from 64 KiB socket reads, parsing them itself. websocket-client
    asks the socket for each header and payload separately and builds an object per frame;
    at tens of thousands of messages a second that was most of the client's CPU. The socket,
    TLS and timeouts stay websocket-client's (its `_recv`). It also refuses frames too large
    to be anything but an attack, before reading them: websocket-client has no size limit."""

    def __init__(self, ws, before_block, max_frame):
        self._recv = ws._recv  # websocket-client's raw read: handles TLS, timeouts, closed sockets
        self._ws = ws
        self._before_block = before_block
        self._max = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._op = None  # the opcode of a fragmented message being gathered
        self._parts = []
        self._size = 0

    @classmethod
    def install(cls, ws, before_block, max_frame):
        """A reader for `ws`, or None if this websocket-client has no such internals."""
        if not callable(getattr(ws, "_recv", None)):
            return None
        return cls(ws, before_block, max_frame)

    def _need(self, n):
        """Have `n` bytes buffered from the frame's start; read (and maybe block) for more.
        A timeout leaves what was read in place, so the next call goes on where this stopped."""
        while len(self._buf) - self._pos < n:
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._before_block()
            self._buf += self._recv(max(65536, n - len(self._buf)))

    def next(self):
        """The next message as (opcode, payload): text or binary (fragments joined), or a
        control frame (close, ping, pong; a ping is answered here)."""
        buf, p = self._buf, self._pos
        if len(buf) - p >= 2:  # the common case: a small, whole, unmasked, final frame is buffered
            b0, n = buf[p], buf[p + 1]
            if n < 126 and b0 & 0x80 and (b0 & 0x0F) in (0x1, 0x2) and len(buf) - p >= 2 + n:
                self._pos = p + 2 + n
                return b0 & 0x0F, bytes(buf[p + 2:p + 2 + n])
        while True:
            self._need(2)
            buf, p = self._buf, self._pos
            b0, b1 = buf[p], buf[p + 1]
            op, n, head = b0 & 0x0F, b1 & 0x7F, 2
            if n == 126:
                self._need(4)
                buf, p = self._buf, self._pos
                n, head = int.from_bytes(buf[p + 2:p + 4], "big"), 4
            elif n == 127:
                self._need(10)
                buf, p = self._buf, self._pos
                n, head = int.from_bytes(buf[p + 2:p + 10], "big"), 10
            if n > self._max or self._size + n > self._max:
                raise FrameTooLarge(f"a frame of {self._size + n} bytes (more than {_size(self._max)})")
            masked = b1 & 0x80
            if masked:  # servers must not mask; accept it anyway
                head += 4
            self._need(head + n)
            buf, p = self._buf, self._pos
            payload = bytes(buf[p + head:p + head + n])
            if masked:
                key = buf[p + head - 4:p + head]
                payload = bytes(c ^ key[i & 3] for i, c in enumerate(payload))
            self._pos = p + head + n
            if op >= 0x8:
                if op == 0x9:
                    self._ws.pong(payload)
                return op, payload
            fin = b0 & 0x80
            if op == 0x0:  # a continuation
                if self._op is None:
                    continue  # nothing to continue: drop it
                self._parts.append(payload)
                self._size += n
                if not fin:
                    continue
                op, payload = self._op, b"".join(self._parts)
                self._op, self._parts, self._size = None, [], 0
                return op, payload
            if not fin:
                self._op, self._parts, self._size = op, [payload], n
                continue
            return op, payload


def _size(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _waiting(ws):
    """Is more data already there to read (so a read would not block)?"""
    sock = ws.sock
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes the OS socket does not show
    if pending is not None and pending():
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _close(ws):
    """Send a close frame if we can, then shut the TCP socket so a blocked recv wakes up."""
    sock = ws.sock
    try:
        ws.send_close()
    except Exception:
        pass
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    ws.shutdown()


def _describe(exc):
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"websocket refused: HTTP {exc.status_code}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "connection closed"
    if isinstance(exc, (TimeoutError, websocket.WebSocketTimeoutException)):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 160 else text[:160] + "..."
