"""JSON values as an indented, highlighted, collapsible HTML tree (`<details>`, no script).

Every key and value is escaped: payloads and log fields are untrusted. Strings are
shown as text, never JSON-escaped; a string that itself holds a JSON object or array
(someone serialised twice) is shown as the tree it holds.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup, escape

MAX_ITEMS = 500
MAX_STRING = 20_000


def json_tree(value: Any, *, open_depth: int = 2) -> Markup:
    parts: list[str] = ['<div class="jt">']
    _node(parts, None, value, 0, open_depth)
    parts.append("</div>")
    return Markup("".join(parts))


def embedded_json(text: str) -> Any | None:
    """The object or array a string holds, if it holds one."""
    stripped = text.strip()
    if len(stripped) < 2 or (stripped[0], stripped[-1]) not in (("{", "}"), ("[", "]")):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, (dict, list)) else None


def _key(key: str | int | None) -> str:
    if key is None:
        return ""
    if isinstance(key, int):
        return f'<span class="jt-index">{key}</span><span class="jt-punct">: </span>'
    return f'<span class="jt-key">{escape(key)}</span><span class="jt-punct">: </span>'


def _node(parts: list[str], key: str | int | None, value: Any, depth: int, open_depth: int) -> None:
    note = ""
    if isinstance(value, str) and (inner := embedded_json(value)) is not None:
        value, note = inner, '<span class="jt-note">parsed from a string</span>'
    if isinstance(value, dict):
        items: list[tuple[str | int, Any]] = list(value.items())
        braces, count = ("{", "}"), f"{len(items)} key{'s' if len(items) != 1 else ''}"
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
        braces, count = ("[", "]"), f"{len(items)} item{'s' if len(items) != 1 else ''}"
    else:
        parts.append(f'<div class="jt-row">{_key(key)}{_scalar(value)}</div>')
        return
    if not items:
        parts.append(f'<div class="jt-row">{_key(key)}<span class="jt-punct">{braces[0]}{braces[1]}</span>{note}</div>')
        return
    opened = " open" if depth < open_depth else ""
    parts.append(
        f'<details class="jt-node"{opened}><summary>{_key(key)}<span class="jt-punct">{braces[0]}</span>'
        f'<span class="jt-count">{count}</span>{note}</summary><div class="jt-children">'
    )
    for child_key, child in items[:MAX_ITEMS]:
        _node(parts, child_key, child, depth + 1, open_depth)
    if len(items) > MAX_ITEMS:
        parts.append(f'<div class="jt-row jt-more">… {len(items) - MAX_ITEMS} more not shown</div>')
    parts.append(f'</div><span class="jt-punct jt-close">{braces[1]}</span></details>')


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="jt-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="jt-bool">{"true" if value else "false"}</span>'
    if isinstance(value, (int, float)):
        return f'<span class="jt-num">{escape(repr(value) if isinstance(value, float) else str(value))}</span>'
    text = str(value)
    if len(text) > MAX_STRING:
        text = text[:MAX_STRING] + f"… ({len(text) - MAX_STRING} more characters)"
    return f'<span class="jt-str">{escape(text)}</span>'
