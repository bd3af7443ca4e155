"""How one run's signals differ from another's, from `signals` artifact payloads.

Payload shape (written by the signals service):
`{"signals": [{"symbol", "action", "strength", "last_price", "reasons": [...]}, ...], ...}`.
Entries without a symbol are ignored rather than failing the whole comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRENGTH_EPSILON = 1e-9


@dataclass(frozen=True)
class SignalChange:
    symbol: str
    action: str | None
    previous_action: str | None
    strength: float | None
    previous_strength: float | None

    @property
    def strength_change(self) -> float | None:
        if self.strength is None or self.previous_strength is None:
            return None
        return round(self.strength - self.previous_strength, 6)

    @property
    def strength_moved(self) -> bool:
        if self.strength_change is not None:
            return abs(self.strength_change) > STRENGTH_EPSILON
        return self.strength != self.previous_strength


@dataclass(frozen=True)
class Diff:
    changed_actions: list[SignalChange] = field(default_factory=list)
    strength_moves: list[SignalChange] = field(default_factory=list)
    new_symbols: list[SignalChange] = field(default_factory=list)
    dropped_symbols: list[SignalChange] = field(default_factory=list)
    unchanged_symbols: list[str] = field(default_factory=list)


def signals_by_symbol(payload: Any) -> dict[str, dict[str, Any]] | None:
    """The payload's signals keyed by symbol, or None when it has no signals list."""
    if not isinstance(payload, dict) or not isinstance(payload.get("signals"), list):
        return None
    found: dict[str, dict[str, Any]] = {}
    for entry in payload["signals"]:
        if isinstance(entry, dict) and isinstance(entry.get("symbol"), str) and entry["symbol"]:
            found[entry["symbol"]] = entry
    return found


def diff_signals(current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]) -> Diff:
    diff = Diff()
    for symbol in sorted(current.keys() | previous.keys()):
        now, before = current.get(symbol), previous.get(symbol)
        change = SignalChange(
            symbol=symbol,
            action=_action(now),
            previous_action=_action(before),
            strength=_strength(now),
            previous_strength=_strength(before),
        )
        if before is None:
            diff.new_symbols.append(change)
        elif now is None:
            diff.dropped_symbols.append(change)
        elif change.action != change.previous_action:
            diff.changed_actions.append(change)
        elif change.strength_moved:
            diff.strength_moves.append(change)
        else:
            diff.unchanged_symbols.append(symbol)
    diff.strength_moves.sort(key=lambda c: (-abs(c.strength_change or 0.0), c.symbol))
    return diff


def _action(entry: dict[str, Any] | None) -> str | None:
    action = entry.get("action") if entry else None
    return action.upper() if isinstance(action, str) else None


def _strength(entry: dict[str, Any] | None) -> float | None:
    strength = entry.get("strength") if entry else None
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        return None
    return float(strength)
