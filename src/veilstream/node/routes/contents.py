"""What the node holds and seeds: list, detail, remove, pause and resume; and publishing a
file by upload.

`POST /api/v1/contents` takes the file itself as the request body (any Content-Type; sent
whole or chunked) and the publish options as query parameters, as `veil publish` takes
them: `name` (the true name kept in the encrypted metadata; its extension also guesses the
MIME type), `mime`, `price` (with its unit: `1000gwei`), `seeder_share` (`20%`),
`slice_size` (`1MiB`), `suite`, `tracker` (repeatable). The body is streamed to a file in
the vault's scratch space (never held in memory), at most `node.upload_max_bytes`; a client
that goes away mid-upload, a full disk or a refusal leaves nothing behind. Once the body is
in, the answer is 202 with a `publish_id`; the publish goes on off the event loop, its
progress on the live stream (`publish` events) and at `GET /api/v1/publishes/{id}`, and
ends with the new content seeding (its keys on sale) or with an `error`.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from veilstream.content import CipherSuite
from veilstream.errors import VeilError
from veilstream.node.publishing import DEFAULT_SEEDER_SHARE, DEFAULT_SLICE_SIZE, UPLOADING, needs_remux, publish_options
from veilstream.vault.atomic import DISK_FULL_ERRNOS

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

UPLOAD_NAME = "upload"  # the file's name when the client gives none
MAX_NAME_CHARS = 255  # a file name's limit on common file systems
# The route reads the body itself, as a stream: FastAPI is told what it is for the OpenAPI document.
UPLOAD_BODY = {"required": True, "description": "The file to publish, as it is.",
               "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


class UploadError(VeilError):
    pass


class UploadTooLarge(UploadError):
    http_status = 413


class DiskFull(UploadError):
    http_status = 507


class UnknownPublish(UploadError):
    http_status = 404


def scratch_name(name: str) -> str:
    """A safe file name for the upload on disk that keeps the extension (the MIME type is
    guessed from it)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name).lstrip(".")
    return base[-100:] or UPLOAD_NAME


def router(node: Node) -> APIRouter:
    api = APIRouter()

    @api.get("/contents")
    async def list_contents() -> dict[str, Any]:
        """Every content this node holds and seeds: its role, manifest, seeding figures, and
        (for its creator) what its encrypted metadata says."""
        return {"contents": node.contents()}

    @api.get("/contents/{content_id}")
    async def content(content_id: str) -> dict[str, Any]:
        return node.content(content_id)

    @api.delete("/contents/{content_id}")
    async def remove(content_id: str) -> dict[str, Any]:
        """Stop seeding the content and remove its ciphertext and torrent from the vault (its
        keys stay). Refused (409) while a stream of it is open or cheques for it are uncashed."""
        return await node.remove_content(content_id)

    @api.post("/contents/{content_id}/pause")
    async def pause(content_id: str) -> dict[str, Any]:
        """Stop seeding the content (and selling its keys) from this node, until resumed."""
        return await node.pause(content_id)

    @api.post("/contents/{content_id}/resume")
    async def resume(content_id: str) -> dict[str, Any]:
        return node.resume(content_id)

    @api.post("/contents", status_code=202, openapi_extra={"requestBody": UPLOAD_BODY})
    async def publish(
        request: Request,
        name: str = Query(UPLOAD_NAME, max_length=MAX_NAME_CHARS, description="The file's true name (kept encrypted)."),
        mime: str | None = Query(None, description="MIME type; default: guessed from the name."),
        price: str = Query("0", description="Price per slice with its unit, e.g. 1000gwei or 0.000001eth."),
        seeder_share: str = Query(DEFAULT_SEEDER_SHARE, description="Seeder's share of each payment: 20% or 2000bps."),
        slice_size: str = Query(DEFAULT_SLICE_SIZE, description="A power of two, 16KiB–16MiB."),
        suite: CipherSuite = Query(CipherSuite.AES_256_GCM),
        tracker: list[str] = Query([], description="Tracker URL to announce to (repeatable)."),
    ):
        """Publish the request body as a new content of this node's user; 202 with a
        `publish_id` once the body is in, then follow it at `/publishes/{publish_id}`."""
        options = publish_options(slice_size=slice_size, price=price, seeder_share=seeder_share, suite=suite,
                                  trackers=tuple(tracker), name=name, mime_type=mime)  # bad options: before the body
        cap = node.settings.upload_max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            raise UploadTooLarge(f"the upload is larger than this node takes ({cap} bytes; node.upload_max_bytes)")
        job = node.publishes.new(name)
        scratch = ExitStack()
        try:
            folder = scratch.enter_context(node.vault.workdir())
            path = folder / scratch_name(name)
            job.enter(UPLOADING, int(declared) if declared else 0)
            await _receive(request, path, cap, job)
            await asyncio.to_thread(needs_remux, path)  # a corrupt MP4 is refused now, not after the 202
            node.publish(job, path, options, scratch)
        except ClientDisconnect:  # nobody reads the answer; the upload's file went with its scratch directory
            scratch.close()
            job.fail("the client went away mid-upload")
            return JSONResponse({"error": "the client went away mid-upload"}, status_code=400)
        except BaseException as exc:
            scratch.close()
            if isinstance(exc, VeilError):
                job.fail(str(exc))
            else:
                node.publishes.forget(job)  # the client went away (or the node stops): nobody follows it
            raise
        return JSONResponse(job.view(), status_code=202, headers={"Location": f"/api/v1/publishes/{job.publish_id}"})

    @api.get("/publishes/{publish_id}")
    async def publish_state(publish_id: str) -> dict[str, Any]:
        """A publish's stage (uploading, queued, remuxing, encrypting, seeding, done or failed),
        its bytes done of the stage's total, and its result or error."""
        job = node.publishes.get(publish_id)
        if job is None:
            raise UnknownPublish(f"no publish {publish_id[:32]!r} on this node (publishes end with a restart)")
        return job.view()

    return api


async def _receive(request: Request, path: Path, cap: int, job) -> None:
    """Stream the body to `path`, one chunk at a time off the loop; `UploadTooLarge` past
    `cap`, `DiskFull` when the disk is, `ClientDisconnect` if the client goes."""
    received = 0
    try:
        with open(path, "wb") as handle:
            async for chunk in request.stream():
                received += len(chunk)
                if received > cap:
                    raise UploadTooLarge(f"the upload is larger than this node takes ({cap} bytes; "
                                         "node.upload_max_bytes)")
                if chunk:
                    await asyncio.to_thread(handle.write, chunk)
                    job.advance(len(chunk))
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFull("the vault's disk is full: the upload was dropped; free some space and send it again") \
                from None
        raise UploadError(f"the upload cannot be written: {exc.strerror or exc}") from None
    if received == 0:
        raise UploadError("the request body is empty: send the file to publish as the body")
