"""The evaluation package: lazy public names; its settings module loads neither torch nor numpy."""

from __future__ import annotations

import sys

import pytest

import sammed3d.evaluation as evaluation
from tests.conftest import run_fresh_python


def test_the_settings_load_without_torch_or_numpy() -> None:
    out = run_fresh_python(
        "import json, sys\n"
        "from sammed3d.evaluation.config import EvalConfig\n"
        "loaded = [m for m in ('torch', 'numpy', 'sammed3d.evaluation.metrics') "
        "if m in sys.modules]\n"
        "print(json.dumps([EvalConfig.__dataclass_fields__['seed'].default, loaded]))\n"
    )
    assert out == [2023, []]


@pytest.mark.parametrize("name", sorted(evaluation.__all__))
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(evaluation, name)
    assert value is getattr(sys.modules[evaluation._LAZY_EXPORTS[name]], name)
    assert name in dir(evaluation)


def test_all_lists_exactly_the_lazy_names_and_old_names_are_gone() -> None:
    assert sorted(evaluation.__all__) == sorted(evaluation._LAZY_EXPORTS)
    for old in ("ClickPredictor", "RegionGrowingPredictor", "SessionPredictor", "bbox_center"):
        with pytest.raises(AttributeError, match=f"has no attribute '{old}'"):
            getattr(evaluation, old)
