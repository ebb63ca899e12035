"""The knowledge base from the terminal: ingest, search, ask, chat, evaluate, reindex, usage,
and MCP over stdio for AI assistants."""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import click

from aistack.cli.base import exit_on_sigterm, main, prepare, stop_signals_kept


@main.command()
@click.argument("prompt")
def chat(prompt: str) -> None:
    """Ask the configured chat model and stream its answer to the terminal."""
    prepare(embedded=True, process_type="chat", migrate=True, interactive=True,
            local_models_in="auto")
    from aistack.ai.exceptions import AIError
    from aistack.ai.types import Message
    from aistack.chat.services import chat_reply_stream

    _models_ready(embedding=False, chat=True)
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
@click.option("--max-queries", type=click.IntRange(1), default=None, metavar="N",
              help="Score N of the judged queries, a seeded sample (default: all).")
@click.option("--max-docs", type=click.IntRange(1), default=None, metavar="N",
              help="Ingest N documents: every one judged for the scored queries, then a "
                   "seeded sample of the others (default: all).")
@click.option("--live", is_flag=True,
              help="Use a scratch workspace in the configured database and Redis instead "
                   "of services of its own; it competes with everything they serve.")
@click.option("--keep", is_flag=True, help="With --live, keep the scratch workspace afterwards.")
@click.option("--json", "as_json", is_flag=True, help="End with one line of JSON scores.")
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Also score vector search forced through HNSW and forced exact.")
def eval_(dataset_dir: Path, max_queries: int | None, max_docs: int | None, live: bool,
          keep: bool, as_json: bool, exact: bool) -> None:
    """Measure retrieval quality on a BEIR-layout folder (corpus, queries, qrels).

    It runs on a PostgreSQL and a Redis of its own in a temporary directory, deleted
    when it ends or is stopped; with --live, in the configured ones.
    """
    if keep and not live:
        raise click.UsageError("--keep needs --live: without it, everything goes at the end")
    exit_on_sigterm()
    stop_signals_kept()
    run = partial(_evaluation_run, dataset_dir=dataset_dir, max_queries=max_queries,
                  max_docs=max_docs, as_json=as_json, exact=exact)
    if live:
        prepare(embedded=True, process_type="eval", migrate=True, interactive=True)
        run(drop=not keep)
        return
    from aistack.runtime.embedded import EmbeddedServiceError, ScratchStack

    scratch = ScratchStack(prefix="aistack-eval-")
    # Deleted at exit, on Ctrl-C and SIGTERM too, and after the exit handlers registered
    # later: some of them still write to its Redis.
    atexit.register(scratch.discard)
    try:
        # Nothing of the deployment's: neither its replicas nor its sentinels.
        urls = {"DATABASE_URL": scratch.database_url(), "REDIS_URL": scratch.redis_url(),
                "DATABASE_REPLICA_URLS": "", "REDIS_SENTINELS": ""}
    except (EmbeddedServiceError, OSError) as exc:
        raise click.ClickException(f"could not start the scratch services: {exc}") from exc
    # No worker serves these services: the model runs here.
    os.environ.update(AISTACK_HOME=str(scratch.home), AI_LOCAL_MODELS_IN="process", **urls)
    prepare(embedded=True, process_type="eval", migrate=True, interactive=True)
    # The whole database goes at the end: deleting the workspace first is wasted time.
    run(drop=False)


