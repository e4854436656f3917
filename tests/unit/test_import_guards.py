"""An adapter imported without its framework names the distribution to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distributions import Integration, integrations


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
    subprocess.run([sys.executable, "-c", f"import {adapter.import_path}"], check=True)
