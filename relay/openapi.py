"""``/v1/openapi.json``, generated from the route table."""

from __future__ import annotations

import re
from functools import lru_cache

from keys.constants import PROTOCOL_VERSION

from .errors import CATALOGUE

AUTH_TEXT = {
    "none": "no authentication",
    "member": "bearer token of an active member",
    "admin": "bearer token of an active administrator",
    "invite-or-member": "bearer token, or the Comity-Invite header with a pending invite id",
    "creation-token": "one-time creation token in the body (from `comity-relay token`)",
}


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    from .routes import ROUTES
    paths: dict[str, dict] = {}
    for route in ROUTES:
        operation: dict = {
            "summary": route.summary,
            "description": "Authentication: " + AUTH_TEXT[route.auth] + ".",
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
            "responses": {
                str(route.ok): {"description": "success"},
                "4XX": {"description": "refusal",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                      for p in re.findall(r"{([a-z]+)}", route.path)]
        parameters += [{"name": q, "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0}} for q in route.query]
        parameters += [{"name": h, "in": "header", "required": h == "Upload-Offset",
                        "schema": {"type": "string"}} for h in route.headers]
        if parameters:
            operation["parameters"] = parameters
        if route.auth in ("member", "admin"):
            operation["security"] = [{"bearer": []}]
        if route.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "required": [f for f in route.body],
                "properties": {f: {} for f in route.body + route.optional}}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "comity relay", "version": str(PROTOCOL_VERSION),
                 "description": "Store-and-forward relay for end-to-end encrypted messages. "
                                "Formats of signed records: docs/protocol.md; API: docs/relay-api.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "message"], "properties": {
                "error": {"type": "string", "enum": sorted(CATALOGUE)},
                "message": {"type": "string"}}}},
        },
    }
