"""Fault-injection seam for the simulator.

The server calls these hooks at fixed points.  The defaults do nothing
(apart from a tiny history delay, which mimics the real server), so a plain
``Faults()`` gives a well-behaved ComfyUI.  Tests subclass it and override the
hooks they need.  Every hook may also be written as ``async def``: the server
awaits an awaitable result, which is how a test stalls a response or a socket.
Hooks run on the simulator's event-loop thread; keep them quick and guard any
state they share with the test thread.
"""

from typing import Any, Optional, Union

# The real server builds the history entry on its worker thread *after* it
# has queued execution_success/error/interrupted, so a client that reads
# /history on the terminal event can see {} (issue #11540).  A small default
# gap keeps that race visible without slowing tests down.
DEFAULT_HISTORY_DELAY = 0.02


class Faults:
    """No-op hooks the simulator calls; subclass to inject faults."""

    def on_http(self, request) -> Optional[Any]:
        """Called for every HTTP request (websocket upgrades included) before
        routing.  Return an ``aiohttp.web.StreamResponse`` to answer instead of
        the real handler (e.g. a 503), or None to carry on."""
        return None

    def after_http(self, request, response) -> Optional[Any]:
        """Called after the real handler answered. Return another response to send
        instead (e.g. a 502 after a POST /prompt was queued: an answer lost on the
        way back), or None to send the real one."""
        return None

    def on_ws_connect(self, request) -> Union[bool, Any]:
        """Called before a websocket upgrade.  False refuses it with 403; a
        returned aiohttp response is sent as is; True accepts."""
        return True

    def on_ws_send(self, client_id: str, payload: Union[str, bytes]) -> str:
        """Called for every frame (text JSON str or binary bytes) just before
        it is written to the socket registered as ``client_id``.  Return
        ``"send"`` to write it, ``"drop"`` to skip it silently, ``"close"`` to
        close that socket cleanly (close frame) instead, or ``"abort"`` to cut
        the TCP connection without a close frame."""
        return "send"

    def history_delay(self, prompt_id: str) -> float:
        """Seconds between a prompt's terminal event and its history entry
        being written (the ``status`` and ``executing null`` follow it)."""
        return DEFAULT_HISTORY_DELAY
