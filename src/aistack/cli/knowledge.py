"""The knowledge base from the terminal: ingest, search, ask, chat, evaluate, reindex, usage,
and MCP over stdio for AI assistants."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from aistack.cli.base import main, prepare


@main.command()
@click.argument("prompt")
def chat(prompt: str) -> None:
    """Ask the configured chat model and stream its answer to the terminal."""
    prepare(embedded=True, process_type="chat", migrate=True)
    from aistack.ai.exceptions import AIError
    from aistack.ai.types import Message
    from aistack.chat.services import chat_reply_stream

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
    prepare(embedded=True, process_type="eval", migrate=True)
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from aistack.accounts.models import Workspace
    from aistack.evaluation import (
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
    prepare(embedded=True, process_type="ingest", migrate=True)
    from django.core.files import File
    from rich.console import Console
    from rich.progress import Progress

    from aistack.documents.indexing import documents_process_now
    from aistack.documents.services import document_upload_create
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
    from aistack.jobs.kinds import JobStatus

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
    prepare(embedded=True, process_type="search", migrate=True)
    import html

    from rich.console import Console
    from rich.table import Table

    from aistack.accounts.models import Workspace
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search as search_chunks
    from aistack.usage.types import Attribution

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
    prepare(embedded=True, process_type="ask", migrate=True)
    from aistack.accounts.models import Workspace
    from aistack.ai.exceptions import AIError, app_error_for
    from aistack.documents.models import Document
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
@click.option("--token", envvar="AISTACK_TOKEN", required=True, metavar="TOKEN",
              help="An API token (from the Tokens page); or set AISTACK_TOKEN.")
def mcp(token: str) -> None:
    """Serve the knowledge base to an AI assistant over stdio (MCP), as the token's user.

    The assistant starts this process and speaks MCP on its standard input and output;
    logs go to standard error.
    """
    prepare(embedded=True, process_type="mcp", migrate=True)
    from aistack.accounts.selectors import user_for_token
    from aistack.mcp.server import UNREVOKED, KnowledgeBaseServer

    if user_for_token(raw=token.strip()) is None:
        raise click.ClickException(UNREVOKED)
    KnowledgeBaseServer(token=token.strip()).run("stdio")


@main.command()
def reindex() -> None:
    """Re-embed every document with AI_EMBEDDING_MODEL, then switch search to it."""
    prepare(embedded=True, process_type="reindex", migrate=True)
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
    prepare(embedded=True, process_type="usage", migrate=True)
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
