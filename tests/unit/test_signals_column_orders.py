"""Inline JSON artifacts name the column order of their tables: JSONB, where they are
stored, keeps no key order, and the UI shows the columns in the order named."""

import pytest

from services.signals.workflow.artifacts import column_orders

pytestmark = pytest.mark.unit


def test_each_list_of_rows_names_its_columns_in_the_order_first_seen():
    model = {"verdict": "worse", "folds": [{"symbol": "AAPL", "fold": 0, "train_start": "a"},
                                           {"symbol": "AAPL", "fold": 1, "extra": 2}],
             "metrics": {"accuracy": 0.5}, "unscored": ["TSLA"], "empty": []}
    assert column_orders(model) == {"folds": ["symbol", "fold", "train_start", "extra"]}
    assert column_orders([{"b": 1, "a": 2}]) == {"": ["b", "a"]}
    assert column_orders({"x": 1}) == {} and column_orders("text") == {}
    assert column_orders({"columns": [{"name": "a", "description": ""}], "rows": [[1]]}) == {}
