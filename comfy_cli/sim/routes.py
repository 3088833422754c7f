"""HTTP routes and the websocket endpoint, each also under /api like the
real server.  Handlers only validate, queue and read state; the engine runs
prompts and the bus delivers websocket frames."""

import asyncio
import base64
import inspect
import ipaddress
import json
import mimetypes
import os
import sys
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Optional

from aiohttp import WSMsgType, web

from .bus import SERVER_FEATURES, Bus, Conn
from .engine import Engine
from .nodes import NODES
from .validation import validate_prompt

if TYPE_CHECKING:
    from .server import SimServer

VERSION = "0.3.64"
MAX_UPLOAD = 100 * 1024 * 1024
# What aiohttp answers for an unhandled exception; the real server lets
# malformed JSON bodies end up there.
_500_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


def _json(data, status=200):
    return web.json_response(data, status=status)


def _is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def origin_check(request, handler):
    """The real server's CSRF guard: a loopback Host with a different Origin gets 403."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host and origin:
        try:
            o = urllib.parse.urlparse(origin)
            h = urllib.parse.urlsplit("//" + host.lower())
            # Ports are compared only when both sides carry one.
            host_cmp = host.lower() if o.port is not None else h.hostname
            origin_cmp = o.netloc.lower() if h.port is not None else o.hostname
        except ValueError:  # unparsable port: nothing to compare
            host_cmp = origin_cmp = h = None
        if h is not None and _is_loopback(h.hostname) and host_cmp and origin_cmp \
                and host_cmp != origin_cmp:
            return web.Response(status=403)
    return await handler(request)


@web.middleware
async def crash_to_500(request, handler):
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        return web.Response(status=500, text=_500_TEXT)


class Routes:
    """HTTP and websocket handlers bound to one SimServer."""

    def __init__(self, sim: "SimServer"):
        self.sim = sim

    @property
    def engine(self) -> Engine:
        return self.sim.engine

    @property
    def bus(self) -> Bus:
        return self.sim.bus

    def install(self, app: web.Application):
        table = [
            ("GET", "/ws", self.websocket),
            ("GET", "/prompt", self.get_prompt), ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt), ("POST", "/free", self.post_free),
            ("GET", "/history", self.get_history), ("POST", "/history", self.post_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("GET", "/view", self.get_view), ("POST", "/upload/image", self.upload_image),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/system_stats", self.system_stats), ("GET", "/features", self.features),
            ("GET", "/embeddings", self.empty_list), ("GET", "/extensions", self.empty_list),
        ]
        for prefix in ("", "/api"):  # the real server mirrors every route under /api
            for method, path, handler in table:
                app.router.add_route(method, prefix + path, handler)

    # --- access ------------------------------------------------------------------
    @web.middleware
    async def auth_check(self, request, handler):
        """ComfyUI has no auth of its own; this plays the reverse proxy that adds it."""
        sim = self.sim
        seen = sim.seen_headers
        seen.append((request.method, request.path, dict(request.headers)))
        del seen[:-200]
        expected = []
        if sim.token:
            expected.append("Bearer " + sim.token)
        if sim.basic:
            expected.append("Basic " + base64.b64encode(f"{sim.basic[0]}:{sim.basic[1]}".encode()).decode())
        if expected and request.headers.get("Authorization") not in expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    # --- faults ------------------------------------------------------------------
    @web.middleware
    async def faults_middleware(self, request, handler):
        answer = self.sim.faults.on_http(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not None:
            return answer
        response = await handler(request)
        if isinstance(response, web.WebSocketResponse):
            return response  # the socket has already been served
        other = self.sim.faults.after_http(request, response)
        if inspect.isawaitable(other):
            other = await other
        return response if other is None else other

    # --- websocket ---------------------------------------------------------------
    async def websocket(self, request):
        verdict = self.sim.faults.on_ws_connect(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if isinstance(verdict, web.StreamResponse):
            return verdict
        if verdict is False:
            return web.Response(status=403)
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        bus, engine = self.bus, self.engine
        sid = request.query.get("clientId", "")
        if sid:
            bus.sockets.pop(sid, None)  # replaced, not closed: the old socket goes silent
        else:
            sid = uuid.uuid4().hex
        conn = Conn(ws, request)
        bus.all_conns.add(conn)
        bus.sockets[sid] = conn
        bus.metadata[sid] = {"feature_flags": {}}
        self.sim._notify()
        try:
            await bus.send_direct(sid, "status", {"status": engine.queue_info(), "sid": sid})
            # The only thing a reconnecting submitter gets back: the running node.
            if engine.client_id == sid and engine.last_node_id is not None:
                await bus.send_direct(sid, "executing", {"node": engine.last_node_id})
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        # Keyed by clientId, so an old socket can overwrite a new one's flags.
                        bus.metadata[sid]["feature_flags"] = data.get("data", {})
                        await bus.send_direct(sid, "feature_flags", SERVER_FEATURES)
                    first = False  # not reached for bad JSON: the next frame still counts
                except Exception:
                    pass
        finally:
            # Unconditional, as in the real server (bug #16010): if a newer socket
            # took this clientId over, it is unregistered here too.
            bus.sockets.pop(sid, None)
            bus.metadata.pop(sid, None)
            bus.all_conns.discard(conn)
            self.sim._notify()
        return ws

    # --- prompts and queue -----------------------------------------------------------
    async def get_prompt(self, request):
        return _json(self.engine.queue_info())

    async def post_prompt(self, request):
        body = await request.json()
        if not isinstance(body, dict):
            if isinstance(body, (list, str)):
                body = {}
            else:
                raise TypeError("request body must be a JSON object")
        engine = self.engine
        if "number" in body:
            number = float(body["number"])  # a client number is a float; the counter stays
        else:
            number = engine.counter
            if body.get("front"):
                number = -number
            engine.counter += 1  # consumed even if validation fails below
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided",
                     "details": "No prompt provided", "extra_info": {}}
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            raise TypeError("prompt must be an object")
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        if self.sim.conflict and engine.holds(prompt_id):
            self.sim.conflicts.append(prompt_id)
            error = {"type": "duplicate_prompt_id", "message": f"Prompt ID {prompt_id} already exists",
                     "details": "", "extra_info": {}}
            return _json({"error": error, "node_errors": {}}, 409)
        if self.sim.script is not None:  # a replayed recording: its own node types, not ours
            ok, error, outputs, node_errors = True, None, list(prompt), {}
        else:
            ok, error, outputs, node_errors = validate_prompt(prompt, body.get("partial_execution_targets"),
                                                              self.sim.lacks)
        extra = body.get("extra_data", {})
        if not isinstance(extra, dict):
            raise TypeError("extra_data must be an object")
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if not ok:
            return _json({"error": error, "node_errors": node_errors}, 400)
        self.sim._submissions.append(prompt_id)
        engine.enqueue([number, prompt_id, prompt, extra, outputs])
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request):
        running = self.engine.running
        return _json({"queue_running": [running] if running is not None else [],
                      "queue_pending": self.engine.pending_items()})

    async def post_queue(self, request):
        body = await request.json()
        if "clear" in body and body["clear"]:
            self.engine.clear_pending()
        if "delete" in body:
            for prompt_id in body["delete"]:
                self.engine.delete_pending(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request):
        try:
            body = await request.json()
        except ValueError:  # empty or invalid body: a global interrupt
            body = {}
        self.engine.interrupt(body.get("prompt_id"))
        return web.Response(status=200)

    async def post_free(self, request):
        body = await request.json()
        self.engine.free(bool(body.get("free_memory", False)))
        return web.Response(status=200)

    # --- history -------------------------------------------------------------------
    async def get_history(self, request):
        q = request.query
        max_items = int(q["max_items"]) if "max_items" in q else None
        offset = int(q["offset"]) if "offset" in q else -1
        return _json(self.engine.get_history(max_items, offset))

    async def get_history_item(self, request):
        return _json(self.engine.history_entry(request.match_info["prompt_id"]))

    async def post_history(self, request):
        body = await request.json()
        if "clear" in body and body["clear"]:
            self.engine.clear_history()
        if "delete" in body:
            for prompt_id in body["delete"]:
                self.engine.delete_history(prompt_id)
        return web.Response(status=200)

    # --- files ---------------------------------------------------------------------
    async def get_view(self, request):
        q = request.query
        if "filename" not in q:
            return web.Response(status=404)
        status, path = self.sim.storage.view_path(q["filename"], q.get("type"), q.get("subfolder"))
        if path is None:
            return web.Response(status=status)
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype in ("text/html", "text/javascript", "application/javascript", "text/css"):
            ctype = "application/octet-stream"  # never let a browser run it
        with open(path, "rb") as fh:
            data = fh.read()
        return web.Response(body=data, content_type=ctype,
                            headers={"Content-Disposition": f'filename="{name}"'})

    async def upload_image(self, request):
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file") or not image.filename:
            return web.Response(status=400)
        status, reply = self.sim.storage.save_upload(
            image.file.read(), image.filename, post.get("type"), post.get("subfolder", ""),
            post.get("overwrite"))
        return _json(reply) if reply is not None else web.Response(status=status)

    # --- descriptive routes -------------------------------------------------------------
    async def object_info(self, request):
        files = self.sim.storage.input_files()
        return _json({name: node.info(files) for name, node in NODES.items() if name not in self.sim.lacks})

    async def object_info_one(self, request):
        node = NODES.get(request.match_info["node_class"])
        node = None if node is None or node.name in self.sim.lacks else node
        return _json({node.name: node.info(self.sim.storage.input_files())} if node else {})

    async def system_stats(self, request):
        return _json({
            "system": {
                "os": os.name, "ram_total": 0, "ram_free": 0, "comfyui_version": VERSION,
                "required_frontend_version": "1.28.6", "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95", "python_version": sys.version,
                "pytorch_version": "none (comfy-cli simulator)", "embedded_python": False,
                "argv": ["comfy-cli", "sim"],
            },
            "devices": [{"name": "cpu (simulated)", "type": "cpu", "index": None, "vram_total": 0,
                         "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0}],
        })

    async def features(self, request):
        return _json(SERVER_FEATURES)

    async def empty_list(self, request):
        return _json([])
