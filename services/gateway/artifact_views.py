"""How an artifact is shown: one renderer per kind of content.

The renderer is chosen in this order:
1. `metadata.renderer` when it names one of RENDERERS (producers decide);
2. the media type: `image/*` → image, `text/markdown` → markdown, `text/csv` → table,
   other `text/*` → text;
3. JSON (inline payloads always are): kind `model` or `metrics` → metrics card, JSON
   shaped like a table → table, any other JSON → tree;
4. anything else (a pickled model, a zip) → a download link.

Table shapes: `{"columns": [name | {"name", "description"}], "rows": [[...] | {...}]}`,
pandas' split orient `{"columns": [...], "data": [[...]]}`, or a list of flat objects.
Columns keep the producer's order and are never sorted. A list of objects has no order
of its own once stored (PostgreSQL's JSONB keeps keys shortest first), so a producer
names it in `metadata.columns`: `{"<payload key>": ["col", ...]}` ("" for a payload that
is itself the list); columns it does not name follow in the order first seen.
Everything is escaped; Markdown is rendered with raw HTML disabled. Any stored value
renders: content is parsed with shared.bounded_json, numbers of any size are text, and
tables show at most MAX_TABLE_ROWS rows and MAX_TABLE_COLUMNS columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from services.gateway.json_tree import json_tree
from shared import bounded_json
from shared.bounded_json import clean_text, int_text, scalar_text

RENDERERS = ("table", "image", "markdown", "metrics", "json", "text")
MAX_TABLE_ROWS = 1000
MAX_TABLE_COLUMNS = 200
LONG_CELL = 40
MAX_BARS = 50
ARTIFACT_TREE_DEPTH = 3
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


@dataclass(frozen=True)
class ArtifactView:
    renderer: str
    html: Markup
    note: str | None = None


def markdown_html(text: str) -> Markup:
    """CommonMark with tables; raw HTML in the text is shown as text, unsafe links dropped."""
    return Markup(_markdown.render(clean_text(text or "")))


def media_type_of(artifact: dict) -> str:
    return (artifact.get("media_type") or "application/json").split(";")[0].strip().lower()


def choose_renderer(artifact: dict) -> str:
    metadata = artifact.get("metadata")
    hint = metadata.get("renderer") if isinstance(metadata, dict) else None
    if isinstance(hint, str) and hint in RENDERERS:
        return hint
    media = media_type_of(artifact)
    if media.startswith("image/"):
        return "image"
    if media in ("text/markdown", "text/x-markdown"):
        return "markdown"
    if media in ("text/csv", "text/tab-separated-values"):
        return "table"
    if media.startswith("text/"):
        return "text"
    if artifact.get("has_inline_payload") or media == "application/json" or media.endswith("+json"):
        return "metrics" if artifact.get("kind") in ("model", "metrics") else "json"
    return "download"


def needs_content(artifact: dict, renderer: str) -> bool:
    """Stored content the gateway has to read to render (images load in the browser)."""
    return not artifact.get("has_inline_payload") and renderer not in ("image", "download")


def decode_content(artifact: dict, content: bytes) -> Any:
    media = media_type_of(artifact)
    text = content.decode("utf-8", "replace")
    if media == "application/json" or media.endswith("+json"):
        try:
            return bounded_json.loads(text)
        except ValueError:
            return text
    return text


def render_artifact(artifact: dict, value: Any, renderer: str) -> ArtifactView:
    if renderer == "download":
        return download_view(artifact, f"{media_type_of(artifact)} content is not shown in the page")
    if renderer == "image":
        return _image(artifact, value)
    if renderer == "markdown" and isinstance(value, str):
        return ArtifactView("markdown", Markup(f'<div class="markdown">{markdown_html(value)}</div>'))
    if renderer == "table":
        if isinstance(value, str):
            value = _csv_table(value, media_type_of(artifact))
        table = tabular(value, _column_order(artifact, ""))
        if table is not None:
            return _table(*table)
        if isinstance(value, str):
            return ArtifactView("text", Markup(f'<pre class="text-content">{escape(clean_text(value))}</pre>'),
                                note="marked as a table, but its content is not CSV")
        return ArtifactView("json", json_tree(value, open_depth=ARTIFACT_TREE_DEPTH),
                            note="marked as a table, but its content is not table-shaped")
    if renderer == "metrics" and isinstance(value, dict):
        return ArtifactView("metrics", metrics_card(value, _column_order(artifact)))
    if renderer == "text" or isinstance(value, str):
        if not isinstance(value, str):
            value = json.dumps(bounded_json.bounded(value), indent=2, ensure_ascii=False)
        text = value
        return ArtifactView("text", Markup(f'<pre class="text-content">{escape(clean_text(text))}</pre>'))
    if renderer != "metrics" and (table := tabular(value, _column_order(artifact, ""))) is not None:
        return _table(*table)
    return ArtifactView("json", json_tree(value, open_depth=ARTIFACT_TREE_DEPTH))


# --- tables ----------------------------------------------------------------------------


def _column_order(artifact: dict, key: str | None = None) -> Any:
    """The producer's `metadata.columns` (all of it, or the order it names for `key`)."""
    metadata = artifact.get("metadata")
    hints = metadata.get("columns") if isinstance(metadata, dict) else None
    hints = hints if isinstance(hints, dict) else {}
    return hints if key is None else hints.get(key)


