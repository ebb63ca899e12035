"""The knowledge base as an MCP server: its tools and resources.

Every tool and resource is an API token's user calling the same services as the HTTP
API, through the same permission checks, rate limits, budgets and usage ledger; model
calls are recorded under the ``mcp`` feature. Over HTTP the token is the request's
bearer token (checked again on every request, so a revoked token stops at once); over
stdio it is the one ``aistack mcp`` was started with, checked again on every call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import version
from typing import Annotated, Any

from django.contrib.auth.models import User
from django.db import InterfaceError, OperationalError, connections
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    ListResourcesResult,
    PaginatedRequestParams,
    Resource,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from aistack.accounts.permissions import (
    default_workspace,
    ensure_can_write,
    workspace_for_read,
    workspace_ids_for_read,
)
from aistack.accounts.selectors import user_for_token
from aistack.ai.exceptions import AIError, app_error_for
from aistack.cache import REDIS_UNREACHABLE
from aistack.documents import selectors as documents
from aistack.documents import services as document_services
from aistack.documents.models import Document
from aistack.documents.summaries import summary_state
from aistack.errors import AppError, NotFound, Unavailable
from aistack.jobs.kinds import JobStatus
from aistack.retrieval.answers import answer, answer_plan, answer_render
from aistack.retrieval.api import MAX_QUERY_CHARS, AskOut
from aistack.retrieval.schemas import SearchOut, SearchResultOut
from aistack.retrieval.selectors import SearchMode
from aistack.retrieval.services import search_and_mode
from aistack.usage.ratelimits import ai_rate_limit_hit, write_rate_limit_hit
from aistack.usage.types import Attribution
from aistack.validation import Text

logger = logging.getLogger(__name__)

FEATURE = "mcp"
DOCUMENT_URI = "aistack://documents/{document_id}"
# Resources are listed a page at a time, newest first; a client asks for the next.
RESOURCES_PAGE = 100
LIST_LIMIT_MAX = 100
# Ids are PostgreSQL bigints: a larger number names nothing, and is refused as such.
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
MAX_OFFSET = 10**9
_DIGITS = re.compile(r"[0-9]{1,19}")
_LISTED = ("pk", "title", "workspace_id", "embedding_status", "updated_at")
# Where the HTTP transport's token verifier leaves the token's user for the tools.
USER_CLAIM = "aistack_user"
UNREVOKED = "The token is unknown or was revoked: make a new one on the Tokens page."

INSTRUCTIONS = """\
A team knowledge base. `search` finds passages; `ask` answers a question from the \
documents with numbered citations; `list_documents` and `get_document` read documents; \
`create_document` adds one (editors and owners). Every call sees only the workspaces \
the token's user may read (or the one workspace the token is limited to)."""


class DocumentSummary(BaseModel):
    status: JobStatus
    text: str | None
    stale: bool = Field(description="True when the text is of an older version of the document.")


class DocumentFull(BaseModel):
    id: int
    uri: str
    workspace_id: int
    workspace: str
    title: str
    content: str
    status: JobStatus = Field(description="Whether the document is indexed for search yet.")
    summary: DocumentSummary
    created_at: datetime
    updated_at: datetime


class DocumentItem(BaseModel):
    id: int
    uri: str
    workspace_id: int
    title: str
    status: JobStatus
    updated_at: datetime


class DocumentList(BaseModel):
    documents: list[DocumentItem]
    count: int = Field(description="How many documents match, on every page.")
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")


class Created(BaseModel):
    id: int
    uri: str
    workspace_id: int
    title: str
    status: JobStatus = Field(description="Indexing runs in the background: search finds the "
                                          "document once this is complete.")


def _number(text: str, *, below: int) -> int | None:
    """Return the whole number ``text`` spells in ASCII digits, if it is below ``below``."""
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number < below else None


def _uri(document_id: int) -> str:
    return DOCUMENT_URI.format(document_id=document_id)


