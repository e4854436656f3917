"""Check what ``make dists`` built: each sdist holds what it needs and nothing odd.

    python tests/smoke/distribution_contents.py DIST_DIR PROJECT_DIR...

For every project directory (the root builds ``nimrank``, each ``integrations/*``
an adapter) there must be exactly one sdist and one wheel of its name and version.
The sdist must hold its ``pyproject.toml``, ``README.md``, ``LICENSE``, ``PKG-INFO``
and the package's source with ``py.typed``, and no tests, caches, compiled files,
virtualenvs or other projects' code. The wheel must hold ``py.typed`` and the
license. The description on PyPI is the README: its links must be absolute.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Paths no distribution should ship.
ODD = re.compile(
    r"(^|/)(tests?|__pycache__|\.venv[^/]*|\.git|dist|build|examples|cassettes)(/|$)|\.pyc$"
)
# Markdown links and images, and HTML src/href attributes, that are not absolute.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|#)([^)]+)\)|(?:src|href)=\"(?!https?://|#)([^\"]+)\"")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def check(dist: Path, project: Path) -> list[str]:
    """The problems found in the sdist and wheel built from ``project``."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    name = meta["project"]["name"]
    wheel_target = meta.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
    packages: list[str] = wheel_target.get("wheel", {}).get("packages", [])
    problems: list[str] = []
    # The version is read from the file names (nimrank's is dynamic in its pyproject).
    sdists = list(dist.glob(f"{normalized(name)}-*.tar.gz"))
    wheels = list(dist.glob(f"{normalized(name)}-*-py3-none-any.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return [f"{name}: expected one sdist and one wheel, found {sdists + wheels}"]
    stem = sdists[0].name.removesuffix(".tar.gz")
    version = stem.rsplit("-", 1)[1]
    with tarfile.open(sdists[0]) as tar:
        members = [m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name]
        members = [m for m in members if not tar.getmember(f"{stem}/{m}").isdir()]
        readme = tar.extractfile(f"{stem}/README.md")
        description = readme.read().decode() if readme else ""
    for needed in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
        if needed not in members:
            problems.append(f"{name} sdist: no {needed}")
    for package in packages:
        # The sdist keeps each package where the project has it (shared_client/nimrank).
        if not any(m.startswith(f"{package}/") and m.endswith("/py.typed") for m in members):
            problems.append(f"{name} sdist: no py.typed under {package}/")
        if not any(m.startswith(f"{package}/") and m.endswith(".py") for m in members):
            problems.append(f"{name} sdist: no Python source under {package}/")
    allowed_roots = {p.split("/", 1)[0] for p in packages} | {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        "CHANGELOG.md",
        ".gitignore",
    }
    for member in members:
        if ODD.search(member) or member.split("/", 1)[0] not in allowed_roots:
            problems.append(f"{name} sdist: unexpected {member}")
    with zipfile.ZipFile(wheels[0]) as whl:
        files = whl.namelist()
    if not any(f.endswith("/py.typed") for f in files):
        problems.append(f"{name} wheel: no py.typed")
    if not any(re.search(r"\.dist-info/licenses/LICENSE$", f) for f in files):
        problems.append(f"{name} wheel: no LICENSE in its .dist-info")
    odd_wheel = [f for f in files if ODD.search(f)]
    if odd_wheel:
        problems.append(f"{name} wheel: unexpected {odd_wheel}")
    for match in RELATIVE_LINK.finditer(description):
        problems.append(f"{name} README: relative link {match.group(1) or match.group(2)!r}")
    if not problems:
        print(f"{name} {version}: sdist ({len(members)} files) and wheel ({len(files)} files) ok")
    return problems


def main(argv: list[str]) -> int:
    dist, *projects = (Path(a) for a in argv)
    problems = [p for project in projects for p in check(dist, project)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
