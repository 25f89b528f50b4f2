"""The package's public names: every one resolves, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import covplan
import pytest


def test_every_public_name_resolves():
    for name in covplan.__all__:
        assert getattr(covplan, name) is not None
    assert covplan.plan_communities.__module__ == "covplan.plan.pipeline"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        covplan.no_such_thing   # noqa: B018


def test_import_is_lazy():
    code = "import sys, covplan; print('geopandas' in sys.modules, 'ortools' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
