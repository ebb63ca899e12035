"""`aistack mcp`: the MCP server over stdio, started by the SDK's client as an assistant
starts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.contrib.auth.models import User
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from aistack.accounts.services import api_token_create, api_token_revoke
from aistack.documents.models import Document
from tests.assistants.client import error_text, in_thread, structured
from tests.e2e.test_lifecycle import service_env
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_assistant_starts_aistack_mcp_and_uses_it_until_the_token_is_revoked(
    alice: User, bob: User, clean_redis: None, tmp_path: Path
) -> None:
    env = service_env(tmp_path)
    hers = indexed(alice.personal_workspace, alice, "Vault", "The vault code is 7741.")
    token, raw = api_token_create(user=bob, name="stdio")
    his = Document.objects.create(workspace=bob.personal_workspace, title="Notes",
                                  content="Quokkas smile.")
    log = tmp_path / "mcp.log"

    async def scenario() -> dict[str, Any]:
        server = StdioServerParameters(command=sys.executable, args=["-m", "aistack", "mcp"],
                                       env={**env, "AISTACK_TOKEN": raw})
        with log.open("w") as errors:
            async with Client(stdio_client(server, errlog=errors),
                              read_timeout_seconds=60) as client:
                out: dict[str, Any] = {
                    "tools": await client.list_tools(),
                    "own": await client.call_tool("get_document", {"id": his.pk}),
                    "hers": await client.call_tool("get_document", {"id": hers.pk}),
                    "search": await client.call_tool("search", {"query": "vault code",
                                                                "mode": "text"}),
                }
                await in_thread(lambda: api_token_revoke(user=bob, token_id=token.pk))
                out["revoked"] = await client.call_tool("get_document", {"id": his.pk})
                return out

    got = anyio.run(scenario)
    assert "Traceback" not in log.read_text()

    assert {tool.name for tool in got["tools"].tools} == {
        "search", "ask", "get_document", "list_documents", "create_document"}
    assert structured(got["own"])["content"] == "Quokkas smile."
    assert error_text(got["hers"]).endswith("Document not found.")
    assert hers.pk not in {hit["document_id"] for hit in structured(got["search"])["results"]}
    assert "revoked" in error_text(got["revoked"])


def test_aistack_mcp_refuses_to_start_without_a_valid_token(
    alice: User, clean_redis: None, tmp_path: Path
) -> None:
    env = service_env(tmp_path)
    missing = subprocess.run([sys.executable, "-m", "aistack", "mcp"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    unknown = subprocess.run([sys.executable, "-m", "aistack", "mcp", "--token", "ais_nope"],
                             env=env, capture_output=True, text=True, timeout=120, check=False)

    assert missing.returncode == 2 and "--token" in missing.stderr
    assert unknown.returncode == 1
    assert "unknown or was revoked" in unknown.stderr
    assert missing.stdout == unknown.stdout == ""  # stdout is the protocol's alone
