"""Fill deploy/wheelhouse with every wheel the images install, so `docker build` needs no package index.

    python deploy/wheelhouse.py [--python-full-version 3.11.2] [DIR]

`pip wheel` resolves the project's dependencies for the Python that runs it (the host's). The images may run
another patch release (Debian bookworm's python3 is 3.11.2), and a requirement's environment markers can differ
between them (redis needs async-timeout below 3.11.3): the requirements of every wheel are evaluated again for the
image's Python, and whatever is missing is fetched too, until nothing is.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def project_requirements() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def wheel_names(folder: Path) -> set[str]:
    return {canonicalize_name(path.name.split("-")[0]) for path in folder.glob("*.whl")}


def missing_for(folder: Path, python_full_version: str) -> list[str]:
    """Requirements of the wheels in `folder` that hold on the image's Python but have no wheel there."""
    env = default_environment() | {
        "python_full_version": python_full_version,
        "python_version": ".".join(python_full_version.split(".")[:2]),
    }
    have = wheel_names(folder)
    wanted: dict[str, str] = {}
    for path in folder.glob("*.whl"):
        with zipfile.ZipFile(path) as wheel:
            meta = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
            headers = Parser().parsestr(wheel.read(meta).decode())
        for line in headers.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env | {"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            if name not in have:
                wanted[name] = str(Requirement(f"{req.name}{req.specifier}"))
    for line in project_requirements():
        req = Requirement(line)
        if canonicalize_name(req.name) not in have and (req.marker is None or req.marker.evaluate(env)):
            wanted[canonicalize_name(req.name)] = line
    return sorted(wanted.values())


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "deploy" / "wheelhouse"))
    parser.add_argument("--python-full-version", default="3.11.2", help="the images' Python (Debian bookworm: 3.11.2)")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not re.fullmatch(r"3\.11\.\d+", platform.python_version()):
        print(f"wheelhouse: run this with Python 3.11 (the images'), not {platform.python_version()}", file=sys.stderr)
        return 2
    pip("wheel", "--wheel-dir", str(folder), *project_requirements())
    for _ in range(10):
        missing = missing_for(folder, args.python_full_version)
        if not missing:
            print(f"wheelhouse: {len(list(folder.glob('*.whl')))} wheels in {folder}")
            return 0
        pip("wheel", "--wheel-dir", str(folder), *missing)
    print(f"wheelhouse: still missing after 10 rounds: {missing}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
