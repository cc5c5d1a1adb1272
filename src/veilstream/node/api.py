"""The node's HTTP API (FastAPI), versioned under /api/v1, for its own user only.

A web page in the same browser must not act for the user (spend the wallet, read the
library), so every request must come to the node's own host name (DNS rebinding is
refused), from no foreign `Origin`, and — except `GET /api/v1/health`, the unlock
(`POST /api/v1/session`) and the public preview blobs at `/<sha256>` — be the user's: carry
the node's API token (`Authorization: Bearer`, the token in `$VEIL_HOME/node/api-token`,
mode 0600, new at every start), or the browser app's session cookie, and then with any
request that changes something the session's CSRF token (`X-CSRF-Token`; node/session.py).
Answers are JSON; errors are `{"error": "..."}` with a status.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from veilstream.errors import VeilError
from veilstream.node.routes import blobs, contents, events, feed, limits, metrics, session, settings, streams, wallet
from veilstream.node.session import CSRF_HEADER, SAFE_METHODS, cookie_name, csrf_matches

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

API_PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})
UNLOCK = ("POST", f"{API_PREFIX}/session")


def is_open(path: str, method: str = "GET") -> bool:
    """What needs no token: health, the unlock, and the public preview blobs (`/<sha256>`)."""
    return path in OPEN_PATHS or (method, path) == UNLOCK or blobs.is_blob_path(path)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """`Host` header values that name this node: its address and, on loopback, localhost."""
    names = {host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


def create_app(node: Node) -> FastAPI:
    """The API over a running node."""
    app = FastAPI(title="Veilstream node", openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        hosts = node.api_hosts
        host = request.headers.get("host", "")
        if host not in hosts:
            return refuse(403, f"this node answers to {sorted(hosts)[0]} only, not Host {host!r}")
        origin = request.headers.get("origin")
        if origin is not None and origin.split("//", 1)[-1] not in hosts:
            return refuse(403, f"requests from {origin!r} are refused: only the node's own pages may call it")
        request.state.session = None
        if is_open(request.url.path, request.method) or _has_token(request, node.api_token):
            return await call_next(request)
        session = node.sessions.find(request.cookies.get(cookie_name(node.api_port)), time.monotonic())
        if session is None:
            return refuse(401, "a valid API token is needed (Authorization: Bearer <$VEIL_HOME/node/api-token>), "
                               "or the app's session: unlock it with the passphrase")
        if request.method not in SAFE_METHODS and not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            return refuse(403, "a change from the app needs its CSRF token in X-CSRF-Token")
        request.state.session = session
        return await call_next(request)

    @app.exception_handler(VeilError)
    async def user_error(request: Request, exc: VeilError):
        return refuse(getattr(exc, "http_status", 400), str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):  # errors are {"error": ...} here too
        return refuse(422, "; ".join(_validation_message(error) for error in exc.errors()))

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{API_PREFIX}/status")
    async def node_status() -> dict[str, Any]:
        """Peers, contents seeding and streaming, earnings, chain connectivity."""
        return node.status()

    for module in (session, contents, limits, settings, streams, wallet, feed, events, metrics):
        app.include_router(module.router(node), prefix=API_PREFIX)
    app.include_router(blobs.router(node))  # at the root, as Blossom servers serve them
    return app


def _validation_message(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "the request"
    return f"{where}: {error.get('msg', 'not valid')}"


def _has_token(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def refuse(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)
