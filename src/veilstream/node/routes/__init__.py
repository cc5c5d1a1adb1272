"""The API's routes, one module per area; each has `router(node) -> APIRouter`, mounted
under /api/v1 by `node.api.create_app`."""
