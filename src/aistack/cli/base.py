"""What every command shares: configuration, the services it needs, Django set up.

Commands import the application inside their function: Django must be set up
(and embedded services started) before any model is imported.
"""

from __future__ import annotations

import _thread
import atexit
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import click

from aistack.config import Config, ConfigError

_stack: Any = None


def config_read() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def exit_on_sigterm() -> None:
    """Make SIGTERM end this process as ``sys.exit`` does: cleanup and exit handlers run."""
    # Python's default SIGTERM ends the process without running them, which would leave
    # the services this process started running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def stop_signals_kept() -> None:
    """Raise Ctrl-C's KeyboardInterrupt (or SIGTERM's SystemExit) again if Python drops it.

    The exception a signal handler raises while a finalizer runs, and garbage collection
    runs them at any moment, is printed and dropped: the command would carry on as if
    never stopped. Signalled again, the main thread raises it once the finalizer is done.
    """
    resent = {KeyboardInterrupt: signal.SIGINT, SystemExit: signal.SIGTERM}
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        signum = resent.get(unraisable.exc_type)
        if signum is None:
            previous(unraisable)
            return
        # From another thread and a moment later: signalled from here, the main thread
        # would raise it again before the finalizer has returned.
        timer = threading.Timer(0.05, _thread.interrupt_main, args=(signum,))
        timer.daemon = True
        timer.start()

    sys.unraisablehook = hook


def _use_embedded_services(config: Config) -> None:
    """Point DATABASE_URL and REDIS_URL at the embedded services when they are unset."""
    global _stack
    if config.database_url and config.redis_url:
        return
    from aistack.runtime.embedded import EmbeddedServiceError, EmbeddedStack

    _stack = EmbeddedStack(config.home)
    atexit.register(_stack.release)
    exit_on_sigterm()
    try:
        if not config.database_url:
            os.environ["DATABASE_URL"] = _stack.database_url()
        if not config.redis_url:
            os.environ["REDIS_URL"] = _stack.redis_url()
    except (EmbeddedServiceError, OSError) as exc:
        raise click.ClickException(f"could not start the embedded services: {exc}") from exc


def _require_external_services(config: Config, process_type: str) -> None:
    missing = [name for name, value in (("DATABASE_URL", config.database_url),
                                        ("REDIS_URL", config.redis_url)) if not value]
    if missing:
        raise click.ClickException(
            f"`aistack {process_type}` needs {' and '.join(missing)} "
            "(use `aistack serve` to run everything on one machine with embedded services)"
        )


def django_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")


def _django_setup() -> None:
    django_settings()
    import django

    django.setup()


def _migrate(*, verbosity: int = 0) -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=verbosity)


def _migrations_pending() -> bool:
    """Return whether a migration file on disk is not recorded as applied.

    Reads file names and one table, where ``migrate`` loads every migration and builds
    their graph (a tenth of a second of each command from a terminal) only to find
    nothing to do. Anything unusual (no table yet, a squashed migration) counts as
    pending, and ``migrate`` sorts it out.
    """
    import importlib.util
    from pathlib import Path

    from django.apps import apps
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.recorder import MigrationRecorder

    recorder = MigrationRecorder(connection)
    if not recorder.has_table():
        return True
    applied = set(recorder.applied_migrations())
    for app in apps.get_app_configs():
        module, _ = MigrationLoader.migrations_module(app.label)
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            for file in Path(folder).glob("[!_~]*.py"):
                if (app.label, file.stem) not in applied:
                    return True
    return False


def _system_check() -> None:
    """Refuse to start with a configuration Django's system checks call an error."""
    from django.core import checks

    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        raise click.ClickException(
            "the configuration has problems:\n" + "\n".join(str(error) for error in errors)
        )


def services(*, embedded: bool, process_type: str) -> Config:
    """Load the configuration; start the embedded services or insist on external ones."""
    config = config_read()
    config.home.mkdir(parents=True, exist_ok=True)
    if embedded:
        _use_embedded_services(config)
    else:
        _require_external_services(config, process_type)
    return config


def django_ready(*, migrate: bool = False) -> None:
    """Set Django up, refuse a configuration its checks fault, and migrate if asked."""
    _django_setup()
    _system_check()
    if migrate and _migrations_pending():
        _migrate()


def prepare(*, embedded: bool, process_type: str, migrate: bool = False,
            interactive: bool = False, local_models_in: str | None = None) -> Config:
    """Get a command ready to run: its services, Django, and the database migrated if asked.

    An interactive command is read by a person: its result alone goes to stdout, and its
    logs go to stderr at WARNING unless LOG_LEVEL says otherwise. ``local_models_in``
    is where the built-in models run unless AI_LOCAL_MODELS_IN says otherwise.
    """
    # Set unless set, and not empty (as a copied .env.example leaves them).
    if interactive and not os.environ.get("LOG_LEVEL"):
        os.environ["LOG_LEVEL"] = "WARNING"
    if local_models_in and not os.environ.get("AI_LOCAL_MODELS_IN"):
        os.environ["AI_LOCAL_MODELS_IN"] = local_models_in
    config = services(embedded=embedded, process_type=process_type)
    django_ready(migrate=migrate)
    return config


def in_child(work: Callable[[], object]) -> None:
    """Run ``work`` in a forked child and wait for it; exit with its code if it fails.

    For a process that only supervises others: what ``work`` loads (Django and the
    whole application, 150 MB) leaves with the child instead of staying resident.
    The child ends with ``os._exit``, so the parent's exit handlers (which stop the
    embedded services) run only in the parent.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if (pid := os.fork()) == 0:
        code = 1
        try:
            work()
            code = 0
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # shown here; the parent sees the exit code
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if code := os.waitstatus_to_exitcode(status):
        raise SystemExit(code)


@click.group()
@click.version_option(package_name="aistack")
def main() -> None:
    """aistack: a team knowledge base with AI features."""
    # Registered first, so it runs after every other exit handler: the interpreter then
    # skips collecting what the command loaded (Django and the app: a third of a second
    # of every search from a terminal; more once a model's runtime is in).
    atexit.register(gc.freeze)
