"""The ``aistack`` command line."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from aistack.config import Config, ConfigError

# The niceness ``serve`` gives the scheduler (0 is the web's).
BACKGROUND_NICE = 10

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
    # Python's default SIGTERM ends the process without running atexit handlers, which
    # would leave the services this process started running: exit normally instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
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


def _django_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")


def _django_setup() -> None:
    _django_settings()
    import django

    django.setup()


def _migrate(*, verbosity: int = 0) -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=verbosity)


def _system_check() -> None:
    """Refuse to start with a configuration Django's system checks call an error."""
    from django.core import checks

    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        raise click.ClickException(
            "the configuration has problems:\n" + "\n".join(str(error) for error in errors)
        )


def _services(*, embedded: bool, process_type: str) -> Config:
    """Load the configuration; start the embedded services or insist on external ones."""
    config = _config()
    config.home.mkdir(parents=True, exist_ok=True)
    if embedded:
        _use_embedded_services(config)
    else:
        _require_external_services(config, process_type)
    return config


def _django_ready(*, migrate: bool = False) -> None:
    """Set Django up, refuse a configuration its checks fault, and migrate if asked."""
    _django_setup()
    _system_check()
    if migrate:
        _migrate()


def _prepare(*, embedded: bool, process_type: str, migrate: bool = False) -> Config:
    config = _services(embedded=embedded, process_type=process_type)
    _django_ready(migrate=migrate)
    return config


