"""What changed between this run's signals and the previous run's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Strength moves smaller than this are rounding noise between two runs on the same data.
MIN_STRENGTH_MOVE = 0.05


def _by_symbol(signals: Sequence[Mapping] | Mapping) -> dict[str, Mapping]:
    # Accept the whole signals artifact payload too: that is what a previous run stored.
    if isinstance(signals, Mapping):
        signals = signals.get("signals", [])
    return {str(s["symbol"]): s for s in signals}


def diff_signals(
    current: Sequence[Mapping] | Mapping,
    previous: Sequence[Mapping] | Mapping | None,
    *,
    min_strength_move: float = MIN_STRENGTH_MOVE,
    previous_execution_id: str | None = None,
) -> dict:
    """Compare signal dicts ({symbol, action, strength, ...}) of two runs.

    changed: in both runs with a different action; unchanged: in both with the same
    action; strength_moves: in both (whatever the action) with a strength that moved
    by at least `min_strength_move`, largest move first. Without a previous run every list is
    empty and previous_available is False.
    """
    now = _by_symbol(current)
    result = {
        "previous_available": previous is not None,
        "previous_execution_id": previous_execution_id,
        "changed": [],
        "strength_moves": [],
        "new": [],
        "dropped": [],
        "unchanged": [],
    }
    if previous is None:
        return result
    before = _by_symbol(previous)
    for symbol in sorted(now.keys() & before.keys()):
        old, new = before[symbol], now[symbol]
        if old.get("action") != new.get("action"):
            result["changed"].append({"symbol": symbol, "from": old.get("action"), "to": new.get("action")})
        else:
            result["unchanged"].append(symbol)
        old_strength, new_strength = old.get("strength"), new.get("strength")
        if old_strength is not None and new_strength is not None:
            delta = float(new_strength) - float(old_strength)
            if abs(delta) >= min_strength_move:
                result["strength_moves"].append(
                    {"symbol": symbol, "from": float(old_strength), "to": float(new_strength), "delta": round(delta, 4)}
                )
    result["strength_moves"].sort(key=lambda move: (-abs(move["delta"]), move["symbol"]))
    result["new"] = sorted(now.keys() - before.keys())
    result["dropped"] = sorted(before.keys() - now.keys())
    return result