def tabular(value: Any, order: Any = None) -> tuple[list[dict[str, str]], list[list[Any]]] | None:
    """(columns, rows) when `value` is one of the table shapes, else None; `order` names
    the columns of a list of objects first (see the module's docstring)."""
    if isinstance(value, dict) and isinstance(value.get("columns"), list):
        columns = [_column(c) for c in value["columns"]]
        raw_rows = value.get("rows", value.get("data"))
        if not isinstance(raw_rows, list) or None in columns:
            return None
        rows = []
        for row in raw_rows:
            if isinstance(row, list):
                rows.append(row)
            elif isinstance(row, dict):
                rows.append([row.get(c["name"]) for c in columns])
            else:
                return None
        return columns, rows
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        if any(isinstance(v, (dict, list)) for r in value[:50] for v in r.values()):
            return None
        names = list(dict.fromkeys(k for r in value for k in r))
        if isinstance(order, list):
            named = [n for n in dict.fromkeys(order) if isinstance(n, str) and n in names]
            names = named + [n for n in names if n not in named]
        return [{"name": scalar_text(n), "description": ""} for n in names], [[r.get(n) for n in names] for r in value]
    return None


def _column(column: Any) -> dict[str, str] | None:
    if isinstance(column, str):
        return {"name": column, "description": ""}
    if isinstance(column, dict) and isinstance(column.get("name"), str):
        return {"name": column["name"], "description": scalar_text(column.get("description") or "")}
    return None


def _csv_table(text: str, media: str) -> dict[str, Any] | str:
    """The table CSV text holds; the text itself when it is not CSV the reader accepts."""
    delimiter = "\t" if media == "text/tab-separated-values" else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        return text
    if not rows:
        return {"columns": [], "rows": []}
    return {"columns": rows[0], "rows": [[_csv_cell(v) for v in r] for r in rows[1:]]}


def _csv_cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _table(columns: list[dict[str, str]], rows: list[list[Any]]) -> ArtifactView:
    """The columns in the order given (never sorted): the producer's order is the order."""
    shown = columns[:MAX_TABLE_COLUMNS]
    head = "".join(
        f'<th title="{escape(clean_text(c["description"]))}">{escape(clean_text(c["name"]))}'
        + (f'<span class="col-desc">{escape(clean_text(c["description"]))}</span>' if c["description"] else "")
        + "</th>"
        for c in shown
    )
    body = []
    for row in rows[:MAX_TABLE_ROWS]:
        cells = [row[i] if i < len(row) else None for i in range(len(shown))]
        body.append("<tr>" + "".join(_cell(v) for v in cells) + "</tr>")
    notes = []
    if len(rows) > MAX_TABLE_ROWS:
        notes.append(f"showing the first {MAX_TABLE_ROWS} of {len(rows)} rows")
    if len(columns) > MAX_TABLE_COLUMNS:
        notes.append(f"the first {MAX_TABLE_COLUMNS} of {len(columns)} columns")
    note = "; ".join(notes) + "; the content link has all of them" if notes else None
    html = (
        # The frame holds the "more to the side" shade while the wrap scrolls (app.js).
        f'<div class="table-frame"><div class="table-wrap"><table class="data-table">'
        f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div></div>'
        f'<p class="muted small">{len(rows)} row{"s" if len(rows) != 1 else ""} × {len(columns)} columns'
        '<span class="scroll-hint"> · scroll sideways for the rest</span></p>'
    )
    return ArtifactView("table", Markup(html), note)


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="null">—</td>'
    if isinstance(value, bool):
        return f'<td class="bool">{"true" if value else "false"}</td>'
    if isinstance(value, (int, float)):
        return f'<td class="num">{escape(format_number(value))}</td>'
    if isinstance(value, (dict, list)):
        return f"<td>{json_tree(value, open_depth=0)}</td>"
    text = scalar_text(value)
    # Short values stay on one line (the table scrolls sideways); long texts wrap.
    return f'<td class="long">{escape(text)}</td>' if len(text) > LONG_CELL else f"<td>{escape(text)}</td>"


