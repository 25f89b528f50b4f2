"""The package imports as `covplan` beside coverage.py, numba and the libraries built on numba.

The folder is coverage/ but the import name is covplan: a module named `coverage` would shadow
coverage.py, and numba imports `coverage` to find it (so spopt, libpysal and mapclassify broke).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import covplan

NEIGHBOURS = """
import covplan, coverage, numba, libpysal, mapclassify, spopt
import numpy as np
from covplan.plan.pipeline import plan_communities

assert hasattr(coverage, "Coverage"), coverage.__file__          # coverage.py, not our folder

@numba.njit
def total(values):
    s = 0.0
    for v in values:
        s += v
    return s

assert total(np.array([1.0, 2.0, 3.5])) == 6.5
print(covplan.__file__)
"""


def test_covplan_imports_beside_coverage_py_numba_and_spopt(tmp_path):
    # -P and a neutral folder: nothing on sys.path but the installed packages.
    done = subprocess.run([sys.executable, "-P", "-c", NEIGHBOURS], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).parent == Path(covplan.__file__).parent


def test_the_command_reports_its_version(tmp_path):
    command = shutil.which("covplan", path=str(Path(sys.executable).parent)) or "covplan"
    done = subprocess.run([command, "--version"], cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == f"covplan {covplan.__version__}"
