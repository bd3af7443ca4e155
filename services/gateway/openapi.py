"""One OpenAPI document for the whole public API: the gateway's own routes plus the
paths it forwards, taken from each owning service's `/openapi.json`.

Service documents are fetched on first use and cached for a while; a service that
has never answered is left out (and named in the document's description) and asked
again on the next request.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

from services.gateway.downstream import Downstream, DownstreamError, DownstreamUnavailable, Services
from shared.http import error_responses, path_methods

SCHEMA_REF = "#/components/schemas/"
MUTATING = ("post", "put", "patch", "delete")
METHODS = MUTATING + ("get", "head", "options")
BEARER = "bearerAuth"
# What the gateway itself answers on a forwarded operation: a mutation from another
# site (services/gateway/security.py), and a service that does not answer (downstream.py).
GATEWAY_ERRORS = error_responses(
    403, 502, 503, 504,
    e502="the owning service's connection failed", e503="the owning service is unavailable or starting",
    e504="the owning service did not answer in time",
)


class OpenApiDocs:
    def __init__(self, services: Services, gateway_document: Callable[[], dict], cache_seconds: float,
                 *, token_required: bool = True):
        self._services = services
        self._gateway_document = gateway_document
        self._cache_seconds = cache_seconds
        self._token_required = token_required
        self._cached: dict[str, tuple[float, dict]] = {}

    async def document(self) -> dict:
        owners = self._services.api_owners()
        fetched = await asyncio.gather(*(self._service_document(s) for s in owners))
        documents = {s.name: doc for s, doc in zip(owners, fetched) if isinstance(doc, dict)}
        missing = {s.name: reason for s, reason in zip(owners, fetched) if isinstance(reason, str)}
        return merge_openapi(self._gateway_document(), documents, self._services.owner, missing,
                             token_required=self._token_required)

    async def methods_at(self, service: Downstream, path: str) -> frozenset[str] | None:
        """The methods the service documents at `path` (upper case, HEAD with GET), or
        None when its document is not at hand or no documented path matches."""
        document = await self._service_document(service)
        return path_methods(document, path) if isinstance(document, dict) else None

    async def _service_document(self, service: Downstream) -> dict | str:
        cached = self._cached.get(service.name)
        if cached and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            document = await self._services.get_json(service, "/openapi.json", timeout=3.0)
        except (DownstreamUnavailable, DownstreamError) as exc:
            # An older copy beats a hole in the docs; a service never seen stays missing.
            return cached[1] if cached else str(exc)
        if not isinstance(document, dict):
            return "its /openapi.json is not an OpenAPI document"
        self._cached[service.name] = (time.monotonic(), document)
        return document


def merge_openapi(
    gateway: dict,
    services: dict[str, dict],
    owner: Callable[[str], Downstream | None],
    missing: dict[str, str] | None = None,
    *,
    token_required: bool = True,
) -> dict:
    """The gateway's document with each service's forwarded paths and their schemas;
    mutations are marked as needing the bearer token when one is set.

    A service schema whose name is taken by a different schema is renamed
    `<service>_<name>`, and the service's references follow it.
    """
    merged = copy.deepcopy(gateway)
    paths: dict[str, Any] = merged.setdefault("paths", {})
    schemas: dict[str, Any] = merged.setdefault("components", {}).setdefault("schemas", {})
    for service, document in services.items():
        own_paths = {
            path: item for path, item in document.get("paths", {}).items()
            if path not in paths and (found := owner(path)) is not None and found.name == service
        }
        service_schemas = document.get("components", {}).get("schemas", {})
        renames = _renames(service, service_schemas, schemas)
        for name, schema in service_schemas.items():
            schemas[renames.get(name, name)] = _rewrite_refs(schema, renames)
        for path, item in own_paths.items():
            item = _rewrite_refs(item, renames)
            for method, operation in item.items():
                if isinstance(operation, dict) and method in METHODS:
                    operation.setdefault("tags", [service])
                    responses = operation.setdefault("responses", {})
                    for code, response in GATEWAY_ERRORS.items():
                        if method in MUTATING or code != 403:
                            responses.setdefault(str(code), _response_document(response))
                    if method in MUTATING and token_required:
                        operation.setdefault("security", [{BEARER: []}])
            paths[path] = item
    merged["components"].setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "Required on mutating endpoints when IBFLOW_API_TOKEN is set.",
    }
    merged["paths"] = dict(sorted(paths.items()))
    if missing:
        note = "\n\n".join(
            f"**The {name} service did not answer** ({reason}): its endpoints are missing "
            "here; reload to try again." for name, reason in missing.items()
        )
        merged.setdefault("info", {})["description"] = (merged["info"].get("description") or "") + "\n\n" + note
    return merged


def _response_document(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + response["model"].__name__}}},
    }


def _renames(service: str, incoming: dict[str, Any], taken: dict[str, Any]) -> dict[str, str]:
    renames: dict[str, str] = {}
    # Renaming one schema changes those that refer to it: repeat until nothing moves.
    changed = True
    while changed:
        changed = False
        for name, schema in incoming.items():
            if name in renames or name not in taken:
                continue
            if taken[name] != _rewrite_refs(schema, renames):
                renames[name] = f"{service}_{name}"
                changed = True
    return renames


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_REF):
                name = value[len(SCHEMA_REF):]
                out[key] = SCHEMA_REF + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node
