"""How a run's signals differ from the previous run's."""

import pytest

from services.artifacts.signals_diff import diff_signals, signals_by_symbol

pytestmark = pytest.mark.unit


def payload(*entries):
    return {"signals": [dict(zip(("symbol", "action", "strength"), e, strict=True)) for e in entries], "as_of": "x"}


def test_changed_actions_strength_moves_new_and_dropped_symbols():
    previous = signals_by_symbol(
        payload(("AAPL", "BUY", 0.6), ("MSFT", "HOLD", 0.2), ("IBM", "SELL", 0.5), ("FB", "BUY", 0.4))
    )
    current = signals_by_symbol(
        payload(("AAPL", "BUY", 0.9), ("MSFT", "SELL", 0.7), ("IBM", "SELL", 0.5), ("GOOG", "BUY", 0.3))
    )
    diff = diff_signals(current, previous)
    assert [(c.symbol, c.previous_action, c.action) for c in diff.changed_actions] == [("MSFT", "HOLD", "SELL")]
    assert [(c.symbol, c.strength_change) for c in diff.strength_moves] == [("AAPL", 0.3)]
    assert [(c.symbol, c.action, c.previous_action) for c in diff.new_symbols] == [("GOOG", "BUY", None)]
    assert [(c.symbol, c.previous_action, c.action) for c in diff.dropped_symbols] == [("FB", "BUY", None)]
    assert diff.unchanged_symbols == ["IBM"]


def test_strength_moves_are_ordered_by_size():
    previous = signals_by_symbol(payload(("A", "BUY", 0.5), ("B", "BUY", 0.5), ("C", "SELL", 0.5)))
    current = signals_by_symbol(payload(("A", "BUY", 0.55), ("B", "BUY", 0.1), ("C", "SELL", 0.7)))
    assert [c.symbol for c in diff_signals(current, previous).strength_moves] == ["B", "C", "A"]


def test_payloads_without_a_signals_list_are_not_comparable():
    assert signals_by_symbol({"rows": []}) is None
    assert signals_by_symbol("BUY AAPL") is None
    assert signals_by_symbol(None) is None


def test_malformed_entries_are_ignored_and_actions_compared_case_insensitively():
    current = signals_by_symbol(
        {"signals": [{"symbol": "AAPL", "action": "buy", "strength": 0.5}, {"action": "SELL"}, "x"]}
    )
    previous = signals_by_symbol({"signals": [{"symbol": "AAPL", "action": "BUY", "strength": 0.5}]})
    diff = diff_signals(current, previous)
    assert diff.unchanged_symbols == ["AAPL"]
    assert diff.changed_actions == diff.new_symbols == diff.dropped_symbols == []
