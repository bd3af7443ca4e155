"""JSON values as an indented, highlighted, collapsible HTML tree (`<details>`, no script).

Every key and value is escaped: payloads and log fields are untrusted. Strings are
shown as text, never JSON-escaped; a string that itself holds a JSON object or array
(someone serialised twice) is shown as the tree it holds.

Any value renders, however it was stored: the walk is iterative; a container nested
deeper than MAX_DEPTH levels is shown as a "… nested deeper than 32 levels" row instead
of its content; at most MAX_ITEMS children of one container and MAX_NODES values of
one tree are shown, the rest counted; integers of any length, lone surrogates and NULs
are shown as text.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from markupsafe import Markup, escape

from shared.bounded_json import MAX_DEPTH, clean_text, int_text, loads, nesting_depth, scalar_text

MAX_ITEMS = 500
MAX_NODES = 20_000
MAX_STRING = 20_000
# A string is only read as embedded JSON up to this size (log messages are at most 10,000).
MAX_EMBEDDED = 256 * 1024
_PARSED_NOTE = '<span class="jt-note">parsed from a string</span>'


def json_tree(value: Any, *, open_depth: int = 2) -> Markup:
    parts: list[str] = ['<div class="jt">']
    # Each entry is either markup to emit as it is (a container's closing) or a node
    # to render: (key, value, depth).
    stack: list[str | tuple[str | int | None, Any, int]] = [(None, value, 0)]
    shown = skipped = 0
    while stack:
        entry = stack.pop()
        if isinstance(entry, str):
            parts.append(entry)
            continue
        key, node, depth = entry
        if shown >= MAX_NODES:
            skipped += 1
            continue
        shown += 1
        _node(parts, stack, key, node, depth, open_depth)
    if skipped:
        parts.append(f'<div class="jt-row jt-more">… {skipped:,} more values not shown</div>')
    parts.append("</div>")
    return Markup("".join(parts))


def embedded_json(text: str) -> Any | None:
    """The object or array a string holds, if it holds one (and one of a sane size and
    nesting: anything else is left as the text it is)."""
    stripped = text.strip()
    if len(stripped) < 2 or (stripped[0], stripped[-1]) not in (("{", "}"), ("[", "]")):
        return None
    if len(stripped) > MAX_EMBEDDED or nesting_depth(stripped, stop_above=MAX_DEPTH) > MAX_DEPTH:
        return None
    try:
        value = loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, (dict, list)) else None


def _node(parts: list[str], stack: list, key: str | int | None, value: Any, depth: int, open_depth: int) -> None:
    note = ""
    if isinstance(value, str) and (inner := embedded_json(value)) is not None:
        value, note = inner, _PARSED_NOTE
    if isinstance(value, dict):
        size, braces, noun = len(value), ("{", "}"), "key"
    elif isinstance(value, (list, tuple)):
        size, braces, noun = len(value), ("[", "]"), "item"
    else:
        parts.append(f'<div class="jt-row">{_key(key)}{_scalar(value)}</div>')
        return
    if size == 0:
        parts.append(f'<div class="jt-row">{_key(key)}<span class="jt-punct">{braces[0]}{braces[1]}</span>{note}</div>')
        return
    count = f"{size:,} {noun}{'s' if size != 1 else ''}"
    if depth >= MAX_DEPTH:
        parts.append(f'<div class="jt-row">{_key(key)}<span class="jt-punct">{braces[0]}</span>'
                     f'<span class="jt-count">{count}</span>{note}<span class="jt-more"> … nested deeper than '
                     f'{MAX_DEPTH} levels, not shown</span><span class="jt-punct">{braces[1]}</span></div>')
        return
    opened = " open" if depth < open_depth else ""
    parts.append(
        f'<details class="jt-node"{opened}><summary>{_key(key)}<span class="jt-punct">{braces[0]}</span>'
        f'<span class="jt-count">{count}</span>{note}</summary><div class="jt-children">'
    )
    stack.append(f'</div><span class="jt-punct jt-close">{braces[1]}</span></details>')
    if size > MAX_ITEMS:
        stack.append(f'<div class="jt-row jt-more">… {size - MAX_ITEMS:,} more not shown</div>')
    items: list[tuple[str | int, Any]] = (
        list(islice(value.items(), MAX_ITEMS)) if isinstance(value, dict) else list(islice(enumerate(value), MAX_ITEMS))
    )
    stack.extend((child_key, child, depth + 1) for child_key, child in reversed(items))


def _key(key: str | int | None) -> str:
    if key is None:
        return ""
    if isinstance(key, int) and not isinstance(key, bool):
        return f'<span class="jt-index">{key}</span><span class="jt-punct">: </span>'
    text = scalar_text(key)
    return f'<span class="jt-key">{escape(text)}</span><span class="jt-punct">: </span>'


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="jt-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="jt-bool">{"true" if value else "false"}</span>'
    if isinstance(value, int):
        return f'<span class="jt-num">{escape(int_text(value))}</span>'
    if isinstance(value, float):
        return f'<span class="jt-num">{escape(repr(value))}</span>'
    text = value if isinstance(value, str) else scalar_text(value)
    if len(text) > MAX_STRING:
        text = text[:MAX_STRING] + f"… ({len(text) - MAX_STRING:,} more characters)"
    return f'<span class="jt-str">{escape(clean_text(text))}</span>'
