"""The browser app's session: unlock with the vault's passphrase, learn the CSRF token,
lock again (node/session.py has the rules)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StrictStr

from veilstream.node.session import cookie_name
from veilstream.vault import WrongPassphrase

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

log = logging.getLogger("veilstream.node.session")


class Unlock(BaseModel):
    passphrase: StrictStr


def router(node: Node) -> APIRouter:
    api = APIRouter()
    tries = asyncio.Lock()  # one passphrase check at a time: parallel guesses wait their turn, and the throttle

    @api.post("/session", status_code=201)
    async def unlock(body: Unlock) -> JSONResponse:
        """Unlock the app with the vault's passphrase: a session cookie (HttpOnly,
        SameSite=Strict) and the CSRF token to send as `X-CSRF-Token` with every change."""
        throttle = node.unlock_throttle
        async with tries:
            wait = throttle.wait_s(time.monotonic())
            if wait > 0:
                retry = math.ceil(wait)
                return JSONResponse({"error": f"too many wrong passphrases: try again in {retry} s",
                                     "retry_after_s": retry}, status_code=429, headers={"Retry-After": str(retry)})
            try:
                await asyncio.to_thread(node.vault.check_passphrase, body.passphrase)
            except WrongPassphrase:
                throttle.failed(time.monotonic())
                log.warning("a wrong passphrase for the app (%d in a row)", throttle.failures)
                return JSONResponse({"error": "wrong passphrase"}, status_code=401)
            throttle.succeeded()
        cookie, session = node.sessions.open(time.monotonic())
        answer = JSONResponse({"csrf_token": session.csrf, "idle_timeout_s": node.sessions.idle_s},
                              status_code=201)
        answer.set_cookie(cookie_name(node.api_port), cookie, max_age=int(node.sessions.max_s), path="/",
                          httponly=True, samesite="strict")
        log.info("the app was unlocked (%d sessions open)", len(node.sessions))
        return answer

    @api.get("/session")
    async def session_state(request: Request) -> dict[str, Any]:
        """How this request is let in; a session's CSRF token (a reloaded page asks again)."""
        session = request.state.session
        if session is None:
            return {"via": "token"}
        return {"via": "session", "csrf_token": session.csrf}

    @api.delete("/session")
    async def lock(request: Request) -> JSONResponse:
        """End this browser's session."""
        name = cookie_name(node.api_port)
        node.sessions.close(request.cookies.get(name))
        answer = JSONResponse({"locked": True})
        answer.delete_cookie(name, path="/", httponly=True, samesite="strict")
        return answer

    return api
