"""Run a fault drill from bench/drills as a real subprocess and read its closing figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import clean_env

ROOT = Path(__file__).resolve().parents[2]


def run_drill(name: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    """Run ``python -m bench.drills.NAME ARGS``; return the JSON line it ends with."""
    result = subprocess.run([sys.executable, "-m", f"bench.drills.{name}", *args], cwd=ROOT,
                            env=clean_env(), capture_output=True, text=True, timeout=timeout,
                            check=False)
    # Shown by pytest when the test fails: what the drill did and found, step by step.
    print(result.stdout[-20_000:])
    print(result.stderr[-5_000:], file=sys.stderr)
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["drill"] == name
    assert result.returncode == (0 if report["ok"] else 1)
    return report
