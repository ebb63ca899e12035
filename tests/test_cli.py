"""The command line's setup: in a child process for the processes that only supervise, and
migrations run only when one is pending."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False)


def test_what_the_child_loads_stays_out_of_the_parent() -> None:
    result = run_python("""
        import sys
        from aistack.cli import in_child

        def work():
            import django.contrib.admin  # noqa: F401
            assert "django.contrib.admin" in sys.modules
            print("child ran", flush=True)

        in_child(work)
        print("parent has django:", any(m.startswith("django") for m in sys.modules))
    """)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child ran", "parent has django: False"]


def test_a_failing_child_ends_the_parent_with_its_reason_and_code() -> None:
    refused = run_python("""
        import click
        from aistack.cli import in_child

        def work():
            raise click.ClickException("the configuration has problems")

        in_child(work)
        print("not reached")
    """)
    crashed = run_python("""
        from aistack.cli import in_child

        in_child(lambda: 1 / 0)
        print("not reached")
    """)

    assert refused.returncode == 1
    assert "Error: the configuration has problems" in refused.stderr
    assert crashed.returncode == 1
    assert "ZeroDivisionError" in crashed.stderr
    assert "not reached" not in refused.stdout + crashed.stdout


def test_the_parent_exit_handlers_run_once_in_the_parent_alone() -> None:
    result = run_python("""
        import atexit, os
        from aistack.cli import in_child

        atexit.register(lambda: print("exit handler in", os.getpid(), flush=True))
        in_child(lambda: print("child", os.getpid(), flush=True))
        print("parent", os.getpid(), flush=True)
    """)

    lines = result.stdout.splitlines()
    parent = next(line.split()[1] for line in lines if line.startswith("parent"))
    assert [line for line in lines if line.startswith("exit handler")] == [
        f"exit handler in {parent}"]


@pytest.mark.django_db
def test_a_migration_not_recorded_as_applied_is_pending() -> None:
    from django.db.migrations.recorder import MigrationRecorder

    from aistack.cli.base import _migrations_pending

    assert not _migrations_pending()
    MigrationRecorder.Migration.objects.filter(app="retrieval", name__startswith="0004").delete()
    assert _migrations_pending()
