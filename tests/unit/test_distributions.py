"""Adapter distributions: released with their nimrank, and helpful without a framework."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

import nimrank
from distributions import ROOT, Integration, integrations


@pytest.mark.parametrize("adapter", integrations(), ids=lambda i: i.name)
def test_adapter_is_released_with_the_nimrank_it_needs(adapter: Integration) -> None:
    # One version for every distribution; each adapter asks for that nimrank.
    assert adapter.version == nimrank.__version__
    text = (adapter.directory / "pyproject.toml").read_text(encoding="utf-8")
    needs = [r for r in map(Requirement, _dependencies(text)) if r.name == "nimrank"]
    assert len(needs) == 1
    assert needs[0].specifier.contains(nimrank.__version__)


@pytest.mark.parametrize("adapter", integrations(), ids=lambda i: i.name)
def test_adapter_ships_license_readme_and_py_typed(adapter: Integration) -> None:
    root_license = (ROOT / "LICENSE").read_bytes()
    assert (adapter.directory / "LICENSE").read_bytes() == root_license
    assert (adapter.directory / "README.md").is_file()
    package = adapter.directory.joinpath(*adapter.import_path.split("."))
    assert (package / "py.typed").is_file()


@pytest.mark.parametrize("adapter", integrations(), ids=lambda i: i.name)
def test_missing_framework_names_the_distribution(adapter: Integration) -> None:
    # None in sys.modules makes the framework's import fail as if it were absent.
    hide_and_import = (
        "import sys\n"
        f"sys.modules[{adapter.framework_module!r}] = None\n"
        "try:\n"
        f"    import {adapter.import_path}\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", hide_and_import], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("ImportError "), out  # not a bare ModuleNotFoundError
    assert f"pip install {adapter.name}" in out
    assert adapter.framework.name in out


@pytest.mark.parametrize("adapter", integrations(), ids=lambda i: i.name)
def test_adapter_imports_with_its_framework(adapter: Integration) -> None:
    if importlib.util.find_spec(adapter.framework_module) is None:
        pytest.skip(f"{adapter.framework.name} is installed only by its own make target")
    subprocess.run([sys.executable, "-c", f"import {adapter.import_path}"], check=True)


def _dependencies(pyproject: str) -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    deps: list[str] = tomllib.loads(pyproject)["project"]["dependencies"]
    return deps