def _in_child(work: Callable[[], object]) -> None:
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
    # Metrics count from this start: the files of an earlier run's processes go.
    shutil.rmtree(_config().prometheus_multiproc_dir, ignore_errors=True)
    # This process owns the embedded services and then only supervises: the setup that
    # needs Django runs in a child of its own.
    config = _services(embedded=True, process_type="serve")
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def ready() -> None:
        _django_ready(migrate=True)
        _ensure_admin(config, url)
        if demo:
            from aistack.documents.demo import demo_load

            loaded = demo_load()
            if loaded:
                click.echo(f"Loaded {loaded} demo document(s).")

    _in_child(ready)

    from aistack.runtime.supervisor import Child, Supervisor

    me = [sys.executable, "-m", "aistack"]
    children = [
        # A drain shorter than the supervisor's stop timeout, which then kills what is left.
        Child(name="web", argv=[*me, "web", "--host", host, "--port", str(port),
                                "--graceful-timeout", "5"]),
        # One pool process: the local model already uses every core, and each pool
        # process would load its own copy (600 MB). Its jobs run only on CPU time the
        # requests leave over, so indexing and summaries never slow the requests being
        # served; the thread that embeds the web's search queries keeps normal priority.
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
@click.option("--socket-fd", default=None, type=click.IntRange(0), hidden=True,
              help="Serve this inherited listening socket, in one process.")
def web(host: str, port: int, workers: int | None, graceful_timeout: int,
        socket_fd: int | None) -> None:
    """Run the web server (ASGI) against DATABASE_URL and REDIS_URL."""
    # The workers load the local models to index documents; the web asks them to embed
    # its queries rather than hold another copy (and torch) in every web process.
    os.environ.setdefault("AI_LOCAL_MODELS_IN", "worker")
    config = _services(embedded=False, process_type="web")
    workers = 1 if socket_fd is not None else workers or config.web_workers
    if workers > 1:
        # The server's parent only supervises its processes, which set Django up anew.
        _in_child(_django_ready)
    else:
        _django_ready()
    from aistack.runtime.webserver import web_serve

    web_serve(host=host, port=port, workers=workers, log_level=config.log_level.lower(),
              graceful_timeout=graceful_timeout, socket_fd=socket_fd)


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option("--task-nice", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Niceness of the jobs alone; the local model answers the web at the "
                   "worker's own priority.")
@click.option("--task-idle", is_flag=True,
              help="Run the jobs only on CPU time nothing else wants (Linux SCHED_IDLE), "
                   "for a worker beside the web on one machine.")
def worker(concurrency: int, task_nice: int, task_idle: bool) -> None:
    """Run a Celery worker against DATABASE_URL and REDIS_URL."""
    config = _prepare(embedded=False, process_type="worker")
    from aistack.ai import worker as ai_worker
    from aistack.celery import app

    ai_worker.task_nice = task_nice
    ai_worker.task_idle = task_idle

    app.worker_main(argv=["worker", f"--loglevel={config.log_level}",
                          f"--concurrency={concurrency}", "--hostname=worker-%i@%h",
                          "--without-mingle", "--without-gossip"])


@main.command()
def scheduler() -> None:
    """Run the periodic-job scheduler (Celery beat); run exactly one."""
    config = _services(embedded=False, process_type="scheduler")
    # Checked like every process's configuration, but in a child: the scheduler itself
    # only sends jobs by name, and runs without Django set up.
    _in_child(_django_ready)
    _django_settings()
    from aistack.jobs.beat import beat_app

    beat_app().start(argv=["beat", f"--loglevel={config.log_level}",
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


@main.command()
@click.argument("prompt")
def chat(prompt: str) -> None:
    """Ask the configured chat model and stream its answer to the terminal."""
    _prepare(embedded=True, process_type="chat", migrate=True)
    from aistack.ai.chat import chat_reply_stream
    from aistack.ai.exceptions import AIError
    from aistack.ai.types import Message

    stream = chat_reply_stream(messages=[Message(role="user", content=prompt)])
    try:
        for text in stream:
            click.echo(text, nl=False)
    except AIError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo()
    if stream.result is not None:
        label = " (extractive: quoted from the supplied text, not generated)"
        click.echo(f"-- {stream.result.model}{label if stream.result.extractive else ''}",
                   err=True)


@main.command(name="eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="End with one line of JSON scores.")
@click.option("--keep", is_flag=True, help="Keep the scratch workspace afterwards.")
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Also score vector search forced through HNSW and forced exact.")
def eval_(dataset_dir: Path, as_json: bool, keep: bool, exact: bool) -> None:
    """Measure retrieval quality on a BEIR-layout folder (corpus, queries, qrels)."""
    _prepare(embedded=True, process_type="eval", migrate=True)
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from aistack.accounts.models import Workspace
    from aistack.retrieval.evaluation import (
        DatasetError,
        corpus_ingest,
        dataset_load,
        evaluate,
        scratch_workspace_drop,
    )
    from aistack.retrieval.selectors import SearchMode

    console = Console(stderr=True)
    try:
        dataset = dataset_load(dataset_dir)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    workspace = Workspace.objects.create(name=f"eval {dataset_dir.name}",
                                         slug=f"eval-{secrets.token_hex(6)}")
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("Ingesting", total=len(dataset.corpus))
            started = time.perf_counter()
            by_pk = corpus_ingest(dataset=dataset, workspace=workspace,
                                  progress=lambda n: progress.advance(task, n))
            ingest_seconds = time.perf_counter() - started
            modes = list(SearchMode)
            runs = len(modes) + (2 if exact else 0)
            task = progress.add_task("Searching", total=len(dataset.queries) * runs)
            scores = evaluate(dataset=dataset, workspace=workspace, by_pk=by_pk, modes=modes,
                              exact_vector=exact, progress=lambda n: progress.advance(task, n))
    finally:
        if not keep:
            scratch_workspace_drop(workspace=workspace)
    table = Table(title=f"{dataset_dir.name}: {len(dataset.corpus)} documents, "
                        f"{len(dataset.queries)} queries")
    for column in ("mode", "nDCG@10", "recall@10", "recall@100", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right")
    for name, result in scores.items():
        table.add_row(name, f"{result.ndcg_at_10:.4f}", f"{result.recall_at_10:.4f}",
                      f"{result.recall_at_100:.4f}", f"{result.p50_ms:.1f}",
                      f"{result.p95_ms:.1f}")
    Console().print(table)
    click.echo(f"ingest: {len(dataset.corpus) / ingest_seconds:.1f} documents/s "
               f"({ingest_seconds:.1f}s)")
    if as_json:
        click.echo(json.dumps({name: result.as_json() for name, result in scores.items()}))


def _cli_workspace(reference: str | None) -> Any:
    """Return the workspace named by id or slug, or the first administrator's own."""
    from django.contrib.auth.models import User

    from aistack.accounts.models import Workspace
    from aistack.accounts.permissions import default_workspace

    if reference:
        found = Workspace.objects.filter(
            **({"pk": int(reference)} if reference.isdigit() else {"slug": reference})
        ).first()
        if found is None:
            raise click.ClickException(f"no workspace {reference!r}")
        return found
    admin = User.objects.filter(is_superuser=True).order_by("pk").first()
    if admin is None:
        raise click.ClickException(
            "no workspace given and no administrator yet: pass --workspace, "
            "or run `aistack serve` once (it creates one)"
        )
    return default_workspace(user=admin)


@main.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--workspace", default=None, help="Workspace id or slug (default: the admin's).")
def ingest(paths: Sequence[Path], workspace: str | None) -> None:
    """Add files and folders (txt, md, html, pdf, docx) as documents and index them."""
    _prepare(embedded=True, process_type="ingest", migrate=True)
    from django.core.files import File
    from rich.console import Console
    from rich.progress import Progress

    from aistack.documents.services import document_upload_create, documents_process_now
    from aistack.errors import AppError

    target = _cli_workspace(workspace)
    files = sorted({file for path in paths
                    for file in ([path] if path.is_file() else path.rglob("*"))
                    if file.is_file() and not any(p.startswith(".") for p in file.parts[-1:])})
    console = Console(stderr=True)
    created, skipped = [], 0
    with Progress(console=console) as progress:
        task = progress.add_task("Uploading", total=len(files))
        for file in files:
            try:
                with file.open("rb") as handle:
                    document = document_upload_create(
                        workspace=target, file=File(handle, name=file.name), content_type=None,
                        author=None,
                    )
                created.append(document.pk)
            except AppError as exc:
                skipped += 1
                progress.console.print(f"skipped {file}: {exc.message}")
            progress.advance(task)
        task = progress.add_task("Indexing", total=len(created))
        documents_process_now(document_ids=created, progress=lambda n: progress.advance(task, n))

    from aistack.documents.models import Document
    from aistack.jobs.models import JobStatus

    failed = Document.objects.filter(pk__in=created, embedding_status=JobStatus.FAILED)
    for document in failed:
        console.print(f"failed {document.source_name}: {document.embedding_error}")
    click.echo(f"{len(created) - failed.count()} indexed, {failed.count()} failed, "
               f"{skipped} skipped, in workspace {target.slug}")


@main.command()
@click.argument("query")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--mode", type=click.Choice(["hybrid", "vector", "text"]), default="hybrid",
              show_default=True)
@click.option("--workspace", default=None, help="Workspace id or slug (default: all).")
def search(query: str, k: int, mode: str, workspace: str | None) -> None:
    """Search every workspace (or one) and print the best passages."""
    _prepare(embedded=True, process_type="search", migrate=True)
    import html

    from rich.console import Console
    from rich.table import Table

    from aistack.accounts.models import Workspace
    from aistack.ai.types import Attribution
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search as search_chunks

    workspace_ids = ([_cli_workspace(workspace).pk] if workspace
                     else list(Workspace.objects.values_list("pk", flat=True)))
    hits = search_chunks(workspace_ids=workspace_ids, query=query, k=k, mode=SearchMode(mode),
                         attribution=Attribution(feature="search"))
    table = Table(show_lines=True)
    for column in ("score", "document", "passage"):
        table.add_column(column)
    for hit in hits:
        passage = html.unescape(hit.snippet.replace("<mark>", "[bold yellow]")
                                .replace("</mark>", "[/bold yellow]"))
        table.add_row(f"{hit.score:.3f}", f"{hit.document_title} "
                      f"(#{hit.document_id})", passage)
    Console().print(table if hits else "No results.")


@main.command()
@click.argument("question")
@click.option("-k", "k", default=6, show_default=True, type=click.IntRange(1, 20))
@click.option("--workspace", default=None, help="Workspace id or slug (default: all).")
def ask(question: str, k: int, workspace: str | None) -> None:
    """Answer a question from your documents, streaming, with numbered sources."""
    _prepare(embedded=True, process_type="ask", migrate=True)
    from aistack.accounts.models import Workspace
    from aistack.ai.exceptions import AIError
    from aistack.documents.models import Document
    from aistack.errors import app_error_for
    from aistack.retrieval.answers import DONT_KNOW, answer_plan, answer_stream, cited

    workspace_ids = ([_cli_workspace(workspace).pk] if workspace
                     else list(Workspace.objects.values_list("pk", flat=True)))
    plan = answer_plan(workspace_ids=workspace_ids, question=question, k=k, user_id=None)
    stream = answer_stream(plan)
    if stream is None:
        click.echo(DONT_KNOW)
        return
    try:
        for piece in stream:
            click.echo(piece, nl=False)
    except AIError as exc:
        raise click.ClickException(app_error_for(exc).message) from exc
    finally:
        stream.close()
    click.echo()
    result = stream.result
    if result is not None and result.extractive:
        click.echo(f"({result.model}: quoted from your documents, not written by a model)")
    titles = dict(Document.objects.filter(pk__in=[s.document_id for s in plan.sources])
                  .values_list("pk", "title"))
    for source in cited(plan, result.text if result else ""):
        click.echo(f"[{source.n}] {titles.get(source.document_id, '')} "
                   f"(document {source.document_id}, passage {source.chunk_id})")


@main.command()
def reindex() -> None:
    """Re-embed every document with AI_EMBEDDING_MODEL, then switch search to it."""
    _prepare(embedded=True, process_type="reindex", migrate=True)
    from rich.console import Console
    from rich.progress import Progress

    from aistack.retrieval.models import EmbeddingSpace
    from aistack.retrieval.reindex import reindex_run

    console = Console(stderr=True)
    with Progress(console=console) as progress:
        task = progress.add_task("Re-embedding", total=None)

        def started(space: EmbeddingSpace, documents: int) -> None:
            progress.update(task, total=documents,
                            description=f"Re-embedding for {space.model}")

        switched = reindex_run(progress=lambda n: progress.advance(task, n), on_start=started)
    if not switched:
        raise click.ClickException(
            "some documents could not be re-embedded (see the Jobs page in the admin); "
            "search still uses the previous model. Run `aistack reindex` again to retry."
        )
    from aistack.retrieval.selectors import active_space

    active = active_space()
    click.echo(f"Search uses {active.model if active else 'no model yet'}.")


@main.command()
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First day (UTC), default 30 days ago.")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last day (UTC), default today.")
@click.option("--group-by", type=click.Choice(["feature", "user", "workspace", "model", "day"]),
              default="feature", show_default=True)
def usage(since: datetime | None, until: datetime | None, group_by: str) -> None:
    """Print AI calls, tokens and cost over a period, grouped, costliest first."""
    _prepare(embedded=True, process_type="usage", migrate=True)
    from rich.console import Console
    from rich.table import Table

    from aistack.errors import AppError
    from aistack.usage.selectors import GroupBy, usage_period, usage_report

    try:
        period = usage_period(since=since and since.date(), until=until and until.date())
    except AppError as exc:
        raise click.ClickException(exc.message) from exc
    rows = usage_report(period=period, group_by=GroupBy(group_by), workspace_ids=None)
    table = Table(title=f"AI usage {period.since} to {period.until} (UTC)")
    for column in (group_by, "calls", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column == group_by else "right")
    for row in rows:
        table.add_row(row.key, str(row.calls), str(row.input_tokens), str(row.output_tokens),
                      f"{row.cost_usd:.6f}")
    table.add_section()
    table.add_row("total", str(sum(r.calls for r in rows)),
                  str(sum(r.input_tokens for r in rows)), str(sum(r.output_tokens for r in rows)),
                  f"{sum(r.cost_usd for r in rows):.6f}")
    Console().print(table)
