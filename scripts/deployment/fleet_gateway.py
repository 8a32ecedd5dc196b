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
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import sys
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

FORWARDED = ("/v1/fleet/",)
HEALTH = "/health"
# Headers that belong to one connection, not to the request; and those httpx recomputes.
_NOT_PASSED_ON = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                  "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def allowed(path: str) -> bool:
    return path == HEALTH or path.startswith(FORWARDED)


def gateway_app(superlink: str, ca: Path | None) -> Starlette:
    """`superlink` is host:port of the SuperLink (TLS checked against `ca`, or plain HTTP if None)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else False
    client = httpx.AsyncClient(base_url=f"{'https' if ca else 'http'}://{superlink}", verify=verify,
                               timeout=httpx.Timeout(300.0, connect=10.0))

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not allowed(path):
            return PlainTextResponse(f"{path}: not served on this interface (only the Fleet API is public)", 403)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_PASSED_ON]
        try:
            upstream = await client.request(request.method, path, params=request.query_params,
                                            content=await request.body(), headers=headers)
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
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="warning", **tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
