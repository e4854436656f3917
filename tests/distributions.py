"""What each integration's ``pyproject.toml`` says, for the Makefile and the tests.

Every directory ``integrations/<distribution>/`` with a ``pyproject.toml`` is one
distribution; its ``[tool.nimrank]`` table names the framework whose version range
``make compat`` tests at both ends, the module that framework provides, the
adapter's import path and its tests::

    python tests/distributions.py dirs                      # integrations/..., one a line
    python tests/distributions.py pin DIR oldest|newest     # a pip requirement
    python tests/distributions.py tests DIR                 # the adapter's test files
    python tests/distributions.py import DIR                # the adapter's import path
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Integration:
    """One adapter distribution under ``integrations/``."""

    directory: Path
    name: str
    version: str
    framework: Requirement
    framework_module: str
    import_path: str
    tests: tuple[str, ...]

    def pin(self, end: str) -> str:
        """The pip requirement installing the oldest or the newest allowed framework."""
        if end == "newest":
            return str(self.framework)
        if end != "oldest":
            raise ValueError(f"end must be 'oldest' or 'newest', not {end!r}")
        floors = [s.version for s in self.framework.specifier if s.operator == ">="]
        if len(floors) != 1:
            raise ValueError(f"{self.name}: {self.framework} has no single '>=' floor")
        return f"{self.framework.name}=={floors[0]}"


def integration(directory: Path) -> Integration:
    """Read ``directory/pyproject.toml``; a missing ``[tool.nimrank]`` entry is an error."""
    data = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    table = data.get("tool", {}).get("nimrank")
    if table is None:
        raise SystemExit(
            f"{directory}/pyproject.toml has no [tool.nimrank] table (framework, "
            "framework-module, import, tests): see docs/packaging.md"
        )
    framework = next(
        (
            Requirement(r)
            for r in project["dependencies"]
            if Requirement(r).name == table["framework"]
        ),
        None,
    )
    if framework is None:
        raise SystemExit(f"{directory}: framework {table['framework']!r} is not a dependency")
    return Integration(
        directory=directory,
        name=project["name"],
        version=project["version"],
        framework=framework,
        framework_module=table["framework-module"],
        import_path=table["import"],
        tests=tuple(table["tests"]),
    )


def integrations() -> list[Integration]:
    """Every integration distribution of the repository, in directory order."""
    return [integration(p.parent) for p in sorted(ROOT.glob("integrations/*/pyproject.toml"))]


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "dirs":
        print("\n".join(str(i.directory.relative_to(ROOT)) for i in integrations()))
        return 0
    found = integration(ROOT / rest[0])
    if command == "pin":
        print(found.pin(rest[1]))
    elif command == "tests":
        print(" ".join(found.tests))
    elif command == "import":
        print(found.import_path)
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
