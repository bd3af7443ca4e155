"""OpenAPI and AsyncAPI documents as readable pages, rendered here: the pages work
with no network, so no documentation UI is loaded from a CDN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from markupsafe import Markup, escape

SCHEMA_REF_PREFIXES = ("#/components/schemas/",)
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


@dataclass
class Property:
    name: str
    type: Markup
    required: bool
    description: str
    default: str | None = None


@dataclass
class SchemaDoc:
    name: str
    anchor: str
    description: str
    type: Markup
    properties: list[Property] = field(default_factory=list)
    variants: list[Markup] = field(default_factory=list)


@dataclass
class Operation:
    method: str
    path: str
    anchor: str
    summary: str
    description: str
    parameters: list[Property]
    body: Markup | None
    body_required: bool
    responses: list[tuple[str, str, Markup | None]]
    secured: bool


@dataclass
class Channel:
    topic: str
    description: str
    payload: list[SchemaDoc]


def ref_name(ref: str) -> str:
    for prefix in SCHEMA_REF_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref.rsplit("/", 1)[-1]


def anchor_of(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def type_label(schema: Any) -> Markup:
    """A one-line type: `string (uuid)`, `array of <Artifact>`, `integer | null`."""
    if not isinstance(schema, dict) or not schema:
        return Markup('<span class="t">any</span>')
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return Markup(f'<a class="t-ref" href="#{escape(anchor_of(name))}">{escape(name)}</a>')
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = schema[key]
            labels = [type_label(o) for o in options if o.get("type") != "null"]
            if any(o.get("type") == "null" for o in options):
                labels.append(Markup('<span class="t">null</span>'))
            return Markup(" | ").join(labels)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_label(schema["allOf"][0])
    if "const" in schema:
        return Markup(f'<code class="t-const">{escape(json.dumps(schema["const"]))}</code>')
    if "enum" in schema:
        return Markup("one of ") + Markup(", ").join(
            Markup(f'<code class="t-const">{escape(json.dumps(v))}</code>') for v in schema["enum"]
        )
    kind = schema.get("type")
    if isinstance(kind, list):
        return Markup(" | ").join(type_label({**schema, "type": k}) for k in kind)
    if kind == "array":
        return Markup("array of ") + type_label(schema.get("items"))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and not schema.get("properties"):
        return Markup("object of ") + type_label(schema["additionalProperties"])
    label = kind or ("object" if "properties" in schema else "any")
    if fmt := schema.get("format"):
        label = f"{label} ({fmt})"
    return Markup(f'<span class="t">{escape(label)}</span>')


def _constraints(schema: dict) -> str:
    parts = []
    for key, text in (("minimum", "≥ {}"), ("maximum", "≤ {}"), ("minLength", "at least {} chars"),
                      ("maxLength", "at most {} chars"), ("pattern", "matches {}"),
                      ("minItems", "at least {} items"), ("maxItems", "at most {} items")):
        if key in schema:
            parts.append(text.format(schema[key]))
    return "; ".join(parts)


def properties(schema: dict) -> list[Property]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in (schema.get("properties") or {}).items():
        description = prop.get("description") or ""
        if constraints := _constraints(prop):
            description = f"{description} ({constraints})" if description else constraints
        default = json.dumps(prop["default"]) if "default" in prop and prop["default"] is not None else None
        rows.append(Property(name, type_label(prop), name in required, description, default))
    return rows


def schema_doc(name: str, schema: dict) -> SchemaDoc:
    is_object = "properties" in schema
    variants = [] if is_object else [type_label(v) for v in schema.get("oneOf", schema.get("anyOf", []))]
    return SchemaDoc(
        name=name,
        anchor=anchor_of(name),
        description=schema.get("description") or "",
        type=type_label({"type": "object"} if is_object else {k: v for k, v in schema.items() if k != "title"}),
        properties=properties(schema),
        variants=variants,
    )


def component_schemas(document: dict) -> list[SchemaDoc]:
    schemas = (document.get("components") or {}).get("schemas") or {}
    return [schema_doc(name, schema) for name, schema in sorted(schemas.items(), key=lambda kv: kv[0].lower())]


# --- OpenAPI ---------------------------------------------------------------------------


def operations_by_tag(document: dict) -> dict[str, list[Operation]]:
    grouped: dict[str, list[Operation]] = {}
    for path, item in (document.get("paths") or {}).items():
        shared_params = item.get("parameters", [])
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            tag = (operation.get("tags") or ["other"])[0]
            grouped.setdefault(tag, []).append(_operation(method, path, operation, shared_params))
    return grouped


def _operation(method: str, path: str, op: dict, shared_params: list) -> Operation:
    parameters = [
        Property(
            name=f"{p.get('name')}",
            type=type_label(p.get("schema")),
            required=bool(p.get("required")),
            description=" ".join(filter(None, [f"in {p.get('in')}", p.get("description") or ""])),
        )
        for p in [*shared_params, *op.get("parameters", [])]
        if isinstance(p, dict)
    ]
    body, body_required = None, False
    if isinstance(op.get("requestBody"), dict):
        content = op["requestBody"].get("content") or {}
        media, spec = next(iter(content.items()), (None, {}))
        body = Markup(f'<code>{escape(media)}</code> ') + type_label(spec.get("schema")) if media else None
        body_required = bool(op["requestBody"].get("required"))
    responses = []
    for code, response in (op.get("responses") or {}).items():
        content = response.get("content") or {}
        schema = next(iter(content.values()), {}).get("schema") if content else None
        media = next(iter(content), None)
        label = (Markup(f'<code>{escape(media)}</code> ') + type_label(schema)) if media else None
        responses.append((code, response.get("description") or "", label))
    return Operation(
        method=method.upper(),
        path=path,
        anchor=f"op-{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
        summary=op.get("summary") or "",
        description=op.get("description") or "",
        parameters=parameters,
        body=body,
        body_required=body_required,
        responses=responses,
        secured=bool(op.get("security")),
    )


# --- AsyncAPI --------------------------------------------------------------------------


def channels(document: dict, order: list[str]) -> list[Channel]:
    schemas = (document.get("components") or {}).get("schemas") or {}
    messages = (document.get("components") or {}).get("messages") or {}
    found = []
    for channel in (document.get("channels") or {}).values():
        payload_docs = []
        for message_ref in (channel.get("messages") or {}).values():
            message = messages.get(unquote(message_ref.get("$ref", "").rsplit("/", 1)[-1]), {})
            payload = message.get("payload") or {}
            payload_name = ref_name(payload.get("$ref", "")) if "$ref" in payload else None
            payload_schema = schemas.get(payload_name, payload) if payload_name else payload
            variants = payload_schema.get("oneOf") or payload_schema.get("anyOf") or [payload_schema]
            for variant in variants:
                name = ref_name(variant["$ref"]) if "$ref" in variant else (payload_name or channel.get("address", ""))
                payload_docs.append(schema_doc(name, schemas.get(name, variant)))
        found.append(Channel(topic=channel.get("address", ""), description=channel.get("description") or "",
                             payload=payload_docs))
    rank = {topic: i for i, topic in enumerate(order)}
    return sorted(found, key=lambda c: rank.get(c.topic, len(rank)))
