"""How times, durations, sizes and statuses read on the pages (Jinja filters).

Every filter takes whatever a stored record holds (a huge or non-finite number, a
list where a string was expected) and returns text: a page never fails on a value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from shared.bounded_json import clean_text, int_text, scalar_text

ACTIVE_STATUSES = frozenset({"queued", "running", "requested", "pending"})


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_time(value: Any) -> str:
    """`2026-03-02 14:30:05 UTC`"""
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "—"


def fmt_local(value: Any) -> str:
    """In the time's own offset: `2026-03-02 09:30 -05:00`"""
    parsed = parse_time(value)
    return f"{parsed:%Y-%m-%d %H:%M} {parsed.isoformat()[-6:]}" if parsed else "—"


def fmt_clock(value: Any) -> str:
    """`14:30:05.123`, for log lines."""
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if parsed else "—"


def fmt_ago(value: Any, now: datetime | None = None) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - parsed).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = f"{int(seconds)}s"
    elif seconds < 3600:
        text = f"{round(seconds / 60)} min"
    elif seconds < 86400 * 2:
        text = f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{round(seconds / 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def fmt_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not -1e12 < seconds < 1e12:
        return "—"  # also NaN, which no comparison admits
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_bytes(size: Any) -> str:
    if not isinstance(size, int) or isinstance(size, bool):
        return "—"
    if abs(size) >= 1024**4:
        return f"{int_text(size)} B"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def status_badge(status: Any) -> Markup:
    text = clean_text(status) if isinstance(status, str) and status else scalar_text(status or "unknown")
    live = " live" if text in ACTIVE_STATUSES - {"pending"} else ""
    return Markup(f'<span class="badge status-{escape(text)}{live}">{escape(text)}</span>')


def is_active(status: Any) -> bool:
    return isinstance(status, str) and status in ACTIVE_STATUSES


def symbols_text(params: Any) -> str:
    """A run's `params.symbols` as `AAPL, MSFT`; empty when it names none."""
    symbols = params.get("symbols") if isinstance(params, dict) else None
    if isinstance(symbols, str):
        return clean_text(symbols)
    if not isinstance(symbols, list):
        return ""
    return ", ".join(clean_text(s) if isinstance(s, str) else scalar_text(s) for s in symbols[:200])


FILTERS = {
    "fmt_time": fmt_time,
    "fmt_local": fmt_local,
    "fmt_clock": fmt_clock,
    "fmt_ago": fmt_ago,
    "fmt_duration": fmt_duration,
    "fmt_bytes": fmt_bytes,
    "status_badge": status_badge,
    "symbols_text": symbols_text,
}
