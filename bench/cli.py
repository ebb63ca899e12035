"""Benchmark the terminal commands: `aistack search` and `ask` with `aistack serve` up, and without.

Run with ``python bench/cli.py [--rounds 7]``. It starts ``aistack serve --demo`` in a
scratch home, waits for its worker, then times whole commands, each a new process as a
person runs them (start-up, Django, the query and the answer):

- ``aistack search QUERY`` in hybrid and in text mode, and ``aistack ask QUESTION``,
  while the worker serves the built-in model (goal: under 1 s each);
- then, with ``serve`` stopped, ``aistack search QUERY``, which loads the model itself.

It prints the median and the slowest of each, and how many times faster a search is
with the worker up than without.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_arguments, median

from harness import aistack, clean_env, free_port, stop, wait_for, wait_http_ok

QUERY = "what happens when an alert fires"


def _timed(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aistack", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), done.stderr[-3000:]
    return took


def _rounds(env: dict[str, str], rounds: int, *args: str) -> list[float]:
    return [_timed(env, *args) for _ in range(rounds)]


def _report(name: str, timings: list[float]) -> None:
    print(f"{name:<34} median {median(timings):6.2f} s   slowest {max(timings):6.2f} s"
          f"   ({len(timings)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = bench_arguments(parser, rounds=2)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-cli-"))
    env = clean_env(AISTACK_HOME=str(home))
    env.pop("LOG_LEVEL", None)
    port = free_port()
    serve = aistack("serve", "--port", str(port), "--demo", env=env, log=home / "serve.log")
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=300, process=serve,
                     log=home / "serve.log")
        # The worker serves the model once it has loaded it: until then a command would
        # load its own, and say so.
        wait_for(lambda: "Loading" not in subprocess.run(
            [sys.executable, "-m", "aistack", "search", QUERY, "--mode", "vector"], env=env,
            capture_output=True, text=True, timeout=300, check=False).stderr,
            timeout=300, interval=1, message="the worker to serve the model")
        warm = {
            "search (hybrid), serve up": _rounds(env, args.rounds, "search", QUERY),
            "search (text), serve up": _rounds(env, args.rounds, "search", QUERY,
                                               "--mode", "text"),
            "ask, serve up": _rounds(env, args.rounds, "ask", QUERY),
        }
    finally:
        stop(serve, timeout=30)
    cold = _rounds(env, max(1, args.rounds // 3), "search", QUERY)
    for name, timings in warm.items():
        _report(name, timings)
    _report("search (hybrid), serve down", cold)
    ratio = median(cold) / median(warm["search (hybrid), serve up"])
    print(f"search with the worker's model: {ratio:.1f}x faster than loading it")


if __name__ == "__main__":
    main()