@contextmanager
def _service_call(error: type[ToolError] | type[ResourceError] = ToolError) -> Iterator[None]:
    """Run a tool's or resource's work as the API runs a request's: the user's refusals
    become its error, worded as the API words them; nothing internal is ever shown."""
    try:
        yield
    except (ToolError, ResourceError):
        raise
    except NotFound as exc:
        raise (ResourceNotFoundError if error is ResourceError else error)(exc.message) from exc
    except AppError as exc:
        raise error(exc.message) from exc
    except AIError as exc:
        raise error(app_error_for(exc).message) from exc
    except (OperationalError, InterfaceError, *REDIS_UNREACHABLE) as exc:
        logger.warning("mcp: service unavailable: %s", exc)
        raise error(Unavailable().message) from exc
    except Exception as exc:
        logger.exception("mcp: unexpected error")
        raise error("Something went wrong on our side; it has been logged.") from exc
    finally:
        connections.close_all()  # this thread's connection goes back to the pool


class KnowledgeBaseServer(MCPServer[Any]):
    """The MCP server; ``token`` is the stdio transport's token, None over HTTP."""

    def __init__(self, *, token: str | None = None, **kwargs: Any) -> None:
        # No subscriptions: nothing is pushed to assistants, so no stream is held open.
        super().__init__("aistack", instructions=INSTRUCTIONS, version=version("aistack"),
                         subscriptions=False, **kwargs)
        self._stdio_token = token
        _register(self)

    def caller(self, error: type[ToolError] | type[ResourceError] = ToolError) -> User:
        """Return the user the current call's token belongs to, with the token's scope."""
        access = get_access_token()
        if access is not None and isinstance(
                verified := (access.claims or {}).get(USER_CLAIM), User):
            return verified  # checked by the verifier for this very request
        raw = access.token if access is not None else self._stdio_token
        user = user_for_token(raw=raw) if raw else None
        if user is None:
            raise error(UNREVOKED)
        return user

    async def _handle_list_resources(self, ctx: ServerRequestContext[Any],
                                     params: PaginatedRequestParams | None) -> ListResourcesResult:
        # Each caller has their own documents, a page at a time: the SDK's list is one
        # fixed set for everyone, so this replaces its handler.
        import anyio.to_thread

        cursor = params.cursor if params is not None else None
        return await anyio.to_thread.run_sync(self._resources_page, cursor)

    def _resources_page(self, cursor: str | None) -> ListResourcesResult:
        offset = _number(cursor, below=MAX_OFFSET) if cursor else 0
        if offset is None:
            raise MCPError(code=INVALID_PARAMS, message="The cursor is not one this server gave.")
        try:
            with _service_call(ResourceError):
                user = self.caller(ResourceError)
                rows = list(documents.document_list(user=user)
                            .select_related("workspace").only(*_LISTED, "workspace__name")
                            [offset:offset + RESOURCES_PAGE + 1])
        except ResourceError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from exc
        more = len(rows) > RESOURCES_PAGE
        return ListResourcesResult(
            resources=[Resource(uri=_uri(d.pk), name=d.title or f"Document {d.pk}",
                                title=d.title, description=f"In {d.workspace.name}",
                                mime_type="text/markdown")
                       for d in rows[:RESOURCES_PAGE]],
            next_cursor=str(offset + RESOURCES_PAGE) if more else None,
        )


def _summary(document: Document) -> DocumentSummary:
    state = summary_state(document=document)
    return DocumentSummary(status=state.status, text=state.summary, stale=state.stale)


