import pytest

from services.signals.analytics.diff import diff_signals

pytestmark = pytest.mark.unit


def sig(symbol, action, strength):
    return {"symbol": symbol, "action": action, "strength": strength, "reasons": []}


def test_no_previous_run():
    diff = diff_signals([sig("AAPL", "BUY", 0.5)], None)
    assert diff["previous_available"] is False
    assert diff["changed"] == diff["strength_moves"] == diff["new"] == diff["dropped"] == diff["unchanged"] == []


def test_changes_moves_new_dropped_unchanged():
    previous = [sig("AAPL", "HOLD", 0.2), sig("IBM", "BUY", 0.4), sig("MSFT", "SELL", 0.5), sig("FB", "HOLD", 0.1)]
    current = [sig("AAPL", "BUY", 0.45), sig("IBM", "BUY", 0.42), sig("MSFT", "SELL", 0.8), sig("GOOG", "HOLD", 0.0)]
    diff = diff_signals(current, previous, previous_execution_id="exec-1")
    assert diff["previous_available"] is True
    assert diff["previous_execution_id"] == "exec-1"
    assert diff["changed"] == [{"symbol": "AAPL", "from": "HOLD", "to": "BUY"}]
    # IBM moved 0.02: below the 0.05 noise floor; largest move first
    assert diff["strength_moves"] == [
        {"symbol": "MSFT", "from": 0.5, "to": 0.8, "delta": 0.3},
        {"symbol": "AAPL", "from": 0.2, "to": 0.45, "delta": 0.25},
    ]
    assert diff["new"] == ["GOOG"]
    assert diff["dropped"] == ["FB"]
    assert diff["unchanged"] == ["IBM", "MSFT"]


def test_identical_runs_and_threshold():
    run = [sig("AAPL", "BUY", 0.5), sig("IBM", "HOLD", 0.1)]
    diff = diff_signals(run, run)
    assert diff["changed"] == [] and diff["strength_moves"] == [] and diff["unchanged"] == ["AAPL", "IBM"]
    moved = diff_signals([sig("AAPL", "BUY", 0.52)], [sig("AAPL", "BUY", 0.5)], min_strength_move=0.01)
    assert moved["strength_moves"] == [{"symbol": "AAPL", "from": 0.5, "to": 0.52, "delta": 0.02}]


def test_accepts_stored_payloads_and_empty_previous():
    current = {"signals": [sig("AAPL", "SELL", 0.6)], "counts": {}}
    previous = {"signals": [sig("AAPL", "BUY", 0.6)], "counts": {}}
    assert diff_signals(current, previous)["changed"] == [{"symbol": "AAPL", "from": "BUY", "to": "SELL"}]
    empty_before = diff_signals(current, [])
    assert empty_before["previous_available"] is True and empty_before["new"] == ["AAPL"]
