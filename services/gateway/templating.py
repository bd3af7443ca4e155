"""The Jinja2 environment of the pages: filters, globals, and cache-busted static URLs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from services.gateway.artifact_views import markdown_html
from services.gateway.formatting import FILTERS
from services.gateway.json_tree import json_tree

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"


class Templates:
    def __init__(self, *, token_required: bool):
        self._jinja = Jinja2Templates(directory=TEMPLATES_DIR)
        env = self._jinja.env
        env.filters.update(FILTERS)
        env.filters["urlpart"] = lambda value: quote(str(value), safe="")
        env.filters["markdown"] = markdown_html
        env.globals.update(json_tree=json_tree, static_url=self._static_url, token_required=token_required)
        # Static files change only with the code: one fingerprint each, taken at start-up.
        self._fingerprints = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:10] for p in STATIC_DIR.iterdir() if p.is_file()
        }
        self._macros = env.get_template("_macros.html").module

    def _static_url(self, name: str) -> str:
        return f"/static/{name}?v={self._fingerprints.get(name, '0')}"

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return self._jinja.TemplateResponse(request, name, context, status_code=status)

    def fragment(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return HTMLResponse(self._jinja.env.get_template(name).render(context), status_code=status)

    def macro(self, name: str, *args: Any) -> Markup:
        return Markup(str(getattr(self._macros, name)(*args)).strip())
