"""A ComfyUI 0.3.64 look-alike server for tests: real HTTP and websocket
traffic, simulated nodes.

Theory of operation
-------------------
``SimServer.start()`` runs an aiohttp app on a private event loop in a daemon
thread.  Three kinds of work share that loop:

* HTTP handlers (routes.py) validate and queue prompts, and answer the
  queue/history/file routes straight from in-memory state;
* the engine's worker task (engine.py) pops prompts off a priority heap one
  at a time and "runs" the test nodes with real ``asyncio.sleep`` waits;
* the bus's publish task (bus.py) drains the single outbound queue and
  writes each frame to the socket(s) it is meant for.

Events are queued in the order the real server produces them and encoded at
once, so ordering and routing (submitter only, broadcast, dropped when the
client has no socket) match the recorded traces.  Known server quirks are
reproduced on purpose: the same clientId replacing an old socket without
closing it (and the old handler later unregistering the new one, #16010), the
gap between the terminal event and the history entry (#11540), and
``executing null`` only after history is written.  A ``Faults`` object
(faults.py) is consulted at fixed points so tests can break things.
"""

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from aiohttp import web

from .bus import Bus
from .engine import Engine
from .faults import Faults
from .routes import MAX_UPLOAD, Routes, crash_to_500, origin_check
from .storage import Storage


class SimServer:
    """A simulated ComfyUI server on its own thread.  See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, output_dir=None,
                 faults: Optional[Faults] = None, token: Optional[str] = None, basic=None, tls=None,
                 slow: float = 1.0, prompt_cost: float = 0.0, lacks=(), script=None, conflict: bool = False):
        """token: require 'Authorization: Bearer TOKEN' (like a reverse proxy in front of
        ComfyUI); basic: (user, password) to require basic auth instead; tls: (certfile,
        keyfile) to serve https/wss. For several-server tests: `slow` multiplies every node's
        sleep (a slower GPU), `prompt_cost` adds seconds to each prompt, `lacks` names node
        types this server does not have. script: a replay.Script every prompt plays back
        (a real model's run) instead of running nodes; any graph is then accepted. `conflict`:
        answer 409 to a POST /prompt whose prompt_id the server already holds (queued, running
        or in history), as newer ComfyUI servers do; 0.3.64 queues it again."""
        self.host, self.port = host, port
        self.conflict = conflict
        self.conflicts = []  # prompt ids answered 409, for tests
        self.slow, self.prompt_cost, self.lacks = slow, prompt_cost, frozenset(lacks)
        self.script = script
        self.token, self.basic = token, basic
        self.ssl_context = None
        if tls is not None:
            import ssl

            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(*tls)
        self.seen_headers = []  # (method, path, headers) of recent requests, for tests

        self.faults = faults if faults is not None else Faults()
        self._scratch = Path(os.path.realpath(tempfile.mkdtemp(prefix="comfy-sim-")))
        if output_dir is None:
            self.output_dir = self._scratch / "output"
        else:
            self.output_dir = Path(os.path.realpath(output_dir))
        # temp and input live in the private scratch dir, removed on stop().
        self.temp_dir = self._scratch / "temp"
        self.input_dir = self._scratch / "input"
        self.storage = Storage(self.output_dir, self.temp_dir, self.input_dir)
        self.engine: Optional[Engine] = None
        self.bus: Optional[Bus] = None
        self._submissions = []
        self._cond = threading.Condition()
        self._generation = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner = None
        self._tasks = []

    # --- lifecycle ------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def start(self) -> "SimServer":
        if self._thread is not None:
            raise RuntimeError("SimServer already started")
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._main, args=(ready, failure),
                                        name="comfy-sim", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("ComfyUI simulator did not start in time")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    def _main(self, ready, failure):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as ex:  # e.g. port in use: hand it to start()
            failure.append(ex)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _startup(self):
        self.bus = Bus(self.faults, self._notify)
        self.engine = Engine(self.bus, self.storage, self.faults, self._notify)
        self.engine.slow, self.engine.prompt_cost = self.slow, self.prompt_cost
        self.engine.script = self.script
        routes = Routes(self)
        app = web.Application(client_max_size=MAX_UPLOAD,
                              middlewares=[routes.auth_check, routes.faults_middleware, origin_check,
                                           crash_to_500])
        routes.install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.engine.worker()), loop.create_task(self.bus.publish_loop())]

    async def _shutdown(self):
        for task in self._tasks:
            task.cancel()
        closing = [c.ws.close(code=1001) for c in list(self.bus.all_conns) if not c.ws.closed]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)
        try:
            await asyncio.wait_for(self._runner.cleanup(), 3.0)
        except Exception:
            pass

    def stop(self):
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(6)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        self._thread = None
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> "SimServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- observation (safe from any thread) --------------------------------------------
    @property
    def submissions(self) -> list:
        """prompt_ids in the order POST /prompt accepted them."""
        return list(self._submissions)

    def running(self):
        """(prompt_id, node_id) being executed now, node_id None between nodes;
        None when no prompt is running."""
        return self.engine.current if self.engine is not None else None

    def history_ids(self) -> list:
        if self.engine is None:
            return []
        with self.engine.history_lock:
            return list(self.engine.history)

    def history_entry(self, prompt_id):
        """The history entry as /history/{id} would give it, or None (no HTTP, no faults)."""
        if self.engine is None:
            return None
        with self.engine.history_lock:
            return self.engine.history.get(prompt_id)

    def clients(self) -> list:
        """clientIds that currently have a registered websocket."""
        return list(self.bus.sockets) if self.bus is not None else []

    def inject(self, payload, client_id: Optional[str] = None):
        """Queue a raw frame (str = text, bytes = binary) for one client or all."""
        self._loop.call_soon_threadsafe(self.bus.send_raw, payload, client_id)

    def _notify(self):
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[["SimServer"], bool], timeout: float = 5.0) -> bool:
        """Re-check predicate(sim) whenever the simulator's state changes (and
        at least every 50 ms) until it is true or ``timeout`` passes.  The
        predicate runs without any simulator lock held, so it may do HTTP."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._generation
            if predicate(self):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                if self._generation == seen:
                    self._cond.wait(min(left, 0.05))


def _stderr(line: str):
    print(line, file=sys.stderr, flush=True)


def serve(host: str = "127.0.0.1", port: int = 8188, output_dir=None, log=_stderr, token=None, tls=None,
          script=None):
    """Run the simulator in the foreground until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    sim = SimServer(host=host, port=port, output_dir=output_dir, token=token, tls=tls, script=script)
    try:
        sim.start()
        log(f"ComfyUI simulator listening on {sim.url}")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
