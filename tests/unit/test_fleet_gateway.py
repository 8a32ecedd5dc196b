"""The Fleet gateway (scripts/deployment/fleet_gateway.py) lets through only the Fleet API and
/health: no dot segment, encoded dot or slash, backslash or `//` may carry a request past its
check to the SuperLink's Control API (security review, finding B1). The requests are written raw
on a socket, so no client normalises the path first, and a stub SuperLink records every path
that reaches it."""

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# FLEET_GATEWAY_UNDER_TEST: another copy of the gateway to run these tests against (e.g. an old one).
GATEWAY = Path(os.environ.get("FLEET_GATEWAY_UNDER_TEST", ROOT / "scripts" / "deployment" / "fleet_gateway.py"))
START_DEADLINE = 60  # seconds; a slow CI machine may take several times longer than a laptop

REFUSED = [
    "/v1/control/list-runs",
    "/v1/fleet/../control/list-runs",
    "/v1/fleet/%2e%2e/control/list-runs",
    "/v1/fleet/%2E%2E/control/list-runs",
    "/v1/fleet/..%2fcontrol/list-runs",
    "/v1/fleet/%2fcontrol",
    "//v1/fleet/x",
    "/v1/fleet//x",
    "/v1/fleet/\\..\\control",
    "/v1/fleet/./x",
    "/v1/fleet/..",
    "/v1/fleet/%5c..%5ccontrol",
    "/health/../v1/control/list-runs",
    "/v1/fleet/%252e%252e/control/list-runs",
]


class _Stub(BaseHTTPRequestHandler):
    """A SuperLink stand-in: records (method, path as received, body) and answers 200."""

    seen: list[tuple[str, str, bytes]]
    heard: list[dict]  # the headers of each request, in the same order

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, body))
        self.heard.append({k.lower(): v for k, v in self.headers.items()})
        reply = f"stub saw {self.command} {self.path} ({len(body)} bytes)".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stub():
    handler = type("Stub", (_Stub,), {"seen": [], "heard": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.seen, handler.heard
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(stub, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(GATEWAY), "--insecure", "--listen", f"127.0.0.1:{port}",
                                 "--superlink", f"127.0.0.1:{stub[0]}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the gateway exited with code {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the gateway did not listen within {START_DEADLINE} s:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def raw_request(port: int, method: str, target: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
    """Send `target` byte for byte as the request target; return the status and the body."""
    head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _fleet_or_health(path: str) -> bool:
    return path == "/health" or (path.startswith("/v1/fleet/") and "//" not in path and "\\" not in path
                                 and "%" not in path and not {".", ".."} & set(path.split("/")))


@pytest.mark.parametrize("target", REFUSED)
def test_a_path_that_could_leave_the_fleet_api_is_refused_and_never_forwarded(stub, gateway, target):
    before = len(stub[1])
    for method in ("GET", "POST"):
        status, body = raw_request(gateway, method, target, b"x" if method == "POST" else b"")
        assert status == 403, (method, target, status, body)
        assert target.encode() in body  # the one-line reason names the path
    assert stub[1][before:] == []  # the SuperLink never heard of it


def test_fleet_requests_and_health_reach_the_superlink_unchanged(stub, gateway):
    payload = bytes(range(256)) * 4  # a protobuf body is binary
    status, body = raw_request(gateway, "POST", "/v1/fleet/pull-messages", payload,
                               headers="Content-Type: application/protobuf\r\n")
    assert (status, body) == (200, b"stub saw POST /v1/fleet/pull-messages (1024 bytes)")
    assert ("POST", "/v1/fleet/pull-messages", payload) in stub[1]
    status, body = raw_request(gateway, "GET", "/health")
    assert (status, body) == (200, b"stub saw GET /health (0 bytes)")
    assert ("GET", "/health", b"") in stub[1]


def test_the_superlink_saw_only_fleet_and_health_paths(stub, gateway):
    """After every request above (and a query string that looks like a path, which is no path)."""
    status, _ = raw_request(gateway, "POST", "/v1/fleet/get-run?next=/../control/list-runs", b"x")
    assert status == 200 and stub[1][-1][1] == "/v1/fleet/get-run?next=/../control/list-runs"
    assert stub[1] and all(_fleet_or_health(path.partition("?")[0]) for _, path, _ in stub[1]), stub[1]


def test_a_clients_forwarding_headers_are_replaced_by_the_real_peer(stub, gateway):
    """Review G1: the gateway passed a client's X-Forwarded-* on, and the SuperLink trusts them from
    127.0.0.1, so a device could put any address in the SuperLink's records."""
    status, _ = raw_request(gateway, "POST", "/v1/fleet/ping", b"x",
                            headers="X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n"
                                    "X-Real-IP: 203.0.113.9\r\nX-Forwarded-Host: evil\r\n")
    assert status == 200
    heard = stub[2][-1]
    assert "203.0.113.9" not in str(heard) and "evil" not in str(heard)
    assert heard["x-forwarded-for"] == "127.0.0.1"  # the peer the gateway saw