def format_number(value: int | float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        if value.bit_length() > 64:
            return int_text(value)
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if abs(value) >= 1:
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.2f}"
    return f"{value:.4g}"


# --- metrics ---------------------------------------------------------------------------


def metrics_card(payload: dict[str, Any], column_orders: dict[str, Any] | None = None) -> Markup:
    """Numbers as tiles, short texts as a key/value list, tables as tables (columns in
    `column_orders[name]` first), anything else nested as a tree."""
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else None
    source = metrics if metrics is not None else payload
    tiles = {k: v for k, v in source.items() if _is_number(v)}
    rest = {k: v for k, v in payload.items() if k != "metrics" and (metrics is not None or k not in tiles)}
    if metrics is not None:
        nested_metrics = {k: v for k, v in metrics.items() if k not in tiles}
        if nested_metrics:
            rest = {"metrics": nested_metrics, **rest}
    scalars = {k: v for k, v in rest.items() if not isinstance(v, (dict, list))}
    nested = {k: v for k, v in rest.items() if isinstance(v, (dict, list))}
    parts = ['<div class="metrics-card">']
    if tiles:
        parts.append('<div class="metric-tiles">')
        for name, value in tiles.items():
            parts.append(
                f'<div class="metric-tile"><div class="metric-value">{escape(format_number(value))}</div>'
                f'<div class="metric-name">{escape(scalar_text(name))}</div></div>'
            )
        parts.append("</div>")
    if scalars:
        parts.append('<dl class="kv">')
        for name, value in scalars.items():
            shown = "—" if value is None else format_number(value) if _is_number(value) else scalar_text(value)
            parts.append(f"<dt>{escape(scalar_text(name))}</dt><dd>{escape(shown)}</dd>")
        parts.append("</dl>")
    for name, value in nested.items():
        parts.append(f'<section class="metric-section"><h3>{escape(scalar_text(name))}</h3>')
        table = tabular(value, (column_orders or {}).get(name))
        if table:
            parts.append(str(_table(*table).html))
        elif isinstance(value, dict) and 0 < len(value) <= MAX_BARS and all(
            _is_number(v) and abs(v) < 1e300 for v in value.values()  # bars divide as floats
        ):
            parts.append(_bars(value))
        else:
            parts.append(str(json_tree(value, open_depth=1)))
        parts.append("</section>")
    parts.append("</div>")
    return Markup("".join(parts))


def _bars(values: dict[str, int | float]) -> str:
    """Named numbers (feature importances, per-class scores) as bars against the largest."""
    largest = max(abs(v) for v in values.values()) or 1
    rows = []
    for name, value in values.items():
        width = abs(value) / largest * 100
        negative = " negative" if value < 0 else ""
        rows.append(
            f'<span class="bar-name">{escape(scalar_text(name))}</span>'
            f'<span class="bar-track"><span class="bar-fill{negative}" style="width:{width:.1f}%"></span></span>'
            f'<span class="bar-value">{escape(format_number(value))}</span>'
        )
    return f'<div class="bars">{"".join(rows)}</div>'


def _is_number(value: Any) -> bool:
    """A number to show as one (a tile, a bar); an infinite one reads as text instead."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def download_view(artifact: dict, why: str) -> ArtifactView:
    return ArtifactView(
        "download",
        Markup(f'<div class="download"><p>{escape(why)}.</p><a class="btn" href="{escape(content_url(artifact))}" '
               f'download>Download {escape(scalar_text(artifact.get("name", "content")))}</a></div>'),
    )


def content_url(artifact: dict) -> str:
    return scalar_text(artifact.get("content_url") or f"/api/artifacts/{artifact['artifact_id']}/content")


# --- images ----------------------------------------------------------------------------


def _image(artifact: dict, value: Any) -> ArtifactView:
    if isinstance(value, str) and value.startswith("data:image/"):
        source = value
    elif not artifact.get("has_inline_payload"):
        source = content_url(artifact)
    else:
        return ArtifactView("json", json_tree(value, open_depth=ARTIFACT_TREE_DEPTH),
                            note="marked as an image, but its payload is not one")
    return ArtifactView(
        "image",
        Markup(f'<figure class="artifact-image"><img src="{escape(source)}" '
               f'alt="{escape(scalar_text(artifact.get("name", "")))}"></figure>'),
    )
