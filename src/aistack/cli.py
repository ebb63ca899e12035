"""The ``aistack`` command line."""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

import click

from aistack.config import Config, ConfigError

_stack: Any = None


def _config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _use_embedded_services(config: Config) -> None:
    """Point DATABASE_URL and REDIS_URL at the embedded services when they are unset."""
    global _stack
    if config.database_url and config.redis_url:
        return
    from aistack.runtime.embedded import EmbeddedServiceError, EmbeddedStack

    _stack = EmbeddedStack(config.home)
    atexit.register(_stack.release)
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


def _django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")
    import django

    django.setup()


def _migrate(*, verbosity: int = 0) -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=verbosity)


def _prepare(*, embedded: bool, process_type: str, migrate: bool = False) -> Config:
    config = _config()
    config.home.mkdir(parents=True, exist_ok=True)
    if embedded:
        _use_embedded_services(config)
    else:
        _require_external_services(config, process_type)
    _django_setup()
    if migrate:
        _migrate()
    return config


@click.group()
@click.version_option(package_name="aistack")
def main() -> None:
    """aistack: a team knowledge base with AI features."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _ensure_admin(config: Config, url: str) -> None:
    from django.contrib.auth.models import User

    from aistack.accounts.services import user_create

    password_file = config.home / "admin-password"
    if not User.objects.filter(is_superuser=True).exists():
        password = secrets.token_urlsafe(12)
        user_create(username="admin", password=password, is_staff=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        click.echo(f"Created an admin user. Log in at {url}admin/ as admin / {password}")
        click.echo(f"(the password is also in {password_file})")
    elif password_file.exists():
        click.echo(f"Log in at {url}admin/ as admin (password in {password_file})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", is_flag=True, help="Load a few sample documents (once).")
def serve(host: str, port: int, demo: bool) -> None:
    """Run everything on this machine: database, Redis, web, worker and scheduler."""
    if not _port_free(host, port):
        raise click.ClickException(f"port {port} on {host} is already in use")
    config = _prepare(embedded=True, process_type="serve", migrate=True)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    _ensure_admin(config, url)
    if demo:
        from aistack.documents.demo import demo_load

        loaded = demo_load()
        if loaded:
            click.echo(f"Loaded {loaded} demo document(s).")

    from aistack.runtime.supervisor import Child, Supervisor

    me = [sys.executable, "-m", "aistack"]
    children = [
        Child(name="web", argv=[*me, "web", "--host", host, "--port", str(port)]),
        Child(name="worker", argv=[*me, "worker"]),
        Child(name="scheduler", argv=[*me, "scheduler"]),
    ]
    announced = False

    def announce_when_up() -> None:
        nonlocal announced
        if announced:
            return
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=1) as response:  # noqa: S310
                announced = response.status == 200
        except OSError:
            return
        if announced:
            click.echo(f"aistack is running at {url}  (Ctrl-C to stop)")

    supervisor = Supervisor(children, env=os.environ)
    supervisor.run(on_tick=announce_when_up)
    click.echo("aistack stopped.")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
def web(host: str, port: int, workers: int) -> None:
    """Run the web server (ASGI) against DATABASE_URL and REDIS_URL."""
    config = _prepare(embedded=False, process_type="web")
    import uvicorn

    uvicorn.run(
        "aistack.asgi:application",
        host=host,
        port=port,
        workers=workers,
        lifespan="off",
        log_level=config.log_level.lower(),
        timeout_graceful_shutdown=5,
    )


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=int)
def worker(concurrency: int) -> None:
    """Run a Celery worker against DATABASE_URL and REDIS_URL."""
    config = _prepare(embedded=False, process_type="worker")
    from aistack.celery import app

    app.worker_main(argv=["worker", f"--loglevel={config.log_level}",
                          f"--concurrency={concurrency}", "--hostname=worker-%i@%h",
                          "--without-mingle", "--without-gossip"])


@main.command()
def scheduler() -> None:
    """Run the periodic-job scheduler (Celery beat); run exactly one."""
    config = _prepare(embedded=False, process_type="scheduler")
    from aistack.celery import app

    app.start(argv=["beat", f"--loglevel={config.log_level}",
                    f"--schedule={config.home / 'celerybeat-schedule'}"])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def manage(args: Sequence[str]) -> None:
    """Run a Django management command (``aistack manage migrate`` and so on)."""
    _prepare(embedded=True, process_type="manage")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["aistack manage", *args])


@main.command()
@click.argument("username")
@click.option("--password", default=None, help="Leave out for an API-only user.")
@click.option("--staff", is_flag=True, help="Make the user an administrator.")
def createuser(username: str, password: str | None, staff: bool) -> None:
    """Create a user with a personal workspace and print a new API token."""
    _prepare(embedded=True, process_type="createuser", migrate=True)
    from django.core.exceptions import ValidationError

    from aistack.accounts.services import api_token_create, user_create

    try:
        user = user_create(username=username, password=password, is_staff=staff)
    except ValidationError as exc:
        raise click.ClickException("; ".join(exc.messages)) from exc
    _, token = api_token_create(user=user, name="cli")
    click.echo(f"Created user {username!r} with a personal workspace. API token (shown once):",
               err=True)
    click.echo(token)
