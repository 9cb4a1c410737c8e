"""An add-on's values as the one file Helm is given: merge order, canonical text, and its hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.addons import values
from deploy.errors import PlanError
from deploy.model.schema_addons import AddonSpec


def _addon(**fields: object) -> AddonSpec:
    return AddonSpec.model_validate({"name": "web", "chart": "web", "version": "1.0.0", **fields})


def test_files_merge_in_order_then_inline_values_win(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("image: {repo: a, tag: '1'}\nports: [80, 443]\nkeep: yes\n")
    (tmp_path / "b.yaml").write_text("image: {tag: '2'}\nports: [8080]\n")
    addon = _addon(values_files=["a.yaml", "b.yaml"], values={"image": {"pull": "Never"}, "keep": None})
    assert values.merged(addon, tmp_path) == {
        "image": {"repo": "a", "tag": "2", "pull": "Never"},  # maps merge key by key
        "ports": [8080],  # lists are replaced, as Helm replaces them
        "keep": None,  # a null goes on to Helm, which drops the chart's default of that key
    }


def test_the_same_values_are_the_same_text_and_hash(tmp_path: Path) -> None:
    one = values.render(_addon(values={"b": 1, "a": {"y": 2, "x": 1}}), tmp_path)
    two = values.render(_addon(values={"a": {"x": 1, "y": 2}, "b": 1}), tmp_path)
    assert one == two == "a:\n  x: 1\n  y: 2\nb: 1\n"
    assert values.digest(one) == values.digest(two)
    other = values.render(_addon(values={"a": {"x": 1, "y": 3}, "b": 1}), tmp_path)
    assert values.digest(other) != values.digest(one)
    assert values.render(_addon(), tmp_path) == "{}\n"


def test_a_values_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PlanError, match=r"values file .*list.yaml is not a YAML mapping \(it is a list\)"):
        values.render(_addon(values_files=["list.yaml"]), tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    assert values.merged(_addon(values_files=["empty.yaml"], values={"a": 1}), tmp_path) == {"a": 1}
