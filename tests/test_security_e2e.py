"""Hostile input and security, end to end: bad files and options, broken or hostile servers,
tokens, basic auth, TLS, and secrets that must never show in any output."""

import json
import os
import shutil
import subprocess
import time

import pytest
from aiohttp import web

from comfy_cli.sim import Faults, SimServer
from test_run_e2e import cli, no_traceback, start, workflow

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cr3t-T0KEN-value"


def bad_file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    return str(path)


def _unreadable(tmp_path):
    path = tmp_path / "locked.json"
    path.write_text("{}")
    path.chmod(0)
    return str(path)


BAD_FILES = [
    ("missing.json", None, "no such file"),
    ("empty.json", "", "the file is empty"),
    ("blank.json", "  \n ", "the file is empty"),
    ("latin1.json", b'{"1": {"class_type": "A\xe9", "inputs": {}}}', "not UTF-8"),
    ("broken.json", '{"1": {"class_type": "A",\n  "inputs": {}', "invalid JSON at line 2 column"),
    ("array.json", "[]", "expected a JSON object of nodes, got an array"),
    ("string.json", '"hello"', "expected a JSON object of nodes, got a string"),
    ("nothing.json", "{}", "the workflow has no nodes"),
    ("ui.json", '{"nodes": [], "links": [], "version": 0.4}', "UI-format workflow has no nodes"),
    ("noclass.json", '{"1": {"inputs": {}}}', "node '1': missing 'class_type'"),
    ("badclass.json", '{"1": {"class_type": 7, "inputs": {}}}', "node '1': missing 'class_type'"),
    ("node-list.json", '{"1": [1, 2]}', "node '1': expected an object"),
    ("inputs.json", '{"1": {"class_type": "A", "inputs": [1]}}', "'inputs' must be an object"),
    ("link.json", '{"1": {"class_type": "A", "inputs": {"x": ["2", 0]}}}', "links to node '2'"),
    ("index.json", '{"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {"x": ["1", -1]}}}',
     "bad output index -1"),
    ("numeric-link.json", '{"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {"x": [1, 0]}}}',
     "links to node 1 with a number"),
    ("deep.json", "[" * 100000 + "]" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_workflow_files(tmp_path, name, content, message):
    path = bad_file(tmp_path, name, content)
    started = time.monotonic()
    proc = cli("run", path, "--url", "http://127.0.0.1:9")
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and path in lines[0] and message in lines[0], proc.stderr
    no_traceback(proc)
    assert elapsed < 10  # a hang guard: it answers at once (about 0.3 s here)


def test_unreadable_file(tmp_path):
    path = _unreadable(tmp_path)
    try:
        open(path).close()
    except PermissionError:
        pass
    else:
        pytest.skip(f"a mode-000 file is readable here (running as uid {os.geteuid()}: root, or a process with "
                    "CAP_DAC_OVERRIDE, reads anything), so 'permission denied' cannot be produced")
    proc = cli("run", path, "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2 and "permission denied" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    no_traceback(proc)


def test_directory_and_too_large(tmp_path):
    assert "is a directory" in cli("run", str(tmp_path), "--url", "http://127.0.0.1:9").stderr
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(33 * 1024 * 1024)
    proc = cli("run", str(big), "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2 and "too large to be a workflow" in proc.stderr
    no_traceback(proc)


BAD_OPTIONS = [
    (["--url", "ftp://host"], "--url ftp://host: the scheme must be http or https"),
    (["--url", "http://:80"], "no host name"),
    (["--url", "http://host:99999"], "bad port"),
    (["--url", "http://host/x?y=1"], "must not have a query"),
    (["--set", "nodot=1"], "--set 'nodot=1': expected NODE.INPUT=VALUE"),
    (["--set", "1.steps"], "expected NODE.INPUT=VALUE"),
    (["--input", "1.image=/no/such.png"], "--input '1.image=/no/such.png': /no/such.png: no such file"),
    (["--header", "no colon"], "--header"),
    (["--header", "X-Ok:"], "--header X-Ok: the value is empty"),
    (["--header", "Bad Name: v"], "expected 'Name: value'"),
    (["--token", "has space"], "--token: empty, or has spaces"),
    (["--ca-bundle", "/no/ca.pem"], "--ca-bundle /no/ca.pem: no such file"),
    (["--count", "0"], "--count"),
    (["--timeout", "-1"], "--timeout"),
    (["--progress", "fancy"], "--progress"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options(tmp_path, args, message):
    started = time.monotonic()
    proc = cli("run", workflow(tmp_path, "steps"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    no_traceback(proc)
    assert time.monotonic() - started < 10


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("run", bad_file(tmp_path, "e.json", ""), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


# ---- credentials ------------------------------------------------------------------------

def test_token_required(tmp_path):
    with SimServer(token=TOKEN) as sim:
        denied = cli("run", workflow(tmp_path, "steps"), "--url", sim.url)
        assert denied.returncode == 4
        assert "HTTP 401: access denied; check --token" in denied.stderr
        ok = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--token", TOKEN)
        assert ok.returncode == 0, ok.stderr
        env = cli("run", workflow(tmp_path, "steps", **{"1__seed": 3}), "--url", sim.url,
                  env={"COMFY_TOKEN": TOKEN})
        assert env.returncode == 0, env.stderr
        # The token went on the websocket handshake too (the simulator refuses a socket without it).
        assert any(h.get("Authorization") == "Bearer " + TOKEN for m, p, h in sim.seen_headers if p == "/ws")


def test_token_never_shows_in_any_output(tmp_path):
    """Every channel: stdout, stderr, --json, --events, --verbose, --debug, errors, JUnit."""

    class Echo(Faults):
        # A hostile server that echoes the Authorization header back in its error messages. It
        # refuses before queueing, as ComfyUI does (refusing after would let the prompt run).
        def on_http(self, request):
            if request.path == "/prompt" and request.method == "POST":
                return web.json_response({"error": {"type": "x", "message": "bad " + request.headers.get(
                    "Authorization", ""), "details": "", "extra_info": {}}, "node_errors": {}}, status=400)
            return None

    with SimServer(token=TOKEN) as sim, SimServer(token=TOKEN, faults=Echo()) as echo:
        outputs = []
        junit = tmp_path / "r.xml"
        for args in (["--json", "-v", "--debug", "--junit", str(junit)], ["--events", "--progress", "lines"]):
            proc = cli("run", workflow(tmp_path, "steps"), workflow(tmp_path, "fail"), "--url", sim.url,
                       "--token", TOKEN, "--header", f"X-Api-Key: {TOKEN}", *args)
            assert proc.returncode == 1, proc.stderr
            outputs += [proc.stdout, proc.stderr]
        outputs.append(junit.read_text())
        rejected = cli("run", workflow(tmp_path, "steps"), "--url", echo.url, "--token", TOKEN, "--json", "--debug")
        assert rejected.returncode == 2 and "rejected by the server: bad ***" in rejected.stderr
        outputs += [rejected.stdout, rejected.stderr]
        wrong = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--token", TOKEN + "x", "--debug")
        assert wrong.returncode == 4
        outputs += [wrong.stdout, wrong.stderr]
        status = cli("status", "--url", sim.url, "--token", TOKEN, "--json")
        assert status.returncode == 0
        outputs += [status.stdout, status.stderr]
        for text in outputs:
            assert TOKEN not in text


def test_no_secret_and_no_crash_on_an_ascii_terminal(tmp_path):
    """With stdout encoded as ASCII, click's echo writes to the byte buffer underneath any
    wrapper: every line must still go through the redacting writer, and text the encoding
    lacks must be escaped (valid JSON for --json), never a crash."""

    class Echo(Faults):  # a hostile server that puts the Authorization header in its version
        def on_http(self, request):
            if request.path.endswith("/system_stats"):
                return web.json_response({"system": {"comfyui_version": "v " + request.headers.get(
                    "Authorization", ""), "python_version": "3", "os": "x", "embedded_python": False,
                    "ram_total": 1, "ram_free": 1}, "devices": []})
            return None

    ascii_env = {"PYTHONIOENCODING": "ascii"}
    named = tmp_path / "café.json"
    shutil.copy(workflow(tmp_path, "steps", **{"1__steps": 1}), named)
    with SimServer(token=TOKEN, faults=Echo()) as sim:
        for extra in ([], ["--json"]):
            status = cli("status", "--url", sim.url, "--token", TOKEN, *extra, env=ascii_env)
            assert status.returncode == 0, status.stderr
            assert TOKEN not in status.stdout + status.stderr and "v ***" in status.stdout
        for extra in (["--json"], ["--events"], []):
            run = cli("run", str(named), "--url", sim.url, "--token", TOKEN, *extra, env=ascii_env)
            assert run.returncode == 0, run.stderr
            assert TOKEN not in run.stdout + run.stderr
            assert "caf\\xe9: done" in run.stderr
            if extra:
                assert json.loads(run.stdout.splitlines()[-1] if extra == ["--events"] else run.stdout)[
                    "prompts"][0]["name"] == "café"
    converted = cli("convert", str(named), env=ascii_env)
    assert converted.returncode == 0 and json.loads(converted.stdout)


def test_basic_auth_from_the_url(tmp_path):
    with SimServer(basic=("ann", "pa:ss/word")) as sim:
        host = sim.url.split("://")[1]
        url = f"http://ann:pa%3Ass%2Fword@{host}"
        proc = cli("run", workflow(tmp_path, "steps"), "--url", url, "--json")
        assert proc.returncode == 0, proc.stderr
        assert "pa:ss/word" not in proc.stdout + proc.stderr and "pa%3Ass" not in proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["server"] == sim.url  # printed without the credentials
        denied = cli("run", workflow(tmp_path, "steps"), "--url", sim.url)
        assert denied.returncode == 4 and "access denied" in denied.stderr


def test_custom_headers_on_http_and_websocket(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--header", "X-Team: render",
               "--header", "X-Trace:  42 ")
    assert proc.returncode == 0, proc.stderr
    for method, path, headers in sim.seen_headers:
        assert headers.get("X-Team") == "render" and headers.get("X-Trace") == "42", (method, path)


# ---- TLS ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True, timeout=60)
    return str(crt), str(key)


def test_tls_checks_certificates(cert, tmp_path):
    with SimServer(tls=cert) as sim:
        assert sim.url.startswith("https://")
        untrusted = cli("run", workflow(tmp_path, "steps"), "--url", sim.url)
        assert untrusted.returncode == 4
        assert "TLS error" in untrusted.stderr and "--ca-bundle" in untrusted.stderr
        no_traceback(untrusted)
        trusted = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--ca-bundle", cert[0], "--json")
        assert trusted.returncode == 0, trusted.stderr
        assert json.loads(trusted.stdout)["prompts"][0]["outputs"][0]["url"].startswith(sim.url + "/view?")
        insecure = cli("run", workflow(tmp_path, "steps", **{"1__seed": 8}), "--url", sim.url, "--insecure")
        assert insecure.returncode == 0, insecure.stderr
        assert "warning: --insecure: TLS certificates are not checked" in insecure.stderr


# ---- broken or hostile servers ------------------------------------------------------------

class HtmlProxy(Faults):
    """A reverse proxy that answers its own HTML error page to some routes."""

    def __init__(self, paths, status=502):
        self.paths, self.status = paths, status

    def on_http(self, request):
        if request.path in self.paths:
            return web.Response(status=self.status, text="<html><body>Bad Gateway</body></html>",
                                content_type="text/html")
        return None


def test_html_error_page_from_a_proxy(tmp_path):
    with SimServer(faults=HtmlProxy({"/prompt"}, 500)) as sim:
        proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--json")
        assert proc.returncode == 4
        assert json.loads(proc.stdout)["prompts"][0]["error"]["message"].endswith("HTTP 500 Internal Server Error")
        no_traceback(proc)
    with SimServer(faults=HtmlProxy({"/system_stats", "/queue"})) as sim:
        proc = cli("status", "--url", sim.url)
        assert proc.returncode == 4 and "HTTP 502" in proc.stderr
        no_traceback(proc)


class WrongShapes(Faults):
    """JSON of the wrong shape where the client expects objects."""

    def after_http(self, request, response):
        if request.path == "/prompt" and request.method == "POST":
            return web.json_response(["not", "an", "object"])
        return None


def test_json_of_the_wrong_shape(tmp_path):
    # The answer makes no sense, so comfy-cli checks whether the server has the prompt before
    # anything else: it does, and the run goes on.
    with SimServer(faults=WrongShapes()) as sim:
        proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--json", "--deadline", "10")
        assert proc.returncode == 0, proc.stderr
        assert "unexpected answer" in proc.stderr and "the server has the prompt" in proc.stderr
        assert len(sim.submissions) == 1


def test_hostile_websocket_frames_are_ignored(sim, tmp_path):
    proc = start("run", workflow(tmp_path, "steps", **{"1__steps": 150}), "--url", sim.url, "--json")
    try:
        assert sim.wait_for(lambda s: s.running() is not None and s.clients(), 15)
        pid, client = sim.submissions[0], sim.clients()[0]
        junk = ["not json", "[]", "{}", '{"type": 5}', '{"data": {}}', '{"type": "mystery", "data": 1}',
                json.dumps({"type": "progress", "data": {"value": "5", "max": None, "prompt_id": pid}}),
                json.dumps({"type": "executing", "data": {"node": ["x"], "prompt_id": pid}}),
                json.dumps({"type": "execution_error", "data": {"prompt_id": 7}}),
                json.dumps({"type": "executed", "data": {"prompt_id": pid, "node": "2", "output": "x"}}),
                json.dumps({"type": "progress_state", "data": {"prompt_id": pid, "nodes": [1]}}),
                "{" * 50000]
        for frame in junk:
            sim.inject(frame, client)
        sim.inject(b"\x00\x00\x00\x01" + os.urandom(16) * (1 << 20), client)  # a 16 MB binary frame
        out, err = proc.communicate(timeout=40)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    p = json.loads(out)["prompts"][0]
    assert p["status"] == "success" and p["outputs"][0]["filename"] == "steps_00001_.png"
    assert "Traceback" not in err


def test_secrets_with_quotes_and_short_passwords(tmp_path):
    tricky = 'ab"c\\d-long-secret'
    with SimServer(token=tricky) as sim:
        proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--token", tricky, "--json", "--debug")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert json.dumps(tricky)[1:-1] not in proc.stdout and tricky not in proc.stdout + proc.stderr
        assert doc["exit_code"] == 0
    with SimServer(basic=("ann", "0")) as sim:
        host = sim.url.split("://")[1]
        proc = cli("run", workflow(tmp_path, "steps"), "--url", f"http://ann:0@{host}", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["exit_code"] == 0  # a one-digit password does not blank out digits


def test_simulate_wins_over_comfy_url(tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--simulate", env={"COMFY_URL": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr
