"""The processes: everything on one machine (``serve``), or web, worker and scheduler."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import urllib.request
import warnings

import click

from aistack.cli.base import (
    config_read,
    django_ready,
    django_settings,
    in_child,
    main,
    prepare,
    services,
)
from aistack.config import Config
from aistack.runtime.webserver import port_free, web_serve

# The niceness ``serve`` gives the scheduler (0 is the web's).
BACKGROUND_NICE = 10
# Added to the niceness of a worker's bulk jobs when interactive processes run beside them.
BULK_NICE = 10

# What running as root means here, and what to do instead (the Dockerfile does it).
AS_ROOT = (
    "aistack is running as root: it works, but then a flaw in any file parser would run "
    "with root's rights. Run it as an ordinary user instead, e.g. "
    "`useradd --create-home aistack && sudo -u aistack -H make run` "
    "(the Docker image already runs as the user aistack)."
)


def _as_root() -> bool:
    return os.geteuid() == 0


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
    if not port_free(host, port):
        raise click.ClickException(f"port {port} on {host} is already in use")
    if _as_root():
        click.echo(AS_ROOT, err=True)
    # Metrics count from this start: the files of an earlier run's processes go.
    shutil.rmtree(config_read().prometheus_multiproc_dir, ignore_errors=True)
    # This process owns the embedded services and then only supervises: the setup that
    # needs Django runs in a child of its own.
    config = services(embedded=True, process_type="serve")
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def ready() -> None:
        django_ready(migrate=True)
        _ensure_admin(config, url)
        if demo:
            from aistack.documents.demo import demo_load

            loaded = demo_load()
            if loaded:
                click.echo(f"Loaded {loaded} demo document(s).")

    in_child(ready)

    from aistack.runtime.supervisor import Child, Supervisor

    me = [sys.executable, "-m", "aistack"]
    children = [
        # A drain shorter than the supervisor's stop timeout, which then kills what is left.
        Child(name="web", argv=[*me, "web", "--host", host, "--port", str(port),
                                "--graceful-timeout", "5"]),
        # One pool process, and one more for each workspace's first jobs: the local
        # model already uses every core, and each pool process loads its own copy. Jobs
        # run only on CPU time the requests leave over, so indexing and summaries never
        # slow the requests being served; the thread that embeds the web's search
        # queries keeps normal priority.
        Child(name="worker", argv=[*me, "worker", "--concurrency", "1", "--task-idle"]),
        Child(name="scheduler", argv=[*me, "scheduler"], nice=BACKGROUND_NICE),
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
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Web processes (default: WEB_CONCURRENCY, or 2).")
@click.option("--graceful-timeout", default=30, show_default=True, type=click.IntRange(0),
              help="Seconds requests in flight get to finish after SIGTERM.")
@click.option("--header-timeout", default=10.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds a request may take to send its headers before it gets 408.")
@click.option("--socket-fd", default=None, type=click.IntRange(0), hidden=True,
              help="Serve this inherited listening socket, in one process.")
def web(host: str, port: int, workers: int | None, graceful_timeout: int,
        header_timeout: float, socket_fd: int | None) -> None:
    """Run the web server (ASGI) against DATABASE_URL and REDIS_URL."""
    # The workers load the local models to index documents; the web asks them to embed
    # its queries rather than hold another copy (and its runtime) in every web process.
    os.environ.setdefault("AI_LOCAL_MODELS_IN", "worker")
    config = services(embedded=False, process_type="web")
    workers = 1 if socket_fd is not None else workers or config.web_workers
    if workers > 1:
        # The server's parent only supervises its processes, which set Django up anew.
        in_child(django_ready)
    else:
        django_ready()
    web_serve(host=host, port=port, workers=workers, log_level=config.log_level.lower(),
              graceful_timeout=graceful_timeout, headers_timeout=header_timeout,
              socket_fd=socket_fd)


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1),
              help="Processes that run any job.")
@click.option("--interactive-concurrency", default=1, show_default=True,
              type=click.IntRange(0),
              help="More processes, for the interactive queue alone: the first jobs of "
                   "each workspace, which then never wait behind another's backlog.")
@click.option("--task-nice", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Niceness of the jobs alone; the local model answers the web at the "
                   "worker's own priority.")
@click.option("--task-idle", is_flag=True,
              help="Run the jobs only on CPU time nothing else wants (Linux SCHED_IDLE), "
                   "for a worker beside the web on one machine.")
@click.option("--interactive-only", is_flag=True, hidden=True)
def worker(concurrency: int, interactive_concurrency: int, task_nice: int, task_idle: bool,
           interactive_only: bool) -> None:
    """Run a Celery worker against DATABASE_URL and REDIS_URL."""
    config = prepare(embedded=False, process_type="worker")
    from celery.exceptions import SecurityWarning

    from aistack.ai import worker as ai_worker
    from aistack.celery import app
    from aistack.jobs.services import BULK_QUEUE, INTERACTIVE_QUEUE
    from aistack.runtime.supervisor import Companion

    ai_worker.task_idle = task_idle
    if _as_root():
        # In place of Celery's eight lines, which only offer --uid (a user who could not
        # read this home's database socket or files): one saying what to do.
        warnings.filterwarnings("ignore", category=SecurityWarning)
        if not interactive_only:
            logging.getLogger(__name__).warning(AS_ROOT)
    argv = ["worker", f"--loglevel={config.log_level}", f"--concurrency={concurrency}",
            "--without-mingle", "--without-gossip"]
    if interactive_only:
        ai_worker.task_nice = task_nice
        app.worker_main(argv=[*argv, f"--queues={INTERACTIVE_QUEUE}",
                              "--hostname=interactive-%i@%h"])
        return
    argv += [f"--queues={INTERACTIVE_QUEUE},{BULK_QUEUE}", "--hostname=worker-%i@%h"]
    if not interactive_concurrency:
        ai_worker.task_nice = task_nice
        app.worker_main(argv=argv)
        return
    # Bulk work yields the CPU to the interactive processes when both have work.
    ai_worker.task_nice = min(task_nice + BULK_NICE, 19)
    flags = [*(["--task-idle"] if task_idle else []), "--task-nice", str(task_nice)]
    interactive = [sys.executable, "-m", "aistack", "worker", "--interactive-only",
                   "--concurrency", str(interactive_concurrency), *flags]
    with Companion("interactive worker", interactive, env=os.environ):
        app.worker_main(argv=argv)


@main.command()
def scheduler() -> None:
    """Run the periodic-job scheduler (Celery beat); run exactly one."""
    config = services(embedded=False, process_type="scheduler")
    # Checked like every process's configuration, but in a child: the scheduler itself
    # only sends jobs by name, and runs without Django set up.
    in_child(django_ready)
    django_settings()
    from aistack.jobs.beat import beat_app

    beat_app().start(argv=["beat", f"--loglevel={config.log_level}",
                    f"--schedule={config.home / 'celerybeat-schedule'}"])
