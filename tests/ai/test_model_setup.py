"""The Models page: a model connected from the browser, its key encrypted, used everywhere.

Against loopback servers that speak OpenAI's, Anthropic's and Ollama's wire protocols,
through the real SDKs.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test import Client
from psycopg_pool import PoolTimeout

from aistack.ai import chat_models, setup
from aistack.ai.models import ModelSetup
from aistack.ai.secrets import SecretUnreadable, secret_decrypt, secret_encrypt
from aistack.retrieval.reindex import reindex_run, reindex_start
from aistack.usage.models import UsageRecord
from tests.ai.conftest import follow
from tests.ai.vendors import Canned, VendorServer, anthropic_message, openai_chat, openai_error
from tests.retrieval.helpers import indexed

# Committed for real: a save reaches other processes once its transaction commits.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("page_follower")]

KEY = "sk-page-key-0123456789abcdef"


def post(client: Client, **fields: str) -> Any:
    return client.post("/models/", {"provider": "compatible", "base_url": "", "api_key": "",
                                    "chat_model": "", "fallbacks": "", **fields})


def test_a_saved_model_is_used_for_chat_and_its_key_is_encrypted_at_rest(
    browser_of: Client, vendor: VendorServer, alice_api: Any,
) -> None:
    environment = chat_models["default"].id

    response = post(browser_of, action="save", provider="compatible",
                    base_url=f"{vendor.url}/v1", api_key=KEY, chat_model="team-model",
                    fallbacks="local:extractive")
    follow()

    assert response.status_code == 302
    row = ModelSetup.objects.get()
    assert KEY not in row.api_key_encrypted and row.api_key_encrypted.startswith("gAAAA")
    assert secret_decrypt(row.api_key_encrypted)[0] == KEY
    assert chat_models["default"].id == "openai:team-model" != environment
    assert [model.id for model in chat_models.chain()[1:]] == ["local:extractive"]
    vendor.push(openai_chat("Hello from the page's model."))
    body = alice_api.post("/api/v1/chat", {"prompt": "Hi"}).json()
    assert body == {"answer": "Hello from the page's model.", "model": "openai:team-model",
                    "extractive": False}
    sent = vendor.received[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "team-model"


def test_the_key_is_never_shown_back_nor_logged(
    browser_of: Client, vendor: VendorServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    vendor.push(openai_chat("I am the team model."))

    tested = post(browser_of, action="test", base_url=vendor.url, api_key=KEY,
                  chat_model="team-model")
    post(browser_of, action="save", base_url=vendor.url, api_key=KEY, chat_model="team-model")
    refused = post(browser_of, action="save", base_url="not a url", api_key=KEY,
                   chat_model="team-model")
    page = browser_of.get("/models/")

    for response in (tested, refused, page):
        assert KEY not in response.content.decode()
    assert 'name="api_key"' in page.content.decode()
    assert "An API key is saved" in page.content.decode()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert KEY not in logged
    assert "chat model set on the Models page" in logged


def test_test_calls_the_model_once_and_shows_its_answer_without_saving(
    browser_of: Client, admin: User, vendor: VendorServer,
) -> None:
    vendor.push(openai_chat("I am the team model."))

    page = post(browser_of, action="test", base_url=vendor.url, api_key=KEY,
                chat_model="team-model").content.decode()

    assert "openai:team-model answered:</strong> I am the team model." in page
    assert len(vendor.received) == 1
    assert not ModelSetup.objects.exists()
    row = UsageRecord.objects.get(feature="models")
    assert (row.model, row.user_id, row.outcome) == ("openai:team-model", admin.pk, "ok")


@pytest.mark.parametrize(("canned", "said"), [
    (openai_error(401, message="Incorrect API key provided: sk-pag***cdef",
                  kind="invalid_request_error"),
     "did not answer: the API key was refused (HTTP 401). It said: “Error code: 401 - "
     "Incorrect API key provided: sk-pag***cdef”"),
    (openai_error(404, message="The model `team-modle` does not exist",
                  kind="invalid_request_error"),
     "did not answer: the model or the address was not found (HTTP 404)."),
    (Canned(status=200, headers={"content-type": "text/html"}, body=b"<html>nginx</html>"),
     "did not answer: its answer could not be read (is this the right kind of server?)."),
])
def test_a_failing_test_says_what_went_wrong_in_plain_words(
    browser_of: Client, vendor: VendorServer, canned: Canned, said: str,
) -> None:
    vendor.push(canned)

    page = post(browser_of, action="test", base_url=vendor.url, api_key=KEY,
                chat_model="team-modle").content.decode()

    outcome = html.unescape(page.split('id="test-outcome"')[1].split("</div>")[0])
    assert said in outcome
    assert len(vendor.received) == 1  # one call: a test is not retried


def test_nothing_listening_is_said_so(browser_of: Client, vendor: VendorServer) -> None:
    address = vendor.url
    vendor.close()

    page = post(browser_of, action="test", base_url=address, api_key=KEY,
                chat_model="m").content.decode()

    assert f"openai:m did not answer: nothing answered at {address}." in page


def test_anthropic_is_tested_over_its_own_protocol(
    browser_of: Client, vendor: VendorServer,
) -> None:
    vendor.push(anthropic_message("Claude here."))

    page = post(browser_of, action="test", provider="anthropic", base_url=vendor.url,
                api_key=KEY, chat_model="claude-haiku-4-5").content.decode()

    assert "anthropic:claude-haiku-4-5 answered:</strong> Claude here." in page
    sent = vendor.received[-1]
    assert sent.path == "/v1/messages", sent
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])


def test_ollama_models_are_offered_when_it_answers(
    browser_of: Client, vendor: VendorServer, settings: Any,
) -> None:
    settings.AI_PROVIDER_OPTIONS = {**settings.AI_PROVIDER_OPTIONS,
                                    "ollama": {"BASE_URL": f"{vendor.url}/v1"}}
    vendor.pages["/api/tags"] = Canned(headers={"content-type": "application/json"},
                                       body=json.dumps({"models": [
                                           {"name": "llama3.2:latest", "size": 1},
                                           {"name": "qwen2.5:7b", "size": 2}]}).encode())

    page = browser_of.get("/models/").content.decode()

    assert "Ollama answers at" in page
    assert '<option value="llama3.2:latest">' in page and '<option value="qwen2.5:7b">' in page
    vendor.pages.clear()
    assert "Ollama answers at" not in browser_of.get("/models/").content.decode()


def test_the_environment_applies_again_once_cleared(
    browser_of: Client, vendor: VendorServer,
) -> None:
    environment = chat_models["default"].id
    post(browser_of, action="save", base_url=vendor.url, api_key=KEY, chat_model="m")
    assert chat_models["default"].id == "openai:m"

    browser_of.post("/models/clear/")

    assert chat_models["default"].id == environment
    row = ModelSetup.objects.get()
    assert (row.chat_model, row.api_key_encrypted, row.revision) == ("", "", 2)
    assert "Set on this page" not in browser_of.get("/models/").content.decode()


def saved_row(browser_of: Client, vendor: VendorServer, model: str) -> dict[str, Any]:
    post(browser_of, action="save", base_url=vendor.url, api_key=KEY, chat_model=model)
    return setup._row_read()


def test_another_process_follows_through_redis_and_else_through_the_database(
    browser_of: Client, vendor: VendorServer,
) -> None:
    first = saved_row(browser_of, vendor, "first")
    elsewhere = setup._Follower()  # another process, starting now: it reads the row
    assert elsewhere.current_models().models["default"]["MODEL"] == "first"  # type: ignore[union-attr]

    saved_row(browser_of, vendor, "second")
    elsewhere.checked_at = -setup.REFRESH_SECONDS  # two seconds later: Redis says
    assert elsewhere.current_models().models["default"]["MODEL"] == "second"  # type: ignore[union-attr]

    # Redis lost the next publish, and holds an older revision: it is not taken.
    saved_row(browser_of, vendor, "third")
    cache.set(setup.PUBLISHED_KEY, first, timeout=None)
    elsewhere.checked_at = -setup.REFRESH_SECONDS
    assert elsewhere.current_models().models["default"]["MODEL"] == "second"  # type: ignore[union-attr]
    # Within REREAD_SECONDS the row itself is read, and Redis is mended.
    elsewhere.checked_at, elsewhere.read_at = -setup.REFRESH_SECONDS, -setup.REREAD_SECONDS
    assert elsewhere.current_models().models["default"]["MODEL"] == "third"  # type: ignore[union-attr]
    assert cache.get(setup.PUBLISHED_KEY)["chat_model"] == "third"
    cache.clear()  # a flush: the row is read again, as it would be after REREAD_SECONDS
    assert setup._Follower().current_models().models["default"]["MODEL"] == "third"  # type: ignore[union-attr]


def test_the_saved_key_goes_only_where_it_was_saved_for(
    browser_of: Client, vendor: VendorServer,
) -> None:
    post(browser_of, action="save", base_url=vendor.url, api_key=KEY, chat_model="m")
    other = VendorServer()
    try:
        other.push(openai_chat("I am not who you think."))
        post(browser_of, action="test", base_url=other.url, api_key="", chat_model="m")
        assert KEY not in str(other.received[-1].headers)

        post(browser_of, action="save", base_url=other.url, api_key="", chat_model="m")
        assert ModelSetup.objects.get().api_key_encrypted == ""
    finally:
        other.close()
    vendor.push(openai_chat("Hello."))
    post(browser_of, action="test", base_url=vendor.url, api_key="", chat_model="m")
    assert KEY not in str(vendor.received[-1].headers)


def test_a_key_the_provider_quotes_back_is_not_shown(
    browser_of: Client, vendor: VendorServer,
) -> None:
    vendor.push(openai_error(401, message=f"Incorrect API key provided: {KEY}",
                             kind="invalid_request_error"))

    page = post(browser_of, action="test", base_url=vendor.url, api_key=KEY,
                chat_model="m").content.decode()

    assert "Incorrect API key provided: …" in html.unescape(page)
    assert KEY not in page


def test_a_rotated_secret_key_still_decrypts_and_the_key_is_encrypted_again(
    settings: Any, admin: User,
) -> None:
    settings.SECRET_KEY = "old-secret-key-" + "x" * 40
    token = secret_encrypt(KEY)
    ModelSetup.objects.create(pk=1, provider="openai", chat_model="m", revision=1,
                              api_key_encrypted=token)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-secret-key-" + "y" * 40, [
        settings.SECRET_KEY]
    # Any process that reads the row (at start, then every REREAD_SECONDS) renews it.
    found = setup._Follower().current_models()

    assert found is not None and found.models["default"]["OPTIONS"]["API_KEY"] == KEY
    assert KEY not in repr(found)
    renewed = ModelSetup.objects.get().api_key_encrypted
    assert renewed != token
    settings.SECRET_KEY_FALLBACKS = []
    assert secret_decrypt(renewed)[0] == KEY
    with pytest.raises(SecretUnreadable, match="SECRET_KEY_FALLBACKS"):
        secret_decrypt(token)


def test_a_key_saved_under_a_forgotten_secret_key_is_asked_for_again(
    settings: Any, admin: User,
) -> None:
    settings.SECRET_KEY = "lost-secret-key-" + "z" * 40
    ModelSetup.objects.create(pk=1, provider="openai", chat_model="m", revision=1,
                              api_key_encrypted=secret_encrypt(KEY))
    settings.SECRET_KEY = "new-secret-key-" + "y" * 40
    client = Client()
    client.force_login(admin)  # sessions signed with the lost key are gone too

    page = client.get("/models/").content.decode()

    assert "The saved API key cannot be read" in page
    assert "An API key is saved" not in page


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"provider": "compatible", "base_url": ""}, "base_url", "needs its address"),
    ({"provider": "compatible", "base_url": "ftp://x"}, "base_url", "http:// or https://"),
    ({"provider": "openai", "api_key": ""}, "api_key", "OpenAI needs an API key"),
    ({"provider": "openai", "fallbacks": "gpt-4"}, "fallbacks", "is not provider:model"),
    ({"provider": "openai", "chat_model": "two words"}, "chat_model", "Name the chat model"),
    ({"provider": "openai", "base_url": "http://[::1"}, "base_url", "must be a URL"),
    ({"provider": "openai", "base_url": "http://host:port/v1"}, "base_url", "must be a URL"),
    ({"provider": "openai", "base_url": "http://127.0.0.1:1/v\x01\x7f1"}, "base_url",
     "must be a URL"),
    ({"provider": "openai", "base_url": "http://127.0.0.1:1/a b"}, "base_url", "must be a URL"),
])
def test_a_refused_setup_names_its_field_and_saves_nothing(
    browser_of: Client, fields: dict[str, str], field: str, message: str,
) -> None:
    response = post(browser_of, action="save", **{"api_key": KEY, "chat_model": "m",
                                                  "base_url": "http://127.0.0.1:9/v1",
                                                  **fields})

    assert response.status_code == 422
    assert message in response.content.decode()
    assert not ModelSetup.objects.exclude(chat_model="").exists()


def test_only_staff_reach_the_page(alice: User) -> None:
    client = Client()
    assert client.get("/models/").status_code == 302
    assert client.post("/models/embedding/", {"embedding_model": "x"}).status_code == 302
    client.force_login(alice)

    assert client.get("/models/").status_code == 403
    assert client.post("/models/", {"action": "save"}).status_code == 403
    assert client.post("/models/clear/").status_code == 403
    assert client.post("/models/embedding/",
                       {"embedding_model": "local:all-MiniLM-L6-v2"}).status_code == 403
    assert client.post("/models/embedding/retry/").status_code == 403
    assert 'href="/models/"' not in client.get("/documents/").content.decode()
    assert not ModelSetup.objects.exists()


def test_the_page_shows_how_far_a_switch_of_embedding_model_has_come(
    browser_of: Client, alice: User, use_models: Any,
) -> None:
    workspace = alice.personal_workspace
    indexed(workspace, alice, "Vacation", "Employees get 25 days of paid vacation.")
    assert "Re-embedding" not in browser_of.get("/models/").content.decode()

    use_models(embedding="scripted:hash")
    reindex_start()
    indexed(workspace, alice, "Parking", "Parking permits renew every January.")
    page = browser_of.get("/models/").content.decode()

    # The new document has the new model's vectors already; the first waits its turn.
    assert "Re-embedding for <code>scripted:hash</code>: 1 of 2 passages." in page
    reindex_run(progress=lambda done: None)
    assert "Re-embedding" not in browser_of.get("/models/").content.decode()


def test_the_database_down_is_raised_at_once_not_waited_for_again(
    browser_of: Client, vendor: VendorServer,
) -> None:
    # A read of the row that waited the pool's timeout for a connection must not be
    # followed by the caller waiting that long again: the request answers 503 at once.
    saved_row(browser_of, vendor, "first")
    elsewhere = setup._Follower()
    refused: list[str] = []

    def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        refused.append(sql)
        # As Django raises a pool's timeout: its OperationalError, caused by psycopg's.
        raise OperationalError("couldn't get a connection") from PoolTimeout("after 5 s")

    def failing(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raise OperationalError("canceling statement due to lock timeout")

    with connection.execute_wrapper(down), pytest.raises(OperationalError):
        elsewhere.current_models()
    assert refused
    # Any other failure cost no wait: what Redis says does meanwhile.
    elsewhere.checked_at, elsewhere.read_at = -setup.REFRESH_SECONDS, -setup.REREAD_SECONDS
    with connection.execute_wrapper(failing):
        page = elsewhere.current_models()
    assert page is not None and page.models["default"]["MODEL"] == "first"
