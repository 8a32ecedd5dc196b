"""The SuperLink's public face: passes on the Fleet API, the only API devices use, and nothing else.

    .venv/bin/python scripts/deployment/fleet_gateway.py --listen 0.0.0.0:9093 --superlink 127.0.0.1:9092 \\
        --certs ~/fednextword-deploy/certs

Why: Flower 1.42 serves the Fleet, Control and Runtime APIs on one port, and the open-source
SuperLink has no Control API authentication. Whoever reaches that port holding the CA certificate
(every device has it) could list runs, register devices and start a run whose ClientApp reads
`data-path` and sends the text away. So the SuperLink listens on 127.0.0.1 only, where the
operator's `flwr` reaches it (on the server itself, or through `ssh -L`), and this gateway serves
the public address with the same TLS certificate: requests under /v1/fleet/ (and /health) go to
the SuperLink unchanged (SuperNode authentication is end to end: a device signs its requests);
everything else gets 403. Started by `scripts/deployment/deploy.py superlink --public HOST:PORT`.

The check is on the request as received (the ASGI scope's raw_path) and on the request as it will
be sent (built once with httpx's build_request, whose URL parsing removes dot segments), and the
checked request is the one sent. A path passes only if it is exactly /health, or /v1/fleet/
followed by segments of letters, digits, `-` and `_` (every Fleet API path is /v1/fleet/<name>).
So `..` and `.` segments, `%2e`/`%2f`/`%5c` in either case (or any `%`), backslashes and `//`
are refused: `/v1/fleet/../control/list-runs` once reached the SuperLink as
/v1/control/list-runs (security review B1; tests/unit/test_fleet_gateway.py sends such paths raw).

Why not nginx or Caddy in front: they would do the same, but this gateway runs from the project's
own venv on any server that runs the SuperLink, and CI (Python 3.11 and pip only) tests exactly
the front that is shipped; an nginx config that CI cannot run would be an untested copy.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import ssl
import sys
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

HEALTH = "/health"
FLEET_PATH = re.compile(r"/v1/fleet(/[A-Za-z0-9_-]+)+")
# Headers that belong to one connection, not to the request; and those httpx recomputes.
_NOT_PASSED_ON = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                  "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
_FORWARDING = {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
               "x-real-ip"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def refusal(path: str) -> str | None:
    """Why `path` may not reach the SuperLink, or None when it may."""
    if "\\" in path:
        return "a backslash"
    if re.search(r"%(2e|2f|5c)", path, re.IGNORECASE):
        return "an encoded dot, slash or backslash"
    if "//" in path:
        return "an empty segment (//)"
    if {".", ".."} & set(path.split("/")):
        return "a dot segment"
    if path != HEALTH and not FLEET_PATH.fullmatch(path):
        return "not a Fleet API path"
    return None


def allowed(path: str) -> bool:
    return refusal(path) is None


def gateway_app(superlink: str, ca: Path | None) -> Starlette:
    """`superlink` is host:port of the SuperLink (TLS checked against `ca`, or plain HTTP if None)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else False
    client = httpx.AsyncClient(base_url=f"{'https' if ca else 'http'}://{superlink}", verify=verify,
                               timeout=httpx.Timeout(300.0, connect=10.0))

    def refused(path: str, reason: str) -> Response:
        return PlainTextResponse(f"{path}: refused, {reason} (only the Fleet API and /health are served here)", 403)

    async def forward(request: Request) -> Response:
        received = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
        if reason := refusal(received):
            return refused(received, reason)
        query = request.scope["query_string"].decode("latin-1")
        # a client's own forwarding headers are dropped: the SuperLink trusts them from 127.0.0.1
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_PASSED_ON | _FORWARDING]
        headers.append(("X-Forwarded-For", request.client.host if request.client else "unknown"))
        try:
            req = client.build_request(request.method, received + (f"?{query}" if query else ""),
                                       content=await request.body(), headers=headers)
        except httpx.InvalidURL as e:
            return refused(received, f"not a valid URL ({e})")
        sent = req.url.raw_path.decode("ascii").partition("?")[0]
        if reason := refusal(req.url.path) or refusal(sent) or (sent != received and f"would be sent as {sent}"):
            return refused(received, reason)
        try:
            upstream = await client.send(req)
        except httpx.HTTPError as e:
            return PlainTextResponse(f"the SuperLink at {superlink} did not answer ({type(e).__name__})", 502)
        return Response(upstream.content, upstream.status_code,
                        headers={k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_PASSED_ON})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward, methods=METHODS)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="public host:port devices connect to")
    parser.add_argument("--superlink", required=True, help="host:port of the SuperLink, on 127.0.0.1")
    parser.add_argument("--certs", type=Path, help="folder with ca.crt, server.pem and server.key")
    parser.add_argument("--insecure", action="store_true", help="first local try only: no TLS")
    args = parser.parse_args(argv)
    if not args.insecure and not args.certs:
        parser.error("--certs is needed (or --insecure for a first local try)")
    host, _, port = args.listen.rpartition(":")
    tls = {} if args.insecure else {"ssl_certfile": str(args.certs / "server.pem"),
                                     "ssl_keyfile": str(args.certs / "server.key")}
    app = gateway_app(args.superlink, None if args.insecure else args.certs / "ca.crt")
    # proxy_headers=False: the gateway is the front; a client's X-Forwarded-For must not become its address
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="warning", proxy_headers=False, **tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
