"""The one rule by which stored JSON is read and served, whatever it holds."""

import json

import pytest

from shared.bounded_json import (
    MAX_DEPTH,
    TRUNCATED,
    bounded,
    clean_text,
    dumps,
    int_text,
    loads,
    nesting_depth,
    scalar_text,
)

pytestmark = pytest.mark.unit


def depth_of(value) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def test_values_within_the_bounds_are_unchanged():
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": "é\u2028"}, "n": 2**53 - 1}
    assert loads(json.dumps(value)) == value
    assert bounded(value) == value
    assert json.loads(dumps(value)) == value
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth_of(loads(deepest)) == MAX_DEPTH


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 5000, 100_000])
def test_deeper_containers_become_the_marker(depth):
    text = '{"k": ' * depth + "1" + "}" * depth
    for value in (loads(text), bounded(loads(text)), loads(text.encode())):
        assert depth_of(value) == MAX_DEPTH
        node = value
        for _ in range(MAX_DEPTH):
            node = node["k"]
        assert node == TRUNCATED


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps({"message": "[" * 5000 + "]" * 5000, "q": 'a "quoted" \\ [ {'})
    assert nesting_depth(text) == 1
    assert loads(text)["message"] == "[" * 5000 + "]" * 5000


def test_numbers_no_reader_holds_become_text():
    value = loads('{"a": ' + "9" * 5000 + ', "b": -9007199254740993, "c": 9007199254740991, "d": 1e400}')
    assert value == {"a": "9" * 5000, "b": "-9007199254740993", "c": 2**53 - 1, "d": "1e400"}
    assert bounded({"big": 10**5000, "inf": float("inf")}) == {"big": int_text(10**5000), "inf": "inf"}
    assert int_text(10**5000) == "(an integer of about 5,001 digits)" and int_text(-(10**20)) == "-" + "1" + "0" * 20


def test_text_that_cannot_be_encoded_is_cleaned():
    value = loads('{"\\ud800k": "a\\udfffb\\u0000c"}')
    assert value == {"\ufffdk": "a\ufffdb\ufffdc"}
    assert clean_text("\ud83d\x00") == "\ufffd\ufffd"
    assert dumps({"\ud800": 1}).encode("utf-8")


@pytest.mark.parametrize("text", ["", "{", "[1,]", "[" * 100_000, "nul\x00l", '"unterminated'])
def test_text_that_is_not_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        loads(text)


def test_scalar_text_never_spells_out_a_container():
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    assert scalar_text(deep) == "[…]" and scalar_text({}) == "{}" and scalar_text(None) == "null"
