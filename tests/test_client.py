"""client.Client.submit against real loopback sockets: every way a POST /prompt can fail is
sorted into the one exception tree, with `sent` telling whether the server may have it."""

import json
import socket
import threading

import pytest

from comfy_cli.client import Client, Rejected, TlsError
from comfy_cli.errors import ServerError, Unreachable

GRAPH = {"1": {"class_type": "TestSteps", "inputs": {"steps": 1}}}


class OneShot:
    """A TCP server that accepts connections and answers each with `handle(conn, request)`."""

    def __init__(self, handle, raw=False):
        self.handle = handle
        self.raw = raw  # call handle at once, without reading a request
        self.requests = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                if self.raw:
                    conn.recv(65536)
                    self.handle(conn)
                    continue
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append((head, body))
                self.handle(conn)

    def close(self):
        self.srv.close()


def answer(status, body, content_type="application/json"):
    def handle(conn):
        data = body.encode()
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
    return handle


@pytest.fixture
def server(request):
    made = []

    def make(handle, raw=False):
        made.append(OneShot(handle, raw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_accepted_answer_and_the_request_sent(server):
    srv = server(answer("200 OK", '{"prompt_id": "p1", "number": 7, "node_errors": {}}'))
    client = Client(f"http://127.0.0.1:{srv.port}", token="tok-123", headers=["X-Team: render"])
    assert client.submit(GRAPH, "cid", "p1") == {"prompt_id": "p1", "number": 7, "node_errors": {}}
    head, body = srv.requests[0]
    assert head.startswith(b"POST /prompt HTTP/1.1")
    lines = head.lower().split(b"\r\n")
    assert b"authorization: bearer tok-123" in lines and b"x-team: render" in lines
    assert b"content-type: application/json" in lines
    assert json.loads(body) == {"prompt": GRAPH, "client_id": "cid", "prompt_id": "p1"}


def test_a_400_is_rejected_with_the_servers_reason(server):
    srv = server(answer("400 Bad Request", '{"error": {"type": "prompt_outputs_failed_validation", '
                                           '"message": "Prompt outputs failed validation"}, "node_errors": {}}'))
    with pytest.raises(Rejected) as err:
        Client(f"http://127.0.0.1:{srv.port}").submit(GRAPH, "cid", "p1")
    assert str(err.value) == "Prompt outputs failed validation" and err.value.status == 400


@pytest.mark.parametrize("status, text", [("503 Service Unavailable", "HTTP 503"), ("500 Internal Server Error",
                                                                                    "HTTP 500")])
def test_server_errors_keep_their_status(server, status, text):
    srv = server(answer(status, "<html>busy</html>", "text/html"))
    with pytest.raises(ServerError) as err:
        Client(f"http://127.0.0.1:{srv.port}").submit(GRAPH, "cid", "p1")
    assert text in str(err.value) and err.value.status == int(status[:3])


def test_a_409_for_our_prompt_id_means_the_server_has_it():
    from comfy_cli.sim import SimServer

    from pathlib import Path

    graph = json.loads((Path(__file__).resolve().parents[1] / "examples" / "steps.json").read_text())
    with SimServer(conflict=True) as sim:
        client = Client(sim.url)
        first = client.submit(graph, "cid", "p-409")
        assert first["prompt_id"] == "p-409" and isinstance(first["number"], int)
        # The same prompt again (an earlier copy whose answer was lost had got there): a newer
        # server answers 409, and that is "it is there", not a refusal.
        assert client.submit(graph, "cid", "p-409") == {"prompt_id": "p-409", "number": None, "node_errors": {}}
        assert sim.conflicts == ["p-409"] and sim.submissions == ["p-409"]
        client.close()


def test_an_answer_that_is_not_json(server):
    srv = server(answer("200 OK", "<html>hello</html>", "text/html"))
    with pytest.raises(ServerError, match=r"answer is not JSON \(text/html\)"):
        Client(f"http://127.0.0.1:{srv.port}").submit(GRAPH, "cid", "p1")


def test_refused_connection_was_surely_not_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(Unreachable) as err:
            Client(f"http://127.0.0.1:{port}").submit(GRAPH, "cid", "p1")
    assert err.value.sent is False


def test_connection_closed_after_the_request_may_have_been_sent(server):
    srv = server(lambda conn: None)  # reads the whole request, then hangs up without a word
    with pytest.raises(Unreachable) as err:
        Client(f"http://127.0.0.1:{srv.port}").submit(GRAPH, "cid", "p1")
    assert err.value.sent is True and len(srv.requests) == 1


def test_no_answer_in_time(server):
    done = threading.Event()
    srv = server(lambda conn: done.wait(5))
    try:
        with pytest.raises(ServerError, match="no answer within 0.3 s"):
            Client(f"http://127.0.0.1:{srv.port}", timeout=0.3).submit(GRAPH, "cid", "p1")
    finally:
        done.set()


def test_tls_to_a_plain_http_server_is_a_tls_error(server):
    srv = server(answer("400 Bad Request", "plain HTTP here"), raw=True)  # answers the TLS hello in clear
    with pytest.raises(TlsError, match="TLS error"):
        Client(f"https://127.0.0.1:{srv.port}").submit(GRAPH, "cid", "p1")


def test_keeps_one_connection_for_many_posts(sim):
    client = Client(sim.url)
    for i in range(3):
        graph = {"1": {"class_type": "TestSteps", "inputs": {"steps": 1, "seconds_per_step": 0.0, "seed": 900 + i}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}}}
        assert client.submit(graph, "cid", f"keep-{i}")["prompt_id"] == f"keep-{i}"
    pool = next(iter(client._routes.values()))[0]
    assert pool.num_connections == 1  # kept alive, not one connection per prompt
    client.close()


def test_a_one_shot_get_waits_as_the_get_backoff_says_and_no_more():
    from comfy_cli import backoff
    from comfy_cli.client import get_wait

    busy = ServerError("HTTP 503", status=503)
    assert [get_wait(busy, n) for n in range(1, backoff.GET.tries + 2)] == backoff.GET.waits() + [None]  # then it is raised
    assert get_wait(Unreachable("reset", sent=True), 1) == backoff.GET.delay(1)
    assert get_wait(Unreachable("refused", sent=False), 1) is None  # a retry will not change it
    assert get_wait(ServerError("HTTP 404", status=404), 1) is None
    assert get_wait(busy, 1, backoff.Backoff(first=0.0, tries=0)) is None


def test_a_one_shot_get_is_tried_again_after_a_503(server):
    answers = [answer("503 Service Unavailable", "busy", "text/plain")] * 2 + [answer("200 OK", '{"queue_running": [], '
                                                                                          '"queue_pending": []}')]
    srv = server(lambda conn: answers.pop(0)(conn))
    client = Client(f"http://127.0.0.1:{srv.port}")
    assert client.queue() == ([], [])
    assert len(srv.requests) == 3
    answers[:] = [answer("503 Service Unavailable", "busy", "text/plain")]
    with pytest.raises(ServerError) as err:
        client.queue(retry=False)  # in a run: once, the supervisor decides
    assert err.value.status == 503 and len(srv.requests) == 4
