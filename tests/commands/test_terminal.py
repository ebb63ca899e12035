"""The knowledge-base commands as a person runs them in a terminal: separate processes on
the test session's database and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from aistack.accounts.models import Workspace
from aistack.ai.backends import local
from aistack.ai.backends.local_service import service_start, service_stop
from aistack.retrieval.models import Chunk, ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.usage.models import UsageRecord
from harness import clean_env
from tests.e2e.test_worker_kill import database_url_of_test_db
from tests.retrieval.helpers import indexed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def terminal(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``aistack ARGS`` on the test database, as a terminal would (LOG_LEVEL unset)."""
    environment = clean_env(AISTACK_HOME=str(tmp_path / "home"),
                            DATABASE_URL=database_url_of_test_db(),
                            REDIS_URL=settings.REDIS_URL, **env)
    environment.pop("LOG_LEVEL", None)
    environment.pop("AI_LOCAL_MODELS_IN", None)
    return subprocess.run([sys.executable, "-m", "aistack", *args], env=environment,
                          capture_output=True, text=True, timeout=180, check=False)


def imported_modules(stderr: str) -> set[str]:
    """Return the modules a process run with PYTHONPROFILEIMPORTTIME imported."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.fixture
def workers_serving_the_model(clean_redis: None) -> Iterator[None]:
    """What a worker runs beside its jobs: the thread that serves the local models."""
    service_start(preload=[local.EMBEDDING_MODEL_INT8])
    yield
    service_stop()


def test_search_and_ask_use_the_workers_model_and_print_only_the_result(
    alice: User, workers_serving_the_model: None, tmp_path: Path
) -> None:
    document = indexed(alice.personal_workspace, alice, "Facilities",
                       "The office kitchen is cleaned every evening by facilities. "
                       "Badges are renewed at the front desk each January.")

    found = terminal(tmp_path, "search", "who cleans the kitchen", "--json",
                     PYTHONPROFILEIMPORTTIME="1")
    assert found.returncode == 0, found.stderr[-2000:]
    [hit, *_] = json.loads(found.stdout)
    assert hit["document_id"] == document.pk
    # The query was embedded by the worker: this process never loaded the model.
    modules = imported_modules(found.stderr)
    assert "aistack.retrieval.services" in modules
    assert not {name for name in modules if name.split(".")[0] in {
        "torch", "sentence_transformers", "onnxruntime", "onnx"}}
    assert "Loading" not in found.stderr
    assert hit["good_match"] is True
    nonsense = terminal(tmp_path, "search", "xylophone quantum giraffe")
    assert "Nothing matches 'xylophone quantum giraffe' well" in nonsense.stderr
    assert "Facilities" in nonsense.stdout

    asked = terminal(tmp_path, "ask", "who cleans the kitchen?")
    assert asked.returncode == 0, asked.stderr[-2000:]
    lines = asked.stdout.splitlines()
    assert lines[0].endswith("by facilities. [1]")
    assert lines[1] == f"[1] Facilities (document {document.pk}, passage " \
                       f"{hit['chunk_id']})"
    # Logs stay out of the answer, and below WARNING they stay out altogether.
    assert "{" not in asked.stdout
    assert '"level": "info"' not in asked.stderr
    assert "quoted from your documents" in asked.stderr

    as_json = json.loads(terminal(tmp_path, "ask", "who cleans the kitchen?", "--json").stdout)
    assert as_json["answer"] == lines[0]
    assert as_json["citations"][0]["document_id"] == document.pk


def test_with_no_worker_serving_the_command_says_it_loads_the_model(
    alice: User, clean_redis: None, tmp_path: Path
) -> None:
    indexed(alice.personal_workspace, alice, "Badges", "Badges are renewed each January.")

    found = terminal(tmp_path, "search", "badge renewal", "--json")

    assert found.returncode == 0, found.stderr[-2000:]
    assert "Loading local:all-MiniLM-L6-v2-int8 here, as no worker is running" in found.stderr
    assert json.loads(found.stdout)[0]["document_title"] == "Badges"
    assert "Loading weights" not in found.stderr + found.stdout


def test_a_workspace_is_found_by_name_slug_or_id(alice: User, tmp_path: Path) -> None:
    engineering = Workspace.objects.create(name="Engineering", slug="eng")
    indexed(engineering, alice, "Deploys", "Deploys go out on Tuesdays.")
    indexed(alice.personal_workspace, alice, "Other deploys", "Deploys elsewhere too.")

    for reference in ("Engineering", "engineering", "eng", str(engineering.pk)):
        done = terminal(tmp_path, "search", "deploys", "--mode", "text", "--json",
                        "--workspace", reference)
        assert done.returncode == 0, done.stderr[-2000:]
        assert [hit["document_title"] for hit in json.loads(done.stdout)] == ["Deploys"]

    # An id that is also another workspace's name: the id wins, and the command says so.
    Workspace.objects.create(name=str(engineering.pk), slug="numbered")
    done = terminal(tmp_path, "search", "deploys", "--mode", "text", "--json",
                    "--workspace", str(engineering.pk))
    assert [hit["document_title"] for hit in json.loads(done.stdout)] == ["Deploys"]
    assert "matched workspace 'Engineering'" in done.stderr
    assert "slug numbered" in done.stderr

    # A name two workspaces share names neither.
    Workspace.objects.create(name="Engineering", slug="eng-2")
    done = terminal(tmp_path, "search", "deploys", "--mode", "text", "--workspace",
                    "Engineering")
    assert done.returncode != 0
    assert "2 workspaces are named 'Engineering': eng" in done.stderr
    assert "Traceback" not in done.stderr

    done = terminal(tmp_path, "search", "deploys", "--workspace", " ")
    assert done.returncode != 0
    assert "--workspace is empty" in done.stderr

    done = terminal(tmp_path, "ingest", str(tmp_path), "--workspace", "Nowhere")
    assert done.returncode != 0
    assert "no workspace 'Nowhere'" in done.stderr


def test_brackets_in_a_document_are_printed_as_they_are_not_read_as_markup(
    alice: User, tmp_path: Path,
) -> None:
    # Rich reads [tags] in what it prints: "[/x]" closes nothing and raised, and
    # "[link=...]" made a link.
    indexed(alice.personal_workspace, alice, "Runbook [/x] [bold]",
            "Rotate the keys [/x] with [link=https://evil.example]rotate.sh[/link] "
            "at 3 < 4 & done.")

    done = terminal(tmp_path, "search", "rotate keys", "--mode", "text",
                    COLUMNS="200")

    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "Runbook [/x] [bold]" in done.stdout
    assert "[/x] with [link=https://evil.example]" in done.stdout
    assert "3 < 4 & done" in done.stdout
    assert "\x1b]8;" not in done.stdout  # no hyperlink escape sequence


def test_usage_takes_relative_days(tmp_path: Path, db: None) -> None:
    today = timezone.now().date()
    for since, first_day in (("7d", today - timedelta(days=7)),
                             ("yesterday", today - timedelta(days=1)),
                             ("2w", today - timedelta(weeks=2)),
                             (today.isoformat(), today)):
        done = terminal(tmp_path, "usage", "--since", since, "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["since"] == first_day.isoformat()

    refused = terminal(tmp_path, "usage", "--since", "last tuesday")
    assert refused.returncode != 0
    assert "'last tuesday' is not a day" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_reindex_with_nothing_to_do_says_so_instead_of_an_empty_bar(
    tmp_path: Path, db: None
) -> None:
    first = terminal(tmp_path, "reindex")
    again = terminal(tmp_path, "reindex")

    assert first.returncode == 0, first.stderr[-2000:]
    assert "Nothing to re-embed" in first.stderr
    assert "search already uses local:all-MiniLM-L6-v2-int8" in again.stderr
    assert "0%" not in first.stderr + again.stderr
    assert again.stdout == "Search uses local:all-MiniLM-L6-v2-int8.\n"


def test_reindex_moves_search_from_the_torch_model_to_the_int8_one(
    alice: User, tmp_path: Path, use_models: Callable[..., None]
) -> None:
    """An install that embedded with torch (the default before int8) moves over with
    `aistack reindex`: nothing mixed, the same answers found, the torch space retired."""
    torch_model, int8_model = (f"local:{local.EMBEDDING_MODEL}",
                               f"local:{local.EMBEDDING_MODEL_INT8}")
    use_models(embedding=torch_model)
    workspace = alice.personal_workspace
    documents = {
        "vacation": indexed(workspace, alice, "Leave", "Employees get 25 days of paid vacation "
                            "each year; unused days carry over until March."),
        "parking": indexed(workspace, alice, "Parking", "Parking permits are renewed at the "
                           "front desk every January."),
        "kitchen": indexed(workspace, alice, "Facilities", "The office kitchen is cleaned "
                           "every evening by the facilities team."),
    }
    questions = {"how many holidays do I get": "vacation", "where do I renew my car permit":
                 "parking", "who cleans the kitchen": "kitchen"}

    def top_hits(*args: str) -> dict[str, int]:
        found = {}
        for question in questions:
            done = terminal(tmp_path, "search", question, "--mode", "vector", "--json", *args)
            assert done.returncode == 0, done.stderr[-2000:]
            found[question] = json.loads(done.stdout)[0]["document_id"]
        return found

    expected = {question: documents[name].pk for question, name in questions.items()}
    assert top_hits() == expected
    assert EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE).model == torch_model

    moved = terminal(tmp_path, "reindex", AI_EMBEDDING_MODEL=int8_model)

    assert moved.returncode == 0, moved.stderr[-2000:]
    assert moved.stdout == f"Search uses {int8_model}.\n"
    spaces = {space.model: space for space in EmbeddingSpace.objects.all()}
    assert spaces[int8_model].status == SpaceStatus.ACTIVE
    # Retired; its vectors go once no search can be reading them.
    assert spaces[torch_model].status == SpaceStatus.RETIRED
    assert ChunkVector.objects.filter(space=spaces[int8_model]).count() == \
        Chunk.objects.filter(workspace=workspace).count() == 3
    # Searches now embed their queries with the int8 model, and find what torch found.
    assert top_hits() == expected
    assert UsageRecord.objects.filter(feature="search").latest("pk").model == int8_model
