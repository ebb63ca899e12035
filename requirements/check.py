"""Fail when the locked requirements no longer satisfy pyproject.toml.

Run by `make install` and `make test` right after the lock is installed, so a dependency
added or narrowed in pyproject.toml without `make lock` stops the build with the package
named, instead of surfacing later as an import error or a silently old version.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, Version]:
    """Return the exact versions a compiled requirements file pins, by canonical name."""
    return {canonicalize_name(n): Version(v) for n, v in PIN.findall(lock.read_text())}


def problems(lock: Path, wanted: list[str]) -> list[str]:
    """Describe each requirement of `wanted` that the lock leaves out or pins outside its range."""
    pinned = pins(lock)
    found = []
    environment = default_environment()
    for line in wanted:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": ""}):
            continue
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"{lock.name}: {req.name} is required ({line!r}) but not locked")
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            found.append(f"{lock.name}: {req.name}=={version} does not satisfy {line!r}")
    return found


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    app = project["project"]["dependencies"]
    extras = project["project"]["optional-dependencies"]
    app_lock, test_lock, torch_lock, s3_lock = (
        ROOT / "requirements" / name for name in ("app.txt", "test.txt", "torch.txt", "s3.txt"))
    found = (problems(app_lock, app + build) + problems(test_lock, app + extras["test"] + build)
             + problems(torch_lock, app + extras["torch"] + build)
             + problems(s3_lock, app + extras["s3"] + build))
    test_pins = pins(test_lock)
    found += [
        f"{lock.name} pins {name}=={version} but test.txt pins {test_pins[name]}"
        for lock in (app_lock, torch_lock, s3_lock)
        for name, version in pins(lock).items()
        if name in test_pins and test_pins[name] != version
    ]
    if found:
        print("The lock disagrees with pyproject.toml; run `make lock` and commit requirements/:",
              file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
