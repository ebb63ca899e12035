"""The MCP server at /mcp, driven by the SDK's own client over Streamable HTTP.

A real uvicorn serves the ASGI application, a real Celery worker indexes what the tools
create, and PostgreSQL and Redis are the test session's own.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from django.contrib.auth.models import User
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import PaginatedRequestParams

from aistack.accounts.models import Role, Workspace
from aistack.accounts.services import api_token_create, api_token_revoke, membership_set
from aistack.documents.models import Document
from aistack.jobs.kinds import JobStatus
from aistack.usage.models import UsageRecord
from harness import wait_for
from tests.assistants.client import error_text, in_thread, run, structured
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "Zanzibar quokka ledger: the vault code is 7741."
PUBLIC = "Quokkas live on Rottnest Island and smile at visitors."


@pytest.fixture
def models(use_models: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


@pytest.fixture
def secret(models: None, alice: User) -> Document:
    """A document only alice may read."""
    return indexed(alice.personal_workspace, alice, "Vault", SECRET)


@pytest.fixture
def bobs(models: None, bob: User) -> Document:
    return indexed(bob.personal_workspace, bob, "Island notes", PUBLIC)


def token_of(user: User, **scope: Any) -> str:
    return api_token_create(user=user, name="assistant", **scope)[1]


def test_every_tool_and_resource_through_the_services_recorded_as_mcp(
    secret: Document, alice: User, asgi_url: str, celery_worker: Any
) -> None:
    token = token_of(alice)

    async def scenario(client: Client) -> dict[str, Any]:
        tools = await client.list_tools()
        found = await client.call_tool("search", {"query": "vault code quokka", "k": 5})
        answered = await client.call_tool("ask", {"question": "What is the vault code?"})
        document = await client.call_tool("get_document", {"id": secret.pk})
        created = await client.call_tool("create_document", {
            "title": "Onboarding", "content": "New starters get a laptop on day one."})
        listed = await client.call_tool("list_documents", {"limit": 1})
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        read = await client.read_resource(f"aistack://documents/{secret.pk}")
        return {"tools": tools, "found": found, "answered": answered, "document": document,
                "created": created, "listed": listed, "resources": resources,
                "templates": templates, "read": read}

    got = run(asgi_url, token, scenario)

    assert [tool.name for tool in got["tools"].tools] == [
        "search", "ask", "get_document", "list_documents", "create_document"]
    search_tool = next(tool for tool in got["tools"].tools if tool.name == "search")
    assert search_tool.input_schema["required"] == ["query"]
    assert search_tool.annotations.read_only_hint is True

    hits = structured(got["found"])["results"]
    assert hits[0]["document_id"] == secret.pk
    answer = structured(got["answered"])
    assert "7741" in answer["answer"] and answer["answered"] is True
    assert answer["citations"][0]["document_id"] == secret.pk
    document = structured(got["document"])
    assert (document["title"], document["content"], document["status"]) == (
        "Vault", SECRET, "complete")
    assert document["uri"] == f"aistack://documents/{secret.pk}"

    created = structured(got["created"])
    made = Document.objects.get(pk=created["id"])
    assert (made.title, made.workspace_id) == ("Onboarding", alice.personal_workspace.pk)
    # Indexed by the worker, as a document made over the API is.
    wait_for(lambda: Document.objects.get(pk=made.pk).embedding_status == JobStatus.COMPLETE,
             timeout=30)
    listed = structured(got["listed"])
    assert (listed["count"], listed["next_offset"]) == (2, 1)
    assert [d["id"] for d in listed["documents"]] == [made.pk]  # newest first

    assert {r.uri for r in got["resources"].resources} == {
        f"aistack://documents/{secret.pk}", f"aistack://documents/{made.pk}"}
    assert [t.uri_template for t in got["templates"].resource_templates] == [
        "aistack://documents/{document_id}"]
    assert got["read"].contents[0].text == f"# Vault\n\n{SECRET}"

    # The model calls (the query embeddings, the answer) are in the ledger as mcp's.
    calls = UsageRecord.objects.filter(feature="mcp")
    assert {call.model for call in calls} == {"scripted:hash", "local:extractive"}
    assert {call.user_id for call in calls} == {alice.pk}
    assert {call.workspace_id for call in calls} == {alice.personal_workspace.pk}


def test_another_users_token_never_reaches_her_documents(
    secret: Document, bobs: Document, bob: User, asgi_url: str
) -> None:
    token = token_of(bob)

    async def scenario(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {
            "search": [await client.call_tool("search", {"query": SECRET, "mode": mode})
                       for mode in ("hybrid", "vector", "text")],
            "ask": await client.call_tool("ask", {"question": "What is the vault code?"}),
            "get": await client.call_tool("get_document", {"id": secret.pk}),
            "list": await client.call_tool("list_documents", {}),
            "her_workspace": await client.call_tool(
                "search", {"query": "vault", "workspace": secret.workspace_id}),
            "resources": await client.list_resources(),
        }
        try:
            await client.read_resource(f"aistack://documents/{secret.pk}")
        except MCPError as exc:
            out["read"] = exc
        return out

    got = run(asgi_url, token, scenario)

    for result in got["search"]:
        assert secret.pk not in {hit["document_id"] for hit in structured(result)["results"]}
    answer = structured(got["ask"])
    assert "7741" not in answer["answer"]
    assert all(c["document_id"] == bobs.pk for c in answer["citations"])
    assert error_text(got["get"]).endswith("Document not found.")
    assert [d["id"] for d in structured(got["list"])["documents"]] == [bobs.pk]
    assert error_text(got["her_workspace"]).endswith("Workspace not found.")
    assert [r.uri for r in got["resources"].resources] == [f"aistack://documents/{bobs.pk}"]
    assert "Document not found." in str(got["read"])


def test_a_token_limited_to_one_workspace_sees_that_workspace_alone(
    secret: Document, alice: User, bob: User, asgi_url: str
) -> None:
    team = Workspace.objects.create(name="Team", slug="team")
    membership_set(workspace=team, user=alice, role=Role.EDITOR)
    shared = indexed(team, alice, "Team vault", "The team vault code is 1234, says the quokka.")
    token = token_of(alice, workspace=team)

    async def scenario(client: Client) -> dict[str, Any]:
        return {
            "search": await client.call_tool("search", {"query": "vault code quokka"}),
            "ask": await client.call_tool("ask", {"question": "What is the vault code?"}),
            "get": await client.call_tool("get_document", {"id": secret.pk}),
            "personal": await client.call_tool(
                "list_documents", {"workspace": alice.personal_workspace.pk}),
            "list": await client.call_tool("list_documents", {}),
            "create": await client.call_tool(
                "create_document", {"title": "Minutes", "content": "We met."}),
            "resources": await client.list_resources(),
        }

    got = run(asgi_url, token, scenario)

    assert {hit["document_id"] for hit in structured(got["search"])["results"]} == {shared.pk}
    assert "7741" not in structured(got["ask"])["answer"]
    assert error_text(got["get"]).endswith("Document not found.")
    assert error_text(got["personal"]).endswith("Workspace not found.")
    assert [d["id"] for d in structured(got["list"])["documents"]] == [shared.pk]
    # With no workspace named, a document goes to the token's.
    assert structured(got["create"])["workspace_id"] == team.pk
    assert {r.uri for r in got["resources"].resources} == {
        f"aistack://documents/{shared.pk}",
        f"aistack://documents/{structured(got['create'])['id']}"}


def test_viewers_and_read_only_tokens_get_a_tool_error_for_writing(
    models: None, alice: User, bob: User, asgi_url: str
) -> None:
    team = Workspace.objects.create(name="Team", slug="team")
    membership_set(workspace=team, user=alice, role=Role.OWNER)
    membership_set(workspace=team, user=bob, role=Role.VIEWER)
    viewer, read_only = token_of(bob), token_of(alice, read_only=True)
    create = {"title": "Plan", "content": "Ship it.", "workspace": team.pk}

    async def writes(client: Client) -> Any:
        return await client.call_tool("create_document", create)

    refusal = "Viewers cannot change content in this workspace."
    assert error_text(run(asgi_url, viewer, writes)).endswith(refusal)
    assert error_text(run(asgi_url, read_only, writes)).endswith(refusal)
    assert not Document.objects.filter(title="Plan").exists()

    # The same token on the HTTP API: read-only there too.
    response = httpx2.post(f"http://{asgi_url}/api/v1/documents", json=create,
                           headers={"Authorization": f"Bearer {read_only}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    listed = httpx2.get(f"http://{asgi_url}/api/v1/documents",
                        headers={"Authorization": f"Bearer {read_only}"})
    assert listed.status_code == 200


def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(
    secret: Document, alice: User, asgi_url: str
) -> None:
    token = token_of(alice)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("search", {"query": "vault", "k": "many"}),
        ("search", {"query": "vault", "k": 1_000_000}),
        ("search", {"query": ""}),
        ("search", {"query": "vault", "mode": "psychic"}),
        ("search", {"query": "vault\x00code"}),
        ("search", {}),
        ("get_document", {"id": 999_999}),
        ("get_document", {"id": 2**70}),
        ("get_document", {"id": "one"}),
        ("list_documents", {"workspace": 2**70}),
        ("list_documents", {"offset": -1}),
        ("list_documents", {"limit": 10**6}),
        ("ask", {"question": "x" * 100_000}),
        ("create_document", {"title": "", "content": "nothing"}),
        ("create_document", {"title": "t" * 10_000, "content": "long title"}),
        ("no_such_tool", {}),
    ]

    async def scenario(client: Client) -> tuple[list[Any], Any, list[Any]]:
        results = [await client.call_tool(name, arguments) for name, arguments in calls]
        unreadable = []
        for uri in ("aistack://documents/999999", "aistack://documents/abc",
                    f"aistack://documents/{'9' * 40}", "aistack://documents/\u00b2",
                    "aistack://documents/\u0661", f"aistack://documents/{'7' * 5000}"):
            try:
                await client.read_resource(uri)
            except MCPError as exc:
                unreadable.append(exc)
        for cursor in ("\u00b2", "-1", "x" * 100, "9" * 30):
            try:
                await client.session.list_resources(params=PaginatedRequestParams(cursor=cursor))
            except MCPError as exc:
                unreadable.append(exc)
        after = await client.call_tool("search", {"query": "vault"})
        return results, after, unreadable

    results, after, unreadable = run(asgi_url, token, scenario)

    for (name, _), result in zip(calls, results, strict=True):
        message = error_text(result)
        assert "Traceback" not in message and "went wrong" not in message, (name, message)
    assert error_text(results[6]).endswith("Document not found.")
    assert not error_text(results[7]).endswith("Document not found.")  # refused as out of range
    assert len(unreadable) == 10
    assert all("not found" in str(exc).lower() for exc in unreadable[:6])
    assert all("cursor" in str(exc) for exc in unreadable[6:])
    assert structured(after)["results"][0]["document_id"] == secret.pk
    assert not Document.objects.filter(title__startswith="ttt").exists()


def mcp_post(asgi_url: str, headers: dict[str, str]) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    return httpx2.post(f"http://{asgi_url}/mcp", content=json.dumps(body),
                       headers={"Content-Type": "application/json",
                                "Accept": "application/json, text/event-stream", **headers})


def test_no_valid_token_is_the_protocols_401(alice: User, asgi_url: str) -> None:
    revoked = api_token_create(user=alice)
    api_token_revoke(user=alice, token_id=revoked[0].pk)
    for headers in ({}, {"Authorization": "Bearer ais_not-a-token"},
                    {"Authorization": f"Bearer {revoked[1]}"},
                    {"Authorization": "Basic YWxpY2U6c2VjcmV0"}):
        response = mcp_post(asgi_url, headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer "), headers
        assert response.json()["error"] == "invalid_token"

    valid = mcp_post(asgi_url, {"Authorization": f"Bearer {token_of(alice)}"})
    assert valid.status_code == 200


def test_a_token_revoked_mid_session_stops_working_at_once(
    secret: Document, alice: User, asgi_url: str
) -> None:
    token, raw = api_token_create(user=alice, name="laptop")

    async def scenario(client: Client) -> tuple[Any, Exception | None]:
        before = await client.call_tool("get_document", {"id": secret.pk})
        await in_thread(lambda: api_token_revoke(user=alice, token_id=token.pk))
        try:
            await client.call_tool("get_document", {"id": secret.pk})
        except Exception as exc:
            return before, exc
        return before, None

    statuses: list[int] = []
    before, refused = run(asgi_url, raw, scenario, statuses)

    assert structured(before)["title"] == "Vault"
    assert isinstance(refused, MCPError)
    assert statuses[-1] == 401
    assert set(statuses[:-1]) == {200}


def raw_request(asgi_url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request as written, duplicate headers and all; return its status and body."""
    host, port = asgi_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def test_hosts_origins_and_methods_refused_before_the_mcp_server(
    alice: User, asgi_url: str
) -> None:
    raw = token_of(alice)
    token = {"Authorization": f"Bearer {raw}"}
    assert mcp_post(asgi_url, {**token, "Host": "evil.example"}).status_code == 400
    # Two Host headers: whichever one a proxy or framework would believe, refused.
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    for first, second in (("evil.example", asgi_url), (asgi_url, "evil.example")):
        status, _ = raw_request(asgi_url, (
            f"POST /mcp HTTP/1.1\nHost: {first}\nHost: {second}\n"
            f"Authorization: Bearer {raw}\nContent-Type: application/json\n"
            f"Accept: application/json, text/event-stream\nContent-Length: {len(body)}\n"
            "Connection: close\n\n"), body)
        assert status == 400
    # The stateless server sends nothing on a standing stream: none is opened.
    stream = httpx2.get(f"http://{asgi_url}/mcp",
                        headers={**token, "Accept": "text/event-stream"})
    assert (stream.status_code, stream.headers["Allow"]) == (405, "POST")
    assert stream.json()["error"]["code"] == "method_not_allowed"
    other_site = mcp_post(asgi_url, {**token, "Origin": "http://evil.example"})
    assert other_site.status_code == 403
    same_site = mcp_post(asgi_url, {**token, "Origin": f"http://{asgi_url}"})
    assert same_site.status_code == 200
