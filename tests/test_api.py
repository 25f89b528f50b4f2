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


def test_ecosystem_helpers_are_public():
    for name, module in (("as_walk_network", "covplan.inputs.network"),
                         ("as_population", "covplan.inputs.population"),
                         ("adjacency_graph", "covplan.inputs.tessellation")):
        assert name in covplan.__all__
        assert getattr(covplan, name).__module__ == module


# Entry points whose docstrings follow numpydoc in full; other public functions are still to do.
NUMPYDOC = ["load_network", "as_walk_network", "load_population", "as_population",
            "adjacency_graph", "compute_reach", "compute_isochrones", "assess_coverage",
            "plan_communities"]


@pytest.mark.parametrize("name", NUMPYDOC)
def test_numpydoc_sections_document_every_parameter(name):
    import inspect
    import re

    func = getattr(covplan, name)
    doc = inspect.getdoc(func)
    section = re.compile(r"^(\w+)\n-+\n(.*?)(?=^\w+\n-+\n|\Z)", re.MULTILINE | re.DOTALL)
    sections = dict(section.findall(doc))
    assert {"Parameters", "Returns", "Raises"} <= set(sections)
    listed = set(re.findall(r"^\**(\w+)$", sections["Parameters"], re.MULTILINE))
    assert set(inspect.signature(func).parameters) <= listed
