"""The package root: lazy public names, one version, no torch on ``import sammed3d``."""

from __future__ import annotations

import sys

import pytest

import sammed3d
from sammed3d import _version
from tests.conftest import run_fresh_python


def _fresh_modules(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    return run_fresh_python(code)


def test_import_does_not_load_torch():
    out = _fresh_modules(
        "import json, sys, sammed3d; "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'numpy': 'numpy' in sys.modules, "
        "'version': sammed3d.__version__}))"
    )
    assert out == {"torch": False, "numpy": False, "version": _version.__version__}


def test_first_use_of_a_name_imports_its_module():
    out = _fresh_modules(
        "import json, sys; from sammed3d import ModelConfig; "
        "print(json.dumps({'cfg': ModelConfig().encoder_embed_dim, "
        "'torch': 'torch' in sys.modules}))"
    )
    assert out == {"cfg": 768, "torch": False}  # the config module is torch-free
    out = _fresh_modules(
        "import json, sys, sammed3d; f = sammed3d.build_model; "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'name': f.__module__}))"
    )
    assert out == {"torch": True, "name": "sammed3d.build"}


@pytest.mark.parametrize("name", sorted(set(sammed3d.__all__) - {"__version__"}))
def test_every_public_name_resolves_to_its_definition(name):
    value = getattr(sammed3d, name)
    module = sys.modules[sammed3d._LAZY_EXPORTS[name]]
    assert value is getattr(module, name)
    assert name in dir(sammed3d)


def test_all_lists_exactly_the_lazy_names():
    assert sorted(sammed3d.__all__) == sorted([*sammed3d._LAZY_EXPORTS, "__version__"])


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'build_modle'"):
        sammed3d.build_modle  # noqa: B018
    with pytest.raises(ImportError):
        from sammed3d import build_modle  # noqa: F401


def test_version_has_one_source():
    assert sammed3d.__version__ == _version.__version__
    assert _version.__version__.count(".") >= 2
