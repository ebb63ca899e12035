"""Start-up checks for wrong model strings, and the guard that keeps tests off paid providers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aistack.ai import services
from aistack.ai.backends.http import NetworkBlocked, is_loopback
from aistack.ai.checks import check_models
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import ChatRequest, Message
from aistack.usage.types import Attribution
from tests.ai import vendors
from tests.ai.conftest import TEST_API_KEY
from tests.ai.vendors import VendorServer
from tests.conftest import model_entry

REQUEST = ChatRequest(messages=(Message(role="user", content="hi"),))


def test_the_default_configuration_passes() -> None:
    assert check_models() == []


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("gpt-4", "unknown provider 'gpt-4'"),
        ("foo:bar", "unknown provider 'foo'"),
        ("openai:", "the model name after the colon is missing"),
        ("openai:gpt-4.1-mini", "OPENAI_API_KEY is not set"),
        ("anthropic:claude-haiku-4-5", "ANTHROPIC_API_KEY is not set"),
        ("local:gpt-4", "the only local chat model is 'extractive'"),
        ("scripted:whatever", "scripted chat models are"),
    ],
)
def test_wrong_chat_models_fail_the_system_check(
    use_models: Callable[..., None], spec: str, problem: str
) -> None:
    use_models(spec)

    [error, *_] = [e for e in check_models() if problem in e.msg]

    assert error.id == "aistack.ai.E001"
    assert "AI_CHAT_MODELS['default']" in error.msg
    assert "AI_CHAT_MODEL" in (error.hint or "")


def test_wrong_embedding_models_fail_the_system_check(use_models: Callable[..., None]) -> None:
    use_models(embedding=model_entry("openai:text-embedding-9", embedding=True, API_KEY="k"))

    [error] = check_models()

    assert "width of 'text-embedding-9' vectors is unknown" in error.msg
    assert "AI_EMBEDDING_MODEL" in (error.hint or "")


def test_fallback_aliases_must_exist(settings: Any) -> None:
    settings.AI_CHAT_FALLBACKS = ["nowhere"]

    assert [e.id for e in check_models()] == ["aistack.ai.E002"]


def test_an_openai_compatible_server_needs_no_key(use_models: Callable[..., None]) -> None:
    use_models(model_entry("openai:qwen2.5", BASE_URL="http://localhost:8000/v1"),
               "ollama:llama3.2")

    assert check_models() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.5.5.5"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["api.openai.com", "10.0.0.1", "192.168.1.2", "example.com"])
def test_remote_hosts(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "entry",
    [
        model_entry("openai:gpt-4.1-mini", API_KEY=TEST_API_KEY),  # api.openai.com
        model_entry("anthropic:claude-haiku-4-5", API_KEY=TEST_API_KEY),  # api.anthropic.com
        model_entry("openai:gpt-4.1-mini", API_KEY=TEST_API_KEY, BASE_URL="http://10.1.2.3/v1"),
    ],
)
def test_real_providers_are_unreachable_from_tests(
    use_models: Callable[..., None], entry: dict[str, Any]
) -> None:
    use_models(entry, "scripted:echo")

    # Not an AIError: nothing retries it or falls back past it, the test fails loudly.
    with pytest.raises(NetworkBlocked, match="AI_LOOPBACK_ONLY"):
        services.chat_complete(request=REQUEST, attribution=Attribution(feature="test"))


@pytest.mark.django_db
def test_loopback_servers_are_allowed(
    use_models: Callable[..., None], vendor: VendorServer
) -> None:
    use_models(model_entry("openai:gpt-4.1-mini", API_KEY=TEST_API_KEY,
                           BASE_URL=f"{vendor.url}/v1"))
    vendor.push(vendors.openai_chat("from loopback"))

    result = services.chat_complete(request=REQUEST, attribution=Attribution(feature="test"))

    assert result.text == "from loopback"


def test_prompt_versions_follow_the_template_text() -> None:
    first = PromptTemplate(name="answer", system="Answer from $sources.", user="$question")
    same = PromptTemplate(name="answer", system="Answer from $sources.", user="$question")
    edited = PromptTemplate(name="answer", system="Answer only from $sources.", user="$question")

    assert first.version == same.version
    assert first.version != edited.version
    assert first.render(sources="[1] text", question="Why?") == (
        Message(role="system", content="Answer from [1] text."),
        Message(role="user", content="Why?"),
    )
    with pytest.raises(KeyError):
        first.render(question="Why?")
