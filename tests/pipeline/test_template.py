"""Variables and foreach: the only logic a recipe holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdpipe.errors import ConfigError
from kdpipe.pipeline.template import expand, substitute


def test_whole_string_keeps_the_type_and_parts_interpolate():
    env = {"n": 3, "fracs": [10, 30], "name": "x"}
    data = {"a": "${n}", "b": "${fracs}", "c": "train[:${n}%]", "d": ["${name}_${n}", 5]}
    assert substitute(data, env, "t") == {"a": 3, "b": [10, 30], "c": "train[:3%]", "d": ["x_3", 5]}


def test_escape_and_unknown_variable():
    assert substitute("$${n} ${n}", {"n": 1}, "t") == "${n} 1"
    with pytest.raises(ConfigError, match=r"t.a: unknown variable \$\{m\} \(defined: n\)"):
        substitute({"a": "${m}"}, {"n": 1}, "t")


def test_foreach_zips_lists_and_nests():
    items = [
        {"name": "first"},
        {
            "foreach": {"ms": [900, 800], "prev": ["teacher", "s900"]},
            "stages": [{"name": "s${ms}", "from": "${prev}"}],
        },
        {
            "foreach": {"f": "${fracs}"},
            "stages": [{"foreach": {"g": [1, 2]}, "stages": ["${f}-${g}"]}],
        },
    ]
    out = expand(items, {"fracs": [10, 30]}, "stages", "t")
    assert out == [
        {"name": "first"},
        {"name": "s900", "from": "teacher"},
        {"name": "s800", "from": "s900"},
        "10-1", "10-2", "30-1", "30-2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "item, msg",
    [
        ({"foreach": {"a": [1, 2], "b": [1]}, "stages": []}, "equal lengths"),
        ({"foreach": {"a": []}, "stages": []}, "non-empty list"),
        ({"foreach": {"a": [1]}, "rows": []}, "exactly the keys foreach, stages"),
        ({"foreach": [1, 2], "stages": []}, "map variable names to lists"),
    ],
)
def test_bad_foreach(item, msg):
    with pytest.raises(ConfigError, match=msg):
        expand([item], {}, "stages", "t")


@given(st.lists(st.integers(), min_size=1, max_size=5), st.lists(st.text(max_size=3), max_size=3))
def test_foreach_length_is_product_of_body_and_values(values, body):
    out = expand([{"foreach": {"v": values}, "rows": body}], {}, "rows", "t")
    assert len(out) == len(values) * len(body)
