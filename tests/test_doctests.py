"""The examples in the docstrings run, and show what the code does.

Every module of the package is searched with the standard library's
`doctest`; an example that needs files or a network says ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import zooprep

#: Every module but ``python -m zooprep`` (importing it runs the command).
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(zooprep.__path__, "zooprep.")
    if m.name != "zooprep.__main__"
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _run(name: str) -> doctest.TestResults:
    """Run the docstring examples of one module; fail with doctest's report."""
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=out.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, out.getvalue()
    return results


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_each_module_run(name: str) -> None:
    _run(name)


def test_the_package_has_docstring_examples_that_run() -> None:
    attempted = sum(_run(name).attempted for name in MODULES)
    assert attempted >= 40, attempted
