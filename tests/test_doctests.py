"""Every docstring example in the package runs, under the module's real name (``chipq.*``).

pytest's ``--doctest-modules`` would import the files by folder (``compressor.quant.plan``), a
second copy of each module whose exception names no longer match the examples; so the examples
are collected here, one test per module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import chipq
import chipq.formats


def _modules() -> list[str]:
    """Every module of ``chipq``; ``chipq.formats`` lives in its own folder, so it is walked too."""
    names = {info.name for info in pkgutil.walk_packages(chipq.__path__, "chipq.")}
    names |= {info.name for info in pkgutil.walk_packages(chipq.formats.__path__, "chipq.formats.")}
    return sorted(names | {"chipq", "chipq.formats"})


def test_every_module_is_found():
    """The walk reaches both folders of the package (a broken walk would pass vacuously)."""
    names = _modules()
    assert "chipq.formats.packing" in names and "chipq.quant.plan" in names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (run doctest -v)"