def _register(server: KnowledgeBaseServer) -> None:
    """Add the tools and the document resource to ``server``."""

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def search(
        query: Annotated[Text, Field(min_length=1, max_length=MAX_QUERY_CHARS,
                                     description="What to look for.")],
        k: Annotated[int, Field(ge=1, le=100, description="How many passages.")] = 10,
        mode: Annotated[SearchMode, Field(description="hybrid (words and meaning), vector "
                                                      "(meaning) or text (exact words).")]
        = SearchMode.HYBRID,
        workspace: Annotated[Id | None, Field(description="A workspace id; all of yours "
                                                          "when left out.")] = None,
    ) -> SearchOut:
        """Find the passages of the knowledge base that best match a query."""
        with _service_call():
            user = server.caller()
            if mode != SearchMode.TEXT:  # a text search asks no model
                ai_rate_limit_hit(user=user)
            workspace_ids = workspace_ids_for_read(user=user, workspace_id=workspace)
            hits, used = search_and_mode(
                workspace_ids=workspace_ids, query=query, k=k, mode=mode,
                attribution=Attribution(feature=FEATURE, user_id=user.pk,
                                        workspace_ids=tuple(workspace_ids)))
            # The API's own shapes, here and in ask: one answer, whichever way it is asked.
            return SearchOut(mode=used.value,
                             results=[SearchResultOut.model_validate(hit) for hit in hits])

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def ask(
        question: Annotated[Text, Field(min_length=1, max_length=MAX_QUERY_CHARS)],
        workspace: Annotated[Id | None, Field(description="A workspace id; all of yours "
                                                          "when left out.")] = None,
        k: Annotated[int, Field(ge=1, le=20, description="How many passages the answer "
                                                         "may draw on.")] = 6,
    ) -> AskOut:
        """Answer a question from the documents, citing the passages it uses as [n]."""
        with _service_call():
            user = server.caller()
            ai_rate_limit_hit(user=user)
            workspace_ids = workspace_ids_for_read(user=user, workspace_id=workspace)
            plan = answer_plan(workspace_ids=workspace_ids, question=question, k=k,
                               user_id=user.pk, feature=FEATURE)
            return AskOut.model_validate(answer_render(plan, answer(plan)))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def get_document(id: Annotated[Id, Field(description="The document's id.")]
                     ) -> DocumentFull:
        """Read a document: its text, title, summary and indexing status."""
        with _service_call():
            user = server.caller()
            document = documents.document_get(user=user, document_id=id)
            return DocumentFull(
                id=document.pk, uri=_uri(document.pk), workspace_id=document.workspace_id,
                workspace=document.workspace.name, title=document.title,
                content=document.content, status=JobStatus(document.embedding_status),
                summary=_summary(document), created_at=document.created_at,
                updated_at=document.updated_at)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def list_documents(
        workspace: Annotated[Id | None, Field(description="A workspace id; all of yours "
                                                          "when left out.")] = None,
        title: Annotated[Text | None, Field(max_length=200, description="Only titles "
                                                                        "containing this.")]
        = None,
        limit: Annotated[int, Field(ge=1, le=LIST_LIMIT_MAX)] = 20,
        offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0,
    ) -> DocumentList:
        """List documents, newest first, a page at a time (``next_offset`` is the next)."""
        with _service_call():
            user = server.caller()
            if workspace is not None:
                workspace_for_read(user=user, workspace_id=workspace)
            matching = documents.document_list(user=user, workspace_id=workspace, title=title)
            count = matching.count()
            rows = list(matching.only(*_LISTED)[offset:offset + limit])
            return DocumentList(
                documents=[DocumentItem(id=d.pk, uri=_uri(d.pk), workspace_id=d.workspace_id,
                                        title=d.title, status=JobStatus(d.embedding_status),
                                        updated_at=d.updated_at) for d in rows],
                count=count,
                next_offset=offset + limit if offset + limit < count else None)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                             idempotent_hint=False, open_world_hint=False))
    def create_document(
        title: Annotated[Text, Field(min_length=1)],
        content: Text,
        workspace: Annotated[Id | None, Field(description="A workspace id; your personal "
                                                          "workspace when left out.")] = None,
    ) -> Created:
        """Add a document (editors and owners of the workspace); it is indexed in the
        background."""
        with _service_call():
            user = server.caller()
            write_rate_limit_hit(user=user)
            target = (default_workspace(user=user) if workspace is None
                      else workspace_for_read(user=user, workspace_id=workspace))
            ensure_can_write(user=user, workspace=target)
            document = document_services.document_create(
                workspace=target, title=title, content=content, author=user)
            return Created(id=document.pk, uri=_uri(document.pk),
                           workspace_id=document.workspace_id, title=document.title,
                           status=JobStatus(document.embedding_status))

    @server.resource(DOCUMENT_URI, mime_type="text/markdown",
                     description="A document of the knowledge base, as Markdown.")
    def document(document_id: str) -> str:
        """Read one document: its title as a heading, then its text."""
        with _service_call(ResourceError):
            user = server.caller(ResourceError)
            number = _number(document_id, below=2**63)
            if number is None:
                raise ResourceNotFoundError("Document not found.")
            found = documents.document_get(user=user, document_id=number)
            return f"# {found.title}\n\n{found.content}"
