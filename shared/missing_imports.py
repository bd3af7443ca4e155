"""Optional modules that libraries look for on hot paths, remembered as missing.

httpcore (under httpx) tries `import sniffio` each time its connection pool takes a
lock, four times per request, and falls back to asyncio when it is not installed. A
failed import is not cached: every attempt walks sys.path again, a third of the
gateway's own time per forwarded request. A `None` entry in `sys.modules` makes the
import fail at once, the same way.
"""

from __future__ import annotations

import importlib.util
import sys

LOOKED_UP_PER_REQUEST = ("sniffio",)


def remember_missing(names: tuple[str, ...] = LOOKED_UP_PER_REQUEST) -> None:
    """Mark the modules of `names` that are not installed as missing; installed ones stay importable."""
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None
