"""`aistack chat` as a user runs it: a separate process on the shared services."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _aistack(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aistack", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180, check=False,
    )


@pytest.mark.e2e
def test_chat_streams_the_answer_to_the_terminal() -> None:
    done = _aistack("chat", "hello from the terminal", AI_CHAT_MODEL="scripted:echo")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the terminal\n"
    assert "-- scripted:echo" in done.stderr


@pytest.mark.e2e
def test_a_wrong_model_string_stops_start_up_with_a_clear_message() -> None:
    done = _aistack("chat", "hello", AI_CHAT_MODEL="gpt-4")

    assert done.returncode != 0
    assert "unknown provider 'gpt-4'" in done.stderr
    assert "AI_CHAT_MODEL" in done.stderr
    assert "Traceback" not in done.stderr