def _evaluation_run(*, dataset_dir: Path, max_queries: int | None, max_docs: int | None,
                    as_json: bool, exact: bool, drop: bool) -> None:
    """Ingest the dataset (or a sample) into a scratch workspace, score it, and print.

    With ``drop``, the workspace is deleted afterwards, even if the run fails.
    """
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from aistack.accounts.models import Workspace
    from aistack.evaluation import (
        CHUNKS_PER_QUERY,
        DatasetError,
        corpus_ingest,
        dataset_load,
        dataset_sample,
        evaluate,
        scratch_workspace_drop,
        searches_count,
    )
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import SEARCH_RESULTS

    console = Console(stderr=True)
    try:
        full = dataset_load(dataset_dir)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    dataset = dataset_sample(dataset=full, max_queries=max_queries, max_docs=max_docs)
    workspace = Workspace.objects.create(name=f"eval {dataset_dir.name}",
                                         slug=f"eval-{secrets.token_hex(6)}")
    # Documents complete in batches tens of seconds apart: the time left is estimated
    # from the pace over the whole phase, where Rich's last 30 s often hold one batch
    # and so no estimate at all.
    progress = Progress(*Progress.get_default_columns(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, speed_estimate_period=24 * 3600)
    try:
        with progress:
            task = progress.add_task("Ingesting", total=len(dataset.corpus))
            started = time.perf_counter()
            by_pk = corpus_ingest(dataset=dataset, workspace=workspace,
                                  progress=lambda n: progress.advance(task, n))
            ingest_seconds = time.perf_counter() - started
            modes = list(SearchMode)
            task = progress.add_task("Searching", total=searches_count(
                dataset=dataset, modes=modes, exact_vector=exact))
            scores = evaluate(dataset=dataset, workspace=workspace, by_pk=by_pk, modes=modes,
                              exact_vector=exact, progress=lambda n: progress.advance(task, n))
    finally:
        if drop:
            scratch_workspace_drop(workspace=workspace)
    table = Table(title=f"{dataset_dir.name}: {_sized(dataset.corpus, full.corpus)} documents, "
                        f"{_sized(dataset.queries, full.queries)} queries")
    for column in ("mode", "nDCG@10", "recall@10", "recall@100", "p50 ms", "p95 ms",
                   "p95 ms, embedding", f"p95 ms, {CHUNKS_PER_QUERY} hits"):
        table.add_column(column, justify="right")
    for name, result in scores.items():
        embedding = "-" if result.p95_ms_embedding is None else f"{result.p95_ms_embedding:.1f}"
        table.add_row(name, f"{result.ndcg_at_10:.4f}", f"{result.recall_at_10:.4f}",
                      f"{result.recall_at_100:.4f}", f"{result.p50_ms:.1f}",
                      f"{result.p95_ms:.1f}", embedding, f"{result.p95_ms_deep:.1f}")
    table.caption = (f"Latencies: a page of {SEARCH_RESULTS} hits with snippets, the query's "
                     f"vector cached or (embedding) not; the scores come from searches of "
                     f"{CHUNKS_PER_QUERY} hits.")
    Console().print(table)
    click.echo(f"ingest: {len(dataset.corpus) / ingest_seconds:.1f} documents/s "
               f"({ingest_seconds:.1f}s)")
    if as_json:
        click.echo(json.dumps({name: result.as_json() for name, result in scores.items()}))


def _plain(text: str) -> str:
    """Return ``text`` for Rich to print as it is: a document's brackets are not markup."""
    from rich.markup import escape

    return escape(text)


def _sized(sample: dict[str, Any], full: dict[str, Any]) -> str:
    """Return how many there are, as "5183", or for a sample as "1000 of 5183"."""
    return str(len(full)) if len(sample) == len(full) else f"{len(sample)} of {len(full)}"


def _workspace_named(reference: str) -> Any:
    """Return the workspace ``reference`` names by id, slug or name, saying which if two could.

    An id is tried first, then a slug, then a name (in any case): a name may be
    shared, a slug and an id may not.
    """
    from aistack.accounts.models import Workspace

    text = reference.strip()
    if not text:
        raise click.ClickException("--workspace is empty: give a workspace's name, slug or id")
    candidates = [
        ("id", Workspace.objects.filter(pk=int(text)) if text.isascii() and text.isdigit()
         else Workspace.objects.none()),
        ("slug", Workspace.objects.filter(slug=text)),
        ("name", Workspace.objects.filter(name__iexact=text).order_by("pk")),
    ]
    matches = [(how, list(found[:20])) for how, found in candidates]
    named = [(how, found) for how, found in matches if found]
    if not named:
        raise click.ClickException(
            f"no workspace {reference!r}: give its name, slug or id "
            "(`aistack manage shell` lists them with Workspace.objects.all())"
        )
    how, found = named[0]
    if len(found) > 1:
        listed = ", ".join(f"{w.slug} (id {w.pk})" for w in found)
        raise click.ClickException(
            f"{len(found)} workspaces are named {reference!r}: {listed}; give the slug or id"
        )
    chosen = found[0]
    others = {w.pk: (other_how, w) for other_how, ws in named[1:] for w in ws if w.pk != chosen.pk}
    if others:
        also = "; ".join(f"{w.name!r} (slug {w.slug}, id {w.pk}) by its {other_how}"
                         for other_how, w in others.values())
        click.echo(f"{reference!r} matched workspace {chosen.name!r} (slug {chosen.slug}, "
                   f"id {chosen.pk}) by its {how}; it also matches {also}", err=True)
    return chosen


def _cli_workspace(reference: str | None) -> Any:
    """Return the workspace named by id, slug or name, or the first administrator's own."""
    from django.contrib.auth.models import User

    from aistack.accounts.permissions import default_workspace

    if reference is not None:
        return _workspace_named(reference)
    admin = User.objects.filter(is_superuser=True).order_by("pk").first()
    if admin is None:
        raise click.ClickException(
            "no workspace given and no administrator yet: pass --workspace, "
            "or run `aistack serve` once (it creates one)"
        )
    return default_workspace(user=admin)


def _searched_workspaces(reference: str | None) -> list[int]:
    from aistack.accounts.models import Workspace

    if reference is not None:
        return [_workspace_named(reference).pk]
    return list(Workspace.objects.values_list("pk", flat=True))


def _models_ready(*, embedding: bool, chat: bool) -> None:
    """Load the local models here, saying so, when no worker can run them for this command."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from aistack.ai.services import models_loading_here

    pending = models_loading_here(embedding=embedding, chat=chat)
    if not pending:
        return
    names = ", ".join(sorted({model.id for model in pending}))
    loading = (f"Loading {names} here, as no worker is running "
               "(with `aistack serve` up, this takes no time)")
    console = Console(stderr=True)
    shown: AbstractContextManager[Any] = nullcontext()
    if console.is_terminal:
        shown = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                         TimeElapsedColumn(), console=console, transient=True)
        shown.add_task(loading)
    else:
        click.echo(f"{loading}...", err=True)
    with shown:
        for model in pending:
            model.load()


@main.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--workspace", default=None,
              help="Workspace name, slug or id (default: the administrator's).")
@click.option("--json", "as_json", is_flag=True, help="Print one line of JSON instead.")
def ingest(paths: Sequence[Path], workspace: str | None, as_json: bool) -> None:
    """Add files and folders (txt, md, html, pdf, docx) as documents and index them."""
    prepare(embedded=True, process_type="ingest", migrate=True, interactive=True)
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
                progress.console.print(f"skipped {_plain(str(file))}: {_plain(exc.message)}")
            progress.advance(task)
        task = progress.add_task("Indexing", total=len(created))
        documents_process_now(
            document_ids=created, progress=lambda n: progress.advance(task, n),
            # Once, when this import made the vectors outgrow exact scans: seconds for
            # tens of thousands, minutes for a million.
            index_building=lambda: progress.add_task("Building the vector index", total=None))

    from aistack.documents.models import Document
    from aistack.jobs.kinds import JobStatus

    failed = list(Document.objects.filter(pk__in=created, embedding_status=JobStatus.FAILED))
    for document in failed:
        console.print(f"failed {_plain(document.source_name)}: "
                      f"{_plain(document.embedding_error)}")
    if as_json:
        click.echo(json.dumps({"indexed": len(created) - len(failed), "failed": len(failed),
                               "skipped": skipped, "workspace": target.slug,
                               "documents": created}))
        return
    click.echo(f"{len(created) - len(failed)} indexed, {len(failed)} failed, "
               f"{skipped} skipped, in workspace {target.name!r} ({target.slug})")


@main.command()
@click.argument("query")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--mode", type=click.Choice(["hybrid", "vector", "text"]), default="hybrid",
              show_default=True)
@click.option("--workspace", default=None,
              help="Workspace name, slug or id (default: every workspace).")
@click.option("--json", "as_json", is_flag=True, help="Print one line of JSON instead.")
def search(query: str, k: int, mode: str, workspace: str | None, as_json: bool) -> None:
    """Search every workspace (or one) and print the best passages."""
    prepare(embedded=True, process_type="search", migrate=True, interactive=True,
            local_models_in="auto")
    import html

    from rich.console import Console
    from rich.table import Table

    from aistack.retrieval.schemas import SearchResultOut
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search as search_chunks
    from aistack.usage.types import Attribution

    workspace_ids = _searched_workspaces(workspace)
    if mode != SearchMode.TEXT:
        _models_ready(embedding=True, chat=False)
    hits = search_chunks(workspace_ids=workspace_ids, query=query, k=k, mode=SearchMode(mode),
                         attribution=Attribution(feature="search"))
    if as_json:
        # The API's own shape of a result.
        click.echo(json.dumps([SearchResultOut.model_validate(hit).model_dump()
                               for hit in hits]))
        return
    if hits and not any(hit.good_match for hit in hits):
        click.echo(f"Nothing matches {query!r} well: these are the closest passages.", err=True)
    table = Table(show_lines=True)
    for column in ("score", "document", "passage"):
        table.add_column(column)
    for hit in hits:
        # The snippet is HTML with <mark>s; the rest of its text is the document's, which
        # Rich must print as it is, brackets and all, not read as markup.
        passage = "".join(
            "[bold yellow]" if part == "<mark>" else "[/bold yellow]" if part == "</mark>"
            else _plain(html.unescape(part)) for part in re.split(r"(</?mark>)", hit.snippet))
        table.add_row(f"{hit.score:.3f}", f"{_plain(hit.document_title)} "
                      f"(#{hit.document_id})", passage)
    Console().print(table if hits else "No results.")


@main.command()
@click.argument("question")
@click.option("-k", "k", default=6, show_default=True, type=click.IntRange(1, 20))
@click.option("--workspace", default=None,
              help="Workspace name, slug or id (default: every workspace).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one line of JSON (answer and citations) when the answer is done.")
def ask(question: str, k: int, workspace: str | None, as_json: bool) -> None:
    """Answer a question from your documents, streaming, with numbered sources."""
    prepare(embedded=True, process_type="ask", migrate=True, interactive=True,
            local_models_in="auto")
    from aistack.ai.exceptions import AIError, app_error_for
    from aistack.documents.models import Document
    from aistack.retrieval.answers import DONT_KNOW, answer_plan, answer_stream, cited

    workspace_ids = _searched_workspaces(workspace)
    _models_ready(embedding=True, chat=True)
    plan = answer_plan(workspace_ids=workspace_ids, question=question, k=k, user_id=None)
    stream = answer_stream(plan)
    pieces: list[str] = []
    if stream is not None:
        try:
            for piece in stream:
                pieces.append(piece)
                if not as_json:
                    click.echo(piece, nl=False)
        except AIError as exc:
            raise click.ClickException(app_error_for(exc).message) from exc
        finally:
            stream.close()
    result = stream.result if stream is not None else None
    answer = "".join(pieces) if stream is not None else DONT_KNOW
    titles = dict(Document.objects.filter(pk__in=[s.document_id for s in plan.sources])
                  .values_list("pk", "title"))
    citations = [{"n": source.n, "document_id": source.document_id, "chunk_id": source.chunk_id,
                "document_title": titles.get(source.document_id, "")}
               for source in cited(plan, result.text if result else "")]
    if as_json:
        click.echo(json.dumps({"answer": answer, "model": result.model if result else None,
                               "extractive": bool(result and result.extractive),
                               "citations": citations}))
        return
    # Ends the line of the streamed answer, or says there was none to stream.
    click.echo(DONT_KNOW if stream is None else "")
    if result is not None and result.extractive:
        click.echo(f"({result.model}: quoted from your documents, not written by a model)",
                   err=True)
    for citation in citations:
        click.echo(f"[{citation['n']}] {citation['document_title']} "
                   f"(document {citation['document_id']}, passage {citation['chunk_id']})")


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
    """Re-embed every document with the configured embedding model (the Models page's,
    else AI_EMBEDDING_MODEL), then switch search to it."""
    prepare(embedded=True, process_type="reindex", migrate=True, interactive=True)
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from aistack.retrieval.models import EmbeddingSpace, SpaceStatus
    from aistack.retrieval.reindex import reindex_run

    console = Console(stderr=True)
    bars: list[TaskID] = []
    with Progress(console=console, transient=True) as progress:

        def started(space: EmbeddingSpace, documents: int) -> None:
            # A bar only for work there is: an empty one would sit at 0% and say nothing.
            if space.status == SpaceStatus.ACTIVE:
                console.print(f"Nothing to re-embed: search already uses {space.model}.")
            elif not documents:
                console.print(f"Nothing to re-embed: no document lacks {space.model}'s vectors.")
            else:
                bars.append(progress.add_task(f"Re-embedding for {space.model}",
                                              total=documents))

        def advance(done: int) -> None:
            for bar in bars:
                progress.advance(bar, done)

        switched = reindex_run(progress=advance, on_start=started)
    if not switched:
        raise click.ClickException(
            "some documents could not be re-embedded (see the Jobs page in the admin); "
            "search still uses the previous model. Run `aistack reindex` again to retry."
        )
    from aistack.retrieval.selectors import active_space

    active = active_space()
    click.echo(f"Search uses {active.model if active else 'no model yet'}.")


@main.command()
@click.option("--since", default=None, metavar="DAY",
              help="First day (UTC): 2026-12-01, yesterday, 7d, 2w or 24h; default 30 days ago.")
@click.option("--until", default=None, metavar="DAY",
              help="Last day (UTC), in the same forms; default today.")
@click.option("--group-by", type=click.Choice(["feature", "user", "workspace", "model", "day"]),
              default="feature", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one line of JSON instead.")
def usage(since: str | None, until: str | None, group_by: str, as_json: bool) -> None:
    """Print AI calls, tokens and cost over a period, grouped, costliest first."""
    prepare(embedded=True, process_type="usage", migrate=True, interactive=True)
    from rich.console import Console
    from rich.table import Table

    from aistack.errors import AppError
    from aistack.usage.api import UsageOut
    from aistack.usage.selectors import GroupBy, day_parse, usage_period, usage_report

    try:
        period = usage_period(since=day_parse(since) if since else None,
                              until=day_parse(until) if until else None)
    except AppError as exc:
        raise click.ClickException(exc.message) from exc
    rows = usage_report(period=period, group_by=GroupBy(group_by), workspace_ids=None)
    if as_json:
        # The API's own shape of a report.
        click.echo(UsageOut.model_validate(
            {"rows": rows, "since": period.since, "until": period.until}).model_dump_json())
        return
    table = Table(title=f"AI usage {period.since} to {period.until} (UTC)")
    for column in (group_by, "calls", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column == group_by else "right")
    for row in rows:
        table.add_row(_plain(row.label), str(row.calls), str(row.input_tokens),
                      str(row.output_tokens), f"{row.cost_usd:.6f}")
    table.add_section()
    table.add_row("total", str(sum(r.calls for r in rows)),
                  str(sum(r.input_tokens for r in rows)), str(sum(r.output_tokens for r in rows)),
                  f"{sum(r.cost_usd for r in rows):.6f}")
    Console().print(table)
