"""Websocket fan-out: the socket table and the single ordered outbound queue.

Like the real server, every message is queued (``send``) and one publish
loop writes it, so all sockets see messages in production order; only the
connect handshake and the feature_flags reply are written directly.  A message
for a client with no socket at that moment is dropped: nothing is buffered or
replayed.  Messages are encoded when queued, so later state changes cannot
leak into an earlier message.
"""

import asyncio
import inspect
import json
import logging
import struct
from typing import Dict, Optional, Union

log = logging.getLogger("comfy_cli.sim")

# Binary event types (first 4 bytes of every binary frame, big-endian).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG = 1

SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}


class Conn:
    """One accepted websocket and the request that opened it."""

    __slots__ = ("ws", "request", "dead")

    def __init__(self, ws, request):
        self.ws, self.request, self.dead = ws, request, False


class Bus:
    def __init__(self, faults, notify=lambda: None):
        self.faults = faults
        self.notify = notify
        # clientId -> Conn.  A reconnect with the same id replaces the entry
        # without closing the old socket, as the real server does.
        self.sockets: Dict[str, Conn] = {}
        self.metadata: Dict[str, dict] = {}  # clientId -> {"feature_flags": {...}}
        self.all_conns = set()  # every open socket, registered or not (for shutdown)
        self.queue: asyncio.Queue = asyncio.Queue()

    # --- producing -----------------------------------------------------------
    def send(self, event: str, data, sid: Optional[str] = None):
        """Queue a JSON message for ``sid`` (None = every socket)."""
        self.queue.put_nowait((sid, json.dumps({"type": event, "data": data})))

    def send_raw(self, payload: Union[str, bytes], sid: Optional[str] = None):
        self.queue.put_nowait((sid, payload))

    def send_binary(self, event_type: int, body: bytes, sid: Optional[str] = None):
        self.queue.put_nowait((sid, struct.pack(">I", event_type) + body))

    def send_preview(self, jpeg: bytes, metadata: dict, sid: Optional[str], with_metadata: bool):
        """A type-4 frame (JSON metadata first) or the legacy type-1 frame."""
        if with_metadata:
            meta = json.dumps(metadata).encode()
            self.send_binary(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + jpeg, sid)
        else:
            self.send_binary(PREVIEW_IMAGE, struct.pack(">I", JPEG) + jpeg, sid)

    def send_text(self, node_id: str, text: str, sid: Optional[str] = None):
        nid = node_id.encode()
        self.send_binary(TEXT, struct.pack(">I", len(nid)) + nid + text.encode(), sid)

    def supports(self, sid: Optional[str], flag: str) -> bool:
        flags = self.metadata.get(sid, {}).get("feature_flags") if sid is not None else None
        return isinstance(flags, dict) and flags.get(flag, False) is True

    # --- writing ---------------------------------------------------------------
    async def send_direct(self, sid: str, event: str, data):
        """Write now, bypassing the queue, to whatever socket ``sid`` maps to."""
        conn = self.sockets.get(sid)
        if conn is not None:
            await self._write(sid, conn, json.dumps({"type": event, "data": data}))

    async def publish_loop(self):
        queue = self.queue
        while True:
            sid, payload = await queue.get()
            if sid is None:
                for target, conn in list(self.sockets.items()):
                    await self._write(target, conn, payload)
            else:
                conn = self.sockets.get(sid)
                if conn is not None:
                    await self._write(sid, conn, payload)

    async def _write(self, sid: str, conn: Conn, payload):
        if conn.dead or conn.ws.closed:
            return
        action = self.faults.on_ws_send(sid, payload)
        if inspect.isawaitable(action):
            action = await action
        if action == "drop":
            return
        if action in ("close", "abort"):
            conn.dead = True
            if action == "abort" and conn.request.transport is not None:
                conn.request.transport.abort()
            else:
                # In the background: close() waits for the peer's reply and
                # must not hold up delivery to everyone else.
                asyncio.ensure_future(_quiet_close(conn.ws))
            return
        try:
            if isinstance(payload, str):
                await conn.ws.send_str(payload)
            else:
                await conn.ws.send_bytes(payload)
        except Exception as ex:  # a peer gone mid-write must not stop the loop
            log.debug("ws send to %s failed: %r", sid, ex)


async def _quiet_close(ws, **kw):
    try:
        await ws.close(**kw)
    except Exception:
        pass
